/**
 * The pure parts of the safekeeper's term rules and wire helpers: where a safekeeper's WAL stops
 * agreeing with an election winner's history (what it must truncate), quorum arithmetic and the
 * compute's synchronous_standby_names, and the pageserver feedback codec.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { highestCommonPoint, validateHistory } from '../../src/safekeeper/timeline.ts';
import { quorumFor, synchronousStandbyNames } from '../../src/compute/election.ts';
import { decodePageserverFeedback, encodePageserverFeedback } from '../../src/safekeeper/feedback.ts';
import type { TermEntry } from '../../src/safekeeper/types.ts';

const h = (...e: [number, number][]): TermEntry[] => e.map(([term, lsn]) => ({ term: BigInt(term), startLsn: BigInt(lsn) }));

test('highestCommonPoint: identical histories agree up to our WAL end', () => {
  assert.equal(highestCommonPoint(h([1, 100]), h([1, 100]), 500n, 100n), 500n);
});

test('highestCommonPoint: a winner that switched terms earlier cuts our tail at its switch', () => {
  // We have term 1 WAL up to 900; the winner's term 1 WAL was followed by term 2 from 600.
  assert.equal(highestCommonPoint(h([1, 100]), h([1, 100], [2, 600]), 900n, 100n), 600n);
});

test('highestCommonPoint: our later term the winner never saw is cut at its start', () => {
  // We switched to term 3 at 700 (a compute that never got a quorum); the winner is in term 2.
  assert.equal(highestCommonPoint(h([1, 100], [3, 700]), h([1, 100], [2, 650]), 900n, 100n), 650n);
});

test('highestCommonPoint: no shared term → only the timeline start is common', () => {
  assert.equal(highestCommonPoint(h([2, 300]), h([1, 100]), 900n, 100n), 100n);
  assert.equal(highestCommonPoint([], h([1, 100]), 100n, 100n), 100n);
});

test('highestCommonPoint: never beyond our own WAL end', () => {
  assert.equal(highestCommonPoint(h([1, 100]), h([1, 100], [2, 600]), 400n, 100n), 400n);
});

test('term history validation refuses non-ascending terms or LSNs', () => {
  validateHistory(h([1, 100], [2, 100], [5, 300]), 'x');
  assert.throws(() => validateHistory(h([2, 100], [2, 200]), 'x'), /not ascending/);
  assert.throws(() => validateHistory(h([1, 300], [2, 200]), 'x'), /not ascending/);
});

test('quorum is a majority; synchronous_standby_names names every safekeeper', () => {
  assert.deepEqual([1, 2, 3, 4, 5].map(quorumFor), [1, 2, 2, 3, 3]);
  const sks = [1n, 2n, 3n].map((id) => ({ id, pgConnstr: '', httpConnstr: '' }));
  assert.equal(synchronousStandbyNames(sks), 'ANY 2 (sk_1, sk_2, sk_3)');
  assert.equal(synchronousStandbyNames(sks.slice(0, 1)), 'ANY 1 (sk_1)');
});

test('pageserver feedback round-trips and rejects malformed input', () => {
  const fb = { writeLsn: 0x1_0000_0028n, flushLsn: 0x1_0000_0010n, applyLsn: 0xfff0n, currentTimelineSizeBytes: 123456789n, replyTimeUs: 777n };
  const buf = encodePageserverFeedback(fb);
  assert.equal(buf[0], 0x7a);
  assert.deepEqual(decodePageserverFeedback(buf), fb);
  assert.throws(() => decodePageserverFeedback(buf.subarray(0, buf.length - 3)), /truncated|claims|bytes/);
  assert.throws(() => decodePageserverFeedback(Buffer.concat([buf, Buffer.from([1])])), /trailing/);
  const bad = Buffer.from(buf);
  bad[0] = 0x72;
  assert.throws(() => decodePageserverFeedback(bad), /not a 'z'/);
  // An unknown key is skipped, a missing one reads as zero.
  const custom = Buffer.concat([Buffer.from([0x7a, 2]), Buffer.from('future_key\0'), Buffer.from([0, 0, 0, 2, 9, 9]),
    Buffer.from('ps_flushlsn\0'), Buffer.from([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 0])]);
  const d = decodePageserverFeedback(custom);
  assert.equal(d.flushLsn, 256n);
  assert.equal(d.writeLsn, 0n);
});
