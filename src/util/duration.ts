/**
 * Human-readable durations, as Neon's configuration accepts them.
 *
 * Neon's tenant configuration and pageserver.toml take durations as "humantime" text: one or more
 * spans, each an unsigned integer followed by a unit, optionally separated by whitespace ("10 m",
 * "1 hr", "7 days", "1h 30m", "1h30m"). Strata keeps durations as a whole number of milliseconds (a
 * JS number), so this module is the single bridge between the two:
 *
 *  - `parseDuration` accepts the same unit spellings humantime does (units are case-sensitive:
 *    `m` is minutes and `M` is months). Arithmetic is done in bigint nanoseconds so that no
 *    intermediate value loses precision; the result must be a whole number of milliseconds and at
 *    most Number.MAX_SAFE_INTEGER. Anything else (empty text, a sign, a fraction, a bare number, an
 *    unknown unit) is an InvalidInputError that quotes the text and says what was wrong.
 *  - `formatDuration` writes a canonical form made only of `d`, `h`, `m`, `s`, `ms` spans separated
 *    by single spaces ("1h 30m", "7d", "0s"). Every output parses back to the same value, both here
 *    and in humantime, so files Strata writes stay readable by Neon-style tooling.
 *
 * Months and years are accepted on input (30.44 and 365.25 days, as humantime defines them) but
 * never produced on output: they are not whole days and would make the canonical form surprising.
 */
import { InvalidInputError } from './errors.ts';

const NS_PER_MS = 1_000_000n;
const NS_PER_S = 1_000_000_000n;

/** Unit spelling → length in nanoseconds. Same spellings as humantime. */
const UNIT_NS: ReadonlyMap<string, bigint> = new Map<string, bigint>([
  ...spellings(['nanos', 'nsec', 'ns'], 1n),
  ...spellings(['usec', 'us', 'µs'], 1_000n),
  ...spellings(['millis', 'msec', 'ms'], NS_PER_MS),
  ...spellings(['seconds', 'second', 'secs', 'sec', 's'], NS_PER_S),
  ...spellings(['minutes', 'minute', 'mins', 'min', 'm'], 60n * NS_PER_S),
  ...spellings(['hours', 'hour', 'hrs', 'hr', 'h'], 3_600n * NS_PER_S),
  ...spellings(['days', 'day', 'd'], 86_400n * NS_PER_S),
  ...spellings(['weeks', 'week', 'w'], 7n * 86_400n * NS_PER_S),
  ...spellings(['months', 'month', 'M'], 2_630_016n * NS_PER_S),
  ...spellings(['years', 'year', 'y'], 31_557_600n * NS_PER_S),
]);

function spellings(names: readonly string[], ns: bigint): Array<[string, bigint]> {
  return names.map((n) => [n, ns]);
}

/** Longest accepted input; durations are short, and this bounds the scan. */
const MAX_DURATION_TEXT_CHARS = 256;
const MAX_SAFE_MS = BigInt(Number.MAX_SAFE_INTEGER);

/** One span: digits, optional whitespace, a unit made of letters (or µ). */
const SPAN = /\s*([0-9]+)\s*([A-Za-zµ]*)/y;

/** Parses humantime text ("10 m", "1 hr", "1h 30m") into milliseconds. */
export function parseDuration(text: string): number {
  if (typeof text !== 'string') {
    throw new InvalidInputError(`invalid duration: expected text such as "10 m" or "1 hr", got ${typeof text}`);
  }
  const shown = text.length > 80 ? `${text.slice(0, 80)}…` : text;
  const bad = (why: string): InvalidInputError =>
    new InvalidInputError(`invalid duration "${shown}": ${why}; expected spans like "10 m", "1 hr", "7 days", "1h 30m"`, { duration: shown });
  if (text.length > MAX_DURATION_TEXT_CHARS) throw bad(`longer than ${MAX_DURATION_TEXT_CHARS} characters`);
  const trimmedEnd = text.trimEnd().length;
  let pos = 0;
  let spans = 0;
  let totalNs = 0n;
  while (true) {
    // Skip leading whitespace to see whether anything is left.
    while (pos < trimmedEnd && /\s/.test(text[pos]!)) pos++;
    if (pos >= trimmedEnd) break;
    SPAN.lastIndex = pos;
    const m = SPAN.exec(text);
    if (m === null || m.index !== pos) {
      const ch = text[pos]!;
      if (ch === '-') throw bad('negative durations are not allowed');
      if (ch === '+') throw bad('a sign is not allowed');
      throw bad(`expected a number at offset ${pos}, found "${ch}"`);
    }
    const digits = m[1]!;
    const unit = m[2]!;
    const after = SPAN.lastIndex;
    if (unit === '') {
      const next = text[after];
      if (next === '.' || next === ',') throw bad('fractions are not allowed; use a smaller unit (e.g. "1500ms")');
      if (next === undefined || after >= trimmedEnd) throw bad(`a unit is needed after ${digits}, e.g. "${digits}s" or "${digits}ms"`);
      throw bad(`unexpected "${next}" at offset ${after}`);
    }
    const unitNs = UNIT_NS.get(unit);
    if (unitNs === undefined) throw bad(`unknown unit "${unit}" (use ns, us, ms, s/sec/seconds, m/min/minutes, h/hr/hours, d/days, w/weeks, M/months, y/years)`);
    totalNs += BigInt(digits) * unitNs;
    if (totalNs / NS_PER_MS > MAX_SAFE_MS) throw bad(`too large (more than ${Number.MAX_SAFE_INTEGER} ms)`);
    pos = after;
    spans++;
    // A span must be followed by whitespace, another span's digits, or the end.
    const next = text[pos];
    if (next !== undefined && pos < trimmedEnd && !/[\s0-9]/.test(next)) throw bad(`unexpected "${next}" at offset ${pos}`);
  }
  if (spans === 0) throw bad('it is empty');
  if (totalNs % NS_PER_MS !== 0n) throw bad('not a whole number of milliseconds');
  return Number(totalNs / NS_PER_MS);
}

const FORMAT_UNITS: ReadonlyArray<[string, number]> = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
  ['ms', 1],
];

/** Canonical text for a duration in milliseconds: "10m", "1h 30m", "7d", "0s". */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new InvalidInputError(`cannot format duration ${ms} ms: expected a non-negative whole number of milliseconds`, { durationMs: ms });
  }
  if (ms === 0) return '0s';
  const parts: string[] = [];
  let rest = ms;
  for (const [unit, size] of FORMAT_UNITS) {
    const n = Math.floor(rest / size);
    if (n > 0) {
      parts.push(`${n}${unit}`);
      rest -= n * size;
    }
  }
  return parts.join(' ');
}
