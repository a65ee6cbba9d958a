/**
 * TIME as `strata timeline branch --at` takes it: RFC 3339, `now`, `<duration> ago`. Expected
 * instants are epoch milliseconds computed independently (Python's datetime), not by the parser.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatTimestamp, parseTimeSpec } from '../../src/control/timespec.ts';
import { InvalidInputError } from '../../src/util/errors.ts';

const NOW = new Date(1714572120000); // 2024-05-01T14:02:00Z

test('now and relative times resolve against the given instant', () => {
  assert.equal(parseTimeSpec('now', NOW).getTime(), 1714572120000);
  assert.equal(parseTimeSpec('  NOW ', NOW).getTime(), 1714572120000);
  assert.equal(parseTimeSpec('10 minutes ago', NOW).getTime(), 1714572120000 - 600_000);
  assert.equal(parseTimeSpec('90 s ago', NOW).getTime(), 1714572120000 - 90_000);
  assert.equal(parseTimeSpec('90s ago', NOW).getTime(), 1714572120000 - 90_000);
  assert.equal(parseTimeSpec('1h 30m ago', NOW).getTime(), 1714572120000 - 5_400_000);
  assert.equal(parseTimeSpec('2 days AGO', NOW).getTime(), 1714572120000 - 172_800_000);
  assert.equal(parseTimeSpec('250ms ago', NOW).getTime(), 1714572120000 - 250);
  // The result is a new Date: changing it does not change `now`.
  const d = parseTimeSpec('now', NOW);
  d.setTime(0);
  assert.equal(NOW.getTime(), 1714572120000);
});

test('RFC 3339 with Z, offsets, a space separator and fractions', () => {
  assert.equal(parseTimeSpec('2024-05-01T14:02:00Z', NOW).getTime(), 1714572120000);
  assert.equal(parseTimeSpec('2024-05-01t14:02:00z', NOW).getTime(), 1714572120000);
  assert.equal(parseTimeSpec('2024-05-01 16:02:00+02:00', NOW).getTime(), 1714572120000);
  assert.equal(parseTimeSpec('2024-05-01T14:02:00-05:30', NOW).getTime(), 1714591920000);
  assert.equal(parseTimeSpec('2024-05-01T14:02:00.1Z', NOW).getTime(), 1714572120100);
  assert.equal(parseTimeSpec('2024-05-01T14:02:00.25Z', NOW).getTime(), 1714572120250);
  // Sub-millisecond digits are truncated, never rounded up (into the future).
  assert.equal(parseTimeSpec('2024-05-01T14:02:00.123999999Z', NOW).getTime(), 1714572120123);
  assert.equal(parseTimeSpec('2024-02-29T23:59:59Z', NOW).getTime(), 1709251199000);
  assert.equal(parseTimeSpec('2000-01-01T00:00:00Z', NOW).getTime(), 946684800000);
  // Future times are not the parser's business (the pageserver answers "future").
  assert.equal(parseTimeSpec('2099-01-01T00:00:00Z', NOW).getTime() > NOW.getTime(), true);
});

test('formatTimestamp writes RFC 3339 in UTC that parses back to the same instant', () => {
  assert.equal(formatTimestamp(new Date(1714572120250)), '2024-05-01T14:02:00.250Z');
  for (const ms of [0, 946684800000, 1714572120123, 1709251199999]) {
    assert.equal(parseTimeSpec(formatTimestamp(new Date(ms)), NOW).getTime(), ms);
  }
});

test('malformed times are refused with a message that says why', () => {
  const cases: Array<[string, RegExp]> = [
    ['2024-05-01T14:02:00', /offset is needed/],
    ['2024-05-01 14:02', /offset is needed/],
    ['2024-05-01', /time of day and an offset/],
    ['2023-02-29T00:00:00Z', /day 29 does not exist in 2023-02/],
    ['2024-04-31T00:00:00Z', /day 31 does not exist/],
    ['2024-13-01T00:00:00Z', /month 13/],
    ['2024-05-01T24:00:00Z', /hour 24/],
    ['2024-05-01T14:60:00Z', /minute 60/],
    ['2024-05-01T14:02:60Z', /leap seconds/],
    ['2024-05-01T14:02:00+24:00', /offset/],
    ['1969-12-31T23:59:59Z', /before 1970/],
    ['yesterday', /not RFC 3339/],
    ['10 ago', /not a duration/],
    ['-5 minutes ago', /not a duration/],
    ['ago', /not RFC 3339/],
    ['5 parsecs ago', /not a duration/],
    ['100000 days ago', /before 1970/],
    ['', /empty/],
    ['   ', /empty/],
    ['x'.repeat(201), /longer than 200/],
  ];
  for (const [text, why] of cases) {
    assert.throws(() => parseTimeSpec(text, NOW), (err: unknown) => {
      assert.ok(err instanceof InvalidInputError, `${JSON.stringify(text)}: ${String(err)}`);
      assert.match(err.message, why, `${JSON.stringify(text)}: ${err.message}`);
      assert.match(err.message, /expected e\.g\./);
      return true;
    });
  }
});
