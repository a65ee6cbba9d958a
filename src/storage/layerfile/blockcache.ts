/**
 * A bounded LRU of layer-file index blocks, shared by all open layer readers.
 *
 * Why: a lookup in a layer file reads one 8 KiB index block (found through the in-memory fence)
 * before it reads the value. Hot index blocks are few compared with the data they index (one
 * block covers 204 values, ~1.6 MiB of 8 KiB pages), so caching them makes the common read one
 * `readSync` of the value itself.
 *
 * Invariants:
 * - Only blocks whose CRC was verified are inserted; a cached block is trusted as memory.
 * - Entries are keyed by (file id, block number). File ids come from `allocateFileId()` — one per
 *   opened reader, never reused in the process — not from the path: a path can be deleted and
 *   re-created with other contents (re-download, rewrite under the same name), and a path-keyed
 *   cache would then serve stale blocks. Readers call `dropFile` on close.
 * - The pair is packed into one safe integer (id · 2^22 + block), so a lookup allocates nothing.
 * - Size never exceeds `maxBytes` (rounded down to whole blocks, at least one block).
 * - LRU order is the Map's insertion order; a hit re-inserts the entry (skipped when it already is
 *   the newest). Evicted buffers are kept as spares and handed out by `takeBuffer` for the next
 *   miss, so a steady-state miss allocates nothing. Consequence for callers: a block Buffer
 *   obtained from the cache is valid only until the next `takeBuffer`/`insert` on the same cache —
 *   use it and drop it (readers never hold one across another block fetch, and never across a
 *   generator `yield`).
 */
import { InvalidInputError, AssertionFailedError, assert } from '../../util/errors.ts';
import { INDEX_BLOCK_SIZE_BYTES, MAX_INDEX_BLOCKS } from './format.ts';

const FILE_ID_LIMIT = 2 ** 31;
let nextFileId = 1;

/** A fresh file identity for one opened layer file. */
export function allocateFileId(): number {
  if (nextFileId >= FILE_ID_LIMIT) throw new AssertionFailedError('layer file ids exhausted', { nextFileId });
  return nextFileId++;
}

const MAX_SPARES = 4;

export interface BlockCacheStats {
  hits: number;
  misses: number;
  evictions: number;
  blocks: number;
  sizeBytes: number;
  maxBytes: number;
}

export class BlockCache {
  readonly maxBytes: number;
  readonly blockSizeBytes = INDEX_BLOCK_SIZE_BYTES;
  readonly maxBlocks: number;
  hits = 0;
  misses = 0;
  evictions = 0;
  private readonly blocks = new Map<number, Buffer>();
  private readonly perFile = new Map<number, number>();
  private readonly spares: Buffer[] = [];
  private newest = -1;

  constructor(opts: { maxBytes: number }) {
    const { maxBytes } = opts;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < INDEX_BLOCK_SIZE_BYTES) {
      throw new InvalidInputError(`block cache size must be at least ${INDEX_BLOCK_SIZE_BYTES} bytes, got ${maxBytes}`, { maxBytes });
    }
    this.maxBytes = maxBytes;
    this.maxBlocks = Math.floor(maxBytes / INDEX_BLOCK_SIZE_BYTES);
  }

  private static slot(fileId: number, blockNumber: number): number {
    return fileId * MAX_INDEX_BLOCKS + blockNumber;
  }

  /** The cached block, or undefined (counted as a miss). Marks it most recently used. */
  get(fileId: number, blockNumber: number): Buffer | undefined {
    const slot = BlockCache.slot(fileId, blockNumber);
    const buf = this.blocks.get(slot);
    if (buf === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    if (slot !== this.newest) {
      this.blocks.delete(slot);
      this.blocks.set(slot, buf);
      this.newest = slot;
    }
    return buf;
  }

  /** A block-sized buffer to read a missing block into: a recycled one when available. */
  takeBuffer(): Buffer {
    return this.spares.pop() ?? Buffer.allocUnsafeSlow(INDEX_BLOCK_SIZE_BYTES);
  }

  /** Gives back a buffer from `takeBuffer` that was not inserted (e.g. it failed its CRC). */
  returnBuffer(buf: Buffer): void {
    if (buf.length === INDEX_BLOCK_SIZE_BYTES && this.spares.length < MAX_SPARES) this.spares.push(buf);
  }

  /** Inserts a verified block as the most recently used, evicting the least recently used ones. */
  insert(fileId: number, blockNumber: number, buf: Buffer): void {
    assert(buf.length === INDEX_BLOCK_SIZE_BYTES, 'block cache holds whole index blocks only', { length: buf.length });
    assert(Number.isInteger(blockNumber) && blockNumber >= 0 && blockNumber < MAX_INDEX_BLOCKS, 'block number out of range', { blockNumber });
    const slot = BlockCache.slot(fileId, blockNumber);
    const old = this.blocks.get(slot);
    if (old !== undefined) {
      this.blocks.delete(slot);
      if (old !== buf) this.returnBuffer(old);
    } else {
      this.perFile.set(fileId, (this.perFile.get(fileId) ?? 0) + 1);
    }
    while (this.blocks.size >= this.maxBlocks) this.evictOldest();
    this.blocks.set(slot, buf);
    this.newest = slot;
  }

  private evictOldest(): void {
    const first = this.blocks.entries().next();
    if (first.done === true) return;
    const [slot, buf] = first.value;
    this.blocks.delete(slot);
    this.evictions++;
    this.decFile(Math.floor(slot / MAX_INDEX_BLOCKS));
    this.returnBuffer(buf);
  }

  private decFile(fileId: number): void {
    const n = (this.perFile.get(fileId) ?? 0) - 1;
    if (n <= 0) this.perFile.delete(fileId);
    else this.perFile.set(fileId, n);
  }

  /** Forgets every block of one file (its reader was closed). */
  dropFile(fileId: number): void {
    if (!this.perFile.has(fileId)) return;
    for (const slot of [...this.blocks.keys()]) {
      if (Math.floor(slot / MAX_INDEX_BLOCKS) === fileId) {
        const buf = this.blocks.get(slot)!;
        this.blocks.delete(slot);
        this.returnBuffer(buf);
      }
    }
    this.perFile.delete(fileId);
    this.newest = -1;
  }

  /** Number of cached blocks of one file. */
  blocksOf(fileId: number): number {
    return this.perFile.get(fileId) ?? 0;
  }

  get sizeBytes(): number {
    return this.blocks.size * INDEX_BLOCK_SIZE_BYTES;
  }

  stats(): BlockCacheStats {
    return { hits: this.hits, misses: this.misses, evictions: this.evictions, blocks: this.blocks.size, sizeBytes: this.sizeBytes, maxBytes: this.maxBytes };
  }
}
