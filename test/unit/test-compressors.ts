/**
 * Test-only compressors and page generators for the WAL image codec tests.
 *
 * Strata only ever decompresses images; these encoders exist so the unit tests can round-trip data
 * without a native dependency. They are deliberately simple (greedy, one hash candidate) — any
 * output that follows the format is valid, and the tests also check our decoders against real
 * encoders (the lz4 and zstd command-line tools here, liblz4/libzstd/pglz inside PostgreSQL in the
 * integration test).
 *
 * - pglzCompress: control byte + 8 items; a tag is 2 bytes (length 3..17) or 3 bytes (18..273),
 *   distance 1..4095.
 * - lz4CompressBlock: LZ4 block sequences, obeying the end-of-block rules (last match starts at
 *   least 12 bytes and ends at least 5 bytes before the end; the block ends with literals).
 * - zstdCompress: node:zlib when it has zstd (Node >= 22.15), else the zstd CLI; `withContentSize`
 *   mimics PostgreSQL's ZSTD_compress, which records the size in the frame header.
 */
import { execFileSync } from 'node:child_process';
import * as zlib from 'node:zlib';

// ---------------------------------------------------------------- pglz

function hash3(b: Uint8Array, i: number): number {
  return (Math.imul((b[i]! << 16) | (b[i + 1]! << 8) | b[i + 2]!, 0x9e3779b1) >>> 20) & 0xfff;
}

export function pglzCompress(src: Uint8Array): Uint8Array {
  const n = src.length;
  const out = new Uint8Array(n + Math.ceil(n / 8) + 8);
  const head = new Int32Array(4096).fill(-1);
  let sp = 0;
  let op = 0;
  let ctrlPos = 0;
  let bit = 8;
  const item = (isTag: boolean): void => {
    if (bit === 8) {
      ctrlPos = op++;
      out[ctrlPos] = 0;
      bit = 0;
    }
    if (isTag) out[ctrlPos]! |= 1 << bit;
    bit++;
  };
  while (sp < n) {
    let bestLen = 0;
    let bestDist = 0;
    if (sp + 3 <= n) {
      const h = hash3(src, sp);
      const cand = head[h]!;
      head[h] = sp;
      if (cand >= 0 && sp - cand <= 4095) {
        const max = Math.min(273, n - sp);
        let l = 0;
        while (l < max && src[cand + l] === src[sp + l]) l++;
        if (l >= 3) {
          bestLen = l;
          bestDist = sp - cand;
        }
      }
    }
    if (bestLen >= 3) {
      item(true);
      if (bestLen >= 18) {
        out[op++] = ((bestDist >> 8) << 4) | 0x0f;
        out[op++] = bestDist & 0xff;
        out[op++] = bestLen - 18;
      } else {
        out[op++] = ((bestDist >> 8) << 4) | (bestLen - 3);
        out[op++] = bestDist & 0xff;
      }
      for (let k = sp + 1; k < sp + bestLen && k + 3 <= n; k++) head[hash3(src, k)] = k;
      sp += bestLen;
    } else {
      item(false);
      out[op++] = src[sp++]!;
    }
  }
  return out.slice(0, op);
}

// ---------------------------------------------------------------- lz4

function hash4(b: Uint8Array, i: number): number {
  const v = (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24)) >>> 0;
  return Math.imul(v, 2654435761) >>> 20;
}

function putLength(out: Uint8Array, op: number, rem: number): number {
  while (rem >= 255) {
    out[op++] = 255;
    rem -= 255;
  }
  out[op++] = rem;
  return op;
}

export function lz4CompressBlock(src: Uint8Array): Uint8Array {
  const n = src.length;
  const out = new Uint8Array(n + Math.ceil(n / 255) + 32);
  const table = new Int32Array(4096).fill(-1);
  let op = 0;
  let anchor = 0;
  let ip = 0;
  const lastMatchStart = n - 12;
  const matchEndLimit = n - 5;
  while (ip <= lastMatchStart) {
    const h = hash4(src, ip);
    const cand = table[h]!;
    table[h] = ip;
    if (cand >= 0 && ip - cand <= 65535 &&
        src[cand] === src[ip] && src[cand + 1] === src[ip + 1] && src[cand + 2] === src[ip + 2] && src[cand + 3] === src[ip + 3]) {
      let len = 4;
      while (ip + len < matchEndLimit && src[cand + len] === src[ip + len]) len++;
      const litLen = ip - anchor;
      const tokenPos = op++;
      out[tokenPos] = (Math.min(litLen, 15) << 4) | Math.min(len - 4, 15);
      if (litLen >= 15) op = putLength(out, op, litLen - 15);
      out.set(src.subarray(anchor, ip), op);
      op += litLen;
      const dist = ip - cand;
      out[op++] = dist & 0xff;
      out[op++] = dist >> 8;
      if (len - 4 >= 15) op = putLength(out, op, len - 4 - 15);
      ip += len;
      anchor = ip;
    } else {
      ip++;
    }
  }
  const litLen = n - anchor;
  out[op++] = Math.min(litLen, 15) << 4;
  if (litLen >= 15) op = putLength(out, op, litLen - 15);
  out.set(src.subarray(anchor, n), op);
  op += litLen;
  return out.slice(0, op);
}

/**
 * Compresses with the real `lz4` CLI and returns the raw block inside its frame (null when lz4
 * stored the data uncompressed). Frame: magic, FLG, BD, [content size], HC, then u32 block size
 * (high bit = stored uncompressed), block bytes, ..., u32 0 end mark.
 */
export function lz4CliBlock(src: Uint8Array): Uint8Array | null {
  const frame = new Uint8Array(execFileSync('lz4', ['-c', '-q', '-1', '--no-frame-crc', '-BI'], { input: src, maxBuffer: 1 << 24 }));
  const magic = (frame[0]! | (frame[1]! << 8) | (frame[2]! << 16) | (frame[3]! << 24)) >>> 0;
  if (magic !== 0x184d2204) throw new Error(`lz4 CLI produced magic 0x${magic.toString(16)}`);
  const flg = frame[4]!;
  let pos = 6 + ((flg & 0x08) ? 8 : 0) + ((flg & 0x01) ? 4 : 0) + 1;
  const size = (frame[pos]! | (frame[pos + 1]! << 8) | (frame[pos + 2]! << 16) | (frame[pos + 3]! << 24)) >>> 0;
  pos += 4;
  if (size & 0x80000000) return null;
  const block = frame.slice(pos, pos + size);
  const next = (frame[pos + size]! | (frame[pos + size + 1]! << 8) | (frame[pos + size + 2]! << 16) | (frame[pos + size + 3]! << 24)) >>> 0;
  if (next !== 0) throw new Error('lz4 CLI produced more than one block');
  return block;
}

// ---------------------------------------------------------------- zstd

type ZstdCompressSync = (buf: Uint8Array) => Uint8Array;
const nodeZstdCompress = (zlib as unknown as { zstdCompressSync?: ZstdCompressSync }).zstdCompressSync;

export function zstdCompress(src: Uint8Array, opts: { withContentSize: boolean } = { withContentSize: true }): Uint8Array {
  if (opts.withContentSize && nodeZstdCompress !== undefined) return new Uint8Array(nodeZstdCompress(src));
  const args = ['-c', '-q', '-3', '--no-check'];
  if (opts.withContentSize) args.push(`--stream-size=${src.length}`);
  return new Uint8Array(execFileSync('zstd', args, { input: src, maxBuffer: 1 << 24 }));
}

// ---------------------------------------------------------------- data

/** Deterministic PRNG (mulberry32) so failures reproduce. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomBytes(rand: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}
function put32(b: Uint8Array, o: number, v: number): void {
  put16(b, o, v & 0xffff);
  put16(b, o + 2, (v >>> 16) & 0xffff);
}

export interface SyntheticPage {
  page: Uint8Array;
  lower: number;
  upper: number;
  special: number;
}

/**
 * A heap-like (or, with specialBytes, index-like) 8 KiB page built the way PostgreSQL lays one out:
 * PageInit header, line pointers growing up from 24, MAXALIGNed tuples growing down, zeros between.
 */
export function syntheticPage(rand: () => number, opts: { tuples: number; specialBytes?: number; lsnHi?: number; lsnLo?: number }): SyntheticPage {
  const page = new Uint8Array(8192);
  const special = 8192 - ((opts.specialBytes ?? 0) + 7 & ~7);
  let lower = 24;
  let upper = special;
  let xid = 1000 + ((rand() * 100000) | 0);
  for (let i = 0; i < opts.tuples; i++) {
    const dataLen = 8 + ((rand() * 120) | 0);
    const len = 24 + dataLen;
    const aligned = (len + 7) & ~7;
    if (upper - aligned < lower + 4) break;
    upper -= aligned;
    // tuple header: xmin, xmax, cid, ctid(blk 0, off i+1), infomask2, infomask, hoff
    put32(page, upper, xid++);
    put32(page, upper + 4, 0);
    put32(page, upper + 8, 0);
    put16(page, upper + 16, i + 1);
    put16(page, upper + 18, 3);
    put16(page, upper + 20, 0x0902);
    page[upper + 22] = 24;
    // data: an int, then some text that repeats across tuples (as real rows do)
    put32(page, upper + 24, i * 7 + 1);
    const words = ['alpha', 'beta', 'gamma', 'delta', 'row', 'value', 'x'];
    for (let k = 4; k < dataLen; k++) {
      const w = words[(i + (k >> 3)) % words.length]!;
      page[upper + 24 + k] = w.charCodeAt(k % w.length);
    }
    put32(page, lower, upper | (1 << 15) | (len << 17));
    lower += 4;
  }
  if (special < 8192) for (let k = special; k < 8192; k++) page[k] = (rand() * 256) | 0;
  put32(page, 0, opts.lsnHi ?? 0);
  put32(page, 4, opts.lsnLo ?? 0x1234568);
  put16(page, 12, lower);
  put16(page, 14, upper);
  put16(page, 16, special);
  put16(page, 18, 0x2004);
  return { page, lower, upper, special };
}
