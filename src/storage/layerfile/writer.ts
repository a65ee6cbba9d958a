/**
 * Writes one delta or image layer file (format: ./format.ts, docs/formats-layerfile.md).
 *
 * Usage:
 *
 *     const w = await LayerFileWriter.create({ dir, kind, tenantId, timelineId, keyRange, lsnRange });
 *     for (...) { const p = w.put(key, lsn, encodedValue); if (p !== undefined) await p; }
 *     const info = await w.finish();          // or: await w.abort();
 *
 * `put` is synchronous in the common case: it validates the entry, appends a 40-byte index entry
 * to an in-memory index block and copies the value into a 1 MiB write buffer, and returns
 * `undefined`. Only when it has to wait for the disk does it return a Promise; the caller must
 * await that Promise before the next call, and must not modify `encodedValue` until it settles
 * (after an `undefined` return the value has been copied or written and may be reused at once).
 * This keeps the per-entry cost free of promise allocations and microtask hops while the memory
 * stays bounded.
 *
 * Buffering: two 1 MiB buffers. When the filling one is full it is handed to an asynchronous
 * positional write and the other one takes over, so formatting the next values overlaps with the
 * write system call. `put` waits only when both are busy. A value larger than a buffer is written
 * straight from the caller's Buffer (after the buffered bytes). Index entries stay in memory
 * (40 bytes per value, ~0.5 % of 8 KiB pages), already laid out as final index blocks.
 *
 * Crash safety: everything goes to `<final name>.<random>.___temp`; `finish` writes the index,
 * the fence and finally the summary at offset 0, fsyncs, re-opens the temp file with the reader to
 * check the summary and fence it wrote (a cheap pair assertion: no value is read), then renames
 * to the final name and fsyncs the directory. A crash leaves only a temp file (removed by
 * `removeTempFiles`), never a final-named file without a valid summary. Any error in put/finish
 * poisons the writer; the caller then calls `abort`, which removes the temp file.
 *
 * Invariants enforced by `put` (InvalidInputError for bad arguments, AssertionFailedError for
 * order violations, which are caller bugs): (key, lsn) strictly increasing; key in keyRange;
 * lsn in lsnRange, and lsn == lsnRange.start for images; 1 ≤ value length ≤ 64 MiB.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Lsn } from '../../postgres/lsn.ts';
import { crc32c } from '../../postgres/crc32c.ts';
import { encodedValueWillInit } from '../value.ts';
import { KEY_SIZE_BYTES, keyToHex, type Key, type KeyRange } from '../key.ts';
import type { LayerDesc, LsnRange } from '../layer.ts';
import { tempPathFor, fsyncDir } from '../../util/durable.ts';
import { InvalidInputError, AssertionFailedError, assert } from '../../util/errors.ts';
import {
  ENTRIES_PER_INDEX_BLOCK, INDEX_BLOCK_SIZE_BYTES, INDEX_ENTRY_BYTES, SORT_KEY_BYTES, FENCE_ENTRY_BYTES, SUMMARY_SIZE_BYTES,
  MAX_VALUE_SIZE_BYTES, MAX_INDEX_BLOCKS, MAX_VALUES_REGION_BYTES, LAYER_FORMAT_VERSION,
  checkId, checkRanges, layerFileName, layoutFor, encodeSummary, writeIndexEntry, sealIndexBlock, entryAt, describeKeyForError, lsnText,
  type LayerFileKindName, type LayerSummary,
} from './format.ts';
import { FdCache } from './fdcache.ts';
import { LayerFileReader } from './reader.ts';
import { BlockCache } from './blockcache.ts';

export const WRITE_BUFFER_SIZE_BYTES = 1024 * 1024;

export interface LayerFileWriterOptions {
  dir: string;
  kind: LayerFileKindName;
  tenantId: string;
  timelineId: string;
  keyRange: KeyRange;
  lsnRange: LsnRange;
  /** Size of each of the two write buffers (tests use small ones). Default 1 MiB. */
  writeBufferSizeBytes?: number;
}

export interface LayerFileInfo {
  fileName: string;
  path: string;
  sizeBytes: number;
  desc: LayerDesc;
  entryCount: number;
}

type State = 'open' | 'finishing' | 'finished' | 'aborted' | 'failed';

export class LayerFileWriter {
  readonly desc: LayerDesc;
  readonly fileName: string;
  readonly finalPath: string;
  readonly tempPath: string;
  private readonly dir: string;
  private fh: FileHandle | null;
  private state: State = 'open';
  private failure: unknown = null;
  private blocked = false;
  /** The promise `put` returned last, while it is unsettled (abort waits for it). */
  private pendingPut: Promise<void> | null = null;

  // Write buffers: `buf` fills; `spare` is free unless `inflight` is still writing it.
  private buf: Buffer;
  private spare: Buffer;
  private bufUsed = 0;
  /** File position of buf[0]. */
  private bufPos = SUMMARY_SIZE_BYTES;
  private inflight: Promise<void> | null = null;
  private inflightDone = true;
  /** Bytes of values accepted so far (buffered or written). */
  private valuesLengthBytes = 0;

  // Index: full blocks plus the one being filled.
  private readonly blocks: Buffer[] = [];
  private block: Buffer;
  private blockEntries = 0;
  private entryCount = 0;
  private keyCount = 0;
  private lastKey: Key | null = null;
  private lastLsn: Lsn = 0n;
  private readonly isImage: boolean;

  private constructor(opts: LayerFileWriterOptions, fh: FileHandle, desc: LayerDesc, fileName: string, finalPath: string, tempPath: string, bufSize: number) {
    this.dir = opts.dir;
    this.fh = fh;
    this.desc = desc;
    this.fileName = fileName;
    this.finalPath = finalPath;
    this.tempPath = tempPath;
    this.isImage = desc.kind === 'image';
    this.buf = Buffer.allocUnsafeSlow(bufSize);
    this.spare = Buffer.allocUnsafeSlow(bufSize);
    this.block = Buffer.alloc(INDEX_BLOCK_SIZE_BYTES);
  }

  static async create(opts: LayerFileWriterOptions): Promise<LayerFileWriter> {
    checkRanges(opts.kind, opts.keyRange, opts.lsnRange);
    const tenantId = checkId(opts.tenantId, 'tenant');
    const timelineId = checkId(opts.timelineId, 'timeline');
    const bufSize = opts.writeBufferSizeBytes ?? WRITE_BUFFER_SIZE_BYTES;
    if (!Number.isSafeInteger(bufSize) || bufSize < 4096 || bufSize > 64 * 1024 * 1024) {
      throw new InvalidInputError(`write buffer size must be 4 KiB .. 64 MiB, got ${bufSize}`);
    }
    const desc: LayerDesc = {
      kind: opts.kind,
      tenantId,
      timelineId,
      keyRange: { start: opts.keyRange.start, end: opts.keyRange.end },
      lsnRange: { start: opts.lsnRange.start, end: opts.lsnRange.end },
    };
    const fileName = layerFileName(desc);
    const finalPath = path.join(opts.dir, fileName);
    const tempPath = tempPathFor(finalPath);
    const fh = await open(tempPath, 'wx', 0o644);
    return new LayerFileWriter(opts, fh, desc, fileName, finalPath, tempPath, bufSize);
  }

  get entries(): number {
    return this.entryCount;
  }

  /** Bytes of value data accepted so far. */
  get valueBytes(): number {
    return this.valuesLengthBytes;
  }

  /**
   * Adds one entry. Returns undefined when done synchronously, or a Promise the caller must await
   * before calling again (see the module comment).
   */
  put(key: Key, lsn: Lsn, encodedValue: Buffer): void | Promise<void> {
    if (this.state !== 'open' || this.blocked) this.checkUsable('put');
    // --- validate
    const lastKey = this.lastKey;
    const sameKey = key === lastKey;
    if (lastKey !== null && !(key > lastKey || (sameKey && lsn > this.lastLsn))) {
      throw new AssertionFailedError(
        `layer entries must be strictly increasing by (key, lsn): ${describeKeyForError(key)} at ${typeof lsn === 'bigint' ? lsnText(lsn) : String(lsn)} after ${describeKeyForError(lastKey)} at ${lsnText(this.lastLsn)}`,
        { path: this.tempPath, key: keyHexSafe(key), lsn, lastKey: keyToHex(lastKey), lastLsn: this.lastLsn });
    }
    if (!sameKey) {
      if (typeof key !== 'string' || key.length !== KEY_SIZE_BYTES) throw new InvalidInputError('layer entry key must be an 18-byte key', { path: this.tempPath });
      if (!(key >= this.desc.keyRange.start && key < this.desc.keyRange.end)) {
        throw new InvalidInputError(`${describeKeyForError(key)} is outside the layer's key range ${keyToHex(this.desc.keyRange.start)}..${keyToHex(this.desc.keyRange.end)}`, { path: this.tempPath, key: keyToHex(key) });
      }
    }
    if (typeof lsn !== 'bigint' || lsn < this.desc.lsnRange.start || lsn >= this.desc.lsnRange.end) {
      throw new InvalidInputError(`LSN ${typeof lsn === 'bigint' ? lsnText(lsn) : String(lsn)} of ${describeKeyForError(key)} is outside the layer's LSN range [${lsnText(this.desc.lsnRange.start)}, ${lsnText(this.desc.lsnRange.end)})`, { path: this.tempPath, key: keyToHex(key), lsn: String(lsn) });
    }
    // (An image's range is [L, L+1), so the check above already forces lsn == L.)
    const length = encodedValue.length;
    if (length === 0 || length > MAX_VALUE_SIZE_BYTES) {
      throw new InvalidInputError(`value of ${describeKeyForError(key)} at ${lsnText(lsn)} is ${length} bytes (allowed 1 .. ${MAX_VALUE_SIZE_BYTES})`, { path: this.tempPath, key: keyToHex(key), lsn, lengthBytes: length });
    }
    if (this.entryCount >= MAX_INDEX_BLOCKS * ENTRIES_PER_INDEX_BLOCK || this.valuesLengthBytes + length > MAX_VALUES_REGION_BYTES) {
      throw new InvalidInputError(`layer file ${this.tempPath} is full (${this.entryCount} entries, ${this.valuesLengthBytes} value bytes)`, { path: this.tempPath });
    }

    // --- index entry
    const valueOffset = SUMMARY_SIZE_BYTES + this.valuesLengthBytes;
    writeIndexEntry(this.block, entryAt(this.blockEntries), key, lsn, valueOffset, length, encodedValueWillInit(encodedValue), crc32c(encodedValue));
    if (++this.blockEntries === ENTRIES_PER_INDEX_BLOCK) this.sealBlock();
    this.entryCount++;
    if (!sameKey) this.keyCount++;
    this.lastKey = key;
    this.lastLsn = lsn;
    this.valuesLengthBytes += length;

    // --- value bytes
    if (length <= this.buf.length - this.bufUsed) {
      encodedValue.copy(this.buf, this.bufUsed);
      this.bufUsed += length;
      return undefined;
    }
    if (length <= this.buf.length && this.inflightDone) {
      // Hand the full buffer to the disk and continue in the spare one, without waiting.
      this.startFlush();
      encodedValue.copy(this.buf, 0);
      this.bufUsed = length;
      return undefined;
    }
    const p = this.slowAppend(encodedValue);
    this.pendingPut = p;
    return p;
  }

  /** Appends a value that needs the disk first: both buffers busy, or larger than a buffer. */
  private async slowAppend(value: Buffer): Promise<void> {
    this.blocked = true;
    try {
      await this.waitInflight();
      if (value.length <= this.buf.length) {
        this.startFlush();
        value.copy(this.buf, 0);
        this.bufUsed = value.length;
      } else {
        this.startFlush();
        await this.waitInflight();
        await this.writeAll(value, 0, value.length, this.bufPos);
        this.bufPos += value.length;
      }
    } catch (err) {
      this.fail(err);
      throw err;
    } finally {
      this.blocked = false;
      this.pendingPut = null;
    }
  }

  /** Starts writing `buf[0, bufUsed)` and swaps buffers. Requires no write in flight. */
  private startFlush(): void {
    assert(this.inflightDone, 'layer writer: flush started while another is in flight');
    const full = this.buf;
    const used = this.bufUsed;
    const pos = this.bufPos;
    this.buf = this.spare;
    this.spare = full;
    this.bufUsed = 0;
    this.bufPos = pos + used;
    if (used === 0) return;
    this.inflightDone = false;
    this.inflight = this.writeAll(full, 0, used, pos).then(
      () => { this.inflightDone = true; },
      (err: unknown) => { this.inflightDone = true; this.fail(err); throw err; },
    );
    // The rejection is observed by waitInflight; keep Node from reporting it as unhandled meanwhile.
    this.inflight.catch(() => undefined);
  }

  private async waitInflight(): Promise<void> {
    const p = this.inflight;
    this.inflight = null;
    if (p !== null) await p;
    if (this.failure !== null) throw this.failure;
  }

  private async writeAll(data: Buffer, start: number, end: number, position: number): Promise<void> {
    const fh = this.fh;
    assert(fh !== null, 'layer writer: file is closed');
    let at = start;
    for (let rounds = 0; at < end; rounds++) {
      assert(rounds < 1_000_000, 'layer writer: write made no progress', { path: this.tempPath });
      const { bytesWritten } = await fh.write(data, at, end - at, position + (at - start));
      if (bytesWritten <= 0) throw new AssertionFailedError(`write to ${this.tempPath} wrote nothing`, { path: this.tempPath });
      at += bytesWritten;
    }
  }

  private sealBlock(): void {
    sealIndexBlock(this.block, this.blockEntries, this.blocks.length);
    this.blocks.push(this.block);
    this.block = Buffer.alloc(INDEX_BLOCK_SIZE_BYTES);
    this.blockEntries = 0;
  }

  private fail(err: unknown): void {
    if (this.state === 'open' || this.state === 'finishing') this.state = 'failed';
    if (this.failure === null) this.failure = err;
  }

  private checkUsable(op: string): void {
    if (this.blocked) throw new AssertionFailedError(`layer writer: ${op} called before the previous put's promise settled`, { path: this.tempPath });
    if (this.state === 'failed') {
      throw new AssertionFailedError(`layer writer for ${this.tempPath} failed earlier (${(this.failure as Error)?.message ?? String(this.failure)}); abort it`, { path: this.tempPath });
    }
    if (this.state !== 'open') throw new AssertionFailedError(`layer writer: ${op} after the writer was ${this.state}`, { path: this.tempPath });
  }

  /** Writes index, fence and summary, makes the file durable under its final name. */
  async finish(): Promise<LayerFileInfo> {
    this.checkUsable('finish');
    this.state = 'finishing';
    try {
      await this.waitInflight();
      this.startFlush();
      await this.waitInflight();
      if (this.blockEntries > 0) this.sealBlock();

      const layout = layoutFor(this.valuesLengthBytes, this.entryCount);
      assert(layout.indexBlockCount === this.blocks.length, 'layer writer: index block count disagrees with the layout', { blocks: this.blocks.length, expected: layout.indexBlockCount });
      assert(this.bufPos === layout.valuesOffset + layout.valuesLengthBytes, 'layer writer: value bytes written disagree with the entries', { written: this.bufPos, expected: layout.valuesOffset + layout.valuesLengthBytes });
      const fence = Buffer.alloc(layout.fenceLengthBytes);
      for (let i = 0; i < this.blocks.length; i++) this.blocks[i]!.copy(fence, i * FENCE_ENTRY_BYTES, entryAt(0), entryAt(0) + SORT_KEY_BYTES);
      const summary: LayerSummary = {
        formatVersion: LAYER_FORMAT_VERSION,
        kind: this.desc.kind as LayerFileKindName,
        tenantId: this.desc.tenantId,
        timelineId: this.desc.timelineId,
        keyRange: this.desc.keyRange,
        lsnRange: this.desc.lsnRange,
        entryCount: this.entryCount,
        keyCount: this.keyCount,
        fenceCrc32c: crc32c(fence),
        ...layout,
      };
      const fh = this.fh!;
      // Padding between the values and the index is written explicitly (no sparse holes).
      const padBytes = layout.indexOffset - (layout.valuesOffset + layout.valuesLengthBytes);
      const tail: Buffer[] = [Buffer.alloc(padBytes), ...this.blocks, fence];
      let position = layout.valuesOffset + layout.valuesLengthBytes;
      for (let i = 0; i < tail.length; i += 256) {
        const group = tail.slice(i, i + 256);
        const groupBytes = group.reduce((n, b) => n + b.length, 0);
        const { bytesWritten } = await fh.writev(group, position);
        if (bytesWritten !== groupBytes) {
          // Short vectored write (rare): fall back to writing the group piece by piece.
          let at = position;
          for (const b of group) { await this.writeAll(b, 0, b.length, at); at += b.length; }
        }
        position += groupBytes;
      }
      assert(position === layout.fileSizeBytes, 'layer writer: file size disagrees with the layout', { position, expected: layout.fileSizeBytes });
      await this.writeAll(encodeSummary(summary), 0, SUMMARY_SIZE_BYTES, 0);
      await fh.sync();
      await fh.close();
      this.fh = null;

      this.verifyWritten(summary, fence);

      await rename(this.tempPath, this.finalPath);
      await fsyncDir(this.dir);
      this.state = 'finished';
      this.blocks.length = 0;
      return { fileName: this.fileName, path: this.finalPath, sizeBytes: layout.fileSizeBytes, desc: this.desc, entryCount: this.entryCount };
    } catch (err) {
      this.fail(err);
      throw err;
    }
  }

  /** Pair assertion: the reader sees exactly the summary and fence we meant to write. */
  private verifyWritten(summary: LayerSummary, fence: Buffer): void {
    const reader = LayerFileReader.open(this.tempPath, { blockCache: verifyCache(), fdCache: new FdCache({ maxOpenFiles: 1 }), expect: { tenantId: this.desc.tenantId, timelineId: this.desc.timelineId } });
    try {
      const got = reader.summary;
      for (const k of Object.keys(summary) as (keyof LayerSummary)[]) {
        const a = summary[k];
        const b = got[k];
        const same = typeof a === 'object' ? JSON.stringify(a, bigintJson) === JSON.stringify(b, bigintJson) : a === b;
        assert(same, `layer writer: re-read summary field ${k} differs from what was written`, { path: this.tempPath, field: k });
      }
      assert(reader.fenceBytes().equals(fence), 'layer writer: re-read fence differs from what was written', { path: this.tempPath });
    } finally {
      reader.close();
    }
  }

  /** Stops writing and removes the temp file. Safe to call more than once and after failures. */
  async abort(): Promise<void> {
    if (this.state === 'finished' || this.state === 'aborted') return;
    this.state = 'aborted';
    if (this.pendingPut !== null) await this.pendingPut.catch(() => undefined);
    const p = this.inflight;
    this.inflight = null;
    if (p !== null) await p.catch(() => undefined);
    if (this.fh !== null) {
      const fh = this.fh;
      this.fh = null;
      await fh.close().catch(() => undefined);
    }
    await unlink(this.tempPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    this.blocks.length = 0;
  }
}

let sharedVerifyCache: BlockCache | null = null;
/** The pair assertion reads no index block; a one-block cache satisfies the reader's signature. */
function verifyCache(): BlockCache {
  sharedVerifyCache ??= new BlockCache({ maxBytes: INDEX_BLOCK_SIZE_BYTES });
  return sharedVerifyCache;
}

function bigintJson(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

function keyHexSafe(key: unknown): string {
  return typeof key === 'string' && key.length === KEY_SIZE_BYTES ? keyToHex(key as Key) : String(key);
}

// Keep the entry size and block capacity in step with the format's documentation.
assert(INDEX_ENTRY_BYTES * ENTRIES_PER_INDEX_BLOCK <= INDEX_BLOCK_SIZE_BYTES - 16, 'index entries overflow a block');
