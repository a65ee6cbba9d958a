/**
 * The pageserver's per-timeline WAL connection manager: the pure decision function rule by rule,
 * the retry backoff, and the ConnectionManager driving scripted connections with a fake clock
 * (plus one run on real timers).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SafekeeperTimelineInfo } from '../../src/broker/types.ts';
import {
  ConnectionManager, decideNextConnection, retryAfterDrop, type CandidateEntry, type ConnectionManagerSettings,
  type CurrentConnection, type DecisionInput, type RetryState, type WalConnection, type WalConnectionEvents,
  type WalConnectionState, type WalConnectionTarget,
} from '../../src/pageserver/connmanager.ts';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { Logger, type LogFields, type LogLevel } from '../../src/util/log.ts';

/** Keeps the manager's info lines out of the test output (set STRATA_TEST_LOG=1 to see them). */
class QuietLogger extends Logger {
  override child(_fields: LogFields): Logger {
    return this;
  }

  override log(level: LogLevel, message: string, fields: LogFields): void {
    if (process.env['STRATA_TEST_LOG'] === '1') super.log(level, message, fields);
  }
}
const quiet = new QuietLogger();

const TENANT = '0123456789abcdef0123456789abcdef';
const TIMELINE = 'fedcba9876543210fedcba9876543210';
const MIB = 1024 * 1024;
const SETTINGS: ConnectionManagerSettings = { walreceiverConnectTimeoutMs: 10_000, laggingWalTimeoutMs: 10_000, maxLsnWalLagBytes: 10 * MIB };
const T0 = 1_700_000_000_000;

function info(id: number, commitLsn: Lsn, connstr = `sk${id}:5454`, over: Partial<SafekeeperTimelineInfo> = {}): SafekeeperTimelineInfo {
  return {
    tenantId: TENANT, timelineId: TIMELINE, safekeeperId: BigInt(id), term: 1n, lastLogTerm: 1n, flushLsn: commitLsn, commitLsn,
    backupLsn: 0n, remoteConsistentLsn: 0n, peerHorizonLsn: 0n, localStartLsn: 0n, safekeeperConnstr: connstr, httpConnstr: '', ...over,
  };
}

function cands(...entries: [SafekeeperTimelineInfo, number][]): Map<bigint, CandidateEntry> {
  return new Map(entries.map(([i, at]) => [i.safekeeperId, { info: i, receivedAtMs: at }]));
}

function conn(id: number, over: Partial<CurrentConnection> = {}): CurrentConnection {
  return {
    safekeeperId: BigInt(id), startedAtMs: T0 - 1_000, isConnected: true, lastMessageAtMs: T0, commitLsn: 0x5000n,
    receivedLsn: 0x5000n, lastWalProgressAtMs: T0, discoveredNewWal: null, ...over,
  };
}

function input(over: Partial<DecisionInput>): DecisionInput {
  return { candidates: new Map(), current: null, retries: new Map(), nowMs: T0, lastRecordLsn: 0x1000n, settings: SETTINGS, ...over };
}

function decidedId(d: ReturnType<typeof decideNextConnection>): bigint | null {
  return d.kind === 'connect' || d.kind === 'switch' ? d.candidate.safekeeperId : null;
}

// ---------------------------------------------------------------------------------------------
// The decision function

test('no connection: connect to the candidate with the highest commit LSN', () => {
  const d = decideNextConnection(input({ candidates: cands([info(1, 0x100n), T0], [info(2, 0x300n), T0], [info(3, 0x200n), T0]) }));
  assert.equal(d.kind, 'connect');
  assert.equal(decidedId(d), 2n);
  assert.equal(d.kind === 'connect' ? d.reason.kind : '', 'NoExistingConnection');
  assert.equal(d.kind === 'connect' ? d.candidate.connstr : '', 'sk2:5454');
});

test('no candidates at all: none-available', () => {
  const d = decideNextConnection(input({}));
  assert.deepEqual(d, { kind: 'none-available', freshCandidates: 0, inCooldown: 0 });
});

test('ties on commit LSN go to the lowest safekeeper id, whatever the arrival order', () => {
  const a = decideNextConnection(input({ candidates: cands([info(7, 0x300n), T0], [info(3, 0x300n), T0], [info(5, 0x100n), T0]) }));
  const b = decideNextConnection(input({ candidates: cands([info(3, 0x300n), T0], [info(7, 0x300n), T0]) }));
  assert.equal(decidedId(a), 3n);
  assert.equal(decidedId(b), 3n);
});

test('a candidate with commit LSN 0 or no connection string is not applicable', () => {
  assert.equal(decideNextConnection(input({ candidates: cands([info(1, 0n), T0]) })).kind, 'none-available');
  assert.equal(decidedId(decideNextConnection(input({ candidates: cands([info(1, 0n), T0], [info(2, 0x10n), T0]) }))), 2n);
  assert.equal(decideNextConnection(input({ candidates: cands([info(1, 0x900n, ''), T0]) })).kind, 'none-available');
  assert.equal(decidedId(decideNextConnection(input({ candidates: cands([info(1, 0x900n, ''), T0], [info(2, 0x10n), T0]) }))), 2n);
});

test('candidates without an update for longer than lagging_wal_timeout are dropped', () => {
  const c = cands([info(1, 0x900n), T0 - 10_001], [info(2, 0x100n), T0 - 10_000]);
  assert.equal(decidedId(decideNextConnection(input({ candidates: c }))), 2n, 'the stale one is ignored, one exactly at the limit is not');
  const onlyStale = decideNextConnection(input({ candidates: cands([info(1, 0x900n), T0 - 10_001]) }));
  assert.deepEqual(onlyStale, { kind: 'none-available', freshCandidates: 0, inCooldown: 0 });
});

test('a safekeeper in retry cooldown is skipped until its retry time', () => {
  const c = cands([info(1, 0x900n), T0], [info(2, 0x100n), T0]);
  const retries = new Map<bigint, RetryState>([[1n, { nextRetryAtMs: T0 + 50, backoffMs: 150 }]]);
  assert.equal(decidedId(decideNextConnection(input({ candidates: c, retries }))), 2n);
  assert.equal(decidedId(decideNextConnection(input({ candidates: c, retries, nowMs: T0 + 50 }))), 1n, 'cooldown over at its retry time');
  const single = decideNextConnection(input({ candidates: cands([info(1, 0x900n), T0]), retries }));
  assert.deepEqual(single, { kind: 'none-available', freshCandidates: 1, inCooldown: 1 });
});

test('retry backoff: 100 ms, ×1.5 per drop, capped at 15 s, counted from the attempt start', () => {
  let r: RetryState | undefined;
  const waits: number[] = [];
  for (let i = 0; i < 20; i++) {
    const start = T0 + i * 100_000;
    r = retryAfterDrop(r, start);
    waits.push(r.nextRetryAtMs! - start);
  }
  assert.deepEqual(waits.slice(0, 4), [100, 150, 225, 337.5]);
  for (let i = 1; i < waits.length; i++) assert.ok(waits[i]! >= waits[i - 1]!, 'never shrinks');
  assert.equal(waits[waits.length - 1], 15_000);
  assert.equal(r!.backoffMs, 15_000);
  assert.ok(waits.filter((w) => w === 15_000).length >= 5, 'stays at the cap');
});

test('connected and nothing better: keep', () => {
  const d = decideNextConnection(input({ current: conn(1), candidates: cands([info(1, 0x5000n), T0], [info(2, 0x5000n), T0]) }));
  assert.equal(d.kind, 'keep');
});

test('the current safekeeper is never "switched" to a candidate behind it', () => {
  const d = decideNextConnection(input({
    current: conn(1, { commitLsn: 0x5000n + BigInt(20 * MIB), receivedLsn: 0x5000n + BigInt(20 * MIB) }),
    candidates: cands([info(1, 0x5000n + BigInt(20 * MIB)), T0], [info(2, 0x5000n), T0]),
  }));
  assert.equal(d.kind, 'keep');
});

test('NoKeepAlives: silence longer than walreceiver_connect_timeout switches to the best other', () => {
  const c = cands([info(1, 0x5000n), T0], [info(2, 0x4000n), T0], [info(3, 0x4800n), T0]);
  const atLimit = decideNextConnection(input({ current: conn(1, { lastMessageAtMs: T0 - 10_000 }), candidates: c }));
  assert.equal(atLimit.kind, 'keep');
  const d = decideNextConnection(input({ current: conn(1, { lastMessageAtMs: T0 - 10_001 }), candidates: c }));
  assert.equal(d.kind, 'switch');
  assert.equal(decidedId(d), 3n, 'best among the others, even though they are behind');
  assert.equal(d.kind === 'switch' ? d.reason.kind : '', 'NoKeepAlives');
});

test('NoKeepAlives also bounds a connection attempt that never completes', () => {
  const c = cands([info(1, 0x5000n), T0], [info(2, 0x5000n + BigInt(50 * MIB)), T0]);
  const pending = conn(1, { isConnected: false, startedAtMs: T0 - 9_000, lastMessageAtMs: T0 - 9_000, commitLsn: null, receivedLsn: null });
  assert.equal(decideNextConnection(input({ current: pending, candidates: c })).kind, 'keep', 'no LaggingWal while still connecting');
  const d = decideNextConnection(input({ current: { ...pending, startedAtMs: T0 - 10_001, lastMessageAtMs: T0 - 10_001 }, candidates: c }));
  assert.equal(d.kind === 'switch' ? d.reason.kind : d.kind, 'NoKeepAlives');
  assert.equal(decidedId(d), 2n);
});

test('still connecting: no switch for missing WAL before the connect timeout', () => {
  const settings = { ...SETTINGS, walreceiverConnectTimeoutMs: 30_000 };
  const pending = conn(1, {
    isConnected: false, startedAtMs: T0 - 15_000, lastMessageAtMs: T0 - 15_000, commitLsn: null, receivedLsn: null,
    lastWalProgressAtMs: T0 - 15_000, discoveredNewWal: { lsn: 0x7000n, discoveredAtMs: T0 - 10_001 },
  });
  const c = cands([info(1, 0x5000n), T0], [info(2, 0x7000n), T0]);
  assert.equal(decideNextConnection(input({ current: pending, candidates: c, settings })).kind, 'keep');
  const connected = decideNextConnection(input({ current: { ...pending, isConnected: true }, candidates: c, settings }));
  assert.equal(connected.kind === 'switch' ? connected.reason.kind : connected.kind, 'NoWalTimeout', 'the same state, connected, does switch');
});

test('NoKeepAlives with no other safekeeper reconnects to the same one, if it is still a candidate', () => {
  const silent = conn(1, { lastMessageAtMs: T0 - 20_000 });
  const d = decideNextConnection(input({ current: silent, candidates: cands([info(1, 0x5000n), T0]) }));
  assert.equal(d.kind, 'switch');
  assert.equal(decidedId(d), 1n);
  const gone = decideNextConnection(input({ current: silent, candidates: cands([info(1, 0x5000n), T0 - 10_001]) }));
  assert.equal(gone.kind, 'keep', 'a stale current candidate is not reconnected to');
  const cooling = decideNextConnection(input({
    current: silent, candidates: cands([info(1, 0x5000n), T0]), retries: new Map([[1n, { nextRetryAtMs: T0 + 1, backoffMs: 150 }]]),
  }));
  assert.equal(cooling.kind, 'keep');
});

test('LaggingWal: another safekeeper ahead by at least max_lsn_wal_lag', () => {
  const cur = conn(1, { commitLsn: 0x100000n, receivedLsn: 0x100000n });
  const below = decideNextConnection(input({ current: cur, candidates: cands([info(1, 0x100000n), T0], [info(2, 0x100000n + BigInt(10 * MIB) - 1n), T0]) }));
  assert.equal(below.kind, 'keep');
  const at = decideNextConnection(input({ current: cur, candidates: cands([info(1, 0x100000n), T0], [info(2, 0x100000n + BigInt(10 * MIB)), T0]) }));
  assert.equal(at.kind === 'switch' ? at.reason.kind : at.kind, 'LaggingWal');
  assert.equal(decidedId(at), 2n);
  if (at.kind === 'switch' && at.reason.kind === 'LaggingWal') {
    assert.equal(at.reason.currentCommitLsn, 0x100000n);
    assert.equal(at.reason.newCommitLsn, 0x100000n + BigInt(10 * MIB));
  }
  const noKeepaliveYet = decideNextConnection(input({
    current: { ...cur, commitLsn: null, receivedLsn: null, lastWalProgressAtMs: T0 },
    candidates: cands([info(2, 0x100000n + BigInt(10 * MIB)), T0]), lastRecordLsn: 0x100000n,
  }));
  assert.equal(noKeepaliveYet.kind, 'keep', 'no commit LSN from the current one yet: LaggingWal cannot be judged');
});

test('LaggingWal judges the current safekeeper by its own broker info too, not only by a stale walEnd', () => {
  // Our ingest is behind: the last message we processed says commit 0x100000, but the current
  // safekeeper publishes 0x100000 + 12 MiB, as much as the other one.
  const cur = conn(1, { commitLsn: 0x100000n, receivedLsn: 0x100000n });
  const far = 0x100000n + BigInt(12 * MIB);
  const bothAhead = decideNextConnection(input({ current: cur, candidates: cands([info(1, far), T0], [info(2, far + 1n), T0]) }));
  assert.equal(bothAhead.kind, 'keep');
  const ownStale = decideNextConnection(input({ current: cur, candidates: cands([info(1, far), T0 - 10_001], [info(2, far + 1n), T0]) }));
  assert.equal(ownStale.kind === 'switch' ? ownStale.reason.kind : ownStale.kind, 'LaggingWal', 'a stale own info does not count');
  const ownBehind = decideNextConnection(input({ current: cur, candidates: cands([info(1, 0x80000n), T0], [info(2, far), T0]) }));
  assert.equal(ownBehind.kind === 'switch' ? ownBehind.reason.kind : ownBehind.kind, 'LaggingWal', 'an older own info does not lower the walEnd');
  if (ownBehind.kind === 'switch' && ownBehind.reason.kind === 'LaggingWal') assert.equal(ownBehind.reason.currentCommitLsn, 0x100000n);
});

test('the current safekeeper disappearing from the candidates does not drop the connection', () => {
  const cur = conn(1, { commitLsn: 0x5000n });
  assert.equal(decideNextConnection(input({ current: cur, candidates: new Map() })).kind, 'keep');
  const d = decideNextConnection(input({ current: cur, candidates: cands([info(2, 0x5000n + BigInt(10 * MIB)), T0]) }));
  assert.equal(d.kind === 'switch' ? d.reason.kind : d.kind, 'LaggingWal', 'rules still use the commit LSN from its keepalives');
});

test('NoWalTimeout: the current one has WAL it does not send, another has more', () => {
  // received 0x4000, the current safekeeper says commit 0x5000: WAL is owed, last arrived 10.001 s ago.
  const cur = conn(1, { receivedLsn: 0x4000n, commitLsn: 0x5000n, lastWalProgressAtMs: T0 - 10_001 });
  const ahead = cands([info(1, 0x5000n), T0], [info(2, 0x6000n), T0]);
  const d = decideNextConnection(input({ current: cur, candidates: ahead }));
  assert.equal(d.kind === 'switch' ? d.reason.kind : d.kind, 'NoWalTimeout');
  assert.equal(decidedId(d), 2n);
  const recent = decideNextConnection(input({ current: { ...cur, lastWalProgressAtMs: T0 - 10_000 }, candidates: ahead }));
  assert.equal(recent.kind, 'keep');
  const notAhead = decideNextConnection(input({ current: cur, candidates: cands([info(2, 0x5000n), T0]) }));
  assert.equal(notAhead.kind, 'keep', 'no candidate has more WAL than the current commit LSN');
});

test('NoWalTimeout: another has WAL the current one lacks for longer than lagging_wal_timeout', () => {
  const c = cands([info(1, 0x5000n), T0], [info(2, 0x7000n), T0]);
  const first = decideNextConnection(input({ current: conn(1), candidates: c }));
  assert.equal(first.kind, 'keep');
  assert.deepEqual(first.kind === 'keep' ? first.discoveredNewWal : null, { lsn: 0x7000n, discoveredAtMs: T0 });
  // The sighting is carried forward; it only counts while the current commit LSN stays below it.
  const later = T0 + 10_001;
  const c2 = cands([info(1, 0x5000n), later], [info(2, 0x7000n), later]);
  const stillBehind = conn(1, { lastMessageAtMs: later, lastWalProgressAtMs: T0, discoveredNewWal: { lsn: 0x7000n, discoveredAtMs: T0 } });
  const d = decideNextConnection(input({ current: stillBehind, candidates: c2, nowMs: later }));
  assert.equal(d.kind === 'switch' ? d.reason.kind : d.kind, 'NoWalTimeout');
  assert.equal(decidedId(d), 2n);
  const notYet = decideNextConnection(input({ current: stillBehind, candidates: c2, nowMs: T0 + 10_000 }));
  assert.equal(notYet.kind, 'keep');
  // The current one caught up to the sighting: forgotten, and nothing new to wait for.
  const caughtUp = conn(1, { commitLsn: 0x7000n, receivedLsn: 0x7000n, lastMessageAtMs: later, discoveredNewWal: { lsn: 0x7000n, discoveredAtMs: T0 } });
  const k = decideNextConnection(input({ current: caughtUp, candidates: c2, nowMs: later }));
  assert.deepEqual(k, { kind: 'keep', discoveredNewWal: null });
});

test('the decision does not modify its input', () => {
  const c = cands([info(1, 0x5000n), T0], [info(2, 0x7000n), T0 - 20_000]);
  const cur = conn(1);
  const before = JSON.stringify([...c.entries(), cur], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  decideNextConnection(input({ current: cur, candidates: c }));
  assert.equal(JSON.stringify([...c.entries(), cur], (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)), before);
  assert.equal(c.size, 2);
});

// ---------------------------------------------------------------------------------------------
// The manager, with scripted connections

class Clock {
  nowMs = T0;
  readonly now = (): number => this.nowMs;
  advance(ms: number): void {
    this.nowMs += ms;
  }
}

class ScriptedConnection implements WalConnection {
  readonly target: WalConnectionTarget;
  readonly startedAtMs: number;
  readonly st: WalConnectionState;
  closed = false;
  private readonly events: WalConnectionEvents;
  private readonly clock: Clock;

  constructor(target: WalConnectionTarget, events: WalConnectionEvents, clock: Clock) {
    this.target = target;
    this.events = events;
    this.clock = clock;
    this.startedAtMs = clock.nowMs;
    this.st = { isConnected: false, lastMessageAtMs: clock.nowMs, commitLsn: null, receivedLsn: null, lastWalProgressAtMs: clock.nowMs };
  }

  get state(): WalConnectionState {
    return this.st;
  }

  connected(): void {
    this.st.isConnected = true;
    this.st.lastMessageAtMs = this.clock.nowMs;
  }

  keepalive(commitLsn: Lsn): void {
    this.st.lastMessageAtMs = this.clock.nowMs;
    this.st.commitLsn = commitLsn;
  }

  wal(upTo: Lsn, commitLsn: Lsn): void {
    this.keepalive(commitLsn);
    this.st.receivedLsn = upTo;
    this.st.lastWalProgressAtMs = this.clock.nowMs;
  }

  fail(message: string): void {
    this.events.onEnd(new Error(message));
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.events.onEnd(null);
    }
    return Promise.resolve();
  }
}

interface Rig {
  clock: Clock;
  mgr: ConnectionManager;
  opened: ScriptedConnection[];
  last(): ScriptedConnection;
}

function rig(opts: { failOnOpen?: (t: WalConnectionTarget) => boolean; throwOnOpen?: boolean } = {}): Rig {
  const clock = new Clock();
  const opened: ScriptedConnection[] = [];
  const mgr = new ConnectionManager({
    tenantId: TENANT, timelineId: TIMELINE, ...SETTINGS, evaluateIntervalMs: 0, now: clock.now, lastRecordLsn: () => 0x1000n, log: quiet,
    connect: (target, events) => {
      if (opts.throwOnOpen === true) throw new Error('cannot open');
      const c = new ScriptedConnection(target, events, clock);
      opened.push(c);
      if (opts.failOnOpen?.(target) === true) queueMicrotask(() => c.fail('connection refused'));
      return c;
    },
  });
  return { clock, mgr, opened, last: () => opened[opened.length - 1]! };
}

test('manager: connects to the best candidate on the first update and reports it', async () => {
  const { mgr, opened, last } = rig();
  mgr.start();
  mgr.push(info(1, 0x3000n));
  mgr.push(info(2, 0x5000n));
  mgr.push({ ...info(9, 0x9000n), timelineId: '00000000000000000000000000000001' }); // another timeline: ignored
  await mgr.evaluate();
  assert.equal(opened.length, 1);
  assert.equal(last().target.safekeeperId, 2n);
  assert.equal(last().target.connstr, 'sk2:5454');
  const s = mgr.status;
  assert.equal(s.safekeeperId, 2n);
  assert.equal(s.state, 'connecting');
  assert.equal(s.lastReason?.kind, 'NoExistingConnection');
  assert.equal(s.connects, 1);
  assert.equal(s.updatesReceived, 2);
  assert.deepEqual(s.candidates.map((c) => c.safekeeperId).sort(), [1n, 2n]);
  last().connected();
  assert.equal(mgr.status.state, 'streaming');
  await mgr.stop();
});

test('manager: switches away when the current safekeeper stops sending keepalives', async () => {
  const { clock, mgr, opened, last } = rig();
  mgr.start();
  mgr.push(info(1, 0x5000n));
  mgr.push(info(2, 0x4000n));
  await mgr.evaluate();
  const a = last();
  assert.equal(a.target.safekeeperId, 1n);
  a.connected();
  a.wal(0x5000n, 0x5000n);
  // 12 s: both keep publishing, but only safekeeper 2's data moves; safekeeper 1 falls silent.
  for (let i = 0; i < 12; i++) {
    clock.advance(1_000);
    mgr.push(info(1, 0x5000n));
    mgr.push(info(2, 0x4000n));
    await mgr.evaluate();
    if (i < 10) assert.equal(opened.length, 1, `still on safekeeper 1 after ${i + 1} s`);
  }
  assert.equal(opened.length, 2);
  assert.ok(a.closed, 'the silent connection was closed');
  assert.equal(last().target.safekeeperId, 2n);
  assert.equal(mgr.status.lastReason?.kind, 'NoKeepAlives');
  assert.equal(mgr.status.switches, 1);
  assert.equal(mgr.status.safekeeperId, 2n);
  await mgr.stop();
});

test('manager: switches when another safekeeper is ahead by max_lsn_wal_lag', async () => {
  const { clock, mgr, opened, last } = rig();
  mgr.start();
  mgr.push(info(1, 0x100000n));
  await mgr.evaluate();
  const a = last();
  a.connected();
  a.wal(0x100000n, 0x100000n);
  clock.advance(500);
  mgr.push(info(2, 0x100000n + BigInt(10 * MIB) - 1n));
  await mgr.evaluate();
  assert.equal(opened.length, 1, 'one byte short of the lag: stay');
  clock.advance(500);
  a.keepalive(0x100000n);
  mgr.push(info(2, 0x100000n + BigInt(10 * MIB)));
  await mgr.evaluate();
  assert.equal(opened.length, 2);
  assert.ok(a.closed);
  assert.equal(last().target.safekeeperId, 2n);
  assert.equal(mgr.status.lastReason?.kind, 'LaggingWal');
  await mgr.stop();
});

test('manager: switches when no WAL arrives for lagging_wal_timeout while another has more', async () => {
  const { clock, mgr, opened, last } = rig();
  mgr.start();
  mgr.push(info(1, 0x8000n));
  await mgr.evaluate();
  const a = last();
  a.connected();
  a.wal(0x6000n, 0x8000n); // the safekeeper claims commit 0x8000 but we only got up to 0x6000
  mgr.push(info(2, 0x8100n));
  for (let i = 0; i < 11; i++) {
    clock.advance(1_000);
    a.keepalive(0x8000n); // alive, but no WAL
    mgr.push(info(1, 0x8000n));
    mgr.push(info(2, 0x8100n));
    await mgr.evaluate();
    if (i < 10) assert.equal(opened.length, 1, `still waiting after ${i + 1} s`);
  }
  assert.equal(opened.length, 2);
  assert.equal(last().target.safekeeperId, 2n);
  assert.equal(mgr.status.lastReason?.kind, 'NoWalTimeout');
  await mgr.stop();
});

test('manager: a safekeeper that fails is retried with growing backoff; others are used meanwhile', async () => {
  const { clock, mgr, opened } = rig({ failOnOpen: (t) => t.safekeeperId === 1n });
  mgr.start();
  mgr.push(info(1, 0x5000n));
  await mgr.evaluate();
  await new Promise((r) => setImmediate(r)); // the scripted failure fires
  await mgr.evaluate();
  assert.equal(opened.length, 1);
  assert.equal(mgr.status.state, 'idle');
  assert.match(mgr.status.lastError ?? '', /connection refused/);
  assert.equal(mgr.status.connectionsEnded, 1);
  // First retry 100 ms after the first attempt started, the next 150 ms after the second started.
  const expectWaits = [100, 150, 225];
  for (const wait of expectWaits) {
    const startedAt = opened[opened.length - 1]!.startedAtMs;
    clock.nowMs = startedAt + wait - 1;
    await mgr.evaluate();
    assert.equal(mgr.status.state, 'idle', `no retry before ${wait} ms`);
    const n: number = opened.length;
    clock.nowMs = startedAt + wait;
    await mgr.evaluate();
    assert.equal(opened.length, n + 1, `retried at ${wait} ms`);
    await new Promise((r) => setImmediate(r));
    await mgr.evaluate();
  }
  const r = mgr.retryState().get(1n)!;
  assert.equal(r.nextRetryAtMs! - opened[opened.length - 1]!.startedAtMs, 100 * 1.5 ** 3, 'the fourth wait');
  // Another safekeeper appears: it is used at once while 1 cools down.
  mgr.push(info(2, 0x4000n));
  await mgr.evaluate();
  assert.equal(opened[opened.length - 1]!.target.safekeeperId, 2n);
  await mgr.stop();
});

test('manager: a connection that received WAL resets its backoff', async () => {
  const { clock, mgr, opened, last } = rig();
  mgr.start();
  mgr.push(info(1, 0x5000n));
  await mgr.evaluate();
  last().fail('boom');
  await mgr.evaluate();
  clock.advance(100);
  await mgr.evaluate();
  assert.equal(opened.length, 2);
  last().fail('boom');
  await mgr.evaluate();
  assert.equal(mgr.retryState().get(1n)?.backoffMs, 225, 'two drops');
  clock.advance(150);
  await mgr.evaluate();
  assert.equal(opened.length, 3);
  const c = last();
  c.connected();
  c.wal(0x5000n, 0x5000n);
  clock.advance(60_000);
  c.keepalive(0x5000n);
  mgr.push(info(1, 0x5000n));
  await mgr.evaluate();
  c.fail('connection reset');
  await mgr.evaluate();
  // Long-lived and healthy: retried at once, and the backoff starts over.
  assert.equal(opened.length, 4);
  assert.equal(mgr.retryState().get(1n)?.backoffMs, 150);
  await mgr.stop();
});

test('manager: a factory that throws counts as a failed attempt', async () => {
  const { mgr, opened } = rig({ throwOnOpen: true });
  mgr.start();
  mgr.push(info(1, 0x5000n));
  await mgr.evaluate();
  assert.equal(opened.length, 0);
  assert.equal(mgr.status.state, 'idle');
  assert.match(mgr.status.lastError ?? '', /cannot open/);
  assert.equal(mgr.retryState().get(1n)?.nextRetryAtMs, T0 + 100);
  await mgr.stop();
});

test('manager: stale candidates are forgotten; stop() closes the connection and ends decisions', async () => {
  const { clock, mgr, opened, last } = rig();
  mgr.start();
  mgr.push(info(1, 0x5000n));
  mgr.push(info(2, 0x4000n));
  await mgr.evaluate();
  last().connected();
  clock.advance(5_000);
  last().keepalive(0x5000n);
  mgr.push(info(1, 0x5000n));
  clock.advance(5_001);
  last().keepalive(0x5000n);
  await mgr.evaluate();
  assert.deepEqual(mgr.status.candidates.map((c) => c.safekeeperId), [1n], 'safekeeper 2 went silent on the broker');
  const a = last();
  await mgr.stop();
  assert.ok(a.closed);
  assert.equal(mgr.status.state, 'stopped');
  assert.equal(mgr.status.safekeeperId, null);
  mgr.push(info(3, 0x9000n));
  await mgr.evaluate();
  assert.equal(opened.length, 1, 'nothing opened after stop');
});

test('manager on real timers: candidate updates from an AsyncIterable, switch on silence by the timer', async () => {
  const queue: SafekeeperTimelineInfo[] = [];
  let wake: (() => void) | null = null;
  let ended = false;
  const updates: AsyncIterable<SafekeeperTimelineInfo> = {
    [Symbol.asyncIterator]: () => ({
      next: async (): Promise<IteratorResult<SafekeeperTimelineInfo>> => {
        while (queue.length === 0 && !ended) await new Promise<void>((r) => { wake = r; });
        return queue.length > 0 ? { done: false, value: queue.shift()! } : { done: true, value: undefined };
      },
      return: async (): Promise<IteratorResult<SafekeeperTimelineInfo>> => {
        ended = true;
        wake?.();
        return { done: true, value: undefined };
      },
    }),
  };
  const send = (i: SafekeeperTimelineInfo): void => { queue.push(i); wake?.(); };
  const opened: { id: bigint; at: number; conn: WalConnection }[] = [];
  const mgr = new ConnectionManager({
    tenantId: TENANT, timelineId: TIMELINE, walreceiverConnectTimeoutMs: 150, laggingWalTimeoutMs: 5_000, maxLsnWalLagBytes: MIB,
    evaluateIntervalMs: 20, lastRecordLsn: () => 0x1000n, updates, log: quiet,
    connect: (target, events) => {
      const t = Date.now();
      // Connects, then never sends anything.
      const c: WalConnection = {
        state: { isConnected: true, lastMessageAtMs: t, commitLsn: null, receivedLsn: null, lastWalProgressAtMs: t },
        close: async () => { events.onEnd(null); },
      };
      opened.push({ id: target.safekeeperId, at: t, conn: c });
      return c;
    },
  });
  try {
    mgr.start();
    send(info(1, 0x5000n));
    send(info(2, 0x4000n));
    const deadline = Date.now() + 5_000;
    while (opened.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(opened.length >= 3, `expected repeated switches on silence, got ${opened.length} connections`);
    assert.equal(opened[0]!.id, 1n);
    assert.equal(opened[1]!.id, 2n);
    assert.ok(opened[1]!.at - opened[0]!.at >= 150, 'not before the connect timeout');
    assert.equal(mgr.status.lastReason?.kind, 'NoKeepAlives');
  } finally {
    await mgr.stop();
  }
  assert.equal(ended, true, 'stop() ended the update iterator');
});

test('manager: stop() during a switch waits for the old connection and opens no new one', async () => {
  const clock = new Clock();
  const opened: bigint[] = [];
  let releaseClose: () => void = () => undefined;
  const closeGate = new Promise<void>((r) => { releaseClose = r; });
  let closed = 0;
  const mgr = new ConnectionManager({
    tenantId: TENANT, timelineId: TIMELINE, ...SETTINGS, evaluateIntervalMs: 0, now: clock.now, lastRecordLsn: () => 0x1000n, log: quiet,
    connect: (target, events) => {
      opened.push(target.safekeeperId);
      const t = clock.nowMs;
      return {
        state: { isConnected: true, lastMessageAtMs: t, commitLsn: null, receivedLsn: null, lastWalProgressAtMs: t },
        close: async () => {
          await closeGate;
          closed++;
          events.onEnd(null);
        },
      };
    },
  });
  mgr.start();
  mgr.push(info(1, 0x5000n));
  mgr.push(info(2, 0x4000n));
  await mgr.evaluate();
  assert.deepEqual(opened, [1n]);
  clock.advance(10_001);
  mgr.push(info(1, 0x5000n));
  mgr.push(info(2, 0x4000n)); // starts the switch (NoKeepAlives); the close hangs on the gate
  await new Promise((r) => setImmediate(r));
  let stopped = false;
  const stopping = mgr.stop().then(() => { stopped = true; });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(stopped, false, 'stop() waits for the connection to close');
  releaseClose();
  await stopping;
  assert.equal(closed, 1);
  assert.deepEqual(opened, [1n], 'no connection opened after stop()');
});
