/**
 * pg_control and tar against real PostgreSQL 15 output.
 *
 * pg_control: a running cluster's file ("in production") and the same cluster's file after a clean
 * stop ("shut down") must round-trip byte for byte through parseControlFile/encodeControlFile,
 * and every field must agree with what pg_controldata prints.
 *
 * tar: pg_basebackup -Ft (base.tar and pg_wal.tar) read completely by readTar: the entry list equals
 * GNU tar's listing, every entry's bytes equal the file GNU tar extracts, every file size equals the
 * size in pg_basebackup's own backup_manifest, and the pg_control inside parses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { withPostgres, type PostgresHandle } from '../harness/postgres.ts';
import { DB_STATE_NAMES, DBState, encodeControlFile, parseControlFile, type ControlFileData } from '../../src/postgres/pgcontrol.ts';
import { readTar } from '../../src/postgres/tar.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { walSegmentFileName } from '../../src/postgres/walformat.ts';

const execFileP = promisify(execFile);

/** pg_controldata output as a map "label" → "value". */
async function pgControldata(pg: PostgresHandle): Promise<Map<string, string>> {
  const res = await pg.run('pg_controldata', ['-D', pg.dataDir], { env: { TZ: 'UTC', LC_ALL: 'C' } });
  const out = new Map<string, string>();
  for (const line of res.stdout.split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m !== null) out.set(m[1]!.trim(), m[2]!.trim());
  }
  assert.ok(out.size > 40, `pg_controldata printed ${out.size} fields:\n${res.stdout}`);
  return out;
}

/** strftime("%c") in the C locale, UTC: "Tue Nov 24 19:56:02 2026" (day of month space-padded). */
function cTime(sec: bigint): string {
  const d = new Date(Number(sec) * 1000);
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]} ${months[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, ' ')} ${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())} ${d.getUTCFullYear()}`;
}

function compareWithControldata(c: ControlFileData, cd: Map<string, string>): void {
  const cp = c.checkPointCopy;
  const onOff = (b: boolean): string => (b ? 'on' : 'off');
  const seg = BigInt(c.xlogSegSize);
  const expected: [string, string][] = [
    ['pg_control version number', String(c.pgControlVersion)],
    ['Catalog version number', String(c.catalogVersionNo)],
    ['Database system identifier', c.systemIdentifier.toString()],
    ['Database cluster state', DB_STATE_NAMES[c.state] ?? '?'],
    ['pg_control last modified', cTime(c.timeSec)],
    ['Latest checkpoint location', formatLsn(c.checkPoint)],
    ["Latest checkpoint's REDO location", formatLsn(cp.redoLsn)],
    ["Latest checkpoint's REDO WAL file", walSegmentFileName(cp.thisTimeLineId, cp.redoLsn / seg, c.xlogSegSize)],
    ["Latest checkpoint's TimeLineID", String(cp.thisTimeLineId)],
    ["Latest checkpoint's PrevTimeLineID", String(cp.prevTimeLineId)],
    ["Latest checkpoint's full_page_writes", onOff(cp.fullPageWrites)],
    ["Latest checkpoint's NextXID", `${cp.nextXid >> 32n}:${cp.nextXid & 0xffff_ffffn}`],
    ["Latest checkpoint's NextOID", String(cp.nextOid)],
    ["Latest checkpoint's NextMultiXactId", String(cp.nextMulti)],
    ["Latest checkpoint's NextMultiOffset", String(cp.nextMultiOffset)],
    ["Latest checkpoint's oldestXID", String(cp.oldestXid)],
    ["Latest checkpoint's oldestXID's DB", String(cp.oldestXidDb)],
    ["Latest checkpoint's oldestActiveXID", String(cp.oldestActiveXid)],
    ["Latest checkpoint's oldestMultiXid", String(cp.oldestMulti)],
    ["Latest checkpoint's oldestMulti's DB", String(cp.oldestMultiDb)],
    ["Latest checkpoint's oldestCommitTsXid", String(cp.oldestCommitTsXid)],
    ["Latest checkpoint's newestCommitTsXid", String(cp.newestCommitTsXid)],
    ['Time of latest checkpoint', cTime(cp.timeUnixSec)],
    ['Fake LSN counter for unlogged rels', formatLsn(c.unloggedLsn)],
    ['Minimum recovery ending location', formatLsn(c.minRecoveryPoint)],
    ["Min recovery ending loc's timeline", String(c.minRecoveryPointTli)],
    ['Backup start location', formatLsn(c.backupStartPoint)],
    ['Backup end location', formatLsn(c.backupEndPoint)],
    ['End-of-backup record required', c.backupEndRequired ? 'yes' : 'no'],
    ['wal_level setting', ['minimal', 'replica', 'logical'][c.walLevel] ?? '?'],
    ['wal_log_hints setting', onOff(c.walLogHints)],
    ['max_connections setting', String(c.maxConnections)],
    ['max_worker_processes setting', String(c.maxWorkerProcesses)],
    ['max_wal_senders setting', String(c.maxWalSenders)],
    ['max_prepared_xacts setting', String(c.maxPreparedXacts)],
    ['max_locks_per_xact setting', String(c.maxLocksPerXact)],
    ['track_commit_timestamp setting', onOff(c.trackCommitTimestamp)],
    ['Maximum data alignment', String(c.maxAlign)],
    ['Database block size', String(c.blcksz)],
    ['Blocks per segment of large relation', String(c.relsegSize)],
    ['WAL block size', String(c.xlogBlcksz)],
    ['Bytes per WAL segment', String(c.xlogSegSize)],
    ['Maximum length of identifiers', String(c.nameDataLen)],
    ['Maximum columns in an index', String(c.indexMaxKeys)],
    ['Maximum size of a TOAST chunk', String(c.toastMaxChunkSize)],
    ['Size of a large-object chunk', String(c.loblksize)],
    ['Float8 argument passing', c.float8ByVal ? 'by value' : 'by reference'],
    ['Data page checksum version', String(c.dataChecksumVersion)],
    ['Mock authentication nonce', Buffer.from(c.mockAuthNonce).toString('hex')],
  ];
  for (const [label, value] of expected) assert.equal(cd.get(label), value, label);
  assert.equal(c.floatFormat, 1234567.0);
}

test('pg_control of a running and of a stopped cluster: byte-exact round trip, fields equal pg_controldata', async (t) => {
  const pg = await withPostgres(t, { conf: { track_commit_timestamp: true, wal_log_hints: true, max_prepared_transactions: 7 } });
  await pg.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
  await pg.query("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 5000) g");
  await pg.query("SELECT pg_create_restore_point('x')");
  await pg.checkpoint();
  await pg.query('UPDATE t SET v = v || v WHERE id % 3 = 0');

  const running = await readFile(join(pg.dataDir, 'global', 'pg_control'));
  assert.equal(running.byteLength, 8192);
  const r = parseControlFile(running);
  assert.equal(r.state, DBState.IN_PRODUCTION);
  assert.ok(encodeControlFile(r).equals(running), 'running cluster: re-encoded bytes equal the file');
  compareWithControldata(r, await pgControldata(pg));

  await pg.stop({ mode: 'fast' });
  const stopped = await readFile(join(pg.dataDir, 'global', 'pg_control'));
  const s = parseControlFile(stopped);
  assert.equal(s.state, DBState.SHUTDOWNED);
  assert.ok(encodeControlFile(s).equals(stopped), 'stopped cluster: re-encoded bytes equal the file');
  const cd = await pgControldata(pg);
  assert.equal(cd.get('Database cluster state'), 'shut down');
  compareWithControldata(s, cd);
  // The shutdown checkpoint: redo = its own location, later than the running cluster's checkpoint.
  assert.equal(s.checkPointCopy.redoLsn, s.checkPoint);
  assert.ok(s.checkPoint > r.checkPoint);
  assert.ok(s.checkPointCopy.nextXid >= r.checkPointCopy.nextXid);
  assert.equal(s.trackCommitTimestamp, true);
  assert.equal(s.walLogHints, true);
  assert.equal(s.maxPreparedXacts, 7);
  assert.equal(s.systemIdentifier, pg.systemIdentifier);
});

interface ReadEntrySummary {
  path: string;
  type: string;
  sizeBytes: number;
  sha256: string;
  firstBytes: Buffer;
}

async function readArchive(file: string): Promise<ReadEntrySummary[]> {
  const out: ReadEntrySummary[] = [];
  for await (const e of readTar(createReadStream(file, { highWaterMark: 256 * 1024 }), { requireEndMarker: true })) {
    const h = createHash('sha256');
    let n = 0;
    const head: Buffer[] = [];
    for await (const piece of e.content()) {
      h.update(piece);
      if (n < 8192) head.push(Buffer.from(piece.subarray(0, 8192 - n)));
      n += piece.byteLength;
    }
    assert.equal(n, e.sizeBytes, `bytes read for ${e.path}`);
    out.push({ path: e.path, type: e.type, sizeBytes: e.sizeBytes, sha256: h.digest('hex'), firstBytes: Buffer.concat(head) });
  }
  return out;
}

test('readTar reads pg_basebackup -Ft archives completely and exactly', async (t) => {
  const pg = await withPostgres(t);
  const work = await mkdtemp(join(tmpdir(), 'strata-bbtar-'));
  t.after(() => rm(work, { recursive: true, force: true }));
  await pg.query('CREATE TABLE t (id int PRIMARY KEY, v text)');
  await pg.query("INSERT INTO t SELECT g, repeat('v', 100) || g FROM generate_series(1, 20000) g");
  await pg.query('CREATE UNLOGGED TABLE u (id int)');
  await pg.query('INSERT INTO u SELECT generate_series(1, 100)');
  await pg.query('CREATE DATABASE other');
  const backupDir = join(work, 'backup');
  await pg.run('pg_basebackup', ['-Ft', '-X', 'stream', '-c', 'fast', '-D', backupDir, '-h', '127.0.0.1', '-p', String(pg.port), '-U', 'postgres'], { timeoutMs: 60_000 });

  const manifest = JSON.parse(await readFile(join(backupDir, 'backup_manifest'), 'utf8')) as { Files: { Path: string; Size: number }[] };
  const manifestSizes = new Map(manifest.Files.map((f) => [f.Path, f.Size]));

  for (const archive of ['base.tar', 'pg_wal.tar']) {
    const file = join(backupDir, archive);
    const entries = await readArchive(file);
    assert.ok(entries.length > 0, `${archive} has entries`);
    // Same list, in the same order, as GNU tar.
    const { stdout } = await execFileP('tar', ['-tf', file], { maxBuffer: 64 * 1024 * 1024 });
    assert.deepEqual(entries.map((e) => e.path), stdout.trim().split('\n').map((l) => l.replace(/\/$/, '')), `${archive} listing`);
    // Same bytes as GNU tar extracts.
    const dest = join(work, `x-${archive}`);
    await mkdir(dest);
    await execFileP('tar', ['-xf', file, '-C', dest]);
    for (const e of entries.filter((x) => x.type === 'file')) {
      const onDisk = await readFile(join(dest, e.path));
      assert.equal(onDisk.byteLength, e.sizeBytes, `size of ${e.path}`);
      assert.equal(createHash('sha256').update(onDisk).digest('hex'), e.sha256, `content of ${e.path}`);
    }
    if (archive === 'base.tar') {
      const files = entries.filter((x) => x.type === 'file');
      // Every file in the manifest is in base.tar with the manifest's size, and vice versa.
      assert.equal(files.length, manifestSizes.size);
      for (const f of files) assert.equal(manifestSizes.get(f.path), f.sizeBytes, `manifest size of ${f.path}`);
      assert.equal(entries[0]!.path, 'backup_label');
      assert.ok(entries.some((e) => e.type === 'directory' && e.path === 'pg_wal'));
      assert.ok(files.some((f) => f.sizeBytes > 1024 * 1024), 'a relation file larger than 1 MiB');
      const control = files.find((f) => f.path === 'global/pg_control');
      assert.ok(control !== undefined);
      const c = parseControlFile(control.firstBytes);
      assert.equal(c.systemIdentifier, pg.systemIdentifier);
    } else {
      const segs = entries.filter((e) => e.type === 'file' && /^[0-9A-F]{24}$/.test(e.path));
      assert.ok(segs.length >= 1, 'pg_wal.tar holds a WAL segment');
      for (const s of segs) assert.equal(s.sizeBytes, pg.walSegmentSizeBytes);
    }
  }
});
