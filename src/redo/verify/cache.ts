/**
 * The verifier's block-state cache: the current version of every block it knows, keyed by
 * relation, fork and block number, bounded to `maxPages` pages with least-recently-used eviction.
 *
 * Why a separate module: the verifier's record logic only needs "find, create, forget, drop every
 * block matching X"; how recency is kept and buffers are recycled is a separate concern. Recency is
 * the insertion order of a Map (a hit re-inserts the entry), so eviction takes the first key. One
 * evicted or forgotten buffer is kept as a spare, so a full cache does not allocate a page per new
 * block. `peek` reads without touching recency (side effects and tools use it). The eviction and
 * drop counters feed the verifier's report.
 */
import type { BlockRef, RelFileNode } from '../../postgres/xlogrecord.ts';

/** Size of every cached page. */
export const PAGE_BYTES = 8192;

export interface CachedPage {
  page: Buffer;
  spcNode: number;
  dbNode: number;
  relNode: number;
  forkNum: number;
  blkno: number;
}

export function blockKey(r: RelFileNode, forkNum: number, blkno: number): string {
  return `${r.spcNode}/${r.dbNode}/${r.relNode}/${forkNum}/${blkno}`;
}

export function sameRel(e: CachedPage, r: RelFileNode): boolean {
  return e.relNode === r.relNode && e.dbNode === r.dbNode && e.spcNode === r.spcNode;
}

export class BlockCache {
  readonly #maxPages: number;
  /** Insertion order = recency order (a hit moves the entry to the end). */
  readonly #pages = new Map<string, CachedPage>();
  #evicted = 0;
  #dropped = 0;
  /** One evicted buffer kept for reuse, so a full cache does not allocate per new block. */
  #spare: Buffer | null = null;

  /** `maxPages` must be a positive integer (the verifier validates its option). */
  constructor(maxPages: number) {
    this.#maxPages = maxPages;
  }

  get maxPages(): number {
    return this.#maxPages;
  }

  get size(): number {
    return this.#pages.size;
  }

  get evicted(): number {
    return this.#evicted;
  }

  /** Forgotten by dropWhere (truncate/drop/create records, or an unparsable such record). */
  get dropped(): number {
    return this.#dropped;
  }

  /** The entry, marked most recently used. */
  get(key: string): CachedPage | undefined {
    const e = this.#pages.get(key);
    if (e !== undefined) {
      this.#pages.delete(key);
      this.#pages.set(key, e);
    }
    return e;
  }

  /** The entry, recency unchanged. */
  peek(key: string): CachedPage | undefined {
    return this.#pages.get(key);
  }

  /** The cache entry for the block, created (content unspecified) when missing. */
  slot(key: string, b: BlockRef): CachedPage {
    const have = this.get(key);
    if (have !== undefined) return have;
    while (this.#pages.size >= this.#maxPages) {
      const oldest = this.#pages.keys().next();
      if (oldest.done === true) break;
      const victim = this.#pages.get(oldest.value)!;
      this.#pages.delete(oldest.value);
      this.#spare = victim.page;
      this.#evicted++;
    }
    const page = this.#spare ?? Buffer.allocUnsafe(PAGE_BYTES);
    this.#spare = null;
    const e: CachedPage = { page, spcNode: b.rnode.spcNode, dbNode: b.rnode.dbNode, relNode: b.rnode.relNode, forkNum: b.forkNum, blkno: b.blkno };
    this.#pages.set(key, e);
    return e;
  }

  forget(key: string): void {
    const e = this.#pages.get(key);
    if (e === undefined) return;
    this.#pages.delete(key);
    this.#spare ??= e.page;
  }

  /** Forgets every cached page for which `pred` holds. O(cached pages); only on DDL-ish records. */
  dropWhere(pred: (e: CachedPage) => boolean): void {
    for (const [key, e] of this.#pages) {
      if (pred(e)) {
        this.#pages.delete(key);
        this.#dropped++;
      }
    }
  }
}
