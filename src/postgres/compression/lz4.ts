/**
 * Decoder for a raw LZ4 *block* (wal_compression = lz4). PostgreSQL calls LZ4_compress_default and
 * LZ4_decompress_safe directly, so a WAL image is one block with no frame, no size and no checksum;
 * the decompressed size (8192 minus the hole) comes from the record.
 *
 * Block format: a sequence of "sequences". Each starts with a token byte: the high nibble is the
 * literal count, the low nibble the match length minus 4. A nibble of 15 means more length bytes
 * follow, each added to the count, continuing while the byte is 255. Then come the literals, then a
 * little-endian u16 distance (1..65535, counted back from the current output position), then the
 * match-length extension bytes. The last sequence stops after its literals (no distance): the block
 * ends exactly where the input ends. Matches may overlap their own output (distance < length), which
 * encodes runs; a forward byte copy reproduces that.
 *
 * Strictness. Every read and write is bounds-checked first; each sequence consumes at least one
 * input byte, so work is bounded by the input (plus the output for copies). With `checkComplete`
 * (default) the output must be exactly `out.length` bytes, and the format's end-of-block rules are
 * enforced as LZ4's reference decoder enforces them when given the exact output size: the last 5
 * bytes of output are literals and the last match starts at least 12 bytes before the end.
 * Conforming compressors (liblz4, hence PostgreSQL) always obey them, so they only help to reject
 * damaged input.
 */
import { DECOMPRESSION_FAILURE, DecompressionError } from './errors.ts';

export interface Lz4DecompressOptions {
  /** Require the block to decode to exactly out.length bytes. Default true. */
  checkComplete?: boolean;
}

export const LZ4_MIN_MATCH = 4;
/** The last LAST_LITERALS bytes of a block are literals. */
export const LZ4_LAST_LITERALS = 5;
/** A match must start at least MF_LIMIT bytes before the end of the block. */
export const LZ4_MF_LIMIT = 12;

function truncated(what: string, sp: number, dp: number): DecompressionError {
  return new DecompressionError('lz4', DECOMPRESSION_FAILURE.inputTruncated,
    `input ends inside ${what} at input offset ${sp} (output offset ${dp})`, { inputOffset: sp, outputOffset: dp });
}

/**
 * Decompresses the LZ4 block `src` into `out`; returns the number of bytes written. Throws
 * DecompressionError (codec 'lz4') on corrupt input; `out` then holds partial output.
 */
export function lz4DecompressBlock(src: Uint8Array, out: Uint8Array, opts: Lz4DecompressOptions = {}): number {
  const checkComplete = opts.checkComplete ?? true;
  const srcEnd = src.length;
  const outEnd = out.length;
  let sp = 0;
  let dp = 0;
  for (;;) {
    if (sp >= srcEnd) throw truncated('a sequence (no token byte)', sp, dp);
    const token = src[sp++]!;

    let litLen = token >>> 4;
    if (litLen === 15) {
      let b: number;
      do {
        if (sp >= srcEnd) throw truncated('a literal-length extension', sp, dp);
        b = src[sp++]!;
        litLen += b;
      } while (b === 255);
    }
    if (litLen > srcEnd - sp) {
      throw new DecompressionError('lz4', DECOMPRESSION_FAILURE.inputTruncated,
        `literal run of ${litLen} bytes at input offset ${sp} but only ${srcEnd - sp} input bytes remain`,
        { inputOffset: sp, outputOffset: dp, length: litLen });
    }
    if (litLen > outEnd - dp) {
      throw new DecompressionError('lz4', DECOMPRESSION_FAILURE.outputOverflow,
        `literal run of ${litLen} bytes at output offset ${dp} runs past the expected size ${outEnd}`,
        { inputOffset: sp, outputOffset: dp, length: litLen, expectedBytes: outEnd });
    }
    if (litLen > 16) {
      out.set(src.subarray(sp, sp + litLen), dp);
      sp += litLen;
      dp += litLen;
    } else {
      const stop = sp + litLen;
      while (sp < stop) out[dp++] = src[sp++]!;
    }

    if (sp === srcEnd) break; // the last sequence carries literals only

    if (srcEnd - sp < 2) throw truncated('a match distance', sp, dp);
    const dist = src[sp]! | (src[sp + 1]! << 8);
    sp += 2;
    if (dist === 0 || dist > dp) {
      throw new DecompressionError('lz4', DECOMPRESSION_FAILURE.badOffset,
        `match at output offset ${dp} refers ${dist} bytes back, before the start of the output (input offset ${sp})`,
        { inputOffset: sp, outputOffset: dp, distance: dist });
    }
    let matchLen = (token & 0x0f) + LZ4_MIN_MATCH;
    if ((token & 0x0f) === 15) {
      let b: number;
      do {
        if (sp >= srcEnd) throw truncated('a match-length extension', sp, dp);
        b = src[sp++]!;
        matchLen += b;
      } while (b === 255);
    }
    if (matchLen > outEnd - dp) {
      throw new DecompressionError('lz4', DECOMPRESSION_FAILURE.outputOverflow,
        `match of ${matchLen} bytes at output offset ${dp} runs past the expected size ${outEnd}`,
        { inputOffset: sp, outputOffset: dp, length: matchLen, expectedBytes: outEnd });
    }
    if (checkComplete && (dp > outEnd - LZ4_MF_LIMIT || dp + matchLen > outEnd - LZ4_LAST_LITERALS)) {
      throw new DecompressionError('lz4', DECOMPRESSION_FAILURE.corrupt,
        `match of ${matchLen} bytes at output offset ${dp} breaks the end-of-block rules ` +
        `(matches must start ${LZ4_MF_LIMIT} and end ${LZ4_LAST_LITERALS} bytes before the end at ${outEnd})`,
        { inputOffset: sp, outputOffset: dp, length: matchLen, expectedBytes: outEnd });
    }
    let from = dp - dist;
    if (dist >= matchLen && matchLen > 32) {
      out.copyWithin(dp, from, from + matchLen);
      dp += matchLen;
    } else {
      const stop = dp + matchLen;
      while (dp < stop) out[dp++] = out[from++]!;
    }
  }
  if (checkComplete && dp !== outEnd) {
    throw new DecompressionError('lz4', DECOMPRESSION_FAILURE.sizeMismatch,
      `decompressed ${dp} bytes, expected ${outEnd}`, { inputOffset: sp, outputOffset: dp, expectedBytes: outEnd });
  }
  return dp;
}
