/**
 * GetPage@LSN: the value of a key at an LSN, on a timeline.
 *
 * 1. The LSN must be at or above the GC cutoff, and ingestion must have passed it (wait_lsn).
 * 2. The materialized page cache may hold a version of this key at some LSN C ≤ L: then only
 *    versions in (C, L] are needed, applied on top of it.
 * 3. Walk down the LSN axis from L: the layer map names the layer with the newest data below the
 *    current position and the floor to which it is authoritative; that layer adds the key's
 *    versions in [floor, position), newest first, until an image or a willInit record completes
 *    the set. Then the position moves to the floor. When the timeline has nothing more and it is
 *    a branch, the walk continues on the ancestor from the branch point.
 * 4. The redo engine applies the records, oldest first, to the base image.
 *
 * An image layer holds every key of its range that exists at its LSN, so a key absent from the
 * image layer that the map picked does not exist at that LSN: the walk stops there.
 * When no version is found the read fails with KeyNotFoundError naming key, LSN and timeline —
 * never a made-up page. The walk is bounded (MAX_READ_STEPS), so a layer map bug can only cost an
 * error, not a hang.
 *
 * Metrics: every getPage (wait included, failed ones too) is observed in the timeline's
 * pageserver_smgr_query_seconds{smgr_query_type="get_page_at_lsn"} and its _global twin, and every
 * wait for WAL in pageserver_wait_lsn_seconds — into preallocated series, without allocating
 * (metrics.ts). reconstructAt itself is not timed: ingest, basebackup and image creation call it
 * too, and those are not smgr queries.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { AssertionFailedError, StrataError, type ErrorContext } from '../../util/errors.ts';
import { describeKey, keyToHex, type Key } from '../../storage/key.ts';
import { newReconstructState } from '../../storage/layer.ts';
import { reconstructPage } from '../../storage/redo.ts';
import { TimelineStateError, type Timeline } from './timeline.ts';

/** No version of the key exists at or below the LSN (on this timeline or its ancestors). */
export class KeyNotFoundError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('key_not_found', message, context);
    this.name = 'KeyNotFoundError';
  }
}

/**
 * A Broken ancestor may be missing layers (one failed to load), so reading through it could find
 * an older version and return it as current: refuse instead. (Stopping is fine: its layers are
 * all there until it is gone, and a branch's ancestor cannot be deleted.)
 */
function checkAncestorReadable(timeline: Timeline, ancestor: Timeline): void {
  if (ancestor.state === 'Broken') {
    throw new TimelineStateError(
      `timeline ${timeline.timelineId} reads through its ancestor ${ancestor.timelineId}, which is broken: ${ancestor.brokenReason ?? 'no reason recorded'}`,
      timeline.context({ ancestor: ancestor.timelineId, reason: ancestor.brokenReason ?? '' }));
  }
}

/** Layers visited per read at most: far above any real stack of layers. */
const MAX_READ_STEPS = 100_000;

/** Waits for `lsn` to be ingested, then reconstructs the key's value at `lsn`. */
export async function getPage(timeline: Timeline, key: Key, lsn: Lsn, opts: { timeoutMs?: number } = {}): Promise<Buffer> {
  const started = performance.now();
  try {
    timeline.checkReadable();
    timeline.checkLsnInScope(lsn);
    await waitForLsnWithAncestors(timeline, lsn, opts.timeoutMs ?? timeline.resources.waitLsnTimeoutMs);
    return reconstructAt(timeline, key, lsn);
  } finally {
    timeline.resources.metrics.observeGetPage((performance.now() - started) / 1000);
  }
}

/**
 * Waits until `lsn` is ingested on the timeline and, for a branch, until its ancestors have
 * ingested up to the branch points below it: a branch reads its ancestor up to the branch point,
 * and after a restart the ancestor may still be re-ingesting that WAL.
 */
export async function waitForLsnWithAncestors(timeline: Timeline, lsn: Lsn, timeoutMs: number): Promise<void> {
  const started = performance.now();
  try {
    if (lsn > timeline.lastRecordLsn) await timeline.waitLsn(lsn, timeoutMs);
    let needed = lsn;
    for (let tl: Timeline = timeline; tl.ancestor !== null; tl = tl.ancestor) {
      if (tl.ancestorLsn < needed) needed = tl.ancestorLsn;
      if (needed > tl.ancestor.lastRecordLsn) await tl.ancestor.waitLsn(needed, timeoutMs);
    }
  } finally {
    timeline.resources.metrics.observeWaitLsn((performance.now() - started) / 1000);
  }
}

/**
 * The value of `key` at `lsn`, which must already be ingested. Synchronous: every layer read is
 * a positioned read. The returned buffer may be shared with a cache: callers must not modify it.
 */
export function reconstructAt(timeline: Timeline, key: Key, lsn: Lsn): Buffer {
  timeline.checkReadable();
  // Per-read hot path: error contexts (string formatting) are built only when a check fails.
  if (lsn > timeline.lastRecordLsn) throw new AssertionFailedError('read beyond the last ingested record', timeline.context({ lsn: formatLsn(lsn) }));
  const { pageCache, redo } = timeline.resources;

  const cached = pageCache.get(timeline.cacheId, key, lsn);
  if (cached !== null && cached.lsn === lsn) return cached.image;
  const cachedFloor = cached === null ? 0n : cached.lsn + 1n;

  const state = newReconstructState();
  let current: Timeline = timeline;
  let contLsn = lsn + 1n;
  let complete = false;
  let steps = 0;
  while (!complete) {
    if (++steps > MAX_READ_STEPS) {
      throw new StrataError('read_path_stuck', `read of ${describeKey(key)} at ${formatLsn(lsn)} visited more than ${MAX_READ_STEPS} layers`,
        timeline.context({ key: keyToHex(key), lsn: formatLsn(lsn) }));
    }
    if (contLsn <= cachedFloor) break; // everything older is in the cached version
    const ancestor = current.ancestor;
    if (ancestor !== null && contLsn - 1n <= current.ancestorLsn) {
      checkAncestorReadable(timeline, ancestor);
      current = ancestor;
      continue;
    }
    const found = current.layers.search(key, contLsn);
    if (found === null) {
      if (ancestor === null) break;
      checkAncestorReadable(timeline, ancestor);
      contLsn = current.ancestorLsn + 1n;
      current = ancestor;
      continue;
    }
    const floor = found.lsnFloor > cachedFloor ? found.lsnFloor : cachedFloor;
    if (floor >= contLsn) throw new AssertionFailedError('layer map returned an empty window', timeline.context({ key: keyToHex(key), lsn: formatLsn(contLsn) }));
    complete = found.layer.getValueReconstructData(key, floor, contLsn, state);
    if (!complete && found.isImage && floor === found.lsnFloor) break; // absent from an image layer: does not exist
    contLsn = floor;
  }

  if (!complete && cached !== null && contLsn <= cachedFloor) {
    state.image = { lsn: cached.lsn, image: cached.image };
  }
  if (state.image === null && state.records.length === 0) {
    throw new KeyNotFoundError(
      `no version of ${describeKey(key)} exists at or below ${formatLsn(lsn)} on timeline ${timeline.timelineId}`,
      timeline.context({ key: keyToHex(key), keyDescription: describeKey(key), lsn: formatLsn(lsn) }));
  }
  const page = reconstructPage(redo, { tenantId: timeline.tenantId, timelineId: timeline.timelineId, key, requestLsn: lsn }, state);
  const newest = state.records[0];
  if (newest !== undefined) pageCache.put(timeline.cacheId, key, newest.lsn, page);
  return page;
}
