/**
 * Image layer creation: every key of a key range, materialised at one LSN, in one file.
 *
 * An image layer lets reads stop descending: below it, nothing older is needed for its keys.
 * Compaction (a later issue) decides when to make them; this module makes one on request.
 *
 * Which keys: every key in the range that has any version at or below the LSN on this timeline
 * or, below the branch point, on its ancestors. The read path treats a key missing from an image
 * layer as not existing at that LSN, so the set must be complete — it is built from the layers
 * themselves, not from a directory that could be stale.
 *
 * The LSN must be at or below disk_consistent_lsn: a restart removes files above it (load.ts),
 * and everything the image is made from must already be durable.
 * Metrics: a successful creation is timed as the storage operation "create images" (metrics.ts).
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { InvalidInputError, assert } from '../../util/errors.ts';
import { keyRangeContains, keyRangesOverlap, type Key, type KeyRange } from '../../storage/key.ts';
import { encodeValue } from '../../storage/value.ts';
import { LayerFileWriter } from '../../storage/layerfile/writer.ts';
import { openLayerFile, type LayerFileHandle } from './layerfiles.ts';
import { reconstructAt } from './read.ts';
import { StorageOperation } from '../metrics.ts';
import type { Timeline } from './timeline.ts';

/** Keys with a version at or below `lsn` in `range`, on the timeline and its ancestors. */
export function collectKeys(timeline: Timeline, range: KeyRange, lsn: Lsn): Key[] {
  const keys = new Set<Key>();
  let current: Timeline | null = timeline;
  let limit = lsn;
  for (let depth = 0; current !== null; depth++) {
    assert(depth < 10_000, 'ancestor chain too deep', timeline.context());
    const layers = current.layers;
    const mem = [...layers.frozen, ...(layers.open === null ? [] : [layers.open])];
    for (const m of mem) {
      if (m.startLsn > limit) continue;
      for (const e of m.sortedEntries()) if (e.lsn <= limit && keyRangeContains(range, e.key)) keys.add(e.key);
    }
    for (const h of layers.historicLayers()) {
      const d = h.desc;
      if (d.lsnRange.start > limit || !keyRangesOverlap(d.keyRange, range)) continue;
      for (const e of h.indexEntries()) if (e.lsn <= limit && keyRangeContains(range, e.key)) keys.add(e.key);
    }
    if (current.ancestor === null) break;
    limit = limit < current.ancestorLsn ? limit : current.ancestorLsn;
    current = current.ancestor;
  }
  return Array.from(keys).sort();
}

/** Writes an image layer of `range` at `lsn` and adds it to the layer map. */
export async function createImageLayer(timeline: Timeline, range: KeyRange, lsn: Lsn): Promise<LayerFileHandle> {
  const started = performance.now();
  timeline.checkReadable();
  if (lsn > timeline.diskConsistentLsn) {
    throw new InvalidInputError(`image LSN ${formatLsn(lsn)} is above disk_consistent_lsn ${formatLsn(timeline.diskConsistentLsn)}; checkpoint first`, timeline.context());
  }
  timeline.checkLsnInScope(lsn);
  for (const h of timeline.layers.historicLayers()) {
    if (h.desc.kind === 'image' && h.desc.lsnRange.start === lsn && keyRangesOverlap(h.desc.keyRange, range)) {
      throw new InvalidInputError(`an image layer at ${formatLsn(lsn)} already covers part of this key range: ${h.fileName}`, timeline.context());
    }
  }
  const keys = collectKeys(timeline, range, lsn);
  const writer = await LayerFileWriter.create({
    dir: timeline.dir, kind: 'image', tenantId: timeline.tenantId, timelineId: timeline.timelineId,
    keyRange: range, lsnRange: { start: lsn, end: lsn + 1n },
  });
  try {
    for (const key of keys) {
      const image = reconstructAt(timeline, key, lsn);
      const pending = writer.put(key, lsn, encodeValue({ kind: 'image', image }));
      if (pending !== undefined) await pending;
    }
    const info = await writer.finish();
    const handle = openLayerFile(timeline, info.fileName);
    timeline.layers.addHistoric(handle);
    timeline.resources.metrics.storageOpDone(StorageOperation.createImages, (performance.now() - started) / 1000);
    timeline.log.info('created image layer', { file: info.fileName, keys: keys.length, lsn: formatLsn(lsn) });
    return handle;
  } catch (err) {
    await writer.abort().catch(() => undefined);
    throw err;
  }
}
