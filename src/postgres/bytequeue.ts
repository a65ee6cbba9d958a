/**
 * The byte queue under the streaming WAL decoder, and the slab that holds reassembled records.
 *
 * ByteQueue holds the chunks pushed into the decoder, each with the stream offset of its first
 * byte. Offsets are JS numbers relative to the decoder's segment-aligned base. Reading a range
 * returns a view when the range lies in one chunk (no copy) and copies otherwise. Chunks are never
 * written to: records handed out may be views into them, so a chunk's memory lives as long as any
 * record that points into it — a consumer that keeps records for long should copy them, since a
 * small view pins its whole chunk.
 *
 * RecordSlab hands out memory for records that had to be reassembled (they crossed a page header
 * or a chunk boundary), carved from 4 MiB slabs: one allocation per slab instead of one per
 * record. A slab's bytes are handed out once and never rewritten.
 */

export class ByteQueue {
  /** Chunks not yet wholly consumed, oldest first; `starts[i]` is the offset of `chunks[i][0]`. Read-only for callers. */
  readonly chunks: Uint8Array[] = [];
  readonly starts: number[] = [];
  /** Offset just past the last byte received. */
  end: number;

  constructor(startOffset: number) {
    this.end = startOffset;
  }

  /** Appends a chunk; bytes before `keepFrom` (already skipped by the reader) are not kept. */
  append(buf: Uint8Array, keepFrom: number): void {
    const start = this.end;
    this.end += buf.byteLength;
    if (this.end <= keepFrom) return;
    this.chunks.push(buf);
    this.starts.push(start);
  }

  /** Drops the chunks that lie wholly before `off`. */
  dropBefore(off: number): void {
    let drop = 0;
    while (drop < this.chunks.length && this.starts[drop]! + this.chunks[drop]!.byteLength <= off) drop++;
    if (drop > 0) {
      this.chunks.splice(0, drop);
      this.starts.splice(0, drop);
    }
  }

  clear(): void {
    this.chunks.length = 0;
    this.starts.length = 0;
  }

  /** Index of the chunk holding `off`, or -1 when it is not buffered. */
  find(off: number): number {
    const starts = this.starts;
    for (let i = 0; i < starts.length; i++) {
      if (off < starts[i]! + this.chunks[i]!.length) return off >= starts[i]! ? i : -1;
    }
    return -1;
  }

  private index(off: number): number {
    const i = this.find(off);
    if (i < 0) throw new RangeError(`WAL decoder: offset ${off} is not buffered`);
    return i;
  }

  /** [off, off+len) as a view when it lies in one chunk, else copied into `into` (when big enough) or a new array. */
  view(off: number, len: number, into: Uint8Array | null): Uint8Array {
    const i = this.index(off);
    const c = this.chunks[i]!;
    const rel = off - this.starts[i]!;
    if (rel + len <= c.byteLength) return c.subarray(rel, rel + len);
    const out = into !== null && into.byteLength >= len ? into : new Uint8Array(len);
    this.copyOut(off, len, out, 0);
    return out.subarray(0, len);
  }

  /** Copies [off, off+len) into `out` at `outOff`; the range must be buffered. */
  copyOut(off: number, len: number, out: Uint8Array, outOff: number): void {
    let i = this.index(off);
    let p = off;
    let done = 0;
    while (done < len) {
      const c = this.chunks[i]!;
      const rel = p - this.starts[i]!;
      const n = Math.min(len - done, c.byteLength - rel);
      out.set(c.subarray(rel, rel + n), outOff + done);
      done += n;
      p += n;
      i++;
    }
  }

  /** Little-endian u32 at `off` (4 bytes must be buffered). */
  u32At(off: number, scratch: Uint8Array): number {
    const b = this.view(off, 4, scratch);
    return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
  }
}

const SLAB_BYTES = 4 * 1024 * 1024;

export class RecordSlab {
  private slab = new Uint8Array(0);
  private used = 0;

  alloc(n: number): Uint8Array {
    if (n > SLAB_BYTES / 4) return new Uint8Array(n);
    if (this.used + n > this.slab.length) {
      this.slab = new Uint8Array(SLAB_BYTES);
      this.used = 0;
    }
    const out = this.slab.subarray(this.used, this.used + n);
    this.used += (n + 7) & ~7;
    return out;
  }
}
