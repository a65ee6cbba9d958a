/**
 * Pageserver feedback: the CopyData message a pageserver sends to a safekeeper instead of the
 * standard standby status update, so the safekeeper can tell a pageserver's durable position
 * (which lets it delete WAL) from an ordinary replica's (which must not).
 *
 * Wire form (Neon's, kept compatible): tag byte 'z', a u8 count, then per entry a NUL-terminated
 * key, an i32 length and that many bytes of value. Every value we know is a big-endian u64 of
 * length 8. Keys: current_timeline_size, ps_writelsn, ps_flushlsn, ps_applylsn, ps_replytime.
 * Unknown keys are skipped (a newer pageserver may send more); a missing LSN key reads as 0.
 */
import { InvalidInputError } from '../util/errors.ts';
import type { PageserverFeedback } from './types.ts';

export const PAGESERVER_FEEDBACK_TAG = 0x7a; // 'z'
const MAX_ENTRIES = 64;
const MAX_KEY_BYTES = 64;

const KEYS = {
  current_timeline_size: 'currentTimelineSizeBytes',
  ps_writelsn: 'writeLsn',
  ps_flushlsn: 'flushLsn',
  ps_applylsn: 'applyLsn',
  ps_replytime: 'replyTimeUs',
} as const satisfies Record<string, keyof PageserverFeedback>;

export function encodePageserverFeedback(fb: PageserverFeedback): Buffer {
  const entries = Object.entries(KEYS) as [string, keyof PageserverFeedback][];
  let size = 2;
  for (const [k] of entries) size += k.length + 1 + 4 + 8;
  const out = Buffer.alloc(size);
  let off = 0;
  out[off++] = PAGESERVER_FEEDBACK_TAG;
  out[off++] = entries.length;
  for (const [k, field] of entries) {
    off += out.write(k, off, 'latin1');
    out[off++] = 0;
    out.writeInt32BE(8, off);
    off += 4;
    out.writeBigUInt64BE(BigInt.asUintN(64, fb[field]), off);
    off += 8;
  }
  return out;
}

/** Decodes a 'z' payload (including the tag byte). Throws InvalidInputError on malformed input. */
export function decodePageserverFeedback(payload: Buffer): PageserverFeedback {
  const fb: PageserverFeedback = { writeLsn: 0n, flushLsn: 0n, applyLsn: 0n, currentTimelineSizeBytes: 0n, replyTimeUs: 0n };
  if (payload.length < 2 || payload[0] !== PAGESERVER_FEEDBACK_TAG) throw new InvalidInputError('pageserver feedback: not a \'z\' message');
  const count = payload[1]!;
  if (count > MAX_ENTRIES) throw new InvalidInputError(`pageserver feedback: ${count} entries (at most ${MAX_ENTRIES})`);
  let off = 2;
  for (let i = 0; i < count; i++) {
    const nul = payload.indexOf(0, off);
    if (nul < 0 || nul - off > MAX_KEY_BYTES) throw new InvalidInputError(`pageserver feedback: entry ${i} has no NUL-terminated key`);
    const key = payload.toString('latin1', off, nul);
    off = nul + 1;
    if (off + 4 > payload.length) throw new InvalidInputError(`pageserver feedback: entry ${key} is truncated`);
    const len = payload.readInt32BE(off);
    off += 4;
    if (len < 0 || off + len > payload.length) throw new InvalidInputError(`pageserver feedback: entry ${key} claims ${len} bytes, ${payload.length - off} remain`);
    const field = (KEYS as Record<string, keyof PageserverFeedback>)[key];
    if (field !== undefined) {
      if (len !== 8) throw new InvalidInputError(`pageserver feedback: ${key} has ${len} bytes, expected 8`);
      fb[field] = payload.readBigUInt64BE(off);
    }
    off += len;
  }
  if (off !== payload.length) throw new InvalidInputError(`pageserver feedback: ${payload.length - off} trailing bytes`);
  return fb;
}
