/**
 * Decoder for zstd-compressed WAL images (wal_compression = zstd). PostgreSQL writes one ordinary
 * zstd frame per image with ZSTD_compress (level 3, content size recorded in the frame, no
 * checksum, no dictionary) and reads it back with ZSTD_decompress into a buffer of exactly
 * 8192 - hole bytes.
 *
 * We do not implement zstd ourselves. Node's `zlib.zstdDecompressSync` (Node >= 22.15 / 23.8) is
 * used when present — it is libzstd; otherwise `fzstd`, a pure-JS decoder. Both are treated as
 * black boxes that may throw anything, so every failure is turned into a DecompressionError.
 *
 * Before either decoder runs, we parse the frame header ourselves (RFC 8878 §3.1.1): the magic,
 * reserved bits, no dictionary, and a window size of at most 8 MiB. That bounds the memory a hostile
 * frame can make the decoder allocate (a header may claim a window of up to 3.75 TiB). If the frame
 * records its content size, it must equal the expected size, and the frame (found by walking its block
 * headers) must end exactly where the input ends. After decoding, the number of bytes
 * produced must equal out.length exactly: fzstd given a preallocated buffer would not report a
 * short result, so we use its streaming interface, which hands over exactly the bytes it decoded,
 * and count them.
 *
 * zstd frames made by PostgreSQL carry no checksum, so damage inside entropy-coded data is not
 * always detectable here; the WAL record's CRC-32C is what protects image bytes.
 */
import * as zlib from 'node:zlib';
import { Decompress as FzstdDecompress } from 'fzstd';
import { DECOMPRESSION_FAILURE, DecompressionError } from './errors.ts';

export const ZSTD_MAGIC = 0xfd2fb528;
/** Largest window a frame may declare before we refuse it. 8 KiB pages need at most a few KiB. */
export const ZSTD_MAX_WINDOW_BYTES = 8 * 1024 * 1024;

export type ZstdBackend = 'node:zlib' | 'fzstd';

type NodeZstdDecompressSync = (buf: Uint8Array, opts?: { maxOutputLength?: number }) => Uint8Array;
const nodeZstdDecompressSync: NodeZstdDecompressSync | undefined =
  (zlib as unknown as { zstdDecompressSync?: NodeZstdDecompressSync }).zstdDecompressSync;

/** The decoder `zstdDecompress` uses by default on this Node.js. */
export function zstdBackend(): ZstdBackend {
  return nodeZstdDecompressSync !== undefined ? 'node:zlib' : 'fzstd';
}

export interface ZstdFrameHeader {
  headerBytes: number;
  /** Declared decompressed size, or undefined when the frame does not record it. */
  contentSizeBytes: number | undefined;
  windowBytes: number;
  hasChecksum: boolean;
}

function corrupt(message: string, context: Record<string, number> = {}): DecompressionError {
  return new DecompressionError('zstd', DECOMPRESSION_FAILURE.corrupt, message, context);
}

/** Parses and sanity-checks a zstd frame header. Throws DecompressionError. */
export function readZstdFrameHeader(src: Uint8Array): ZstdFrameHeader {
  if (src.length < 6) {
    throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.inputTruncated, `input of ${src.length} bytes is too short for a frame header`);
  }
  const magic = (src[0]! | (src[1]! << 8) | (src[2]! << 16) | (src[3]! << 24)) >>> 0;
  if (magic !== ZSTD_MAGIC) throw corrupt(`bad frame magic 0x${magic.toString(16).padStart(8, '0')}, expected 0x${ZSTD_MAGIC.toString(16)}`);
  const fhd = src[4]!;
  const fcsFlag = fhd >>> 6;
  const singleSegment = (fhd & 0x20) !== 0;
  const hasChecksum = (fhd & 0x04) !== 0;
  const dictIdFlag = fhd & 0x03;
  if (fhd & 0x08) throw corrupt(`reserved bit set in frame header descriptor 0x${fhd.toString(16)}`);
  let pos = 5;
  let windowBytes = 0;
  if (!singleSegment) {
    const wd = src[pos++]!;
    const windowLog = 10 + (wd >>> 3);
    const base = 2 ** windowLog;
    windowBytes = base + (base / 8) * (wd & 7);
  }
  const dictIdBytes = [0, 1, 2, 4][dictIdFlag]!;
  const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][fcsFlag]!;
  if (src.length < pos + dictIdBytes + fcsBytes) {
    throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.inputTruncated, `input of ${src.length} bytes ends inside the frame header`);
  }
  let dictId = 0;
  for (let i = 0; i < dictIdBytes; i++) dictId += src[pos + i]! * 2 ** (8 * i);
  pos += dictIdBytes;
  if (dictId !== 0) throw corrupt(`frame needs dictionary ${dictId}; PostgreSQL never uses one`);
  let contentSizeBytes: number | undefined;
  if (fcsBytes > 0) {
    let v = 0;
    for (let i = 0; i < fcsBytes; i++) v += src[pos + i]! * 2 ** (8 * i);
    if (fcsBytes === 2) v += 256;
    contentSizeBytes = v;
    pos += fcsBytes;
  }
  if (singleSegment) windowBytes = contentSizeBytes ?? 0;
  if (windowBytes > ZSTD_MAX_WINDOW_BYTES) {
    throw corrupt(`frame declares a ${windowBytes}-byte window, more than the ${ZSTD_MAX_WINDOW_BYTES} we allow`, { windowBytes });
  }
  return { headerBytes: pos, contentSizeBytes, windowBytes, hasChecksum };
}

/**
 * Walks the block headers of the frame (3 bytes each: last-block bit, type, size) to find where the
 * frame ends, without decoding anything. Lets us reject truncated frames and trailing bytes the same
 * way whichever decoder runs.
 */
export function zstdFrameCompressedSize(src: Uint8Array, header: ZstdFrameHeader): number {
  let pos = header.headerBytes;
  for (;;) {
    if (src.length - pos < 3) {
      throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.inputTruncated, `input of ${src.length} bytes ends before the block header at ${pos}`, { inputOffset: pos });
    }
    const bh = src[pos]! | (src[pos + 1]! << 8) | (src[pos + 2]! << 16);
    const last = (bh & 1) === 1;
    const type = (bh >>> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) throw corrupt(`reserved block type at input offset ${pos}`, { inputOffset: pos });
    pos += 3 + (type === 1 ? 1 : size); // an RLE block stores one byte, raw and compressed blocks `size` bytes
    if (pos > src.length) {
      throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.inputTruncated, `input of ${src.length} bytes ends inside a block that runs to ${pos}`, { inputOffset: pos });
    }
    if (last) break;
  }
  if (header.hasChecksum) pos += 4;
  if (pos > src.length) {
    throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.inputTruncated, `input of ${src.length} bytes ends inside the frame checksum`, { inputOffset: pos });
  }
  return pos;
}

export interface ZstdDecompressOptions {
  /** Force a decoder (tests); default: node:zlib when available, else fzstd. */
  backend?: ZstdBackend;
}

function wrap(err: unknown, backend: ZstdBackend): DecompressionError {
  if (err instanceof DecompressionError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  const tooLarge = err instanceof Error && ((err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError);
  return new DecompressionError('zstd', tooLarge ? DECOMPRESSION_FAILURE.outputOverflow : DECOMPRESSION_FAILURE.corrupt,
    `${backend} rejected the frame: ${msg}`, {}, { cause: err });
}

/**
 * The checks every decoder path makes before decompressing: a well-formed frame header, a declared
 * size (if any) equal to the expected one, and exactly one frame with no trailing bytes.
 */
function checkFrame(src: Uint8Array, expected: number): void {
  const header = readZstdFrameHeader(src);
  if (header.contentSizeBytes !== undefined && header.contentSizeBytes !== expected) {
    throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.sizeMismatch,
      `frame declares ${header.contentSizeBytes} bytes, expected ${expected}`, { declaredBytes: header.contentSizeBytes, expectedBytes: expected });
  }
  const frameBytes = zstdFrameCompressedSize(src, header);
  if (frameBytes !== src.length) {
    throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.trailingInput,
      `the frame ends at ${frameBytes} bytes but the input has ${src.length}`, { inputOffset: frameBytes });
  }
}

/**
 * Decompresses the single zstd frame `src` into `out`, which must be exactly the expected size.
 * Returns out.length. Throws DecompressionError (codec 'zstd') on any problem.
 */
export function zstdDecompress(src: Uint8Array, out: Uint8Array, opts: ZstdDecompressOptions = {}): number {
  const expected = out.length;
  checkFrame(src, expected);
  const backend = opts.backend ?? zstdBackend();
  let produced = 0;
  if (backend === 'node:zlib') {
    if (nodeZstdDecompressSync === undefined) throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.corrupt, 'node:zlib has no zstd support in this Node.js');
    let result: Uint8Array;
    try {
      // One byte of slack so that "too much output" is reported as such rather than clipped.
      result = nodeZstdDecompressSync(src, { maxOutputLength: expected + 1 });
    } catch (err) {
      throw wrap(err, backend);
    }
    produced = result.length;
    if (produced === expected) out.set(result);
  } else {
    const decoder = new FzstdDecompress((chunk: Uint8Array) => {
      if (chunk.length > expected - produced) {
        throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.outputOverflow,
          `decompressed more than the expected ${expected} bytes`, { outputOffset: produced, expectedBytes: expected });
      }
      out.set(chunk, produced);
      produced += chunk.length;
    });
    try {
      decoder.push(src, true);
    } catch (err) {
      throw wrap(err, backend);
    }
  }
  if (produced !== expected) {
    throw new DecompressionError('zstd', produced > expected ? DECOMPRESSION_FAILURE.outputOverflow : DECOMPRESSION_FAILURE.sizeMismatch,
      `decompressed ${produced} bytes, expected ${expected}`, { outputOffset: produced, expectedBytes: expected });
  }
  return produced;
}

// ---------------------------------------------------------------------------------------------
// Asynchronous decompression for throughput.
//
// On Node < 22.15 the synchronous path is fzstd, pure JavaScript: about 0.6 ms per 8 KiB page
// here, which made zstd-compressed full-page images the WAL ingest's bottleneck. The native
// @mongodb-js/zstd (prebuilt, ecosystem.md's pick) runs on the libuv thread pool at about 25 µs
// per page and in parallel with JavaScript, but only asynchronously. Ingest therefore restores a
// batch of images with zstdDecompressAsync before it applies the records synchronously. The frame
// is checked the same way as on the sync path (header, declared size, exact frame length); when
// node:zlib has zstd (Node ≥ 22.15) or the native module cannot be loaded, it falls back to the
// synchronous decoder.

type NativeDecompress = (buf: Buffer) => Promise<Buffer>;
let nativeDecompress: NativeDecompress | null | undefined;

async function loadNative(): Promise<NativeDecompress | null> {
  if (nativeDecompress !== undefined) return nativeDecompress;
  try {
    const mod = (await import('@mongodb-js/zstd')) as { decompress?: NativeDecompress };
    nativeDecompress = typeof mod.decompress === 'function' ? mod.decompress : null;
  } catch {
    nativeDecompress = null;
  }
  return nativeDecompress;
}

/** The decoder zstdDecompressAsync uses on this Node.js (after the first call). */
export async function zstdAsyncBackend(): Promise<'node:zlib' | '@mongodb-js/zstd' | 'fzstd'> {
  if (nodeZstdDecompressSync !== undefined) return 'node:zlib';
  return (await loadNative()) !== null ? '@mongodb-js/zstd' : 'fzstd';
}

/** Like zstdDecompress, asynchronously (native thread pool when that is the fastest way). */
export async function zstdDecompressAsync(src: Uint8Array, out: Uint8Array): Promise<number> {
  if (nodeZstdDecompressSync !== undefined) return zstdDecompress(src, out);
  const native = await loadNative();
  if (native === null) return zstdDecompress(src, out);
  const expected = out.length;
  checkFrame(src, expected);
  let result: Buffer;
  try {
    result = await native(Buffer.from(src.buffer, src.byteOffset, src.byteLength));
  } catch (err) {
    throw new DecompressionError('zstd', DECOMPRESSION_FAILURE.corrupt, `@mongodb-js/zstd rejected the frame: ${err instanceof Error ? err.message : String(err)}`, {}, { cause: err });
  }
  if (result.length !== expected) {
    throw new DecompressionError('zstd', result.length > expected ? DECOMPRESSION_FAILURE.outputOverflow : DECOMPRESSION_FAILURE.sizeMismatch,
      `decompressed ${result.length} bytes, expected ${expected}`, { outputOffset: result.length, expectedBytes: expected });
  }
  out.set(result);
  return expected;
}
