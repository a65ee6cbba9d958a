/**
 * Points in time as people type them on the command line (`strata timeline branch --at TIME`).
 *
 * Accepted forms, nothing else:
 *   - RFC 3339 with an explicit offset: `2024-05-01T14:02:00Z`, `2024-05-01 14:02:00.250+02:00`
 *     (a space or `T` between date and time; fractions of a second up to nanoseconds, kept to the
 *     millisecond, truncated — never rounded up into the future);
 *   - `now`;
 *   - a duration followed by `ago`: `10 minutes ago`, `90 s ago`, `1h 30m ago` (the duration
 *     grammar is Neon's humantime, shared with the tenant config: src/util/duration.ts).
 * A time without an offset is refused rather than guessed: "14:02" in which zone? The caller
 * gets a Date (milliseconds since the epoch, UTC) and sends it on as RFC 3339 in UTC.
 *
 * Invariant: parsing is pure — `now` is an argument — so the relative forms are testable and one
 * command resolves every relative time against the same instant.
 */
import { InvalidInputError } from '../util/errors.ts';
import { parseDuration } from '../util/duration.ts';

const MAX_TIMESPEC_CHARS = 200;

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

const EXAMPLES = `"2024-05-01T14:02:00Z", "2024-05-01 16:02:00+02:00", "10 minutes ago", "90 s ago" or "now"`;

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** Parses TIME (see the module comment) relative to `now`. */
export function parseTimeSpec(text: string, now: Date): Date {
  const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  const bad = (why: string): InvalidInputError =>
    new InvalidInputError(`invalid time "${shown}": ${why}; expected e.g. ${EXAMPLES}`, { time: shown });
  if (text.length > MAX_TIMESPEC_CHARS) throw bad(`longer than ${MAX_TIMESPEC_CHARS} characters`);
  const t = text.trim();
  if (t === '') throw bad('it is empty');
  if (t.toLowerCase() === 'now') return new Date(now.getTime());

  const ago = /^(.*\S)\s+ago$/i.exec(t);
  if (ago !== null) {
    let ms: number;
    try {
      ms = parseDuration(ago[1]!);
    } catch (err) {
      throw bad(`"${ago[1]}" is not a duration (${err instanceof Error ? err.message.replace(/^invalid duration "[^"]*": /, '') : String(err)})`);
    }
    const at = now.getTime() - ms;
    if (at < 0) throw bad('it is before 1970');
    return new Date(at);
  }

  const m = RFC3339.exec(t);
  if (m === null) {
    if (/^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(t)) throw bad('an offset is needed (Z for UTC, or like +02:00)');
    if (/^\d{4}-\d{2}-\d{2}$/.test(t)) throw bad('a time of day and an offset are needed');
    throw bad('not RFC 3339, "now", or "<duration> ago"');
  }
  const [year, month, day, hour, minute, second] = [m[1], m[2], m[3], m[4], m[5], m[6]].map((s) => Number(s)) as [number, number, number, number, number, number];
  if (month < 1 || month > 12) throw bad(`month ${month} is out of range`);
  if (day < 1 || day > daysInMonth(year, month)) throw bad(`day ${day} does not exist in ${year}-${String(month).padStart(2, '0')}`);
  if (hour > 23) throw bad(`hour ${hour} is out of range`);
  if (minute > 59) throw bad(`minute ${minute} is out of range`);
  if (second > 59) throw bad(second === 60 ? 'leap seconds are not supported' : `second ${second} is out of range`);
  const millis = m[7] === undefined ? 0 : Number(m[7].padEnd(3, '0').slice(0, 3));
  let offsetMin = 0;
  if (m[8] === undefined) {
    const oh = Number(m[10]);
    const om = Number(m[11]);
    if (oh > 23 || om > 59) throw bad(`offset ${m[9]}${m[10]}:${m[11]} is out of range`);
    offsetMin = (m[9] === '-' ? -1 : 1) * (oh * 60 + om);
  }
  const ms = Date.UTC(year, month - 1, day, hour, minute, second, millis) - offsetMin * 60_000;
  if (year < 1970 || ms < 0) throw bad('it is before 1970');
  return new Date(ms);
}

/** RFC 3339 in UTC with milliseconds (what the pageserver API is sent). */
export function formatTimestamp(d: Date): string {
  return d.toISOString();
}
