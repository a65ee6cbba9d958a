/**
 * Tests of the physical replication client (src/postgres/replication.ts) against real PostgreSQL 15.
 *
 * The server is the oracle: the system identifier comes from pg_controldata and pg_control_system(),
 * streamed WAL is compared byte for byte with the server's own pg_wal segment files, our status updates
 * are read back from pg_stat_replication and pg_replication_slots, and the keepalive test first shows
 * (control) that a stream which does not answer is really dropped by the short wal_sender_timeout.
 *
 * Each test starts its own cluster; teardown closes the replication connections first (a walsender
 * with an unconfirmed stream would delay a fast shutdown), then stops and removes the cluster.
 */
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import * as copyStreams from 'pg-copy-streams';
import type { Duplex } from 'node:stream';
import { ReplicationConnection, ReplicationError } from '../../src/postgres/replication.ts';
import type { ReplicationConnectOptions, ReplicationMessage, ReplicationStream } from '../../src/postgres/replication.ts';
import { formatLsn, parseLsn } from '../../src/postgres/lsn.ts';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { parseWalSegmentFileName, walSegmentFileName } from '../../src/postgres/walformat.ts';
import { getFreePort, startPostgres } from '../harness/postgres.ts';
import type { PostgresHandle, StartPostgresOptions } from '../harness/postgres.ts';
import { pgbenchWorkload } from '../harness/workloads.ts';

const MESSAGE_TIMEOUT_MS = 60_000;

async function cluster(t: TestContext, opts: StartPostgresOptions = {}): Promise<{ pgh: PostgresHandle; connect: (o?: Partial<ReplicationConnectOptions>) => Promise<ReplicationConnection> }> {
  const conns: ReplicationConnection[] = [];
  const pgh = await startPostgres(opts);
  t.after(async () => {
    try {
      await Promise.all(conns.map((c) => c.close()));
    } finally {
      try {
        await pgh.stop();
      } finally {
        await pgh.cleanup();
      }
    }
  });
  const connect = async (o: Partial<ReplicationConnectOptions> = {}): Promise<ReplicationConnection> => {
    const c = await ReplicationConnection.connect({ host: pgh.host, port: pgh.port, user: 'postgres', applicationName: 'strata_test', ...o });
    conns.push(c);
    return c;
  };
  return { pgh, connect };
}

/** Reads a stream with a deadline per message, without losing a message when a wait times out. */
class Reader {
  readonly stream: ReplicationStream;
  #pending: Promise<ReplicationMessage | null> | null = null;

  constructor(stream: ReplicationStream) {
    this.stream = stream;
  }

  /** The next message, null at end of stream, 'timeout' if nothing came within ms. */
  async next(ms = MESSAGE_TIMEOUT_MS): Promise<ReplicationMessage | null | 'timeout'> {
    this.#pending ??= this.stream.next();
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.#pending, new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); })]);
    clearTimeout(timer);
    if (r !== 'timeout') this.#pending = null;
    return r;
  }

  /** Reads until the stream has delivered WAL up to `target`, calling onMsg for each message. */
  async readUntil(target: Lsn, onMsg: (m: ReplicationMessage) => void = () => undefined): Promise<void> {
    for (let i = 0; i < 10_000_000 && this.stream.stats.receivedUpTo < target; i++) {
      const m = await this.next();
      if (m === 'timeout') throw new Error(`no replication message within ${MESSAGE_TIMEOUT_MS} ms at ${formatLsn(this.stream.stats.receivedUpTo)} (target ${formatLsn(target)})`);
      if (m === null) throw new Error(`stream ended at ${formatLsn(this.stream.stats.receivedUpTo)} before ${formatLsn(target)}`);
      onMsg(m);
    }
  }
}

async function waitUntil<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (let i = 0; i < 100_000; i++) {
    last = await fn();
    if (last !== undefined) return last;
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

interface StatRow {
  pid: number;
  state: string;
  sent_lsn: string | null;
  write_lsn: string | null;
  flush_lsn: string | null;
  replay_lsn: string | null;
}

async function walsenders(pgh: PostgresHandle, app = 'strata_test'): Promise<StatRow[]> {
  const res = await pgh.query<StatRow>(
    'SELECT pid, state, sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text FROM pg_stat_replication WHERE application_name = $1', [app]);
  return res.rows;
}

/** Bytes [from, to) as the server has them in pg_wal (copied out as root). */
async function walFromFiles(pgh: PostgresHandle, from: Lsn, to: Lsn): Promise<Buffer> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-repl-wal-'));
  try {
    const seg = BigInt(pgh.walSegmentSizeBytes);
    const paths = await pgh.copyWal(dir, { fromLsn: from, throughLsn: to - 1n });
    const parts: Buffer[] = [];
    let expectSeg = from / seg;
    for (const p of paths) {
      const parsed = parseWalSegmentFileName(path.basename(p), pgh.walSegmentSizeBytes);
      assert.ok(parsed !== null && !parsed.partial);
      assert.equal(parsed.segNo, expectSeg, `segment files are contiguous (${path.basename(p)})`);
      expectSeg++;
      parts.push(await fsp.readFile(p));
    }
    const all = Buffer.concat(parts);
    const off = Number(from % seg);
    assert.ok(all.length >= off + Number(to - from), 'pg_wal holds the whole range');
    return all.subarray(off, off + Number(to - from));
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

test('identify system, slots, streaming under pgbench byte-identical to pg_wal, status updates, slot follows flush, clean close', async (t) => {
  const { pgh, connect } = await cluster(t);
  const rc = await connect();

  // IDENTIFY_SYSTEM against pg_controldata and pg_control_system().
  const id = await rc.identifySystem();
  const control = await pgh.run('pg_controldata', [pgh.dataDir]);
  const m = /Database system identifier:\s+(\d+)/.exec(control.stdout);
  assert.ok(m !== null, 'pg_controldata prints the system identifier');
  assert.equal(id.systemId, BigInt(m[1]!));
  const sql = await pgh.query<{ sysid: string; tli: number }>('SELECT system_identifier::text AS sysid, timeline_id AS tli FROM pg_control_system(), pg_control_checkpoint()');
  assert.equal(id.systemId, BigInt(sql.rows[0]!.sysid));
  assert.equal(id.timeline, sql.rows[0]!.tli);
  assert.equal(id.dbName, null, 'a physical walsender is not connected to a database');
  const flushNow = await pgh.currentLsn('flush');
  assert.ok(id.xlogPos > 0n && id.xlogPos <= flushNow, 'xlogpos is a flush position');
  assert.equal(await rc.show('wal_segment_size'), `${pgh.walSegmentSizeBytes / (1024 * 1024)}MB`);

  // Slots.
  const created = await rc.createPhysicalSlot('strata_slot', { reserveWal: true });
  assert.equal(created.created, true);
  assert.equal((await rc.createPhysicalSlot('strata_slot', { reserveWal: true, ifNotExists: true })).created, false);
  await assert.rejects(rc.createPhysicalSlot('strata_slot', { reserveWal: true }), (err: ReplicationError) => {
    assert.equal(err.code, 'replication_command_failed');
    assert.equal(err.sqlState, '42710');
    return true;
  });
  const slotRow = await pgh.query<{ slot_type: string; restart_lsn: string }>("SELECT slot_type, restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'strata_slot'");
  assert.equal(slotRow.rows[0]?.slot_type, 'physical');
  const info = await rc.readSlot('strata_slot');
  assert.ok(info !== null);
  assert.equal(info.slotType, 'physical');
  assert.equal(info.restartLsn, parseLsn(slotRow.rows[0]!.restart_lsn));
  assert.equal(await rc.readSlot('no_such_slot'), null);
  await rc.createPhysicalSlot('doomed', {});
  await rc.dropSlot('doomed');
  assert.equal((await pgh.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'doomed'")).rowCount, 0);
  await rc.dropSlot('doomed', { ifExists: true });
  await assert.rejects(rc.dropSlot('doomed'), (err: ReplicationError) => err.sqlState === '42704');

  // Stream from the start of the current segment while pgbench writes.
  const seg = BigInt(pgh.walSegmentSizeBytes);
  const start = (info.restartLsn! / seg) * seg;
  const stream = rc.startReplication({ slot: 'strata_slot', startLsn: start, timeline: id.timeline });
  await assert.rejects(rc.identifySystem(), (err: ReplicationError) => err.code === 'replication_busy');
  const reader = new Reader(stream);
  const chunks: Buffer[] = [];
  const onMsg = (msg: ReplicationMessage): void => {
    if (msg.kind !== 'xlogData') return;
    assert.ok(msg.walEnd >= msg.dataStart + BigInt(msg.data.length), 'walEnd is at or past the data sent');
    assert.ok(msg.data.length <= 128 * 1024, 'at most MAX_SEND_SIZE per message');
    chunks.push(msg.data);
    stream.setPositions({ write: stream.stats.receivedUpTo, flush: stream.stats.receivedUpTo, apply: 0n });
  };
  const work = pgbenchWorkload(pgh, { scale: 1, durationS: 3, clients: 2 });
  // Consume while the workload runs (the stream must keep up and not block pgbench).
  const firstPart = reader.readUntil(start + 4n * 1024n * 1024n, onMsg);
  const wr = await work;
  await firstPart;
  const target = await pgh.currentLsn('flush');
  assert.ok(wr.endLsn > start + 8n * 1024n * 1024n, 'the workload wrote a good amount of WAL');
  await pgh.query('CREATE TABLE after_target AS SELECT 1 AS x'); // so more WAL flows past the target
  await reader.readUntil(target, onMsg);
  const received = Buffer.concat(chunks);
  const upTo = stream.stats.receivedUpTo;
  assert.equal(BigInt(received.length), upTo - start, 'stats agree with the bytes delivered');
  const fromFiles = await walFromFiles(pgh, start, upTo);
  const diff = firstDifference(received, fromFiles);
  assert.equal(diff, -1, `streamed WAL differs from pg_wal at ${diff >= 0 ? formatLsn(start + BigInt(diff)) : '-'}`);
  assert.ok(stream.stats.xlogDataMessages > 10);
  t.diagnostic(`compared ${received.length} streamed WAL bytes ${formatLsn(start)}..${formatLsn(upTo)} in ${stream.stats.xlogDataMessages} messages with pg_wal`);

  // Our status update shows up in pg_stat_replication; the slot's restart_lsn follows flush.
  const write = upTo;
  const flush = upTo - 0x120n;
  const apply = upTo - 0x3000n;
  stream.sendStatusUpdate({ write, flush, apply });
  const row = await waitUntil('pg_stat_replication to show our positions', async () => {
    const rows = await walsenders(pgh);
    const r = rows[0];
    return r !== undefined && r.write_lsn === formatLsn(write) && r.flush_lsn === formatLsn(flush) && r.replay_lsn === formatLsn(apply) ? r : undefined;
  });
  assert.equal(row.state, 'streaming');
  const restart = await pgh.query<{ restart_lsn: string; active_pid: number }>("SELECT restart_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = 'strata_slot'");
  assert.equal(restart.rows[0]?.restart_lsn, formatLsn(flush));
  assert.equal(restart.rows[0]?.active_pid, row.pid);
  // Periodic updates (default every 1 s) repeat the last positions, never something we did not report.
  const sentBefore = stream.stats.statusUpdatesSent;
  await new Promise((r) => setTimeout(r, 2_300));
  assert.ok(stream.stats.statusUpdatesSent >= sentBefore + 2, 'periodic status updates are sent');
  const again = (await walsenders(pgh))[0];
  assert.equal(again?.flush_lsn, formatLsn(flush));

  // close(): CopyDone, then Terminate: no walsender is left and the server saw no EOF mid-stream.
  const walsenderPid = row.pid;
  await rc.close();
  await waitUntil('the walsender to exit', async () => ((await walsenders(pgh)).length === 0 ? true : undefined));
  const procs = await pgh.query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender'");
  assert.equal(procs.rowCount, 0);
  const slotAfter = await pgh.query<{ active: boolean }>("SELECT active FROM pg_replication_slots WHERE slot_name = 'strata_slot'");
  assert.equal(slotAfter.rows[0]?.active, false);
  const log = await fsp.readFile(pgh.logFile, 'utf8');
  assert.doesNotMatch(log, /unexpected EOF on standby connection/, `walsender ${walsenderPid} ended cleanly`);
  await assert.rejects(rc.identifySystem(), (err: ReplicationError) => err.code === 'replication_closed');
  await rc.close(); // idempotent
});

test('keepalives asking for a reply are answered: the connection outlives a short wal_sender_timeout', async (t) => {
  const { pgh, connect } = await cluster(t, { conf: { wal_sender_timeout: '2s' } });

  // Control: a CopyBoth stream that never answers is dropped by the server within a few seconds.
  const control = new pg.Client({ ...pgh.connectionConfig(), application_name: 'control', replication: 'true' } as pg.ClientConfig);
  control.on('error', () => undefined);
  t.after(() => control.end().catch(() => undefined));
  await control.connect();
  const flush = await pgh.currentLsn('flush');
  const both = (copyStreams as unknown as { both: (sql: string, o: object) => Duplex }).both;
  const silent = both(`START_REPLICATION PHYSICAL ${formatLsn(flush)}`, { alignOnCopyDataFrame: true });
  silent.on('data', () => undefined);
  const dropped = new Promise<string>((resolve) => {
    silent.once('error', (e: Error) => resolve(e.message));
    control.once('end', () => resolve('end'));
  });
  control.query(silent as unknown as pg.Submittable);
  const t0 = Date.now();
  const outcome = await Promise.race([dropped, new Promise<string>((r) => setTimeout(() => r('still alive'), 15_000))]);
  const controlMs = Date.now() - t0;
  assert.notEqual(outcome, 'still alive', 'control: the server drops a stream that does not reply');
  assert.ok(controlMs >= 1_500, 'control: not before wal_sender_timeout');
  assert.ok(controlMs < 6_000, 'control: dropped well within the time our stream has to survive');

  // Our stream: periodic updates effectively off, so only keepalive replies keep it alive.
  const rc = await connect({ statusIntervalMs: 600_000 });
  const id = await rc.identifySystem();
  const stream = rc.startReplication({ startLsn: id.xlogPos, timeline: id.timeline });
  const reader = new Reader(stream);
  const pid = await waitUntil('our walsender', async () => (await walsenders(pgh))[0]?.pid);
  let replyRequests = 0;
  // 7 s = 3.5 × wal_sender_timeout, far longer than the control survived.
  const end = Date.now() + 7_000;
  for (let i = 0; i < 100_000 && Date.now() < end; i++) {
    const msg = await reader.next(Math.max(1, end - Date.now()));
    if (msg === 'timeout') break;
    assert.ok(msg !== null, 'the stream does not end');
    if (msg.kind === 'keepalive' && msg.replyRequested) replyRequests++;
  }
  t.diagnostic(`control dropped after ${controlMs} ms (${outcome}); our stream answered ${replyRequests} reply requests in 7 s`);
  assert.ok(replyRequests >= 2, `the server asked for replies (${replyRequests} times) and got them`);
  assert.equal(stream.stats.statusUpdatesSent, replyRequests, 'one status update per reply request, nothing periodic');
  assert.equal((await walsenders(pgh))[0]?.pid, pid, 'the same walsender is still serving us');
  // And WAL still flows.
  await pgh.query('CREATE TABLE after_idle AS SELECT generate_series(1, 1000) AS x');
  const target = await pgh.currentLsn('flush');
  await reader.readUntil(target);
  assert.ok(stream.stats.receivedUpTo >= target);
  // end() leaves streaming mode (CopyDone both ways) and the connection takes commands again.
  await stream.end();
  assert.equal(stream.state, 'ended');
  assert.equal(await reader.next(5_000), null, 'an ended stream yields no more messages');
  assert.equal((await rc.identifySystem()).systemId, id.systemId);
  // The walsender stays (it serves commands now) but is no longer streaming.
  await waitUntil('the walsender to leave streaming', async () => ((await walsenders(pgh))[0]?.state === 'startup' ? true : undefined));
});

test('a slow consumer applies backpressure: the walsender blocks instead of us buffering', async (t) => {
  const { pgh, connect } = await cluster(t);
  const rc = await connect();
  const id = await rc.identifySystem();
  const seg = BigInt(pgh.walSegmentSizeBytes);
  const start = (id.xlogPos / seg) * seg;
  const stream = rc.startReplication({ startLsn: start, timeline: id.timeline });
  const reader = new Reader(stream);
  // Read one message so the stream is established, then stop reading.
  const first = await reader.next();
  assert.ok(first !== null && first !== 'timeout');
  await pgh.query('CREATE TABLE big AS SELECT g AS x FROM generate_series(1, 1000000) g');
  const target = await pgh.currentLsn('flush');
  assert.ok(target - start > 60n * 1024n * 1024n, `workload wrote ${target - start} bytes of WAL`);
  // Wait until the walsender stops advancing.
  let sent = 0n;
  await waitUntil('sent_lsn to stop advancing', async () => {
    const before = parseLsn((await walsenders(pgh))[0]?.sent_lsn ?? '0/0');
    await new Promise((r) => setTimeout(r, 1_000));
    sent = parseLsn((await walsenders(pgh))[0]?.sent_lsn ?? '0/0');
    return sent === before ? true : undefined;
  }, 30_000);
  t.diagnostic(`walsender blocked at ${sent - start} bytes of ${target - start}`);
  assert.ok(sent - start < 32n * 1024n * 1024n, `the walsender is blocked after ${sent - start} bytes (socket buffers + a few messages), not ${target - start}`);
  assert.ok(stream.stats.receivedUpTo < start + 1024n * 1024n, 'we decoded nothing while not reading');
  // Reading resumes the flow and everything arrives.
  let bytes = first.kind === 'xlogData' ? first.data.length : 0;
  await reader.readUntil(target, (m) => { if (m.kind === 'xlogData') bytes += m.data.length; });
  assert.equal(BigInt(bytes), stream.stats.receivedUpTo - start);
  await rc.close();
});

test('typed errors: WAL removed, start ahead of flush, refused connection, auth failure, walsender terminated', async (t) => {
  const { pgh, connect } = await cluster(t, {
    initdbArgs: ['--wal-segsize=1'],
    conf: { wal_keep_size: 0, min_wal_size: '2MB', max_wal_size: '32MB' },
  });
  const seg = BigInt(pgh.walSegmentSizeBytes);
  const oldStart = ((await pgh.currentLsn('flush')) / seg) * seg;
  for (let i = 0; i < 6; i++) {
    await pgh.query(`CREATE TABLE filler_${i} AS SELECT generate_series(1, 2000) AS x`);
    await pgh.switchWal();
  }
  await pgh.checkpoint();
  await pgh.checkpoint();
  const oldFile = walSegmentFileName(1, oldStart / seg, pgh.walSegmentSizeBytes);
  const present = await fsp.readdir(pgh.walDir);
  assert.equal(present.includes(oldFile), false, `precondition: ${oldFile} was removed or recycled`);

  const rc = await connect();
  const removed = rc.startReplication({ startLsn: oldStart, timeline: 1 });
  await assert.rejects(removed.next(), (err: ReplicationError) => {
    assert.ok(err instanceof ReplicationError);
    assert.equal(err.code, 'replication_wal_removed');
    assert.equal(err.sqlState, '58P01');
    assert.equal(err.context['startLsn'], formatLsn(oldStart));
    assert.equal(err.context['port'], pgh.port);
    assert.equal(err.context['host'], pgh.host);
    assert.equal(err.context['segment'], oldFile);
    return true;
  });
  // The walsender went back to command mode: the connection is still usable.
  const id = await rc.identifySystem();

  const ahead = rc.startReplication({ startLsn: id.xlogPos + 64n * seg, timeline: id.timeline });
  await assert.rejects(ahead.next(), (err: ReplicationError) => err.code === 'replication_command_failed' && /ahead of the WAL flush position/.test(err.message));

  // Nothing listening.
  const freePort = await getFreePort();
  await assert.rejects(ReplicationConnection.connect({ host: pgh.host, port: freePort, user: 'postgres' }), (err: ReplicationError) => {
    assert.equal(err.code, 'replication_connection_failed');
    assert.equal(err.context['port'], freePort);
    return true;
  });

  // SCRAM: a role with a password and pg_hba lines that demand it.
  await pgh.query("CREATE ROLE strata_repl LOGIN REPLICATION PASSWORD 'right-password'");
  const hba = path.join(pgh.dataDir, 'pg_hba.conf');
  const oldHba = await fsp.readFile(hba, 'utf8');
  await fsp.writeFile(hba, 'host replication strata_repl 127.0.0.1/32 scram-sha-256\nhost all strata_repl 127.0.0.1/32 scram-sha-256\n' + oldHba);
  await pgh.query('SELECT pg_reload_conf()');
  const refused = await waitUntil('pg_hba.conf reload', async () => {
    try {
      const c = await ReplicationConnection.connect({ host: pgh.host, port: pgh.port, user: 'strata_repl', password: 'wrong-password' });
      await c.close(); // still trust: the reload has not happened yet
      return undefined;
    } catch (err) {
      return err as ReplicationError;
    }
  });
  assert.equal(refused.code, 'replication_connection_failed');
  assert.equal(refused.sqlState, '28P01');
  assert.match(refused.message, /password authentication failed/);
  const scram = await connect({ user: 'strata_repl', password: 'right-password', applicationName: 'scram_user' });
  assert.equal((await scram.identifySystem()).systemId, id.systemId);
  await scram.close();

  // The walsender is terminated while streaming.
  const stream = rc.startReplication({ startLsn: id.xlogPos, timeline: id.timeline });
  const reader = new Reader(stream);
  const pid = await waitUntil('our walsender', async () => (await walsenders(pgh))[0]?.pid);
  await pgh.query('SELECT pg_terminate_backend($1)', [pid]);
  let failure: unknown = null;
  for (let i = 0; i < 1_000; i++) {
    try {
      const m = await reader.next(15_000);
      assert.notEqual(m, 'timeout', 'the stream fails promptly');
      assert.notEqual(m, null, 'a terminated walsender is a failure, not a normal end');
    } catch (err) {
      failure = err;
      break;
    }
  }
  assert.ok(failure instanceof ReplicationError, 'typed error');
  assert.equal(failure.code, 'replication_connection_lost');
  assert.equal(failure.context['port'], pgh.port);
  await rc.close(); // must not hang on a dead connection
});
