/**
 * Decoder for pglz, PostgreSQL's own LZ77 variant (wal_compression = pglz, also used by TOAST).
 *
 * Format, as the stream is laid out: a control byte, then up to eight items, then the next control
 * byte, and so on. Bit i of the control byte (least significant first) says what item i is:
 *   0 — one literal byte, copied to the output;
 *   1 — a back-reference "tag" of two or three bytes. Byte 1: low nibble = length - 3, high nibble =
 *       bits 8..11 of the distance; byte 2: bits 0..7 of the distance. A length nibble of 15 means a
 *       third byte follows whose value is added to the length (so lengths run 3..273 and distances
 *       1..4095). The copy reads `distance` bytes back in the output and may overlap what it writes,
 *       which is how runs are encoded (distance 1, length 200 = 200 copies of the previous byte).
 * There is no header, no checksum and no end marker: the stream ends where the input ends, and the
 * caller must know the decompressed size (for a WAL image, 8192 minus the hole).
 *
 * Strictness. With `checkComplete` (the default, and what PostgreSQL uses for WAL images) the
 * input must decode to exactly `out.length` bytes and be consumed exactly; a back-reference that
 * would run past the end of `out` is an error here (PostgreSQL silently clips it — its compressor
 * never emits one, so rejecting it only rejects streams PostgreSQL could not have written). Without
 * `checkComplete` decoding stops, clipping the last copy, when either side is exhausted, and the
 * number of bytes produced is returned: the "decompress a prefix" mode.
 *
 * Safety: every read of the input and every write of the output is bounds-checked against the
 * buffers' lengths before it happens; each loop iteration consumes at least one input byte, so the
 * work is bounded by the input size (plus the output size for copies).
 */
import { DECOMPRESSION_FAILURE, DecompressionError } from './errors.ts';

export interface PglzDecompressOptions {
  /** Require the input to decode to exactly out.length bytes and to be fully consumed. Default true. */
  checkComplete?: boolean;
}

/** Largest distance a tag can encode (12 bits). */
export const PGLZ_MAX_DISTANCE = 0x0fff;
/** Shortest and longest match a tag can encode. */
export const PGLZ_MIN_MATCH = 3;
export const PGLZ_MAX_MATCH = 273;

/**
 * Decompresses `src` into `out` and returns the number of bytes written. Throws DecompressionError
 * (codec 'pglz') on corrupt input; `out` then holds partial output.
 */
export function pglzDecompress(src: Uint8Array, out: Uint8Array, opts: PglzDecompressOptions = {}): number {
  const checkComplete = opts.checkComplete ?? true;
  const srcEnd = src.length;
  const outEnd = out.length;
  let sp = 0;
  let dp = 0;
  while (sp < srcEnd && dp < outEnd) {
    let ctrl = src[sp++]!;
    for (let item = 0; item < 8 && sp < srcEnd && dp < outEnd; item++, ctrl >>= 1) {
      if ((ctrl & 1) === 0) {
        out[dp++] = src[sp++]!;
        continue;
      }
      if (srcEnd - sp < 2) {
        throw new DecompressionError('pglz', DECOMPRESSION_FAILURE.inputTruncated,
          `input ends inside a match tag at input offset ${sp} (output offset ${dp})`, { inputOffset: sp, outputOffset: dp });
      }
      const t0 = src[sp]!;
      const t1 = src[sp + 1]!;
      sp += 2;
      let len = (t0 & 0x0f) + PGLZ_MIN_MATCH;
      const dist = ((t0 & 0xf0) << 4) | t1;
      if (len === 18) {
        if (sp >= srcEnd) {
          throw new DecompressionError('pglz', DECOMPRESSION_FAILURE.inputTruncated,
            `input ends before the extended length byte of a match tag at input offset ${sp - 2} (output offset ${dp})`,
            { inputOffset: sp - 2, outputOffset: dp });
        }
        len += src[sp++]!;
      }
      if (dist === 0 || dist > dp) {
        throw new DecompressionError('pglz', DECOMPRESSION_FAILURE.badOffset,
          `match at output offset ${dp} refers ${dist} bytes back, before the start of the output (input offset ${sp})`,
          { inputOffset: sp, outputOffset: dp, distance: dist });
      }
      if (len > outEnd - dp) {
        if (checkComplete) {
          throw new DecompressionError('pglz', DECOMPRESSION_FAILURE.outputOverflow,
            `match of ${len} bytes at output offset ${dp} runs past the expected size ${outEnd}`,
            { inputOffset: sp, outputOffset: dp, length: len, expectedBytes: outEnd });
        }
        len = outEnd - dp;
      }
      let from = dp - dist;
      if (dist >= len && len > 32) {
        // Source and destination do not overlap: a block move is faster than the byte loop.
        out.copyWithin(dp, from, from + len);
        dp += len;
      } else {
        // Byte-at-a-time forward copy: when the ranges overlap, this re-reads bytes it has just
        // written, which is exactly the repeat semantics of the format.
        const stop = dp + len;
        while (dp < stop) out[dp++] = out[from++]!;
      }
    }
  }
  if (checkComplete) {
    if (dp !== outEnd) {
      throw new DecompressionError('pglz', DECOMPRESSION_FAILURE.sizeMismatch,
        `decompressed ${dp} bytes, expected ${outEnd} (input of ${srcEnd} bytes ended early)`,
        { inputOffset: sp, outputOffset: dp, expectedBytes: outEnd });
    }
    if (sp !== srcEnd) {
      throw new DecompressionError('pglz', DECOMPRESSION_FAILURE.trailingInput,
        `output is complete at ${outEnd} bytes but ${srcEnd - sp} of ${srcEnd} input bytes remain`,
        { inputOffset: sp, outputOffset: dp, expectedBytes: outEnd });
    }
  }
  return dp;
}
