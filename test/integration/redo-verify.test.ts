/**
 * The offline redo verifier against a real PostgreSQL 15 with wal_consistency_checking = all.
 *
 * PostgreSQL is started with full_page_writes = on, wal_compression = zstd (so the verifier also
 * restores compressed images), wal_log_hints = on (so reads after a checkpoint write
 * XLOG_FPI_FOR_HINT) and wal_consistency_checking = all: every block reference of every record
 * carries an image — for apply (a real full-page write) or for verification (the page after the
 * change). The verifier replays the WAL with Strata's TypeScript redo and compares, under
 * PostgreSQL's masking rules, with every verification image.
 *
 * 1. Small rmgrs: sequences (nextval logging ahead, setval, serial columns) and contrib bloom
 *    (Generic records: index build, inserts, VACUUM), with checkpoints in between. Zero mismatches
 *    and zero failures for XLOG, Sequence and Generic; Sequence and Generic verified > 0; XLOG FPI
 *    and FPI_FOR_HINT restored > 0. The block counts are cross-checked with pg_waldump's own reading
 *    of the same files (so a verifier that silently skipped blocks would fail), and the same WAL is
 *    verified once more with a sabotaged Generic redo, which must produce mismatches (so the
 *    comparison really compares).
 * 2. pgbench (+ VACUUM): the per-record-type coverage is printed; every rmgr that has TypeScript
 *    redo registered must show zero mismatches and zero failures. Heap/Btree appear as
 *    'unsupported' until their redo is registered in src/redo/index.ts.
 * 3. The DDL mix of issue 2 (drops, truncates, CREATE DATABASE both ways, 2PC, TOAST, VACUUM):
 *    the same rule, and the verifier must have forgotten pages of dropped/truncated relations.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { cp, readFile, readdir, writeFile } from 'node:fs/promises';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { withPostgres, type PostgresHandle } from '../harness/postgres.ts';
import { ddlMixWorkload, pgbenchWorkload } from '../harness/workloads.ts';
import { runPgWaldump } from '../support/pgwaldump.ts';
import { RM_GENERIC_ID } from '../../src/postgres/rmgr.ts';
import { rmgrRedoFn, supportedRmgrs } from '../../src/redo/index.ts';
import type { BlockRedoFn } from '../../src/redo/types.ts';
import { formatVerifyReport, runRedoVerifyOnFiles, statsByRmgr, type RedoTypeStats, type VerifyReport } from '../../src/redo/verify.ts';

let pg: PostgresHandle;
let stopServer: (() => unknown) | null = null;

before(async () => {
  // withPostgres registers stop + cleanup on the registrar; run them in the file-level after().
  pg = await withPostgres({ after: (fn) => { stopServer = fn; } }, {
    conf: {
      wal_consistency_checking: 'all',
      full_page_writes: true,
      wal_compression: 'zstd',
      wal_log_hints: true,
      autovacuum: false,
    },
  });
});

after(async () => {
  await stopServer?.();
});

function rmgrRow(report: VerifyReport, rmgr: string): RedoTypeStats {
  const r = statsByRmgr(report).find((s) => s.rmgr === rmgr);
  assert.ok(r, `no ${rmgr} records in the report`);
  return r;
}

function typeRow(report: VerifyReport, rmgr: string, type: string): RedoTypeStats | undefined {
  return report.types.find((s) => s.rmgr === rmgr && s.type === type);
}

function printReport(t: { diagnostic(msg: string): void }, report: VerifyReport): void {
  for (const line of formatVerifyReport(report).split('\n')) t.diagnostic(line);
}

async function copyRange(name: string, startLsn: bigint, endLsn: bigint): Promise<{ dir: string; files: string[] }> {
  await pg.switchWal();
  const dir = path.join(pg.tmpDir, name);
  const files = await pg.copyWal(dir, { fromLsn: startLsn, throughLsn: endLsn });
  assert.ok(files.length > 0, 'copied WAL segments');
  return { dir, files };
}

test('sequences and bloom (Generic): zero mismatches for XLOG, Sequence and Generic; every block visited', { timeout: 300_000 }, async (t) => {
  const q = (sql: string): Promise<unknown> => pg.query(sql);
  const startLsn = await pg.currentLsn();
  // Sequences: nextval logs every 32 values; setval and a serial column's default log too.
  await q('CREATE SEQUENCE rv_s1');
  await q('CREATE SEQUENCE rv_s2 INCREMENT BY 7 CACHE 5');
  await q("SELECT count(nextval('rv_s1')) FROM generate_series(1, 3000)");
  await q("SELECT count(nextval('rv_s2')) FROM generate_series(1, 400)");
  await q("SELECT setval('rv_s1', 100000)");
  await q('CREATE TABLE rv_ser (id serial PRIMARY KEY, v text)');
  await q("INSERT INTO rv_ser (v) SELECT 'x' || g FROM generate_series(1, 700) g");
  // bloom: GENERIC records from the build, inserts and VACUUM.
  await q('CREATE EXTENSION bloom');
  await q('CREATE TABLE rv_bloom (a int, b int, c int, t text)');
  await q('INSERT INTO rv_bloom SELECT g, g * 3, g % 17, md5(g::text) FROM generate_series(1, 2000) g');
  await q('CREATE INDEX rv_bloom_idx ON rv_bloom USING bloom (a, b, c) WITH (length = 80)');
  await q('INSERT INTO rv_bloom SELECT g, g * 3, g % 17, md5(g::text) FROM generate_series(2001, 5000) g');
  await pg.checkpoint();
  // After the checkpoint: reading fresh rows sets hint bits -> FPI_FOR_HINT; the first change of each
  // page is a real full-page write (apply image), later ones carry verification images.
  await q('SELECT count(*) FROM rv_bloom');
  await q('SELECT count(*) FROM rv_ser');
  await q('INSERT INTO rv_bloom SELECT g, g * 3, g % 17, md5(g::text) FROM generate_series(5001, 6500) g');
  await q("SELECT count(nextval('rv_s1')) FROM generate_series(1, 500)");
  await q('DELETE FROM rv_bloom WHERE a % 5 = 0');
  await q('VACUUM rv_bloom');
  await q('INSERT INTO rv_bloom SELECT g, g * 3, g % 17, md5(g::text) FROM generate_series(6501, 7000) g');
  const endLsn = await pg.currentLsn();
  const { dir, files } = await copyRange('wal-small', startLsn, endLsn);

  const { report, end } = await runRedoVerifyOnFiles([dir]);
  printReport(t, report);
  assert.ok(report.records > 1000, `verified ${report.records} records (end: ${end.reason})`);

  const seq = rmgrRow(report, 'Sequence');
  const gen = rmgrRow(report, 'Generic');
  const xlog = rmgrRow(report, 'XLOG');
  for (const [name, r] of [['Sequence', seq], ['Generic', gen], ['XLOG', xlog]] as const) {
    assert.equal(r.mismatched, 0, `${name}: mismatches:\n${formatVerifyReport(report)}`);
    assert.equal(r.failed, 0, `${name}: failures:\n${formatVerifyReport(report)}`);
    assert.equal(r.unsupported, 0, `${name}: unsupported`);
  }
  assert.equal(report.mismatches.filter((m) => ['Sequence', 'Generic', 'XLOG'].includes(m.rmgr)).length, 0);
  assert.ok(seq.verified > 100, `Sequence verified ${seq.verified}`);
  assert.ok(gen.verified > 100, `Generic verified ${gen.verified}`);
  assert.ok(gen.restored > 0, `Generic apply images restored ${gen.restored}`);
  assert.ok((typeRow(report, 'XLOG', 'FPI')?.restored ?? 0) > 0, 'XLOG FPI restored');
  assert.ok((typeRow(report, 'XLOG', 'FPI_FOR_HINT')?.restored ?? 0) > 0, 'XLOG FPI_FOR_HINT restored');
  // Every non-apply Sequence / Generic block was compared, except those whose base was unknown.
  assert.equal(seq.verified + seq.skippedNoBase, seq.blocks, 'every Sequence block verified (SEQ_LOG is willInit: never without base)');
  assert.equal(seq.skippedNoBase, 0);
  assert.equal(gen.restored + gen.verified + gen.skippedNoBase, gen.blocks, 'every Generic block restored or verified');

  // Cross-check with PostgreSQL's own reader of the same files.
  const first = path.basename(files[0]!);
  const last = path.basename(files[files.length - 1]!);
  const dump = await runPgWaldump(pg.binDir, dir, first, last);
  const count = (rmgr: string, image: 'apply' | 'check' | 'none'): number =>
    dump.records.filter((r) => r.rmgr === rmgr).reduce((n, r) => n + r.blocks.filter((b) => b.image === image).length, 0);
  assert.equal(dump.records.length, report.records, 'same number of records as pg_waldump');
  assert.equal(count('Sequence', 'check'), seq.blocks, 'Sequence blocks (all with verification images)');
  assert.equal(count('Generic', 'check'), gen.verified + gen.skippedNoBase, 'Generic verification images');
  assert.equal(count('Generic', 'apply'), gen.restored, 'Generic apply images');
  assert.equal(count('XLOG', 'apply'), xlog.restored, 'XLOG apply images');
  t.diagnostic(`pg_waldump agrees: ${dump.records.length} records, Sequence ${seq.blocks} / Generic ${gen.blocks} / XLOG ${xlog.blocks} block refs`);

  // Negative control: a Generic redo that gets one byte wrong must be caught on this very WAL.
  const real = rmgrRedoFn(RM_GENERIC_ID)!;
  const sabotaged: BlockRedoFn = (page, rec, blockId, endLsn) => {
    real(page, rec, blockId, endLsn);
    const special = page.readUInt16LE(16);
    page[special] = page[special]! ^ 0x01; // bloom's opaque area: never masked
  };
  const bad = await runRedoVerifyOnFiles([dir], { redoFor: (rmid) => (rmid === RM_GENERIC_ID ? sabotaged : rmgrRedoFn(rmid)) });
  const badGen = rmgrRow(bad.report, 'Generic');
  assert.equal(badGen.mismatched, gen.verified, 'every verified Generic block becomes a mismatch with the sabotaged redo');
  assert.equal(badGen.verified, 0);
  assert.ok(bad.report.mismatches.length > 0 && bad.report.mismatches[0]!.firstDiffs[0]!.where.startsWith('special'), 'the difference is reported in the special area');
});

test('pgbench: coverage per record type; zero mismatches for every rmgr with TypeScript redo', { timeout: 600_000 }, async (t) => {
  const startLsn = await pg.currentLsn();
  await pgbenchWorkload(pg, { scale: 1, transactions: 300, clients: 2 });
  await pg.checkpoint();
  await pg.run('pgbench', ['-c', '2', '-j', '2', '-t', '100', 'postgres'], { timeoutMs: 180_000 });
  await pg.query('VACUUM');
  const endLsn = await pg.currentLsn();
  const { dir } = await copyRange('wal-pgbench', startLsn, endLsn);

  const { report } = await runRedoVerifyOnFiles([dir], { scan: { startLsn } });
  printReport(t, report);
  t.diagnostic(`rmgrs with TypeScript redo: ${supportedRmgrs().map((r) => r.name).join(', ')}`);
  assert.ok(report.records > 5000, `records ${report.records}`);
  assert.ok(rmgrRow(report, 'XLOG').restored + rmgrRow(report, 'Heap').restored > 0, 'full-page writes were restored');
  assertZeroForSupported(report);

  // The same check through the CLI: the same totals, exit 0.
  const cli = await runCli(['redo', 'verify', '--json', '--start', formatLsn(startLsn), dir]);
  assert.equal(cli.code, 0, cli.stderr);
  const j = JSON.parse(cli.stdout) as { totals: Record<string, number>; records: number; ok: boolean };
  assert.equal(j.ok, true);
  assert.equal(j.records, report.records);
  assert.deepEqual(j.totals, { ...report.totals });
  const text = await runCli(['redo', 'verify', '--start', formatLsn(startLsn), dir]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^Heap +INSERT +\d+/m, 'a row per record type');
  // Damaged WAL (a flipped byte inside a record): the report still prints, and the exit status says it.
  const damaged = path.join(pg.tmpDir, 'wal-pgbench-damaged');
  await cp(dir, damaged, { recursive: true });
  const first = (await readdir(damaged)).sort()[0]!;
  const seg = await readFile(path.join(damaged, first));
  seg[seg.length >> 1] = seg[seg.length >> 1]! ^ 0xff;
  await writeFile(path.join(damaged, first), seg);
  const bad = await runCli(['redo', 'verify', damaged]);
  assert.equal(bad.code, 1, bad.stdout);
  assert.match(bad.stderr, /the WAL ends in damage at/);
  const usage = await runCli(['redo', 'verify', '--start', 'zz', dir]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--start/);
});

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(import.meta.dirname, '..', '..', 'bin', 'strata.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function assertZeroForSupported(report: VerifyReport): void {
  const supported = supportedRmgrs().map((r) => r.name);
  for (const r of statsByRmgr(report)) {
    if (!supported.includes(r.rmgr)) {
      assert.equal(r.applied + r.verified + r.mismatched, 0, `${r.rmgr} has no redo: nothing can be applied`);
      continue;
    }
    assert.equal(r.mismatched, 0, `${r.rmgr}: ${r.mismatched} mismatches\n${formatVerifyReport(report)}`);
    assert.equal(r.failed, 0, `${r.rmgr}: ${r.failed} failures\n${formatVerifyReport(report)}`);
  }
}

test('DDL mix: zero mismatches for every rmgr with TypeScript redo; dropped relations forgotten', { timeout: 300_000 }, async (t) => {
  const r = await ddlMixWorkload(pg);
  const { dir } = await copyRange('wal-ddl', r.startLsn, r.endLsn);
  const { report } = await runRedoVerifyOnFiles([dir], { scan: { startLsn: r.startLsn } });
  printReport(t, report);
  assert.ok(report.records > 2000, `records ${report.records}`);
  assert.ok(report.pages.dropped > 0, 'pages of dropped / truncated relations were forgotten');
  assert.ok(rmgrRow(report, 'Sequence').verified > 0, 'sequence records verified');
  assertZeroForSupported(report);
});

