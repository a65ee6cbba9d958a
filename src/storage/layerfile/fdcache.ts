/**
 * A bound on open layer files.
 *
 * A timeline accumulates layer files (one L0 per checkpoint_distance of WAL, plus images) and a
 * pageserver holds many timelines, so keeping every file open would run into the process's
 * file-descriptor limit (often 1024). Readers keep their index fence in memory and open the file
 * itself on demand; this cache keeps at most `maxOpenFiles` of them open, closing the least
 * recently used when another must open (Neon's `max_file_descriptors` plays the same role).
 *
 * Reads are synchronous, so a descriptor is never closed while a read on it is in flight: the
 * reader asks for its descriptor right before each positioned read.
 */
import { InvalidInputError } from '../../util/errors.ts';

/** A reader whose descriptor the cache may close. */
export interface FdHolder {
  /** Close the descriptor now; the holder reopens it on its next read. */
  releaseFd(): void;
  /** Recency stamp, written by the cache (a field write per read, no map churn). */
  fdLastUse: number;
}

export interface FdCacheStats {
  open: number;
  opens: number;
  evictions: number;
}

export class FdCache {
  readonly maxOpenFiles: number;
  /** Holders with an open descriptor; recency is their `fdLastUse` stamp. */
  private readonly open = new Set<FdHolder>();
  private clock = 0;
  private opens = 0;
  private evictions = 0;

  constructor(opts: { maxOpenFiles: number }) {
    if (!Number.isInteger(opts.maxOpenFiles) || opts.maxOpenFiles < 1) {
      throw new InvalidInputError(`maxOpenFiles must be a positive integer, got ${opts.maxOpenFiles}`);
    }
    this.maxOpenFiles = opts.maxOpenFiles;
  }

  /** Records that `holder` just opened its file, closing the least recently used beyond the bound. */
  opened(holder: FdHolder): void {
    this.opens++;
    this.open.delete(holder);
    // Eviction scans the open set for the oldest stamp: O(open files), but only when a file must
    // open beyond the bound, while every read only writes a stamp.
    while (this.open.size >= this.maxOpenFiles) {
      let victim: FdHolder | null = null;
      for (const h of this.open) if (victim === null || h.fdLastUse < victim.fdLastUse) victim = h;
      this.open.delete(victim!);
      this.evictions++;
      victim!.releaseFd();
    }
    holder.fdLastUse = ++this.clock;
    this.open.add(holder);
  }

  /** Marks `holder` as just used. */
  touch(holder: FdHolder): void {
    holder.fdLastUse = ++this.clock;
  }

  /** `holder` closed its file for good. */
  closed(holder: FdHolder): void {
    this.open.delete(holder);
  }

  stats(): FdCacheStats {
    return { open: this.open.size, opens: this.opens, evictions: this.evictions };
  }
}
