/**
 * The layer map: which layer holds the newest version of a key below a given LSN.
 *
 * A timeline's layers tile the (key, LSN) plane:
 * - the open in-memory layer: all keys × [start, ∞), receiving writes;
 * - frozen in-memory layers: all keys × [start, end), waiting to be flushed, oldest first;
 * - historic layers (files): L0 deltas (all keys × [start, end)), and image layers (a key range at
 *   one LSN L, i.e. [L, L+1)). Later issues add key-partitioned L1 deltas.
 *
 * Invariants (checked when a layer is added):
 * - two delta layers (in memory or on disk) whose key ranges overlap do not overlap in LSN: the
 *   newest data for a key below an LSN is then in exactly one place;
 * - no two image layers overlap in key range at the same LSN.
 *
 * `search(key, contLsn)` returns the layer to read next for a key whose versions below `contLsn`
 * are still unknown, and the LSN floor down to which that layer is authoritative. Among the layers
 * that cover the key and start below `contLsn`, it takes the one whose data reaches highest
 * (min(end, contLsn)), preferring an image on a tie — an image needs nothing older. The floor
 * is the highest top of any other candidate below it, so the next search resumes exactly where
 * another layer's data begins and nothing is skipped (an image inside a delta's LSN range splits
 * the delta's window). Reads of the ancestor timeline are the timeline's business, not the map's.
 *
 * The number of layers per timeline is small until compaction exists (one L0 per
 * checkpoint_distance of WAL plus images), so the search is a linear scan over layer descriptors;
 * docs/performance.md has its cost.
 */
import type { Lsn } from '../postgres/lsn.ts';
import { formatLsn } from '../postgres/lsn.ts';
import { AssertionFailedError, assert } from '../util/errors.ts';
import { keyRangeContains, keyRangesOverlap, keyToHex, type Key } from './key.ts';
import type { InMemoryLayer } from './inmemorylayer.ts';
import type { LayerDesc, ReadableLayer } from './layer.ts';

/** A layer file the map knows about. */
export interface HistoricLayer extends ReadableLayer {
  readonly desc: LayerDesc;
  readonly fileName: string;
  readonly sizeBytes: number;
  /** Every (key, LSN) the layer holds, in order, without reading values. */
  indexEntries(): Iterable<{ key: Key; lsn: Lsn }>;
  /** Releases the file (the layer is no longer read). */
  close(): void;
}

export interface SearchResult {
  layer: ReadableLayer;
  /** Read the layer in [lsnFloor, contLsn). */
  lsnFloor: Lsn;
  isImage: boolean;
}

const LSN_INFINITY = 0xffff_ffff_ffff_ffffn;

export class LayerMap {
  open: InMemoryLayer | null = null;
  /** Oldest first. */
  readonly frozen: InMemoryLayer[] = [];
  private readonly historic: HistoricLayer[] = [];

  /** Historic layers, in the order they were added. */
  historicLayers(): readonly HistoricLayer[] {
    return this.historic;
  }

  addHistoric(layer: HistoricLayer): void {
    const d = layer.desc;
    assert(d.lsnRange.start < d.lsnRange.end, 'layer with an empty LSN range', { file: layer.fileName });
    for (const other of this.historic) {
      const o = other.desc;
      if (!keyRangesOverlap(d.keyRange, o.keyRange)) continue;
      const lsnOverlap = d.lsnRange.start < o.lsnRange.end && o.lsnRange.start < d.lsnRange.end;
      if (!lsnOverlap) continue;
      const bothDeltas = d.kind === 'delta' && o.kind === 'delta';
      const bothImages = d.kind === 'image' && o.kind === 'image';
      assert(!bothDeltas && !bothImages, 'layers overlap in key and LSN range', { file: layer.fileName, other: other.fileName });
    }
    for (const mem of [...this.frozen, ...(this.open === null ? [] : [this.open])]) {
      if (d.kind !== 'delta') continue;
      const end = mem.endLsn ?? LSN_INFINITY;
      assert(!(d.lsnRange.start < end && mem.startLsn < d.lsnRange.end), 'delta file overlaps an in-memory layer', {
        file: layer.fileName, inMemoryStart: formatLsn(mem.startLsn),
      });
    }
    this.historic.push(layer);
  }

  removeHistoric(layer: HistoricLayer): void {
    const i = this.historic.indexOf(layer);
    assert(i >= 0, 'removing a layer that is not in the map', { file: layer.fileName });
    this.historic.splice(i, 1);
  }

  /** Replaces the oldest frozen layer by the file it was written to. */
  replaceFrozen(frozen: InMemoryLayer, file: HistoricLayer): void {
    assert(this.frozen[0] === frozen, 'only the oldest frozen layer can be replaced');
    this.frozen.shift();
    this.addHistoric(file);
  }

  search(key: Key, contLsn: Lsn): SearchResult | null {
    const p = pick;
    p.best = null;
    p.bestTop = -1n;
    p.bestStart = 0n;
    p.bestIsImage = false;
    p.secondTop = -1n;
    if (this.open !== null) consider(contLsn, this.open, this.open.startLsn, LSN_INFINITY, false);
    for (const f of this.frozen) consider(contLsn, f, f.startLsn, f.endLsn!, false);
    for (const h of this.historic) {
      const d = h.desc;
      if (!keyRangeContains(d.keyRange, key)) continue;
      consider(contLsn, h, d.lsnRange.start, d.lsnRange.end, d.kind === 'image');
    }
    const best = p.best;
    p.best = null; // the scratch keeps no layer alive
    if (best === null) return null;
    // A candidate reaching as high as the winner can only be an image beside a delta (the delta
    // lost the tie); deltas never overlap, so the winner is then the image and reads [L, L+1).
    let floor = p.bestStart;
    if (!p.bestIsImage && p.secondTop > floor) {
      if (p.secondTop >= p.bestTop) {
        throw new AssertionFailedError('two delta layers reach the same LSN for one key', { key: keyToHex(key), lsn: formatLsn(contLsn) });
      }
      floor = p.secondTop;
    }
    return { layer: best, lsnFloor: floor, isImage: p.bestIsImage };
  }
}

/**
 * The running choice of one `search`: the best candidate so far and the second-highest top among
 * the others (to compute the floor once the winner is known). Module-level scratch instead of a
 * closure per call, because a search runs on every step of every read: searches are synchronous
 * and never nested, so one scratch suffices, and a per-call closure costs an allocation (under
 * tsx also a function-naming helper call).
 */
const pick: { best: ReadableLayer | null; bestTop: Lsn; bestStart: Lsn; bestIsImage: boolean; secondTop: Lsn } = {
  best: null, bestTop: -1n, bestStart: 0n, bestIsImage: false, secondTop: -1n,
};

/** Offers one candidate layer covering [start, end) to the running choice of `search`. */
function consider(contLsn: Lsn, layer: ReadableLayer, start: Lsn, end: Lsn, isImage: boolean): void {
  if (start >= contLsn) return;
  const p = pick;
  const top = end < contLsn ? end : contLsn;
  if (top > p.bestTop || (top === p.bestTop && isImage && !p.bestIsImage)) {
    if (p.best !== null && p.bestTop > p.secondTop) p.secondTop = p.bestTop;
    p.best = layer;
    p.bestTop = top;
    p.bestStart = start;
    p.bestIsImage = isImage;
  } else if (top > p.secondTop) {
    p.secondTop = top;
  }
}
