/**
 * The in-memory layer: where a timeline's newest versions live until they are written to disk.
 *
 * Each timeline has one *open* in-memory layer that receives every write (LSNs only increase),
 * covering all keys × [startLsn, ∞). When the WAL it covers reaches `checkpoint_distance` (or on
 * demand, or after `checkpoint_timeout`) the timeline *freezes* it — its range becomes
 * [startLsn, endLsn) and it accepts no more writes — and a background flush writes it out as an L0
 * delta file. Frozen layers stay readable until the file that replaces them is in the layer map.
 *
 * Memory layout (chosen so that memory is ~ the bytes written, whatever the value count):
 * - values are serialised (value.ts) into append-only slabs of SLAB_SIZE_BYTES; an entry is
 *   `lsn u64 LE | length u32 LE | value bytes`; a value bigger than a slab gets a slab of its own;
 * - an index Map<Key, number[]> holds, per key, the references (slab number × 2^24 + offset) of its
 *   entries in LSN order. Writes arrive in LSN order, so appending keeps each list sorted.
 * Two writes to one key at one LSN (a record touching the same block twice) keep the later one.
 *
 * Reads return copies of images (never views into a slab): a slab is freed with its layer, and a
 * page cached elsewhere must not pin it.
 */
import type { Lsn } from '../postgres/lsn.ts';
import { formatLsn } from '../postgres/lsn.ts';
import { AssertionFailedError, assert } from '../util/errors.ts';
import { KEY_MAX, KEY_MIN, describeKey, type Key } from './key.ts';
import { addToReconstructState, type LayerDesc, type ReadableLayer, type ReconstructState } from './layer.ts';
import { decodeValue, encodedValueSize, writeValue, type Value } from './value.ts';

const SLAB_SIZE_BYTES = 1 << 22; // 4 MiB
const OFFSET_BITS = 2 ** 24; // slab offsets stay below 16 MiB
const ENTRY_HEADER_BYTES = 12;
/** Upper bound on one value: a page, a WAL record (≤ 1 GiB in theory; PostgreSQL caps records far lower in practice). */
export const MAX_VALUE_SIZE_BYTES = 64 * 1024 * 1024;

export interface InMemoryEntry {
  key: Key;
  lsn: Lsn;
  /** The serialised value: a view into the layer's slab, valid while the layer lives. */
  encoded: Buffer;
}

export class InMemoryLayer implements ReadableLayer {
  readonly tenantId: string;
  readonly timelineId: string;
  readonly startLsn: Lsn;
  /** Exclusive end; null while the layer is open. */
  endLsn: Lsn | null = null;

  private readonly index = new Map<Key, number[]>();
  private readonly slabs: Buffer[] = [];
  private slabUsed = 0;
  private bytesWritten = 0;
  private entries = 0;
  private lastLsn: Lsn;

  constructor(opts: { tenantId: string; timelineId: string; startLsn: Lsn }) {
    this.tenantId = opts.tenantId;
    this.timelineId = opts.timelineId;
    this.startLsn = opts.startLsn;
    this.lastLsn = opts.startLsn;
  }

  get desc(): LayerDesc {
    return {
      kind: 'inMemory',
      tenantId: this.tenantId,
      timelineId: this.timelineId,
      keyRange: { start: KEY_MIN, end: KEY_MAX },
      lsnRange: { start: this.startLsn, end: this.endLsn ?? 0xffff_ffff_ffff_ffffn },
    };
  }

  /** Bytes of serialised values held (the figure compared with checkpoint_distance). */
  get sizeBytes(): number {
    return this.bytesWritten;
  }

  /** LSN of the newest write (startLsn when empty). */
  get lastWrittenLsn(): Lsn {
    return this.lastLsn;
  }

  get entryCount(): number {
    return this.entries;
  }

  get keyCount(): number {
    return this.index.size;
  }

  /** Adds a version. LSNs must not go backwards across calls; the layer must be open. */
  put(key: Key, lsn: Lsn, value: Value): void {
    // Per-value hot path: error contexts (string formatting) are built only when a check fails.
    if (this.endLsn !== null) throw new AssertionFailedError('write to a frozen in-memory layer', { timeline: this.timelineId, lsn: formatLsn(lsn) });
    if (!(lsn >= this.startLsn && lsn >= this.lastLsn)) {
      throw new AssertionFailedError('in-memory layer writes must be in LSN order', {
        timeline: this.timelineId, key: describeKey(key), lsn: formatLsn(lsn), lastLsn: formatLsn(this.lastLsn), startLsn: formatLsn(this.startLsn),
      });
    }
    const size = encodedValueSize(value);
    if (size > MAX_VALUE_SIZE_BYTES) throw new AssertionFailedError('value too large', { key: describeKey(key), sizeBytes: size });
    const ref = this.allocate(ENTRY_HEADER_BYTES + size);
    const slab = this.slabs[Math.floor(ref / OFFSET_BITS)]!;
    const at = ref % OFFSET_BITS;
    slab.writeBigUInt64LE(lsn, at);
    slab.writeUInt32LE(size, at + 8);
    const written = writeValue(value, slab, at + ENTRY_HEADER_BYTES);
    assert(written === size, 'value encoder wrote an unexpected size', { expected: size, written });
    this.lastLsn = lsn;
    this.bytesWritten += size;

    const refs = this.index.get(key);
    if (refs === undefined) {
      this.index.set(key, [ref]);
      this.entries++;
    } else {
      const lastRef = refs[refs.length - 1]!;
      if (this.lsnAt(lastRef) === lsn) {
        refs[refs.length - 1] = ref; // the later write of the same version wins
      } else {
        refs.push(ref);
        this.entries++;
      }
    }
  }

  freeze(endLsn: Lsn): void {
    assert(this.endLsn === null, 'in-memory layer frozen twice', { timeline: this.timelineId });
    assert(endLsn > this.lastLsn || (this.entries === 0 && endLsn >= this.startLsn), 'freeze LSN must be above every write', {
      timeline: this.timelineId, endLsn: formatLsn(endLsn), lastLsn: formatLsn(this.lastLsn),
    });
    this.endLsn = endLsn;
  }

  getValueReconstructData(key: Key, lsnFloor: Lsn, lsnEnd: Lsn, state: ReconstructState): boolean {
    const refs = this.index.get(key);
    if (refs === undefined) return false;
    for (let i = refs.length - 1; i >= 0; i--) {
      const ref = refs[i]!;
      const lsn = this.lsnAt(ref);
      if (lsn >= lsnEnd) continue;
      if (lsn < lsnFloor) break;
      const value = decodeValue(this.encodedAt(ref));
      const owned: Value = value.kind === 'image' ? { kind: 'image', image: Buffer.from(value.image) } : copyRecordValue(value);
      if (addToReconstructState(state, lsn, owned)) return true;
    }
    return false;
  }

  /** Every entry in (key, lsn) order, for writing the layer to disk. Encoded values are views. */
  *sortedEntries(): Generator<InMemoryEntry> {
    const keys = Array.from(this.index.keys()).sort();
    for (const key of keys) {
      for (const ref of this.index.get(key)!) {
        yield { key, lsn: this.lsnAt(ref), encoded: this.encodedAt(ref) };
      }
    }
  }

  private lsnAt(ref: number): Lsn {
    return this.slabs[Math.floor(ref / OFFSET_BITS)]!.readBigUInt64LE(ref % OFFSET_BITS);
  }

  private encodedAt(ref: number): Buffer {
    const slab = this.slabs[Math.floor(ref / OFFSET_BITS)]!;
    const at = ref % OFFSET_BITS;
    const size = slab.readUInt32LE(at + 8);
    return slab.subarray(at + ENTRY_HEADER_BYTES, at + ENTRY_HEADER_BYTES + size);
  }

  private allocate(sizeBytes: number): number {
    let slab = this.slabs[this.slabs.length - 1];
    if (slab === undefined || this.slabUsed + sizeBytes > slab.length) {
      slab = Buffer.allocUnsafe(Math.max(SLAB_SIZE_BYTES, sizeBytes));
      this.slabs.push(slab);
      this.slabUsed = 0;
    }
    assert(this.slabUsed < OFFSET_BITS, 'slab offset overflow');
    const ref = (this.slabs.length - 1) * OFFSET_BITS + this.slabUsed;
    this.slabUsed += sizeBytes;
    return ref;
  }
}

/** Storage-level records decode into fresh objects already; WAL records are views and get copied. */
function copyRecordValue(value: Value): Value {
  if (value.kind === 'pgRecord') return { ...value, record: Buffer.from(value.record) };
  return value;
}
