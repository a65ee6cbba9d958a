/**
 * `strata waldump --json` against `pg_waldump -b` on real PostgreSQL 15 WAL.
 *
 * One cluster writes a WAL stream in phases: the DDL mix (tables, indexes, both CREATE DATABASE
 * strategies, TRUNCATE, VACUUM FREEZE, sequences, subtransactions, 2PC, multixacts, unlogged
 * tables, TOAST, a segment switch), pgbench, a phase with wal_consistency_checking = all, and
 * phases with wal_compression = pglz, lz4 and zstd. The CLI (a real subprocess) and pg_waldump
 * read the same segment files; every record must agree on lsn, prev, rmgr, info, lengths, xid
 * and every block reference. Then the same WAL goes through the streaming decoder in random chunk
 * sizes, and through the CLI damaged in the ways WAL gets damaged.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { startPostgres, type PostgresHandle } from '../harness/postgres.ts';
import { ddlMixWorkload, pgbenchWorkload } from '../harness/workloads.ts';
import { diffAgainstPgWaldump, runPgWaldump, type PgWaldumpRecord, type StrataJsonRecord } from '../support/pgwaldump.ts';
import { readWalRecords } from '../../src/postgres/walfiles.ts';
import { WalStreamDecoder } from '../../src/postgres/walstream.ts';
import { formatLsn, parseLsn } from '../../src/postgres/lsn.ts';
import type { DecodedRecord } from '../../src/postgres/xlogrecord.ts';
import { decodeRecordBody } from '../../src/postgres/records/index.ts';
import { checkAgainstDesc } from '../support/bodycheck.ts';

const execFileP = promisify(execFile);
const STRATA = join(import.meta.dirname, '..', '..', 'bin', 'strata.js');

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function strata(args: string[]): Promise<CliResult> {
  try {
    const r = await execFileP(process.execPath, [STRATA, ...args], { maxBuffer: 1024 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    if (typeof err.code !== 'number') throw e;
    return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

function parseJsonLines(text: string): StrataJsonRecord[] {
  return text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as StrataJsonRecord);
}

describe('strata waldump agrees with pg_waldump on real WAL', () => {
  let pg: PostgresHandle;
  let work: string;
  let walDir: string;
  let segments: string[];
  let theirs: PgWaldumpRecord[];
  let ours: StrataJsonRecord[];

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'strata-waldump-test-'));
    walDir = join(work, 'wal');
    pg = await startPostgres({
      conf: {
        max_wal_size: '2GB', checkpoint_timeout: '1h', wal_keep_size: '2GB', max_prepared_transactions: 10,
        wal_log_hints: 'on', // makes XLOG FPI_FOR_HINT records
      },
    });
    await ddlMixWorkload(pg);
    // VACUUM truncating empty tail pages writes Storage/TRUNCATE (SQL TRUNCATE makes a new relfilenode instead).
    await pg.query('CREATE TABLE vac_trunc AS SELECT g AS id, repeat(\'x\', 200) AS pad FROM generate_series(1, 5000) g');
    await pg.query('DELETE FROM vac_trunc WHERE id > 100');
    await pg.query('VACUUM vac_trunc');
    await pgbenchWorkload(pg, { scale: 1, transactions: 150, clients: 2 });
    // A run with consistency-check images on every Heap/Btree/... record.
    await pg.query(`ALTER SYSTEM SET wal_consistency_checking = 'all'`);
    await pg.query('SELECT pg_reload_conf()');
    await ddlMixWorkload(pg);
    await pg.query('ALTER SYSTEM RESET wal_consistency_checking');
    // Compressed images: a checkpoint first so the next touches of each page take an FPI.
    for (const method of ['pglz', 'lz4', 'zstd']) {
      await pg.query(`ALTER SYSTEM SET wal_compression = '${method}'`);
      await pg.query('SELECT pg_reload_conf()');
      await pg.checkpoint();
      await pg.run('pgbench', ['-n', '-t', '100', '-c', '2']);
    }
    const end = await pg.currentLsn();
    await pg.switchWal();
    segments = await pg.copyWal(walDir, { throughLsn: end });
    const { records } = await runPgWaldump(pg.binDir, walDir, basename(segments[0]!), basename(segments[segments.length - 1]!));
    theirs = records;
    const r = await strata(['waldump', '--json', walDir]);
    assert.equal(r.code, 0, `strata waldump failed: ${r.stderr}`);
    ours = parseJsonLines(r.stdout);
  });

  after(async () => {
    await pg?.stop();
    await pg?.cleanup();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('every record matches: lsn, prev, rmgr, info, lengths, xid, block references', () => {
    assert.ok(theirs.length > 10_000, `a substantial WAL (pg_waldump saw ${theirs.length} records)`);
    assert.deepEqual(diffAgainstPgWaldump(ours, theirs), []);
    assert.equal(ours.length, theirs.length);
  });

  test('the WAL covers the record types the pageserver interprets', () => {
    const seen = new Set(theirs.map((r) => `${r.rmgr}/${r.info}`));
    const wanted = [
      'XLOG/CHECKPOINT_SHUTDOWN', 'XLOG/CHECKPOINT_ONLINE', 'XLOG/NEXTOID', 'XLOG/SWITCH', 'XLOG/FPI', 'XLOG/FPI_FOR_HINT',
      'Transaction/COMMIT', 'Transaction/ABORT', 'Transaction/PREPARE', 'Transaction/COMMIT_PREPARED', 'Transaction/ABORT_PREPARED',
      'Storage/CREATE', 'Storage/TRUNCATE', 'Database/CREATE_FILE_COPY', 'Database/CREATE_WAL_LOG', 'Database/DROP',
      'RelMap/UPDATE', 'MultiXact/CREATE_ID', 'Standby/RUNNING_XACTS', 'Heap/INSERT', 'Heap/INSERT+INIT', 'Heap/UPDATE',
      'Heap/HOT_UPDATE', 'Heap/DELETE', 'Heap/LOCK', 'Heap/INPLACE', 'Heap2/MULTI_INSERT', 'Heap2/PRUNE', 'Heap2/VISIBLE',
      'Heap2/FREEZE_PAGE', 'Btree/INSERT_LEAF', 'Sequence/LOG',
    ];
    const missing = wanted.filter((w) => !seen.has(w));
    assert.deepEqual(missing, [], `record types not produced by the workload: ${missing.join(', ')}`);
    const blocks = ours.flatMap((r) => r.blocks);
    const methods = new Set(blocks.filter((b) => b.image).map((b) => b.compression));
    assert.deepEqual([...methods].sort(), ['lz4', 'none', 'pglz', 'zstd']);
    assert.ok(blocks.some((b) => b.image && !b.apply), 'consistency-check images (no APPLY) are present');
    assert.ok(blocks.some((b) => b.fork === 'vm') && blocks.some((b) => b.fork === 'init') && blocks.some((b) => b.fork === 'fsm'), 'vm, init and fsm forks appear');
  });

  test('typed record bodies agree with pg_waldump\'s descriptions, field by field', async () => {
    const { records } = await readWalRecords(segments);
    assert.equal(records.length, theirs.length);
    const problems: string[] = [];
    const typedCounts = new Map<string, number>();
    for (let i = 0; i < records.length && problems.length < 20; i++) {
      const rec = records[i]!;
      let typed;
      try {
        typed = decodeRecordBody(rec);
      } catch (e) {
        problems.push(`${theirs[i]!.lsn} ${theirs[i]!.rmgr}/${theirs[i]!.info}: ${(e as Error).message}`);
        continue;
      }
      if (typed === null) continue;
      typedCounts.set(`${typed.rmgr}/${typed.type}`, (typedCounts.get(`${typed.rmgr}/${typed.type}`) ?? 0) + 1);
      const p = checkAgainstDesc(typed, theirs[i]!);
      if (p !== null) problems.push(`${theirs[i]!.lsn} ${typed.rmgr}/${typed.type}: ${p}`);
    }
    assert.deepEqual(problems, []);
    for (const t of ['Transaction/COMMIT', 'Transaction/PREPARE', 'Transaction/COMMIT_PREPARED', 'Transaction/ABORT_PREPARED', 'XLOG/CHECKPOINT_ONLINE', 'MultiXact/CREATE_ID', 'Database/CREATE_FILE_COPY', 'Storage/TRUNCATE', 'Standby/RUNNING_XACTS', 'RelMap/UPDATE']) {
      assert.ok((typedCounts.get(t) ?? 0) > 0, `typed bodies of ${t} were checked`);
    }
    // The CLI carries the bodies in its JSON (LSN fields as X/X).
    const cp = ours.find((r) => r.info === 'CHECKPOINT_ONLINE') as unknown as { body: { redoLsn: string; nextOid: number } };
    assert.match(cp.body.redoLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
    assert.ok(cp.body.nextOid > 0);
  });

  test('the same WAL fed to the streaming decoder in random chunk sizes decodes identically', async () => {
    const reference = await readWalRecords(segments);
    assert.equal(reference.end.clean, true, reference.end.reason);
    assert.equal(reference.records.length, theirs.length);
    const bytes = Buffer.concat(await Promise.all(segments.map((s) => readFile(s))));
    const startLsn = parseLsn(theirs[0]!.lsn) - (parseLsn(theirs[0]!.lsn) % (16n * 1024n * 1024n));
    let seed = 12345;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    for (const maxChunk of [64, 9000, 300_000]) {
      const d = new WalStreamDecoder({ startLsn });
      const got: DecodedRecord[] = [];
      let off = 0;
      let endCode = '';
      while (off < bytes.byteLength && endCode === '') {
        const n = 1 + Math.floor(rand() * maxChunk);
        d.push(bytes.subarray(off, off + n));
        off += n;
        for (let it = d.next(); it !== null; it = d.next()) {
          if (it.kind === 'end') {
            endCode = it.code;
            break;
          }
          got.push(it.record);
        }
      }
      assert.equal(got.length, reference.records.length, `chunks up to ${maxChunk} bytes: record count`);
      for (let i = 0; i < got.length; i++) {
        const a = got[i]!;
        const b = reference.records[i]!;
        if (a.lsn !== b.lsn || a.crc !== b.crc || a.endLsn !== b.endLsn || !Buffer.from(a.bytes).equals(Buffer.from(b.bytes))) {
          assert.fail(`chunks up to ${maxChunk} bytes: record ${i} at ${formatLsn(b.lsn)} differs`);
        }
      }
    }
  });

  test('--start and --end select the same records as pg_waldump -s/-e', async () => {
    const a = theirs[Math.floor(theirs.length / 3)]!;
    const b = theirs[Math.floor(theirs.length / 3) + 500]!;
    const r = await strata(['waldump', '--json', '--start', a.lsn, '--end', b.lsn, walDir]);
    assert.equal(r.code, 0, r.stderr);
    const sel = parseJsonLines(r.stdout);
    const { stdout } = await execFileP(join(pg.binDir, 'pg_waldump'), ['-b', '-p', walDir, '-s', a.lsn, '-e', b.lsn], { maxBuffer: 256 * 1024 * 1024 }).catch((e: { stdout: string }) => e);
    const { parsePgWaldump } = await import('../support/pgwaldump.ts');
    const ref = parsePgWaldump(stdout);
    assert.ok(ref.length >= 400, `pg_waldump printed ${ref.length} records`);
    assert.deepEqual(diffAgainstPgWaldump(sel, ref), []);
    assert.equal(sel[0]!.lsn, a.lsn);
    // Text mode prints one line per record too.
    const t = await strata(['waldump', '--start', a.lsn, '--end', b.lsn, walDir]);
    assert.equal(t.stdout.trim().split('\n').length, sel.length);
    assert.match(t.stdout, /\d+\/[0-9A-F]{8} \w+\/\w+/);
  });

  describe('damaged input: a clear message and a non-zero exit, never a stack trace', () => {
    let bad: string;
    before(async () => {
      bad = join(work, 'bad');
      await mkdir(bad, { recursive: true });
    });

    async function dirWith(name: string, files: [string, Buffer | string][]): Promise<string> {
      const d = join(bad, name);
      await mkdir(d, { recursive: true });
      for (const [f, content] of files) {
        if (typeof content === 'string') await copyFile(content, join(d, f));
        else await writeFile(join(d, f), content);
      }
      return d;
    }

    function assertCleanFailure(r: CliResult, pattern: RegExp): void {
      assert.notEqual(r.code, 0, 'non-zero exit');
      assert.match(r.stderr, pattern);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }

    /** Records printed before the damage are exactly pg_waldump's first records. */
    function prefixAgrees(r: CliResult): number {
      const printed = parseJsonLines(r.stdout);
      assert.deepEqual(diffAgainstPgWaldump(printed, theirs.slice(0, printed.length)), []);
      return printed.length;
    }

    test('a truncated segment ends where the data ends', async () => {
      const first = segments[0]!;
      const d = await dirWith('truncated', [[basename(first), first]]);
      await truncate(join(d, basename(first)), 5_000_123);
      const r = await strata(['waldump', '--json', d]);
      assertCleanFailure(r, /WAL ends at \d+\/[0-9A-F]+: input ends at \d+\/[0-9A-F]+ inside/);
      const n = prefixAgrees(r);
      assert.ok(n > 100, `records before the cut: ${n}`);
    });

    test('a flipped byte in the middle of a record is a checksum error at that record', async () => {
      const first = segments[0]!;
      const buf = await readFile(first);
      const victim = theirs[Math.floor(theirs.filter((x) => parseLsn(x.lsn) < 16n * 1024n * 1024n * 2n).length / 2)]!;
      const off = Number(parseLsn(victim.lsn) % (16n * 1024n * 1024n)) + 20 + Math.min(4, victim.totLen - 21);
      buf[off]! ^= 0x40;
      const d = await dirWith('flipped', [[basename(first), buf]]);
      const r = await strata(['waldump', '--json', d]);
      assertCleanFailure(r, new RegExp(`WAL ends at ${victim.lsn.replace('/', '\\/')}: (incorrect resource manager data checksum|.*prev-link|invalid)`));
      assert.equal(prefixAgrees(r), theirs.findIndex((x) => x.lsn === victim.lsn));
    });

    test('a garbage file is rejected with a clear message', async () => {
      const junk = Buffer.alloc(16 * 1024 * 1024);
      for (let i = 0; i < junk.length; i += 4) junk.writeUInt32LE((i * 2654435761) >>> 0, i);
      const d = await dirWith('garbage', [['000000010000000000000001', junk]]);
      const r = await strata(['waldump', d]);
      assertCleanFailure(r, /invalid magic number/);
      const notNamed = await strata(['waldump', join(work, 'wal', '..', 'nonsegment.txt')]);
      assert.equal(notNamed.code, 2);
      assert.match(notNamed.stderr, /cannot read|not named like a WAL segment/);
    });

    test('a segment of another database system is refused', async () => {
      const other = await startPostgres({});
      let otherSeg: string;
      try {
        await other.query('CREATE TABLE t AS SELECT generate_series(1, 1000) g');
        await other.switchWal();
        await other.query('INSERT INTO t SELECT generate_series(1, 10)');
        const otherEnd = await other.currentLsn();
        await other.switchWal();
        const copied = await other.copyWal(join(bad, 'other-src'), { throughLsn: otherEnd });
        otherSeg = copied.find((p) => basename(p) === basename(segments[1]!)) ?? '';
      } finally {
        await other.stop();
        await other.cleanup();
      }
      assert.ok(otherSeg, 'the other cluster wrote the second segment');
      const d = await dirWith('foreign', [[basename(segments[0]!), segments[0]!], [basename(segments[1]!), otherSeg]]);
      const r = await strata(['waldump', '--json', d]);
      assertCleanFailure(r, /another database system/);
      prefixAgrees(r);
    });

    test('bad options are usage errors (exit 2)', async () => {
      const r = await strata(['waldump', '--start', 'nonsense', walDir]);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /invalid LSN "nonsense"/);
      const r2 = await strata(['waldump', '--start', '0/2000000', '--end', '0/1000000', walDir]);
      assert.equal(r2.code, 2);
      assert.match(r2.stderr, /before --start/);
      const r3 = await strata(['waldump', '--start', 'FF/0', walDir]);
      assert.equal(r3.code, 2);
      assert.match(r3.stderr, /not inside the given WAL files/);
    });
  });
});
