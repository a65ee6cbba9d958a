/**
 * The materialized page cache: pages the read path has already reconstructed, so a hot page is not
 * rebuilt from its image and records on every GetPage.
 *
 * Entries are keyed by (timeline, key) and hold a few versions, each under its version LSN — the
 * LSN of the newest record applied to build it (not the request LSN). A version at LSN V is the
 * key's content for every request LSN from V up to (not including) the key's next record, so
 * `get(…, lsn)` returns the newest version at or below `lsn` and the read path then only looks for
 * records in (V, lsn]: if there are none the cached page is the answer, otherwise it is the base
 * to replay them on. Versions never change once written (a version LSN names one content for
 * ever), which is why a cached page needs no invalidation except when its timeline goes away.
 *
 * Design:
 * - Bounded by bytes: the sum of image sizes plus a fixed per-version overhead estimate stays at
 *   or below `maxBytes`. Least recently used versions (by get hit or put) are evicted first. The
 *   recency list is an intrusive doubly-linked list, so get/put/evict are O(1) plus a scan of the
 *   key's few versions.
 * - Bounded per key: at most `maxVersionsPerKey` versions (default 8); beyond that the version
 *   with the oldest LSN goes, as reads mostly ask for recent LSNs.
 * - Images are stored and returned by reference, not copied: callers must treat them as
 *   immutable (redo returns a fresh buffer and never writes its base, so this holds on the read
 *   path).
 * - Timeline ids are assumed unique across tenants (128-bit random ids), so tenant is not part of
 *   the cache key.
 */
import type { Lsn } from '../postgres/lsn.ts';
import { InvalidInputError } from '../util/errors.ts';
import type { Key } from './key.ts';

/** Estimated bookkeeping bytes per cached version (node object, array slot, map share). */
export const PAGE_CACHE_VERSION_OVERHEAD_BYTES = 128;
export const DEFAULT_MAX_VERSIONS_PER_KEY = 8;

export interface MaterializedPageCacheOptions {
  maxBytes: number;
  maxVersionsPerKey?: number;
}

export interface CachedPage {
  readonly lsn: Lsn;
  readonly image: Buffer;
}

interface VersionNode extends CachedPage {
  readonly timelineId: string;
  readonly key: Key;
  readonly chargeBytes: number;
  /** Towards the most recently used end. */
  newer: VersionNode | null;
  /** Towards the least recently used end. */
  older: VersionNode | null;
}

export class MaterializedPageCache {
  readonly maxBytes: number;
  readonly maxVersionsPerKey: number;
  /** timeline → key → versions sorted by ascending LSN. */
  readonly #timelines = new Map<string, Map<Key, VersionNode[]>>();
  #mostRecent: VersionNode | null = null;
  #leastRecent: VersionNode | null = null;
  #sizeBytes = 0;
  #versionCount = 0;
  #hits = 0;
  #misses = 0;
  #evictions = 0;

  constructor(opts: MaterializedPageCacheOptions) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 0) {
      throw new InvalidInputError(`page cache maxBytes must be a non-negative integer, got ${opts.maxBytes}`);
    }
    const perKey = opts.maxVersionsPerKey ?? DEFAULT_MAX_VERSIONS_PER_KEY;
    if (!Number.isSafeInteger(perKey) || perKey < 1) {
      throw new InvalidInputError(`page cache maxVersionsPerKey must be a positive integer, got ${perKey}`);
    }
    this.maxBytes = opts.maxBytes;
    this.maxVersionsPerKey = perKey;
  }

  get hits(): number { return this.#hits; }
  get misses(): number { return this.#misses; }
  get evictions(): number { return this.#evictions; }
  /** Image bytes plus the per-version overhead estimate. */
  get sizeBytes(): number { return this.#sizeBytes; }
  get versionCount(): number { return this.#versionCount; }

  /** The newest cached version of `key` with version LSN ≤ `lsn`, or null. The image must not be modified. */
  get(timelineId: string, key: Key, lsn: Lsn): CachedPage | null {
    const versions = this.#timelines.get(timelineId)?.get(key);
    if (versions !== undefined) {
      for (let i = versions.length - 1; i >= 0; i--) {
        const v = versions[i]!;
        if (v.lsn <= lsn) {
          this.#touch(v);
          this.#hits++;
          return v;
        }
      }
    }
    this.#misses++;
    return null;
  }

  /**
   * Caches `image` as the content of `key` at version LSN `lsn`. The cache keeps the buffer (no
   * copy): the caller must not modify it afterwards. A version already cached at that LSN is kept
   * as is (it has the same content); an image larger than the whole cache is not cached.
   * Returns true when the version was added.
   */
  put(timelineId: string, key: Key, lsn: Lsn, image: Buffer): boolean {
    const chargeBytes = image.length + PAGE_CACHE_VERSION_OVERHEAD_BYTES;
    if (chargeBytes > this.maxBytes) return false;
    let keys = this.#timelines.get(timelineId);
    if (keys === undefined) {
      keys = new Map();
      this.#timelines.set(timelineId, keys);
    }
    let versions = keys.get(key);
    if (versions === undefined) {
      versions = [];
      keys.set(key, versions);
    }
    // Insertion point in the ascending list (short: at most maxVersionsPerKey entries).
    let at = versions.length;
    while (at > 0 && versions[at - 1]!.lsn >= lsn) at--;
    const same = versions[at];
    if (same !== undefined && same.lsn === lsn) {
      this.#touch(same);
      return false;
    }
    const node: VersionNode = { timelineId, key, lsn, image, chargeBytes, newer: null, older: null };
    versions.splice(at, 0, node);
    this.#linkMostRecent(node);
    this.#sizeBytes += chargeBytes;
    this.#versionCount++;
    if (versions.length > this.maxVersionsPerKey) this.#evict(versions[0]!);
    while (this.#sizeBytes > this.maxBytes && this.#leastRecent !== null) this.#evict(this.#leastRecent);
    return versions.includes(node);
  }

  /** Forgets every version of one timeline (deleted or detached). Returns how many were dropped. */
  dropTimeline(timelineId: string): number {
    const keys = this.#timelines.get(timelineId);
    if (keys === undefined) return 0;
    let dropped = 0;
    for (const versions of keys.values()) {
      for (const v of versions) {
        this.#unlink(v);
        this.#sizeBytes -= v.chargeBytes;
        dropped++;
      }
    }
    this.#versionCount -= dropped;
    this.#timelines.delete(timelineId);
    return dropped;
  }

  /** Empties the cache (counters are kept). */
  clear(): void {
    this.#timelines.clear();
    this.#mostRecent = null;
    this.#leastRecent = null;
    this.#sizeBytes = 0;
    this.#versionCount = 0;
  }

  #evict(node: VersionNode): void {
    const keys = this.#timelines.get(node.timelineId);
    const versions = keys?.get(node.key);
    if (keys === undefined || versions === undefined) return;
    const i = versions.indexOf(node);
    if (i < 0) return;
    versions.splice(i, 1);
    if (versions.length === 0) {
      keys.delete(node.key);
      if (keys.size === 0) this.#timelines.delete(node.timelineId);
    }
    this.#unlink(node);
    this.#sizeBytes -= node.chargeBytes;
    this.#versionCount--;
    this.#evictions++;
  }

  #touch(node: VersionNode): void {
    if (this.#mostRecent === node) return;
    this.#unlink(node);
    this.#linkMostRecent(node);
  }

  #linkMostRecent(node: VersionNode): void {
    node.newer = null;
    node.older = this.#mostRecent;
    if (this.#mostRecent !== null) this.#mostRecent.newer = node;
    this.#mostRecent = node;
    if (this.#leastRecent === null) this.#leastRecent = node;
  }

  #unlink(node: VersionNode): void {
    if (node.newer !== null) node.newer.older = node.older;
    else if (this.#mostRecent === node) this.#mostRecent = node.older;
    if (node.older !== null) node.older.newer = node.newer;
    else if (this.#leastRecent === node) this.#leastRecent = node.newer;
    node.newer = null;
    node.older = null;
  }
}
