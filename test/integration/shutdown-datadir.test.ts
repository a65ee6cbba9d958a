/**
 * A vanilla PostgreSQL 15 starts as "shut down at L" from a data directory whose pg_wal holds only
 * the segment(s) built by buildShutdownCheckpointSegment and whose pg_control was re-encoded by
 * encodeControlFile to point at it (postgres15.md §5.4).
 *
 * One pgbench cluster is stopped cleanly; for each L (in the old checkpoint's segment, mid-page in a
 * later segment, at a page boundary, at a segment boundary, with the record crossing a page, with
 * its header split across pages, crossing into the next segment, ending exactly at a page end and
 * at a segment end) a copy of its data dir gets an empty pg_wal plus our WAL and pg_control, then:
 *  - pg_waldump (an independent reader), scanning from L's page start and from the segment start,
 *    finds exactly one record, our CHECKPOINT_SHUTDOWN at L;
 *  - the server starts without recovery ("was shut down at", no "redo starts"), pg_control_checkpoint()
 *    reports L, the pgbench data is all there, writes commit and the insert LSN is past the record;
 *  - after an immediate stop, the WAL the server appended continues right after our record
 *    (xl_prev = L), and crash recovery replays it from there ("redo starts at" the next record)
 *    and keeps the writes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { chown, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { getFreePort, LOOPBACK_HOST, postgresOsUser, startPostgres, type PostgresHandle } from '../harness/postgres.ts';
import { pgbenchWorkload } from '../harness/workloads.ts';
import { DBState, encodeControlFile, parseControlFile, type ControlFileData } from '../../src/postgres/pgcontrol.ts';
import { buildShutdownCheckpointSegment, checkpointRecordEnd, normalizeCheckpointLsn, type ShutdownCheckpointWal } from '../../src/postgres/shutdownwal.ts';
import { formatLsn, formatLsnPadded, parseLsn, type Lsn } from '../../src/postgres/lsn.ts';

const PAGE = 8192n;
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

// ---------------------------------------------------------------------------------------------
// A postmaster on a data dir we prepared (the harness only starts clusters it initdb'ed itself).

interface Server {
  port: number;
  pid: number;
  stop(mode: 'fast' | 'immediate'): Promise<void>;
}

const liveServers = new Set<Server>();

function serverEnv(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG') && v !== undefined) env[k] = v;
  env['HOME'] = home;
  env['LC_ALL'] = 'C';
  return env;
}

function logTail(logFile: string): string {
  try {
    return fs.readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '(no log)';
  }
}

async function startServer(binDir: string, dataDir: string, socketDir: string, logFile: string): Promise<Server> {
  const user = postgresOsUser();
  for (let attempt = 1; ; attempt++) {
    const port = await getFreePort();
    const logFd = fs.openSync(logFile, 'a', 0o644);
    if (user !== null) fs.fchownSync(logFd, user.uid, user.gid);
    let child: ChildProcess;
    try {
      child = spawn(join(binDir, 'postgres'), ['-D', dataDir, '-c', `port=${port}`, '-c', `listen_addresses=${LOOPBACK_HOST}`, '-c', `unix_socket_directories=${socketDir}`], {
        env: serverEnv(socketDir), cwd: socketDir, stdio: ['ignore', logFd, logFd], detached: true,
        ...(user !== null ? { uid: user.uid, gid: user.gid } : {}),
      });
    } finally {
      fs.closeSync(logFd);
    }
    let exited = false;
    const exitPromise = new Promise<void>((resolve) => {
      child.once('exit', () => { exited = true; resolve(); });
      child.once('error', () => { exited = true; resolve(); });
    });
    const pid = child.pid ?? -1;
    const server: Server = {
      port,
      pid,
      async stop(mode) {
        if (!exited) {
          try { process.kill(pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT'); } catch { /* gone */ }
          let timer: NodeJS.Timeout | undefined;
          const timedOut = await Promise.race([exitPromise.then(() => false), new Promise<boolean>((r) => { timer = setTimeout(() => r(true), STOP_TIMEOUT_MS); })]);
          clearTimeout(timer);
          if (timedOut) {
            try { process.kill(-pid, 'SIGKILL'); } catch { /* gone */ }
            await exitPromise;
          }
        }
        liveServers.delete(server);
      },
    };
    liveServers.add(server);
    const deadline = Date.now() + START_TIMEOUT_MS;
    let ready = false;
    while (!exited && Date.now() < deadline) {
      const c = new pg.Client({ host: LOOPBACK_HOST, port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 2_000 });
      c.on('error', () => undefined);
      try {
        await c.connect();
        const r = await c.query<{ d: string }>("SELECT current_setting('data_directory') AS d");
        await c.end();
        if (r.rows[0]?.d === dataDir) { ready = true; break; }
      } catch {
        await c.end().catch(() => undefined);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    if (ready) return server;
    await server.stop('immediate');
    const tail = logTail(logFile);
    if (attempt < 3 && /Address already in use/.test(tail)) continue;
    throw new Error(`postgres on ${dataDir} did not start:\n${tail}`);
  }
}

async function withClient<T>(port: number, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ host: LOOPBACK_HOST, port, user: 'postgres', database: 'postgres' });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// pg_waldump

interface WaldumpLine {
  rmgr: string;
  totLen: number;
  xid: number;
  lsn: string;
  prev: string;
  desc: string;
}

function runWaldump(binDir: string, args: string[]): Promise<{ records: WaldumpLine[]; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(join(binDir, 'pg_waldump'), args, { maxBuffer: 64 * 1024 * 1024, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== 'number') { reject(err); return; }
      const records: WaldumpLine[] = [];
      for (const line of stdout.split('\n')) {
        const m = /^rmgr: (\S+)\s+len \(rec\/tot\):\s*\d+\/\s*(\d+), tx:\s*(\d+), lsn: (\S+), prev (\S+), desc: (.*)$/.exec(line);
        if (m !== null) records.push({ rmgr: m[1]!, totLen: Number(m[2]), xid: Number(m[3]), lsn: m[4]!, prev: m[5]!, desc: m[6]! });
      }
      resolve({ records, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------------------

describe('a data dir with synthesized pg_control + shutdown checkpoint starts as "shut down at L"', () => {
  let origin: PostgresHandle;
  let control: ControlFileData;
  let origEnd: Lsn;
  let seg: bigint;
  const user = postgresOsUser();

  before(async () => {
    origin = await startPostgres();
    await pgbenchWorkload(origin, { scale: 1, transactions: 100, clients: 2 });
    await origin.query('CREATE TABLE before_copy (id int)');
    await origin.query('INSERT INTO before_copy SELECT generate_series(1, 10)');
    await origin.stop({ mode: 'fast' });
    control = parseControlFile(await readFile(join(origin.dataDir, 'global', 'pg_control')));
    assert.equal(control.state, DBState.SHUTDOWNED);
    seg = BigInt(control.xlogSegSize);
    origEnd = checkpointRecordEnd(control.checkPoint, control.xlogSegSize);
  });

  after(async () => {
    for (const s of [...liveServers]) await s.stop('immediate');
    if (origin !== undefined) await origin.cleanup();
  });

  /** L for each case, computed from the original cluster's WAL end (all at or after it). */
  const cases: { name: string; lsn: () => Lsn; prev?: () => Lsn; segments: number }[] = [
    { name: 'right after the original checkpoint (same segment)', lsn: () => origEnd, prev: () => control.checkPoint, segments: 1 },
    { name: 'mid-page in a later segment', lsn: () => (origEnd / seg + 2n) * seg + 5n * PAGE + 1000n, segments: 1 },
    { name: 'exactly at a page boundary (normalized past the short header)', lsn: () => (origEnd / seg + 3n) * seg + 7n * PAGE, segments: 1 },
    { name: 'exactly at a segment boundary (normalized past the long header)', lsn: () => (origEnd / seg + 4n) * seg, segments: 1 },
    { name: 'near a page end: the record crosses into the next page', lsn: () => (origEnd / seg + 5n) * seg + 4n * PAGE - 48n, segments: 1 },
    { name: 'the record header is split across pages', lsn: () => (origEnd / seg + 6n) * seg + 9n * PAGE - 8n, segments: 1 },
    { name: 'the record crosses into the next segment', lsn: () => (origEnd / seg + 8n) * seg - 16n, segments: 2 },
    { name: 'the record ends exactly at a page end', lsn: () => (origEnd / seg + 9n) * seg + 3n * PAGE - 120n, segments: 1 },
    { name: 'the record ends exactly at a segment end', lsn: () => (origEnd / seg + 11n) * seg - 120n, segments: 1 },
  ];

  for (const c of cases) {
    test(c.name, async (t) => {
      const caseDir = await mkdtemp(join(tmpdir(), 'strata-shutdown-'));
      let server: Server | undefined;
      t.after(async () => {
        if (server !== undefined) await server.stop('immediate');
        if (process.env['STRATA_KEEP_TMP'] === '1') process.stderr.write(`keeping ${caseDir}\n`); else await rm(caseDir, { recursive: true, force: true });
      });
      if (user !== null) await chown(caseDir, user.uid, user.gid);
      const dataDir = join(caseDir, 'data');
      const logFile = join(caseDir, 'postgres.log');
      const own = async (p: string): Promise<void> => { if (user !== null) await chown(p, user.uid, user.gid); };

      // Copy the stopped cluster without its WAL; pg_wal starts empty (archive_status too).
      await mkdir(dataDir, { mode: 0o700 });
      await own(dataDir);
      for (const name of await readdir(origin.dataDir)) {
        if (name === 'pg_wal') continue;
        await cp(join(origin.dataDir, name), join(dataDir, name), { recursive: true, preserveTimestamps: true });
      }
      if (user !== null) {
        const all = await readdir(dataDir, { recursive: true });
        for (const p of all) await chown(join(dataDir, p), user.uid, user.gid);
      }
      const walDir = join(dataDir, 'pg_wal');
      await mkdir(walDir, { mode: 0o700 });
      await own(walDir);

      const requested = c.lsn();
      assert.ok(requested >= origEnd, 'L is not before the original WAL end');
      const L = normalizeCheckpointLsn(requested, control.xlogSegSize);
      const nowSec = BigInt(Math.floor(Date.now() / 1000));
      const prevLsn = c.prev?.() ?? 0n;
      const wal: ShutdownCheckpointWal = buildShutdownCheckpointSegment({
        lsn: requested,
        systemId: control.systemIdentifier,
        timeline: control.checkPointCopy.thisTimeLineId,
        segmentSizeBytes: control.xlogSegSize,
        checkPoint: { ...control.checkPointCopy, timeUnixSec: nowSec, oldestActiveXid: 0 },
        prevLsn,
      });
      assert.equal(wal.recordLsn, L);
      assert.equal(wal.segments.length, c.segments);
      for (const s of wal.segments) {
        await writeFile(join(walDir, s.fileName), s.bytes, { mode: 0o600 });
        await own(join(walDir, s.fileName));
      }
      const newControl: ControlFileData = {
        ...control,
        state: DBState.SHUTDOWNED,
        timeSec: nowSec,
        checkPoint: wal.recordLsn,
        checkPointCopy: wal.checkPoint,
        minRecoveryPoint: 0n,
        minRecoveryPointTli: 0,
        backupStartPoint: 0n,
        backupEndPoint: 0n,
        backupEndRequired: false,
      };
      await writeFile(join(dataDir, 'global', 'pg_control'), encodeControlFile(newControl));

      // pg_waldump finds our record scanning from L's page start and from the segment start.
      const recPage = L - (L % PAGE);
      for (const from of [recPage, (L / seg) * seg]) {
        // -e: stop at the record's end (without it, pg_waldump waits ~5 s for a missing next segment).
        const dump = await runWaldump(origin.binDir, ['-p', walDir, '-s', formatLsn(from), '-e', formatLsn(wal.recordEndLsn)]);
        assert.equal(dump.records.length, 1, `pg_waldump -s ${formatLsn(from)}:\n${dump.stdout}\n${dump.stderr}`);
        const r = dump.records[0]!;
        assert.equal(r.rmgr, 'XLOG');
        assert.equal(r.totLen, 114);
        assert.equal(r.xid, 0);
        assert.equal(r.lsn, formatLsnPadded(L));
        assert.equal(r.prev, formatLsnPadded(prevLsn));
        const cp0 = control.checkPointCopy;
        assert.ok(r.desc.startsWith(`CHECKPOINT_SHUTDOWN redo ${formatLsn(L)}; tli ${cp0.thisTimeLineId}; prev tli ${cp0.prevTimeLineId};`), r.desc);
        assert.match(r.desc, new RegExp(`; xid ${cp0.nextXid >> 32n}:${cp0.nextXid & 0xffff_ffffn}; oid ${cp0.nextOid}; `));
        assert.equal(dump.stderr, '', 'pg_waldump reports no error up to the record end');
      }

      // Start: no recovery.
      server = await startServer(origin.binDir, dataDir, caseDir, logFile);
      const log1 = await readFile(logFile, 'utf8');
      assert.match(log1, /database system was shut down at/);
      assert.doesNotMatch(log1, /redo starts|not properly shut down|crash recovery|invalid/);
      assert.match(log1, /database system is ready to accept connections/);
      const s1 = server;
      await withClient(s1.port, async (cl) => {
        const ck = await cl.query<{ checkpoint_lsn: string; redo_lsn: string; timeline_id: number }>('SELECT checkpoint_lsn::text, redo_lsn::text, timeline_id FROM pg_control_checkpoint()');
        assert.equal(parseLsn(ck.rows[0]!.checkpoint_lsn), L);
        assert.equal(parseLsn(ck.rows[0]!.redo_lsn), L);
        const n = await cl.query<{ n: string }>('SELECT count(*)::text AS n FROM pgbench_accounts');
        assert.equal(n.rows[0]!.n, '100000');
        const b = await cl.query<{ n: string }>('SELECT count(*)::text AS n FROM before_copy');
        assert.equal(b.rows[0]!.n, '10');
        await cl.query('UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid = 42');
        await cl.query('CREATE TABLE after_start (id int PRIMARY KEY, v text)');
        await cl.query("INSERT INTO after_start SELECT g, 'row ' || g FROM generate_series(1, 1000) g");
        const lsn = await cl.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
        assert.ok(parseLsn(lsn.rows[0]!.lsn) > wal.recordEndLsn, `insert LSN ${lsn.rows[0]!.lsn} is past the record end ${formatLsn(wal.recordEndLsn)}`);
      });
      const balanceBefore = await withClient(s1.port, async (cl) => (await cl.query<{ b: number }>('SELECT abalance AS b FROM pgbench_accounts WHERE aid = 42')).rows[0]!.b);

      // Immediate stop: the new WAL follows our record, and crash recovery replays it from there.
      await s1.stop('immediate');
      server = undefined;
      const dump = await runWaldump(origin.binDir, ['-p', walDir, '-s', formatLsn(L)]);
      assert.ok(dump.records.length >= 2, `records after ours:\n${dump.stdout.slice(0, 2000)}\n${dump.stderr}`);
      assert.equal(dump.records[0]!.lsn, formatLsnPadded(L));
      assert.equal(dump.records[1]!.lsn, formatLsnPadded(wal.nextRecordLsn), 'the first new record starts right after ours');
      assert.equal(dump.records[1]!.prev, formatLsnPadded(L), "the first new record's xl_prev is our record");

      const logOffset = (await readFile(logFile)).byteLength;
      server = await startServer(origin.binDir, dataDir, caseDir, logFile);
      const log2 = (await readFile(logFile)).subarray(logOffset).toString('utf8');
      assert.match(log2, /database system was interrupted/);
      assert.match(log2, new RegExp(`redo starts at ${formatLsn(wal.nextRecordLsn).replace('/', '\\/')}\\b`));
      const s2 = server;
      await withClient(s2.port, async (cl) => {
        const n = await cl.query<{ n: string }>('SELECT count(*)::text AS n FROM after_start');
        assert.equal(n.rows[0]!.n, '1000');
        const b = await cl.query<{ b: number }>('SELECT abalance AS b FROM pgbench_accounts WHERE aid = 42');
        assert.equal(b.rows[0]!.b, balanceBefore);
        await cl.query('INSERT INTO after_start VALUES (1001, $1)', ['after recovery']);
      });
      await s2.stop('fast');
      server = undefined;
    });
  }
});
