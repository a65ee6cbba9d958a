/**
 * Freezing the open layer and flushing frozen layers to L0 delta files.
 *
 * Freeze (synchronous, between two records): the open layer's LSN range is closed at
 * last_record_lsn + 1; it joins the frozen list with the timeline's positions at that moment; the
 * next write opens a new layer at that LSN. Freezing happens when the WAL since the last freeze
 * reaches `checkpoint_distance`, when the open layer's values reach it, when `checkpoint_timeout`
 * passed with WAL pending, or on demand (`checkpoint()`).
 *
 * Flush (one background task per timeline, oldest frozen layer first):
 *   1. write the layer's entries in (key, LSN) order to an L0 delta file (temp → fsync → rename →
 *      fsync dir, by the layer file writer) — also when it holds no values, so that L0 files tile
 *      the timeline's LSN range and a missing one is noticed at restart;
 *   2. in one synchronous step, swap the frozen layer for the file in the layer map and move
 *      disk_consistent_lsn to the layer's last record (end − 1);
 *   3. persist the metadata. Only then is the WAL below disk_consistent_lsn safe to forget.
 * A crash between 1 and 3 leaves a file beyond the persisted disk_consistent_lsn; the restart
 * removes it and ingestion replays that WAL (load.ts).
 *
 * A flush failure (disk full, I/O error) marks the timeline Broken: it keeps its durable state and
 * stops accepting WAL, rather than acknowledging positions it could not persist.
 * Back-pressure: ingest waits while MAX_FROZEN_LAYERS frozen layers are queued, so memory stays
 * below (1 + MAX_FROZEN_LAYERS) × checkpoint_distance per timeline.
 * Metrics: each successful flush is timed as the storage operation "layer flush", each completed
 * checkpoint() as "checkpoint" (metrics.ts).
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { assert } from '../../util/errors.ts';
import { InMemoryLayer } from '../../storage/inmemorylayer.ts';
import { StorageOperation } from '../metrics.ts';
import { writeInMemoryLayer } from './layerfiles.ts';
import { MAX_FROZEN_LAYERS, TimelineStateError, type Timeline } from './timeline.ts';

/** Freezes the open layer at last_record_lsn + 1, if anything was ingested since the last freeze. */
export function freezeOpenLayer(timeline: Timeline): boolean {
  const endLsn = timeline.lastRecordLsn + 1n;
  if (endLsn <= timeline.nextOpenLayerAt) return false; // nothing since the last freeze
  let open = timeline.layers.open;
  // A record whose values are written but which is not finished yet belongs to the next layer's
  // range; freezing now would cut it in two. The next call freezes once it is finished.
  if (open !== null && open.lastWrittenLsn >= endLsn) return false;
  if (open === null) {
    // WAL arrived that produced no values: an empty layer still carries the LSN range to disk.
    open = new InMemoryLayer({ tenantId: timeline.tenantId, timelineId: timeline.timelineId, startLsn: timeline.nextOpenLayerAt });
  }
  open.freeze(endLsn);
  timeline.layers.open = null;
  timeline.layers.frozen.push(open);
  timeline.frozenInfo.push({ layer: open, prevRecordLsn: timeline.prevRecordLsn });
  timeline.nextOpenLayerAt = endLsn;
  timeline.lastFreezeAtLsn = timeline.lastRecordLsn;
  timeline.lastFreezeAtMs = Date.now();
  timeline.log.debug('froze in-memory layer', {
    start_lsn: formatLsn(open.startLsn), end_lsn: formatLsn(endLsn), values: open.entryCount, size_bytes: open.sizeBytes,
  });
  startFlushLoop(timeline);
  return true;
}

/** Whether the open layer should be frozen now (checkpoint_distance / checkpoint_timeout). */
export function shouldFreeze(timeline: Timeline, nowMs: number): boolean {
  const conf = timeline.resources.config();
  const distanceBytes = timeline.lastRecordLsn - timeline.lastFreezeAtLsn;
  if (distanceBytes <= 0n) return false;
  if (distanceBytes >= BigInt(conf.checkpointDistanceBytes)) return true;
  const open = timeline.layers.open;
  if (open !== null && open.sizeBytes >= conf.checkpointDistanceBytes) return true;
  return nowMs - timeline.lastFreezeAtMs >= conf.checkpointTimeoutMs;
}

/**
 * Called by the ingest loop after each batch of records (and on idle keepalives): freezes when due,
 * and waits while too many frozen layers are queued for the flush.
 */
export async function checkpointIfNeeded(timeline: Timeline): Promise<void> {
  if (shouldFreeze(timeline, Date.now())) freezeOpenLayer(timeline);
  while (timeline.layers.frozen.length >= MAX_FROZEN_LAYERS && timeline.state === 'Active') {
    await waitForFlushProgress(timeline);
  }
}

/** Freezes and flushes everything ingested so far; resolves when it is durable. */
export async function checkpoint(timeline: Timeline): Promise<void> {
  const started = performance.now();
  freezeOpenLayer(timeline);
  const target = timeline.nextOpenLayerAt - 1n;
  while (timeline.diskConsistentLsn < target) {
    if (timeline.state === 'Broken') {
      throw new TimelineStateError(`checkpoint of timeline ${timeline.timelineId} failed: it is broken (${timeline.brokenReason ?? 'no reason recorded'})`,
        timeline.context({ state: timeline.state }));
    }
    await waitForFlushProgress(timeline);
  }
  await timeline.metadataChain;
  timeline.resources.metrics.storageOpDone(StorageOperation.checkpoint, (performance.now() - started) / 1000);
}

async function waitForFlushProgress(timeline: Timeline): Promise<void> {
  if (timeline.flushTask === null) startFlushLoop(timeline);
  await timeline.flushTask;
}

function startFlushLoop(timeline: Timeline): void {
  if (timeline.flushTask !== null) return;
  const task: Promise<void> = flushLoop(timeline).finally(() => {
    if (timeline.flushTask === task) timeline.flushTask = null;
    // A layer frozen after the loop saw an empty queue but before this ran must not wait for
    // the next freeze.
    if (timeline.layers.frozen.length > 0 && timeline.state !== 'Broken') startFlushLoop(timeline);
  });
  timeline.flushTask = task;
}

async function flushLoop(timeline: Timeline): Promise<void> {
  while (timeline.layers.frozen.length > 0 && timeline.state !== 'Broken') {
    try {
      await flushOldestFrozen(timeline);
    } catch (err) {
      timeline.setBroken(`flush of in-memory layer failed: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
  }
}

async function flushOldestFrozen(timeline: Timeline): Promise<void> {
  const started = performance.now();
  const frozen = timeline.layers.frozen[0]!;
  const info = timeline.frozenInfo[0]!;
  assert(info.layer === frozen, 'frozen layer bookkeeping out of step', timeline.context());
  const lastRecordLsn: Lsn = frozen.endLsn! - 1n;
  // Even a layer without values is written: L0 files then tile the timeline's LSN range without
  // gaps, which is how a restart notices a layer file that went missing (load.ts).
  const file = await writeInMemoryLayer(timeline, frozen);

  // The swap and the new disk_consistent_lsn happen in one synchronous step: readers see either
  // the frozen layer or the file, never neither.
  timeline.layers.replaceFrozen(frozen, file);
  timeline.frozenInfo.shift();
  timeline.diskConsistentLsn = lastRecordLsn;
  timeline.diskConsistentPrevLsn = info.prevRecordLsn;
  await timeline.saveMetadata();
  timeline.diskConsistent.advance(lastRecordLsn);
  timeline.resources.metrics.storageOpDone(StorageOperation.layerFlush, (performance.now() - started) / 1000);
  timeline.log.debug('flushed layer', { file: file.fileName, disk_consistent_lsn: formatLsn(lastRecordLsn) });
}
