/**
 * What every layer — open or frozen in memory, delta or image file on disk — offers the read path.
 *
 * A layer covers a rectangle of the (key, LSN) plane: a key range × an LSN range [start, end).
 * An image layer holds, for every key that exists in its key range, the value at one LSN `L`; its
 * LSN range is [L, L+1). A delta layer holds every version written in its LSN range for keys in
 * its key range. The open in-memory layer's range ends at "infinity" until it is frozen.
 *
 * The read path asks each layer, newest first, for the versions of one key inside an LSN window
 * [floor, end). A layer appends what it has to a ReconstructState, newest first, and stops as
 * soon as it has found something that needs nothing older: an image, or a record that initialises
 * the page (`willInit`). Then the state is complete and the read path stops descending.
 */
import type { Lsn } from '../postgres/lsn.ts';
import type { Key, KeyRange } from './key.ts';
import type { Value } from './value.ts';

/** [start, end): end is exclusive. */
export interface LsnRange {
  start: Lsn;
  end: Lsn;
}

export type LayerKind = 'delta' | 'image' | 'inMemory';

export interface LayerDesc {
  kind: LayerKind;
  tenantId: string;
  timelineId: string;
  keyRange: KeyRange;
  lsnRange: LsnRange;
}

export interface ReconstructRecord {
  /** Version LSN (for WAL records: the record's end LSN). */
  lsn: Lsn;
  value: Value;
}

/** Versions of one key found so far, newest first. */
export interface ReconstructState {
  /** Non-image values, newest first. The last one may be a willInit record. */
  records: ReconstructRecord[];
  /** The newest image at or below the oldest record, once found. */
  image: { lsn: Lsn; image: Buffer } | null;
}

export function newReconstructState(): ReconstructState {
  return { records: [], image: null };
}

/** True when nothing older is needed: an image was found, or the oldest record initialises the page. */
export function reconstructComplete(state: ReconstructState): boolean {
  if (state.image !== null) return true;
  const last = state.records[state.records.length - 1];
  return last !== undefined && last.value.kind === 'pgRecord' && last.value.willInit;
}

/** Adds one value found by a layer (newest first). Returns true when the state is complete. */
export function addToReconstructState(state: ReconstructState, lsn: Lsn, value: Value): boolean {
  if (value.kind === 'image') {
    state.image = { lsn, image: value.image };
    return true;
  }
  state.records.push({ lsn, value });
  return value.kind === 'pgRecord' && value.willInit;
}

export interface ReadableLayer {
  readonly desc: LayerDesc;
  /**
   * Appends the versions of `key` with LSN in [lsnFloor, lsnEnd) to `state`, newest first,
   * stopping after an image or a willInit record. Returns true when the state is complete.
   * Throws a typed error (naming file, key and LSN) if the layer's data is damaged.
   */
  getValueReconstructData(key: Key, lsnFloor: Lsn, lsnEnd: Lsn, state: ReconstructState): boolean;
}
