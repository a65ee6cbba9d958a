/**
 * Reads one delta or image layer file (format: ./format.ts, docs/formats-layerfile.md).
 *
 * The read path is synchronous by design: GetPage@LSN walks several layers for one key and each
 * step is a lookup that, with the index block cached, costs one `readSync` of a few KiB from the
 * OS page cache — a few microseconds, far less than the promise and thread-pool round trip an
 * asynchronous read would add. The reader therefore keeps its file descriptor open and uses
 * positional `readSync` only; it never changes shared state except the block cache.
 *
 * Opening costs two reads: the 4 KiB summary (magic, version, CRC, geometry, size vs. the real
 * file size, tenant/timeline if expected) and the fence (first sort key of every index block,
 * verified by its CRC) which then stays in memory. A lookup:
 *   1. binary-searches the fence for the last block whose first entry ≤ (key, lsnEnd−1);
 *   2. gets that index block from the shared BlockCache (read and CRC-verified on a miss);
 *   3. binary-searches the block for the newest entry ≤ (key, lsnEnd−1);
 *   4. walks backwards — into earlier blocks when needed — while the key matches and LSN ≥ floor,
 *      stopping after the first entry flagged willInit (an image or an initialising record);
 *   5. reads the values of the collected entries — adjacent in the values region, because the
 *      writer appends in (key, lsn) order — with one `readSync`, verifies every value's CRC, and
 *      only then decodes them into the ReconstructState, newest first.
 * Searches compare 26-byte sort keys as bytes in preallocated buffers; the per-read allocations
 * are the value buffer and what the ReconstructState itself needs (LSN bigints, Value objects).
 *
 * Safety: every index block and value is checked against its CRC before anything derived from it
 * is used or returned; any mismatch or impossible structure throws LayerCorruptionError naming
 * the file, the key (description and hex), the LSN and what failed. Data from a block or value
 * that fails its check is never returned. Values enter the state batch by batch (up to 256
 * entries / 8 MiB, so nearly always all at once), each batch only after all its values passed;
 * when a lookup throws, the state may hold the verified newer part and must be discarded.
 */
import { openSync, readSync, fstatSync, closeSync } from 'node:fs';
import path from 'node:path';
import type { Lsn } from '../../postgres/lsn.ts';
import { crc32c, crc32cRange } from '../../postgres/crc32c.ts';
import { KEY_SIZE_BYTES, keyToHex, type Key } from '../key.ts';
import { decodeValue, valueWillInit, type Value } from '../value.ts';
import { addToReconstructState, type LayerDesc, type ReadableLayer, type ReconstructState } from '../layer.ts';
import { AssertionFailedError, InvalidInputError, type ErrorContext } from '../../util/errors.ts';
import type { FdCache, FdHolder } from './fdcache.ts';
import { BlockCache, allocateFileId } from './blockcache.ts';
import {
  SUMMARY_SIZE_BYTES, INDEX_BLOCK_SIZE_BYTES, SORT_KEY_BYTES, FENCE_ENTRY_BYTES, EntryOffset, VALUE_LENGTH_MASK,
  ENTRY_FLAG_WILL_INIT, ENTRY_FLAGS_RESERVED, MAX_VALUE_SIZE_BYTES, BlockOffset,
  LayerCorruptionError, compareBytes, decodeSummary, checkIndexBlock, entryAt, parseLayerFileName, describeKeyForError, lsnText, hex32, checkId,
  type LayerSummary,
} from './format.ts';

export interface LayerFileReaderOptions {
  blockCache: BlockCache;
  /** Bounds how many layer files are open at once (fdcache.ts). */
  fdCache: FdCache;
  /** Refuse the file unless it belongs to this tenant and timeline. */
  expect?: { tenantId: string; timelineId: string };
}

/** Where one entry's value is, as `findNewest` reports it. */
export interface LayerEntryRef {
  key: Key;
  lsn: Lsn;
  offset: number;
  length: number;
  willInit: boolean;
  valueCrc32c: number;
}

export interface LayerEntry {
  key: Key;
  lsn: Lsn;
  willInit: boolean;
  /** The encoded Value (decodeValue), CRC-verified. */
  value: Buffer;
}

/** Lookups gather at most this many entries' values into one read; deeper chains read in rounds. */
const MAX_BATCH_ENTRIES = 256;
/** And at most this many bytes in one read. */
const MAX_BATCH_BYTES = 8 * 1024 * 1024;

const LSN_MAX = 0xffff_ffff_ffff_ffffn;
/** Entry positions are packed as block · POS_BLOCK + index in block. */
const POS_BLOCK = 0x1_0000;

export class LayerFileReader implements ReadableLayer, FdHolder {
  readonly path: string;
  readonly desc: LayerDesc;
  readonly summary: LayerSummary;
  readonly sizeBytes: number;
  readonly entryCount: number;
  /** Identity of this open file in the block cache. */
  readonly fileId: number;
  /** The open descriptor, or -1 while the fd cache has it closed. */
  private fd: number;
  private closed = false;
  fdLastUse = 0;
  private readonly fdCache: FdCache;
  private readonly cache: BlockCache;
  private readonly fence: Buffer;
  private readonly blockCount: number;

  // Scratch, reused by every lookup (the reader is synchronous, so never in use twice at once).
  private readonly target = Buffer.alloc(SORT_KEY_BYTES);
  private readonly floor = Buffer.alloc(SORT_KEY_BYTES);
  private readonly batchOffset = new Float64Array(MAX_BATCH_ENTRIES);
  private readonly batchLength = new Uint32Array(MAX_BATCH_ENTRIES);
  private readonly batchCrc = new Uint32Array(MAX_BATCH_ENTRIES);
  private readonly batchWillInit = new Uint8Array(MAX_BATCH_ENTRIES);
  private readonly batchLsn: Lsn[] = new Array<Lsn>(MAX_BATCH_ENTRIES).fill(0n);
  /** The index block `locate` found its entry in (taken and cleared by the caller). */
  private located: Buffer | null = null;

  private constructor(filePath: string, fd: number, summary: LayerSummary, fence: Buffer, cache: BlockCache, fdCache: FdCache) {
    this.path = filePath;
    this.fd = fd;
    this.fdCache = fdCache;
    this.summary = summary;
    this.desc = { kind: summary.kind, tenantId: summary.tenantId, timelineId: summary.timelineId, keyRange: summary.keyRange, lsnRange: summary.lsnRange };
    this.sizeBytes = summary.fileSizeBytes;
    this.entryCount = summary.entryCount;
    this.blockCount = summary.indexBlockCount;
    this.fence = fence;
    this.cache = cache;
    this.fileId = allocateFileId();
  }

  /** Opens and validates a layer file (summary and fence; see the module comment). */
  static open(filePath: string, opts: LayerFileReaderOptions): LayerFileReader {
    if (!(opts.blockCache instanceof BlockCache)) throw new InvalidInputError('LayerFileReader.open needs a blockCache');
    const fd = openSync(filePath, 'r');
    try {
      const fail = (what: string, ctx: ErrorContext = {}): never => {
        throw new LayerCorruptionError(`layer file ${filePath}: ${what}`, { path: filePath, ...ctx });
      };
      const actualSize = fstatSync(fd).size;
      if (actualSize < SUMMARY_SIZE_BYTES) {
        fail(`file is ${actualSize} bytes, shorter than the ${SUMMARY_SIZE_BYTES}-byte summary block (truncated or not a layer file)`, { sizeBytes: actualSize });
      }
      const head = Buffer.alloc(SUMMARY_SIZE_BYTES);
      readFully(fd, head, 0, SUMMARY_SIZE_BYTES, 0, filePath);
      const summary = decodeSummary(head, filePath);
      if (summary.fileSizeBytes !== actualSize) {
        fail(`file is ${actualSize} bytes but its summary says ${summary.fileSizeBytes} (${actualSize < summary.fileSizeBytes ? 'truncated' : 'extra bytes at the end'})`, { sizeBytes: actualSize, expectedSizeBytes: summary.fileSizeBytes });
      }
      if (opts.expect !== undefined) {
        const tenantId = checkId(opts.expect.tenantId, 'tenant');
        const timelineId = checkId(opts.expect.timelineId, 'timeline');
        if (summary.tenantId !== tenantId || summary.timelineId !== timelineId) {
          fail(`file belongs to tenant ${summary.tenantId} timeline ${summary.timelineId}, expected tenant ${tenantId} timeline ${timelineId}`, { tenantId: summary.tenantId, timelineId: summary.timelineId, expectedTenantId: tenantId, expectedTimelineId: timelineId });
        }
      }
      const named = parseLayerFileName(path.basename(filePath));
      if (named !== null && (named.kind !== summary.kind || named.keyRange.start !== summary.keyRange.start || named.keyRange.end !== summary.keyRange.end ||
        named.lsnRange.start !== summary.lsnRange.start || named.lsnRange.end !== summary.lsnRange.end)) {
        fail(`file name describes a ${named.kind} layer with other ranges than its summary (${summary.kind} ${keyToHex(summary.keyRange.start)}-${keyToHex(summary.keyRange.end)} [${lsnText(summary.lsnRange.start)}, ${lsnText(summary.lsnRange.end)}))`);
      }
      const fence = Buffer.alloc(summary.fenceLengthBytes);
      readFully(fd, fence, 0, fence.length, summary.fenceOffset, filePath);
      const fenceCrc = crc32c(fence);
      if (fenceCrc !== summary.fenceCrc32c) {
        fail(`fence CRC-32C mismatch (stored 0x${hex32(summary.fenceCrc32c)}, computed 0x${hex32(fenceCrc)})`, { fenceOffset: summary.fenceOffset });
      }
      for (let i = 1; i < summary.indexBlockCount; i++) {
        if (compareBytes(fence, i * FENCE_ENTRY_BYTES, fence, (i - 1) * FENCE_ENTRY_BYTES, FENCE_ENTRY_BYTES) <= 0) {
          fail(`fence entries ${i - 1} and ${i} are not in increasing order`);
        }
      }
      const reader = new LayerFileReader(filePath, fd, summary, fence, opts.blockCache, opts.fdCache);
      opts.fdCache.opened(reader);
      return reader;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /** A copy of the fence (tests and the writer's pair assertion). */
  fenceBytes(): Buffer {
    return Buffer.from(this.fence);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.fdCache.closed(this);
    this.cache.dropFile(this.fileId);
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Called by the fd cache: close the descriptor; the next read reopens the file. */
  releaseFd(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    closeSync(fd);
  }

  /** The descriptor for the next positioned read, reopening the file if the fd cache closed it. */
  private fdForRead(): number {
    this.checkOpen();
    if (this.fd >= 0) {
      this.fdCache.touch(this);
      return this.fd;
    }
    let fd: number;
    try {
      fd = openSync(this.path, 'r');
    } catch (err) {
      throw new LayerCorruptionError(`layer file ${this.path} cannot be reopened: ${(err as Error).message}`, { path: this.path }, { cause: err });
    }
    const size = fstatSync(fd).size;
    if (size !== this.sizeBytes) {
      closeSync(fd);
      throw new LayerCorruptionError(`layer file ${this.path} changed while in use: it is ${size} bytes, it was ${this.sizeBytes} when opened`, { path: this.path, sizeBytes: size });
    }
    this.fd = fd;
    this.fdCache.opened(this);
    return fd;
  }

  // -------------------------------------------------------------------------------------------
  // Lookups.

  /**
   * Appends the versions of `key` with LSN in [lsnFloor, lsnEnd) to `state`, newest first,
   * stopping after an image or willInit record. Returns true when the state is complete.
   */
  getValueReconstructData(key: Key, lsnFloor: Lsn, lsnEnd: Lsn, state: ReconstructState): boolean {
    this.checkOpen();
    if (lsnEnd <= lsnFloor || lsnEnd <= this.desc.lsnRange.start || lsnFloor >= this.desc.lsnRange.end) return false;
    if (!(key >= this.desc.keyRange.start && key < this.desc.keyRange.end)) return false;
    // Clamp to the layer's range (keeps the target LSN within u64 and skips impossible entries).
    const end = lsnEnd < this.desc.lsnRange.end ? lsnEnd : this.desc.lsnRange.end;
    const floorLsn = lsnFloor > this.desc.lsnRange.start ? lsnFloor : this.desc.lsnRange.start;
    this.setSortKey(this.target, key, end - 1n);
    this.setSortKey(this.floor, key, floorLsn);

    const lsnForErrors = end - 1n;
    let pos = this.locate(key, lsnForErrors);
    if (pos < 0) return false;
    let blockNumber = Math.floor(pos / POS_BLOCK);
    let i = pos % POS_BLOCK;
    let block = this.located!;
    this.located = null;
    // Collect entries newest → oldest, then read and check their values, in batches. The block
    // buffer is dropped before any other block is fetched (see blockcache.ts).
    let walked = 0;
    for (;;) {
      let n = 0;
      let batchBytes = 0;
      let more = true;
      while (n < MAX_BATCH_ENTRIES) {
        const at = entryAt(i);
        // Same key and LSN ≥ floor ⇔ entry sort key ≥ floor sort key (it is ≤ target by construction).
        if (compareBytes(block, at, this.floor, 0, SORT_KEY_BYTES) < 0) { more = false; break; }
        const lenFlags = block.readUInt32LE(at + EntryOffset.lenFlags);
        const length = lenFlags & VALUE_LENGTH_MASK;
        if (n > 0 && batchBytes + length > MAX_BATCH_BYTES) break;
        if (++walked > this.entryCount) throw this.corrupt('walk over the index did not terminate', key, lsnForErrors);
        this.collect(n, block, at, lenFlags, block.readBigUInt64BE(at + EntryOffset.lsn), key);
        batchBytes += length;
        n++;
        if ((lenFlags & ENTRY_FLAG_WILL_INIT) !== 0) { more = false; break; }
        // Step back one entry, into the previous block when needed.
        if (i > 0) {
          i--;
        } else if (blockNumber > 0) {
          blockNumber--;
          block = this.block(blockNumber, key, lsnForErrors);
          i = block.readUInt16LE(BlockOffset.entryCount) - 1;
        } else {
          more = false;
          break;
        }
      }
      if (n > 0 && this.readBatch(n, key, state)) return true;
      if (!more) return false;
      // The batch was full; (blockNumber, i) is the next entry to look at. readBatch does not
      // touch the block cache, so `block` is still the valid buffer of blockNumber.
    }
  }

  /**
   * The newest entry of `key` with LSN ≤ `lsn` (inclusive), or null. Reads only the index.
   */
  findNewest(key: Key, lsn: Lsn): LayerEntryRef | null {
    this.checkOpen();
    if (!(key >= this.desc.keyRange.start && key < this.desc.keyRange.end) || lsn < this.desc.lsnRange.start) return null;
    const at = lsn > LSN_MAX ? LSN_MAX : lsn;
    this.setSortKey(this.target, key, at);
    const pos = this.locate(key, at);
    if (pos < 0) return null;
    const block = this.located!;
    this.located = null;
    const off = entryAt(pos % POS_BLOCK);
    if (compareBytes(block, off, this.target, 0, KEY_SIZE_BYTES) !== 0) return null;
    const lenFlags = block.readUInt32LE(off + EntryOffset.lenFlags);
    const entryLsn = block.readBigUInt64BE(off + EntryOffset.lsn);
    this.checkEntry(block, off, lenFlags, key, entryLsn);
    return {
      key,
      lsn: entryLsn,
      offset: block.readUIntLE(off + EntryOffset.valueOffset, 6),
      length: lenFlags & VALUE_LENGTH_MASK,
      willInit: (lenFlags & ENTRY_FLAG_WILL_INIT) !== 0,
      valueCrc32c: block.readUInt32LE(off + EntryOffset.valueCrc),
    };
  }

  /** Reads and CRC-checks the encoded value an entry reference points at. */
  readValue(ref: LayerEntryRef): Buffer {
    this.checkOpen();
    const buf = Buffer.allocUnsafe(ref.length);
    readFully(this.fdForRead(), buf, 0, ref.length, ref.offset, this.path);
    const crc = crc32c(buf);
    if (crc !== ref.valueCrc32c) {
      throw this.corrupt(`value CRC-32C mismatch at offset ${ref.offset} (${ref.length} bytes; stored 0x${hex32(ref.valueCrc32c)}, computed 0x${hex32(crc)})`, ref.key, ref.lsn, { valueOffset: ref.offset });
    }
    return buf;
  }

  /**
   * Every index entry in (key, lsn) order, without reading values (checked blocks, checked order).
   * Reads index blocks into a private buffer (a full scan would only flush the shared cache). The
   * reader must stay open while the generator runs.
   */
  *indexEntries(): Generator<LayerEntryRef, void, undefined> {
    this.checkOpen();
    const block = Buffer.allocUnsafe(INDEX_BLOCK_SIZE_BYTES);
    let prev: Buffer | null = null;
    for (let b = 0; b < this.blockCount; b++) {
      this.checkOpen();
      this.loadBlockInto(block, b, null, null);
      const count = block.readUInt16LE(BlockOffset.entryCount);
      for (let i = 0; i < count; i++) {
        const at = entryAt(i);
        const key = block.toString('latin1', at, at + KEY_SIZE_BYTES) as Key;
        const lsn = block.readBigUInt64BE(at + EntryOffset.lsn);
        const lenFlags = block.readUInt32LE(at + EntryOffset.lenFlags);
        this.checkEntry(block, at, lenFlags, key, lsn);
        const sortKey = block.subarray(at, at + SORT_KEY_BYTES);
        if (prev !== null && prev.compare(sortKey) >= 0) throw this.corrupt(`index entries out of order in block ${b} entry ${i}`, key, lsn);
        prev = Buffer.from(sortKey);
        const ref: LayerEntryRef = {
          key, lsn,
          offset: block.readUIntLE(at + EntryOffset.valueOffset, 6),
          length: lenFlags & VALUE_LENGTH_MASK,
          willInit: (lenFlags & ENTRY_FLAG_WILL_INIT) !== 0,
          valueCrc32c: block.readUInt32LE(at + EntryOffset.valueCrc),
        };
        yield ref;
      }
    }
  }

  /** Every entry with its value, in (key, LSN) order (indexEntries plus one read per value). */
  *entries(): Generator<LayerEntry, void, undefined> {
    for (const ref of this.indexEntries()) {
      yield { key: ref.key, lsn: ref.lsn, willInit: ref.willInit, value: this.readValue(ref) };
    }
  }

  // -------------------------------------------------------------------------------------------
  // Internals.

  private checkOpen(): void {
    if (this.closed) throw new AssertionFailedError(`layer file ${this.path} is closed`, { path: this.path });
  }

  private setSortKey(buf: Buffer, key: Key, lsn: Lsn): void {
    buf.write(key, 0, KEY_SIZE_BYTES, 'latin1');
    buf.writeBigUInt64BE(lsn, KEY_SIZE_BYTES);
  }

  /**
   * Position (block · 2^16 + index) of the last entry ≤ this.target, or -1; the block holding
   * it is left in `this.located` for the caller to take.
   */
  private locate(key: Key, lsn: Lsn): number {
    const fence = this.fence;
    const target = this.target;
    // Last fence entry ≤ target.
    let lo = 0;
    let hi = this.blockCount - 1;
    let blockNumber = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = mid * FENCE_ENTRY_BYTES;
      if (compareBytes(fence, at, target, 0, SORT_KEY_BYTES) <= 0) { blockNumber = mid; lo = mid + 1; } else hi = mid - 1;
    }
    if (blockNumber < 0) return -1;
    const block = this.block(blockNumber, key, lsn);
    const count = block.readUInt16LE(BlockOffset.entryCount);
    // Last entry ≤ target; entry 0 equals the fence entry, so it qualifies.
    lo = 1;
    hi = count - 1;
    let found = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = entryAt(mid);
      if (compareBytes(block, at, target, 0, SORT_KEY_BYTES) <= 0) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    this.located = block;
    return blockNumber * POS_BLOCK + found;
  }

  /** An index block from the cache, or read from disk and verified. */
  private block(blockNumber: number, key: Key | null, lsn: Lsn | null): Buffer {
    const cached = this.cache.get(this.fileId, blockNumber);
    if (cached !== undefined) return cached;
    const buf = this.cache.takeBuffer();
    try {
      this.loadBlockInto(buf, blockNumber, key, lsn);
    } catch (err) {
      this.cache.returnBuffer(buf);
      throw err;
    }
    this.cache.insert(this.fileId, blockNumber, buf);
    return buf;
  }

  private loadBlockInto(buf: Buffer, blockNumber: number, key: Key | null, lsn: Lsn | null): void {
    const offset = this.summary.indexOffset + blockNumber * INDEX_BLOCK_SIZE_BYTES;
    readFully(this.fdForRead(), buf, 0, INDEX_BLOCK_SIZE_BYTES, offset, this.path);
    const problem = checkIndexBlock(buf, blockNumber, this.blockCount, this.entryCount);
    if (problem !== null) throw this.corrupt(problem, key, lsn, { block: blockNumber, blockOffset: offset });
    const fenceAt = blockNumber * FENCE_ENTRY_BYTES;
    if (compareBytes(buf, entryAt(0), this.fence, fenceAt, SORT_KEY_BYTES) !== 0) {
      throw this.corrupt(`index block ${blockNumber} does not start with its fence entry`, key, lsn, { block: blockNumber, blockOffset: offset });
    }
  }

  /** Validates an entry's value location; throws LayerCorruptionError. */
  private checkEntry(block: Buffer, at: number, lenFlags: number, key: Key | null, lsn: Lsn | null): void {
    const length = lenFlags & VALUE_LENGTH_MASK;
    const offset = block.readUIntLE(at + EntryOffset.valueOffset, 6);
    const s = this.summary;
    if ((lenFlags & ENTRY_FLAGS_RESERVED) !== 0 || length === 0 || length > MAX_VALUE_SIZE_BYTES ||
      offset < s.valuesOffset || offset + length > s.valuesOffset + s.valuesLengthBytes) {
      throw this.corrupt(`index entry points outside the values region (offset ${offset}, length ${length}, flags 0x${hex32(lenFlags & ~VALUE_LENGTH_MASK)})`, key, lsn, { valueOffset: offset });
    }
  }

  private collect(n: number, block: Buffer, at: number, lenFlags: number, lsn: Lsn, key: Key): void {
    this.checkEntry(block, at, lenFlags, key, lsn);
    this.batchOffset[n] = block.readUIntLE(at + EntryOffset.valueOffset, 6);
    this.batchLength[n] = lenFlags & VALUE_LENGTH_MASK;
    this.batchCrc[n] = block.readUInt32LE(at + EntryOffset.valueCrc);
    this.batchWillInit[n] = (lenFlags & ENTRY_FLAG_WILL_INIT) !== 0 ? 1 : 0;
    this.batchLsn[n] = lsn;
  }

  /**
   * Reads the values of batch entries 0..n-1 (newest first), verifies all CRCs, then decodes and
   * adds them to `state`. Returns true when the state became complete.
   */
  private readBatch(n: number, key: Key, state: ReconstructState): boolean {
    // Values of one key are adjacent, newest last in the file: the batch is one contiguous span
    // from the oldest entry's offset to the end of the newest one.
    const start = this.batchOffset[n - 1]!;
    const end = this.batchOffset[0]! + this.batchLength[0]!;
    let contiguous = end - start <= MAX_BATCH_BYTES + MAX_VALUE_SIZE_BYTES;
    for (let j = 0; contiguous && j < n - 1; j++) {
      if (this.batchOffset[j + 1]! + this.batchLength[j + 1]! !== this.batchOffset[j]!) contiguous = false;
    }
    if (!contiguous) throw this.corrupt(`values of one key are not adjacent in the values region (offsets ${this.batchOffset[n - 1]} .. ${this.batchOffset[0]})`, key, this.batchLsn[0]!);
    const buf = takeReadBuffer(end - start);
    readFully(this.fdForRead(), buf, 0, buf.length, start, this.path);
    for (let j = 0; j < n; j++) {
      const from = this.batchOffset[j]! - start;
      const crc = crc32cRange(buf, from, from + this.batchLength[j]!);
      if (crc !== this.batchCrc[j]) {
        throw this.corrupt(`value CRC-32C mismatch at offset ${this.batchOffset[j]} (${this.batchLength[j]} bytes; stored 0x${hex32(this.batchCrc[j]!)}, computed 0x${hex32(crc)})`, key, this.batchLsn[j]!, { valueOffset: this.batchOffset[j] });
      }
    }
    const values: Value[] = new Array<Value>(n);
    for (let j = 0; j < n; j++) {
      const from = this.batchOffset[j]! - start;
      let v: Value;
      try {
        v = decodeValue(buf.subarray(from, from + this.batchLength[j]!));
      } catch (err) {
        throw this.corrupt(`value at offset ${this.batchOffset[j]} passed its CRC but does not decode: ${(err as Error).message}`, key, this.batchLsn[j]!, { valueOffset: this.batchOffset[j] }, err);
      }
      if (valueWillInit(v) !== (this.batchWillInit[j] === 1)) {
        throw this.corrupt(`index willInit flag disagrees with the value at offset ${this.batchOffset[j]}`, key, this.batchLsn[j]!, { valueOffset: this.batchOffset[j] });
      }
      values[j] = v;
    }
    for (let j = 0; j < n; j++) {
      if (addToReconstructState(state, this.batchLsn[j]!, values[j]!)) return true;
    }
    return false;
  }

  private corrupt(what: string, key: Key | null, lsn: Lsn | null, ctx: ErrorContext = {}, cause?: unknown): LayerCorruptionError {
    const where = key === null ? '' : ` reading ${describeKeyForError(key)}${lsn === null ? '' : ` at LSN ${lsnText(lsn)}`}`;
    return new LayerCorruptionError(`layer file ${this.path}${where}: ${what}`, {
      path: this.path,
      key: key === null ? undefined : keyToHex(key),
      lsn: lsn === null ? undefined : lsnText(lsn),
      ...ctx,
    }, cause === undefined ? undefined : { cause });
  }
}

/**
 * Value reads are carved from shared 1 MiB slabs instead of one fresh ArrayBuffer each: a page
 * read costs a slice, not an allocation, and the garbage collector sees one object per ~120
 * pages. The returned values (images are views of this buffer) keep their slab alive; callers
 * that retain pages for long (caches) copy them or hold redo output, which is freshly allocated.
 * Larger reads get a buffer of their own. Slices are 8-byte aligned.
 */
const READ_SLAB_BYTES = 1 << 20;
const READ_SLAB_MAX_TAKE_BYTES = 64 * 1024;
let readSlab = Buffer.allocUnsafe(READ_SLAB_BYTES);
let readSlabUsed = 0;

function takeReadBuffer(sizeBytes: number): Buffer {
  if (sizeBytes > READ_SLAB_MAX_TAKE_BYTES) return Buffer.allocUnsafe(sizeBytes);
  if (readSlabUsed + sizeBytes > READ_SLAB_BYTES) {
    readSlab = Buffer.allocUnsafe(READ_SLAB_BYTES);
    readSlabUsed = 0;
  }
  const buf = readSlab.subarray(readSlabUsed, readSlabUsed + sizeBytes);
  readSlabUsed += (sizeBytes + 7) & ~7;
  return buf;
}

/** readSync until `length` bytes are in; a short file is corruption (it was sized at open). */
function readFully(fd: number, buf: Buffer, at: number, length: number, position: number, filePath: string): void {
  let done = 0;
  for (let rounds = 0; done < length; rounds++) {
    const n = readSync(fd, buf, at + done, length - done, position + done);
    if (n <= 0 || rounds > 1_000_000) {
      throw new LayerCorruptionError(`layer file ${filePath}: unexpected end of file reading ${length} bytes at offset ${position} (got ${done})`, { path: filePath, offset: position, lengthBytes: length });
    }
    done += n;
  }
}
