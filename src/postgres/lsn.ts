/**
 * Log sequence numbers.
 *
 * An LSN is a byte position in PostgreSQL's infinite WAL stream: an unsigned 64-bit integer. Strata
 * keeps every LSN as a `bigint` (never a JS number: positions above 2^53 are legal and must not
 * lose precision). The text form is PostgreSQL's `%X/%X`: the high and low 32-bit halves in
 * upper-case hex with no padding (`0/16B3748`). pg_waldump pads the low half to 8 digits
 * (`0/016B3748`); both parse to the same value.
 */
import { InvalidInputError } from '../util/errors.ts';

export type Lsn = bigint;

export const INVALID_LSN: Lsn = 0n;
export const MAX_LSN: Lsn = 0xffff_ffff_ffff_ffffn;

const LSN_TEXT = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

/** Parses `X/X` text. Throws InvalidInputError naming the bad text. */
export function parseLsn(text: string): Lsn {
  const m = LSN_TEXT.exec(text.trim());
  if (m === null) {
    throw new InvalidInputError(`invalid LSN "${text}": expected two hex numbers of at most 8 digits as X/X, e.g. 0/16B3748`, { lsn: text });
  }
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

/** Formats as PostgreSQL does (`%X/%X`). */
export function formatLsn(lsn: Lsn): string {
  const hi = Number(lsn >> 32n);
  const lo = Number(lsn & 0xffff_ffffn);
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
}

/** Formats as pg_waldump does (`%X/%08X`). */
export function formatLsnPadded(lsn: Lsn): string {
  const hi = Number(lsn >> 32n);
  const lo = Number(lsn & 0xffff_ffffn);
  return `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase().padStart(8, '0')}`;
}

/** Rounds up to the next multiple of 8 (MAXALIGN on x86-64). */
export function maxAlignLsn(lsn: Lsn): Lsn {
  return (lsn + 7n) & ~7n;
}
