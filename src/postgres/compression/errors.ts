/**
 * The one error type the WAL image decompressors throw.
 *
 * Compressed full-page images come from an untrusted byte stream (a WAL file or a replication
 * connection), so every decoder treats its input as hostile: it never reads or writes outside its
 * buffers and it stops with a DecompressionError as soon as the stream stops making sense. `kind`
 * says which rule broke, so callers (and tests) can tell a truncated image from a bad back-reference
 * without parsing the message. Callers that know where the image came from (record LSN, block,
 * relation) wrap this error in their own, keeping it as `cause`.
 */
import { StrataError, type ErrorContext } from '../../util/errors.ts';

export type CompressionCodec = 'pglz' | 'lz4' | 'zstd';

export const DECOMPRESSION_FAILURE = {
  /** A back-reference points before the start of the output (or has distance 0). */
  badOffset: 'bad_offset',
  /** The stream would write past the end of the output buffer. */
  outputOverflow: 'output_overflow',
  /** The input ended in the middle of an item (tag, token, length, frame). */
  inputTruncated: 'input_truncated',
  /** The stream decoded cleanly but produced a different number of bytes than expected. */
  sizeMismatch: 'size_mismatch',
  /** Input bytes remain after the output is complete. */
  trailingInput: 'trailing_input',
  /** Anything else the codec rejects (bad magic, reserved bits, entropy-coding errors). */
  corrupt: 'corrupt',
} as const;
export type DecompressionFailure = (typeof DECOMPRESSION_FAILURE)[keyof typeof DECOMPRESSION_FAILURE];

export class DecompressionError extends StrataError {
  readonly codec: CompressionCodec;
  readonly kind: DecompressionFailure;

  constructor(codec: CompressionCodec, kind: DecompressionFailure, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super('decompression_failed', `${codec}: ${message}`, { codec, kind, ...context }, options);
    this.name = 'DecompressionError';
    this.codec = codec;
    this.kind = kind;
  }
}
