/**
 * bench:wal — how fast Strata decodes real PostgreSQL WAL, next to pg_waldump on the same files.
 *
 * 1. A throwaway PostgreSQL 15 writes real WAL: `pgbench -i` plus a short pgbench run (≥ 256 MB of
 *    WAL in the full form, about 40 MB with BENCH_QUICK=1). Generation is not timed.
 * 2. The segments are copied aside and the server is stopped, so nothing else runs while timing.
 * 3. Timed, best of N runs each (Strata after one untimed warm-up run for the JIT), on the same files:
 *      - Strata's decoder (read + page headers + reassembly + CRC-32C + block-reference decode,
 *        no printing), in this process;
 *      - `pg_waldump --stats` (PostgreSQL's reader doing the same work plus per-rmgr counting);
 *      - `pg_waldump` printing every record (to /dev/null).
 *    The ratios are Strata's MB/s divided by the reference's MB/s (> 1 means Strata is faster).
 *
 * The last line printed is one JSON object with the figures.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { startPostgres } from '../test/harness/postgres.ts';
import { scanWal } from '../src/postgres/walfiles.ts';
import { formatLsn } from '../src/postgres/lsn.ts';

const quick = process.env.BENCH_QUICK === '1';
const scale = quick ? 3 : 20;
const transactions = quick ? 2000 : 20000;
const runs = quick ? 3 : 5;

function log(msg: string): void {
  process.stderr.write(`[bench:wal] ${msg}\n`);
}

async function timeProcess(cmd: string, args: string[]): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      // pg_waldump exits 1 at the end of valid WAL ("invalid record length ... got 0"): expected.
      if (code === 0 || (code === 1 && /invalid record length|could not read file|error in WAL record/.test(err))) resolve();
      else reject(new Error(`${cmd} exited ${code}: ${err}`));
    });
  });
  return performance.now() - t0;
}

async function main(): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'strata-bench-wal-'));
  const walCopy = join(work, 'wal');
  const pg = await startPostgres({
    conf: { max_wal_size: '8GB', min_wal_size: '1GB', checkpoint_timeout: '1h', wal_keep_size: '8GB', autovacuum: 'off' },
  });
  let files: string[];
  let startLsn: bigint;
  let endLsn: bigint;
  try {
    startLsn = await pg.currentLsn();
    log(`generating WAL: pgbench -i -s ${scale}, then pgbench -t ${transactions} -c 2 ...`);
    await pg.run('pgbench', ['-i', '-s', String(scale), '-q'], { timeoutMs: 600_000 });
    await pg.run('pgbench', ['-t', String(transactions / 2), '-c', '2', '-j', '2', '-n'], { timeoutMs: 600_000 });
    endLsn = await pg.currentLsn();
    await pg.switchWal();
    files = await pg.copyWal(walCopy, { fromLsn: startLsn, throughLsn: endLsn });
  } finally {
    await pg.stop();
    await pg.cleanup();
  }
  const walBytes = Number(endLsn - startLsn);
  log(`WAL ${formatLsn(startLsn)} .. ${formatLsn(endLsn)}: ${(walBytes / 1e6).toFixed(1)} MB in ${files.length} segments`);

  // Strata: decode everything (no printing), best of N.
  let strataMs = Infinity;
  let records = 0;
  let decodedBytes = 0;
  // One untimed warm-up run lets V8 compile the hot path (a pageserver decodes WAL all day).
  for (let i = -1; i < runs; i++) {
    let n = 0;
    let first = 0n;
    let last = 0n;
    const t0 = performance.now();
    const r = await scanWal(files, {}, (rec) => {
      if (n === 0) first = rec.lsn;
      last = rec.endLsn;
      n++;
    });
    const ms = performance.now() - t0;
    if (!r.end.clean) throw new Error(`Strata's decoder did not end cleanly: ${r.end.reason}`);
    records = n;
    decodedBytes = Number(last - first);
    if (i < 0) {
      log(`strata warm-up run: ${ms.toFixed(0)} ms, ${n} records`);
      continue;
    }
    strataMs = Math.min(strataMs, ms);
    log(`strata decode run ${i + 1}: ${ms.toFixed(0)} ms, ${n} records`);
  }
  const pgBin = pg.binDir;
  const first = basename(files[0]!);
  const lastSeg = basename(files[files.length - 1]!);
  let statsMs = Infinity;
  let textMs = Infinity;
  for (let i = 0; i < runs; i++) {
    statsMs = Math.min(statsMs, await timeProcess(join(pgBin, 'pg_waldump'), ['--stats', '-p', walCopy, first, lastSeg]));
    textMs = Math.min(textMs, await timeProcess(join(pgBin, 'pg_waldump'), ['-p', walCopy, first, lastSeg]));
    log(`pg_waldump run ${i + 1}: --stats ${statsMs.toFixed(0)} ms, text ${textMs.toFixed(0)} ms (best so far)`);
  }
  await rm(work, { recursive: true, force: true });

  const mb = decodedBytes / 1e6;
  const result = {
    quick,
    walMB: Number(mb.toFixed(1)),
    records,
    strataDecodeMs: Math.round(strataMs),
    strataRecordsPerSec: Math.round(records / (strataMs / 1000)),
    strataMBPerSec: Number((mb / (strataMs / 1000)).toFixed(1)),
    pgWaldumpStatsMs: Math.round(statsMs),
    pgWaldumpStatsMBPerSec: Number((mb / (statsMs / 1000)).toFixed(1)),
    pgWaldumpTextMs: Math.round(textMs),
    pgWaldumpTextMBPerSec: Number((mb / (textMs / 1000)).toFixed(1)),
    ratioVsPgWaldumpStats: Number((statsMs / strataMs).toFixed(3)),
    ratioVsPgWaldumpText: Number((textMs / strataMs).toFixed(3)),
    targetRatioVsPgWaldumpStats: 0.3,
  };
  console.log(`Strata decoder: ${result.strataMBPerSec} MB/s, ${result.strataRecordsPerSec} records/s over ${result.walMB} MB (${records} records)`);
  console.log(`pg_waldump --stats: ${result.pgWaldumpStatsMBPerSec} MB/s; pg_waldump (text): ${result.pgWaldumpTextMBPerSec} MB/s`);
  console.log(`ratio vs pg_waldump --stats: ${result.ratioVsPgWaldumpStats} (target >= 0.3); vs pg_waldump text: ${result.ratioVsPgWaldumpText}`);
  console.log(JSON.stringify(result));
}

await main();
