/**
 * Compaction as far as Strata has it: checkpoint, then image layers where delta layers pile up.
 *
 * Neon's compaction does two things: L0 → L1 (re-sorting deltas by key) and image creation where
 * the stack of deltas over a key range is deep. Strata has only the second so far, in its
 * simplest form: when at least `imageCreationThreshold` delta layers lie above the newest image
 * layer that covers the whole key space, a new full image layer is written at
 * disk_consistent_lsn. Reads below it then stop at the image instead of replaying every delta.
 * Deltas are kept (GC does not remove layers yet), so this costs disk and saves read time.
 *
 * Invariant: an image layer is only made at or below disk_consistent_lsn, from durable data
 * (createImageLayer checks it), and at most one per LSN.
 */
import { KEY_MAX, KEY_MIN } from '../../storage/key.ts';
import { checkpoint } from './flush.ts';
import { createImageLayer } from './images.ts';
import type { Timeline } from './timeline.ts';

export interface CompactResult {
  imageLayersCreated: number;
}

export async function compactTimeline(timeline: Timeline, opts: { imageCreationThreshold: number }): Promise<CompactResult> {
  await checkpoint(timeline);
  const lsn = timeline.diskConsistentLsn;
  let newestFullImage = -1n;
  for (const h of timeline.layers.historicLayers()) {
    const d = h.desc;
    if (d.kind === 'image' && d.keyRange.start === KEY_MIN && d.keyRange.end === KEY_MAX && d.lsnRange.start > newestFullImage) newestFullImage = d.lsnRange.start;
  }
  if (newestFullImage >= lsn) return { imageLayersCreated: 0 };
  let deltasAbove = 0;
  for (const h of timeline.layers.historicLayers()) {
    if (h.desc.kind === 'delta' && h.desc.lsnRange.start > newestFullImage) deltasAbove++;
  }
  if (deltasAbove < opts.imageCreationThreshold) return { imageLayersCreated: 0 };
  // A branch whose data so far is all below its branch point has nothing of its own to image.
  if (lsn <= timeline.ancestorLsn && timeline.ancestor !== null) return { imageLayersCreated: 0 };
  await createImageLayer(timeline, { start: KEY_MIN, end: KEY_MAX }, lsn);
  return { imageLayersCreated: 1 };
}
