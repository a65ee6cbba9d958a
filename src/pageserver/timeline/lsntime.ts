/**
 * Time travel: from a wall-clock time to an LSN (`get_lsn_by_timestamp`, PITR branches, the GC's
 * pitr_interval) and back (`get_timestamp_of_lsn`).
 *
 * Where the times come from. Every COMMIT / COMMIT PREPARED record carries the commit time
 * (PostgreSQL TimestampTz: microseconds since 2000-01-01 00:00 UTC). Ingest stores one
 * `clogSetStatus` value per CLOG page the transaction touches, versioned at the record's end LSN,
 * and redo appends that time as an 8-byte big-endian trailer after the 8192-byte page (a CLOG page
 * read at an LSN is 8200 bytes once a commit with a time has touched it; an abort or a ZEROPAGE
 * leaves it without / replaces the page). So "the CLOG pages at LSN P" tell, per page, the time
 * of the last commit on that page at or before P: their maximum is the time of the newest commit
 * visible at P. Nothing else is stored for this (no separate index); basebackup strips trailers.
 *
 * Reading at any P ≤ last_record_lsn is valid even in the middle of a record: a value is visible
 * at P iff its version LSN (the end of the record that wrote it) is ≤ P, so P sees exactly the
 * records that ended at or before it.
 *
 * findLsnForTimestamp (Neon's find_lsn_for_timestamp). Predicate at P: "some CLOG page at P carries
 * a time ≥ ts". With commit times increasing in WAL order it is false up to E − 8 and true from E
 * on, E being the end LSN of the first commit record whose time is ≥ ts. A binary search over P/8
 * in [min, last_record_lsn], min = max(GC cutoff, branch point), finds E/8; the answer is
 * `present` at E − 8: the newest LSN that does not contain that commit. A branch there has every
 * transaction that committed strictly before ts and none that committed at or after ts (a commit
 * exactly at ts is excluded). E − 8 lies inside the commit record (a commit record is ≥ 40 bytes),
 * so the branch also holds the physical changes of transactions still open then: they are not
 * committed there, so they are invisible (as after a crash). Other answers:
 *   - `future` (lsn = last_record_lsn): every commit in range is before ts;
 *   - `past`   (lsn = min): a commit at or after ts is visible already at min (nothing in range
 *     is before ts);
 *   - `nodata` (lsn = min): no CLOG page in range carries a time (a fresh import, or only aborts).
 * The LSNs returned are 8-byte aligned and inside [min, last_record_lsn], so they are valid
 * branch points.
 *
 * Caveat (as in Neon): PostgreSQL takes the commit time just before inserting the commit record,
 * so two concurrent commits can be in WAL order with their times a little out of order, and a
 * page keeps only its last commit's time. Within such a window the answer can be off by those
 * commits; ordinary sequential commits are exact.
 *
 * Cost: one probe reads the CLOG directory, each segment's size and every CLOG page at P (newest
 * first, stopping at the first time ≥ ts); a page covers 32768 xids, so a cluster that used N xids
 * since its last CLOG truncation has ⌈N/32768⌉ pages. The search makes ⌈log2(range/8)⌉ + 1 probes
 * (≤ 62). Pages come from the page cache after the first probe touches them. The search yields to
 * the event loop between probes and every PAGES_PER_YIELD pages, and can be cancelled via signal.
 * The range is fixed when the search starts: if GC moves the cutoff meanwhile, the answer may lie
 * below the new cutoff (a branch there is then refused; Neon blocks GC during the search instead).
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { PG_BLCKSZ } from '../../postgres/walformat.ts';
import { InvalidInputError, StrataError, assert, type ErrorContext } from '../../util/errors.ts';
import { SlruKind } from '../../storage/key.ts';
import { CLOG_PAGE_WITH_TIMESTAMP_BYTES } from '../../storage/redo.ts';
import { DatadirView } from '../datadir/view.ts';
import { waitForLsnWithAncestors } from './read.ts';
import type { Timeline } from './timeline.ts';

// ---------------------------------------------------------------------------------------------
// PostgreSQL TimestampTz <-> JavaScript Date and RFC 3339 text.

/** 2000-01-01T00:00:00Z in Unix milliseconds: PostgreSQL's timestamp epoch. */
export const PG_EPOCH_UNIX_MS = 946_684_800_000;
const PG_EPOCH_UNIX_US = BigInt(PG_EPOCH_UNIX_MS) * 1000n;
const US_PER_DAY = 86_400_000_000n;
const US_PER_MS = 1000n;

/** Floor division for bigint (JavaScript's `/` truncates toward zero). */
function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

/** A Date as a PostgreSQL TimestampTz (µs since 2000-01-01 UTC). */
export function dateToTimestampUs(date: Date): bigint {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new InvalidInputError('invalid Date (NaN) cannot be converted to a timestamp');
  return (BigInt(ms) - BigInt(PG_EPOCH_UNIX_MS)) * US_PER_MS;
}

/** A PostgreSQL TimestampTz as a Date; sub-millisecond digits are floored (Date holds ms). */
export function timestampUsToDate(timestampUs: bigint): Date {
  const ms = Number(floorDiv(timestampUs, US_PER_MS)) + PG_EPOCH_UNIX_MS;
  const d = new Date(ms);
  if (!Number.isFinite(d.getTime())) throw new InvalidInputError(`timestamp ${timestampUs} µs is outside the range of a Date`);
  return d;
}

// Proleptic Gregorian calendar <-> days since 1970-01-01 (H. Hinnant's algorithms), exact for any
// year we accept (0000..9999).
function daysFromCivil(year: number, month: number, day: number): number {
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (month + (month > 2 ? -3 : 9)) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

function civilFromDays(days: number): { year: number; month: number; day: number } {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  return { year: era * 400 + yoe + (month <= 2 ? 1 : 0), month, day };
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

const pad = (n: number | bigint, width: number): string => n.toString().padStart(width, '0');

/**
 * RFC 3339 text in UTC with exactly six fractional digits ("2024-05-01T12:34:56.123456Z"): the
 * full precision of a TimestampTz. Years outside 0000..9999 cannot be written in RFC 3339.
 */
export function formatTimestampUs(timestampUs: bigint): string {
  const unixUs = timestampUs + PG_EPOCH_UNIX_US;
  const days = floorDiv(unixUs, US_PER_DAY);
  let rest = unixUs - days * US_PER_DAY;
  const { year, month, day } = civilFromDays(Number(days));
  if (year < 0 || year > 9999) throw new InvalidInputError(`timestamp ${timestampUs} µs (year ${year}) cannot be written as RFC 3339`);
  const us = rest % 1_000_000n;
  rest /= 1_000_000n;
  const sec = rest % 60n;
  rest /= 60n;
  const min = rest % 60n;
  const hour = rest / 60n;
  return `${pad(year, 4)}-${pad(month, 2)}-${pad(day, 2)}T${pad(hour, 2)}:${pad(min, 2)}:${pad(sec, 2)}.${pad(us, 6)}Z`;
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * Parses RFC 3339 text ("2023-01-01T00:00:00Z", "2023-01-01T01:00:00.5+01:00") to a TimestampTz.
 * Digits beyond microseconds are dropped (the instant is floored to the microsecond). A leap
 * second (":60") is refused, as are impossible dates.
 */
export function parseRfc3339ToTimestampUs(text: string): bigint {
  const m = RFC3339.exec(text);
  const bad = (why: string): InvalidInputError =>
    new InvalidInputError(`invalid RFC 3339 timestamp ${JSON.stringify(text.slice(0, 64))}: ${why}`, { timestamp: text.slice(0, 64) });
  if (m === null) throw bad('expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)');
  const [year, month, day, hour, minute, second] = [1, 2, 3, 4, 5, 6].map((i) => Number(m[i]));
  if (month! < 1 || month! > 12) throw bad(`month ${month} out of range`);
  if (day! < 1 || day! > daysInMonth(year!, month!)) throw bad(`day ${day} out of range for ${pad(year!, 4)}-${pad(month!, 2)}`);
  if (hour! > 23 || minute! > 59 || second! > 59) throw bad('time of day out of range');
  let offsetMin = 0;
  if (m[9] !== undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) throw bad('UTC offset out of range');
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const fraction = m[7] ?? '';
  const us = BigInt((fraction + '000000').slice(0, 6));
  const days = BigInt(daysFromCivil(year!, month!, day!));
  const secondsOfDay = BigInt(hour! * 3600 + minute! * 60 + second! - offsetMin * 60);
  return days * US_PER_DAY + secondsOfDay * 1_000_000n + us - PG_EPOCH_UNIX_US;
}

// ---------------------------------------------------------------------------------------------
// Errors.

/** An LSN the timeline cannot answer for: above its last record or below where its history starts. */
export class LsnOutOfRangeError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('lsn_out_of_range', message, context);
    this.name = 'LsnOutOfRangeError';
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the commit-time trailers of the CLOG pages at one LSN.

/** More CLOG pages than the 32-bit xid space can have (2^32 / 32768): a corrupt directory. */
const MAX_CLOG_PAGES = 131_072;
/** Pages read between two yields to the event loop (each read is synchronous). */
const PAGES_PER_YIELD = 1024;
/** ⌈log2(2^64 / 8)⌉ + 1 probes cover any LSN range; more means a bug. */
const MAX_PROBES = 64;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * Calls `visit` with the commit time on every CLOG page at `lsn` that has one, newest page first
 * (segments, then blocks, descending), until `visit` returns true. Returns whether it stopped early.
 */
async function visitCommitTimestamps(timeline: Timeline, lsn: Lsn, visit: (timestampUs: bigint) => boolean, signal?: AbortSignal): Promise<boolean> {
  const view = new DatadirView(timeline, lsn);
  const segments = Array.from(view.slruSegments(SlruKind.clog)).sort((a, b) => b - a);
  let pagesRead = 0;
  for (const segNo of segments) {
    const blocks = view.slruSegmentSize(SlruKind.clog, segNo);
    for (let b = blocks - 1; b >= 0; b--) {
      if (++pagesRead > MAX_CLOG_PAGES) {
        throw new StrataError('clog_too_large', `timeline ${timeline.timelineId} lists more than ${MAX_CLOG_PAGES} CLOG pages at ${formatLsn(lsn)}`,
          timeline.context({ lsn: formatLsn(lsn) }));
      }
      if (pagesRead % PAGES_PER_YIELD === 0) {
        await yieldToEventLoop();
        signal?.throwIfAborted();
      }
      const page = view.slruPage(SlruKind.clog, segNo, b);
      if (page.length === CLOG_PAGE_WITH_TIMESTAMP_BYTES && visit(page.readBigInt64BE(PG_BLCKSZ))) return true;
    }
  }
  return false;
}

/** Lowest LSN the timeline answers for: its GC cutoff, branch point, or (a root) its initdb LSN. */
function historyStart(timeline: Timeline): Lsn {
  let lsn = timeline.latestGcCutoffLsn;
  const start = timeline.ancestor !== null ? timeline.ancestorLsn : timeline.initdbLsn;
  if (start > lsn) lsn = start;
  return lsn;
}

const alignUp8 = (lsn: Lsn): Lsn => (lsn + 7n) & ~7n;

// ---------------------------------------------------------------------------------------------
// LSN -> time.

export interface TimeLookupOptions {
  /** How long to wait for ancestors to re-ingest up to the branch point after a restart. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/**
 * The newest commit time visible at `lsn` (the largest CLOG trailer there), or null when no page
 * carries one. `lsn` must lie in [history start (GC cutoff, branch point), last_record_lsn].
 */
export async function getTimestampOfLsn(timeline: Timeline, lsn: Lsn, opts: TimeLookupOptions = {}): Promise<bigint | null> {
  timeline.checkReadable();
  if (lsn > timeline.lastRecordLsn) {
    throw new LsnOutOfRangeError(
      `LSN ${formatLsn(lsn)} is beyond the last record ${formatLsn(timeline.lastRecordLsn)} of timeline ${timeline.timelineId}`,
      timeline.context({ lsn: formatLsn(lsn), lastRecordLsn: formatLsn(timeline.lastRecordLsn) }));
  }
  timeline.checkLsnInScope(lsn); // below the GC cutoff: LsnBelowGcCutoffError
  const start = historyStart(timeline);
  if (lsn < start) {
    throw new LsnOutOfRangeError(
      `LSN ${formatLsn(lsn)} is before the start ${formatLsn(start)} of timeline ${timeline.timelineId}'s own history` +
      (timeline.ancestor !== null ? ` (it branched from ${timeline.ancestor.timelineId} there)` : ''),
      timeline.context({ lsn: formatLsn(lsn), historyStartLsn: formatLsn(start) }));
  }
  await waitForLsnWithAncestors(timeline, lsn, opts.timeoutMs ?? timeline.resources.waitLsnTimeoutMs);
  let max: bigint | null = null;
  await visitCommitTimestamps(timeline, lsn, (ts) => {
    if (max === null || ts > max) max = ts;
    return false;
  }, opts.signal);
  return max;
}

// ---------------------------------------------------------------------------------------------
// Time -> LSN.

export type LsnForTimestampKind = 'present' | 'future' | 'past' | 'nodata';

export interface LsnForTimestamp {
  kind: LsnForTimestampKind;
  lsn: Lsn;
}

export interface FindLsnOptions extends TimeLookupOptions {
  /** Called once per probe (tests and metrics): the LSN probed and the predicate's answer. */
  onProbe?: (lsn: Lsn, commitAtOrAfter: boolean) => void;
}

/**
 * The LSN matching a commit time `timestampUs` (TimestampTz µs), with Neon's four outcomes; see
 * the module comment for the exact boundary.
 */
export async function findLsnForTimestamp(timeline: Timeline, timestampUs: bigint, opts: FindLsnOptions = {}): Promise<LsnForTimestamp> {
  timeline.checkReadable();
  const minLsn = alignUp8(historyStart(timeline));
  const maxLsn = timeline.lastRecordLsn & ~7n;
  await waitForLsnWithAncestors(timeline, maxLsn, opts.timeoutMs ?? timeline.resources.waitLsnTimeoutMs);

  // low / high are LSN / 8. Invariant: the first probe point whose answer is "true" is in
  // [low, high]; high = max/8 + 1 stands for "none".
  let low = minLsn / 8n;
  let high = maxLsn / 8n + 1n;
  let foundSmaller = false;
  let foundLarger = false;
  for (let probes = 0; low < high; probes++) {
    assert(probes < MAX_PROBES, 'LSN binary search did not converge', timeline.context({ low: formatLsn(low * 8n), high: formatLsn(high * 8n) }));
    opts.signal?.throwIfAborted();
    if (probes > 0) await yieldToEventLoop();
    const mid = (low + high) / 2n;
    const probeLsn = mid * 8n;
    const atOrAfter = await visitCommitTimestamps(timeline, probeLsn, (ts) => {
      if (ts >= timestampUs) {
        foundLarger = true;
        return true;
      }
      foundSmaller = true;
      return false;
    }, opts.signal);
    opts.onProbe?.(probeLsn, atOrAfter);
    if (atOrAfter) high = mid;
    else low = mid + 1n;
  }
  // low = the first LSN/8 at which a commit at or after ts is visible (max/8 + 1 if none).
  const commitLsn = (low - 1n) * 8n;
  if (!foundSmaller) return { kind: foundLarger ? 'past' : 'nodata', lsn: minLsn };
  if (commitLsn < minLsn) return { kind: 'past', lsn: minLsn };
  return { kind: foundLarger ? 'present' : 'future', lsn: commitLsn };
}
