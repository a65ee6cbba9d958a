/**
 * bench:wal — how fast Strata decodes real PostgreSQL WAL, next to pg_waldump on the same files.
 *
 * 1. A throwaway PostgreSQL 15 writes real WAL: `pgbench -i` plus a short pgbench run (≥ 256 MB of
 *    WAL in the full form, about 40 MB with BENCH_QUICK=1). Generation is not timed.
 * 2. The segments are copied aside and the server is stopped, so nothing else runs while timing.
 * 3. Timed, best of N runs each, on the same files:
 *      - Strata's decoder (read + page headers + reassembly + CRC-32C + block-reference decode,
 *        no printing), in a child process (bench/wal-decode.ts) after 3 untimed warm-up runs;
 *      - `pg_waldump --stats` (PostgreSQL's reader doing the same work plus per-rmgr counting);
 *      - `pg_waldump` printing every record (to /dev/null).
 *    The ratios are Strata's MB/s divided by the reference's MB/s (> 1 means Strata is faster).
 *
 * The last line printed is one JSON object with the figures.
 */
import { execFileSync, spawn } from 'node:child_process';
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

  // Flush the copied files so kernel writeback does not run during the timed runs.
  execFileSync('sync');
  const pgBin = pg.binDir;
  const first = basename(files[0]!);
  const lastSeg = basename(files[files.length - 1]!);
  // Strata's decoder runs in a child process (clean heap, like pg_waldump's own process); it does
  // untimed warm-up runs so V8 has compiled the hot path (a pageserver decodes WAL all day).
  const child = execFileSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'wal-decode.ts'), ...files], {
    env: { ...process.env, WARMUP: '3', RUNS: String(runs) },
    maxBuffer: 1024 * 1024,
  }).toString();
  const decoded = JSON.parse(child.trim().split('\n').pop()!) as { msList: number[]; records: number; bytes: number };
  const strataMs = Math.min(...decoded.msList);
  const records = decoded.records;
  const decodedBytes = decoded.bytes;
  log(`strata decode runs (after 3 warm-ups): ${decoded.msList.map((m) => m.toFixed(0)).join(', ')} ms; ${records} records`);
  let statsMs = Infinity;
  let textMs = Infinity;
  for (let i = 0; i < runs; i++) {
    const st = await timeProcess(join(pgBin, 'pg_waldump'), ['--stats', '-p', walCopy, first, lastSeg]);
    const tx = await timeProcess(join(pgBin, 'pg_waldump'), ['-p', walCopy, first, lastSeg]);
    statsMs = Math.min(statsMs, st);
    textMs = Math.min(textMs, tx);
    log(`pg_waldump run ${i + 1}: --stats ${st.toFixed(0)} ms, text ${tx.toFixed(0)} ms`);
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
