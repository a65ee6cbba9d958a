/**
 * npm run quickstart — what Strata does today, end to end, on this machine.
 *
 * Starts a throwaway PostgreSQL 15 (never the system's own cluster), writes WAL with pgbench,
 * decodes every record with Strata's WAL reader, checks the record count and the last LSN
 * against pg_waldump, prints a per-resource-manager summary, and stops the server. The WAL is kept
 * in .strata/quickstart-wal so you can look at it with `npx strata waldump`.
 *
 * When the pageserver and safekeepers land, this becomes the real quickstart (init, start, a
 * tenant, a `main` timeline and a running endpoint).
 */
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { promisify } from 'node:util';
import { startPostgres } from '../test/harness/postgres.ts';
import { scanWal } from '../src/postgres/walfiles.ts';
import { formatLsn } from '../src/postgres/lsn.ts';
import { rmgrName } from '../src/postgres/rmgr.ts';

const execFileP = promisify(execFile);
const say = (s: string): void => void process.stdout.write(s + '\n');

async function main(): Promise<void> {
  const walDir = resolve('.strata', 'quickstart-wal');
  await rm(walDir, { recursive: true, force: true });
  say('1/4 starting a throwaway PostgreSQL 15 on a free loopback port ...');
  const pg = await startPostgres({ conf: { max_wal_size: '1GB', checkpoint_timeout: '1h' } });
  let files: string[];
  try {
    say(`    postgres running on ${pg.host}:${pg.port} (data in ${pg.dataDir})`);
    const start = await pg.currentLsn();
    say('2/4 writing WAL: pgbench -i -s 2, then 1000 pgbench transactions ...');
    await pg.run('pgbench', ['-i', '-s', '2', '-q']);
    await pg.run('pgbench', ['-n', '-t', '500', '-c', '2']);
    const end = await pg.currentLsn();
    await pg.switchWal();
    files = await pg.copyWal(walDir, { throughLsn: end });
    say(`    WAL ${formatLsn(start)} .. ${formatLsn(end)} (${((Number(end - start)) / 1e6).toFixed(1)} MB), copied to ${walDir}`);
  } finally {
    await pg.stop();
    await pg.cleanup();
  }
  say('3/4 decoding every record with Strata (CRC-checked) ...');
  const byRmgr = new Map<string, { n: number; bytes: number }>();
  const t0 = performance.now();
  let last = '';
  const r = await scanWal(files, {}, (rec) => {
    const k = rmgrName(rec.rmid);
    const e = byRmgr.get(k) ?? { n: 0, bytes: 0 };
    e.n++;
    e.bytes += rec.totLen;
    byRmgr.set(k, e);
    last = formatLsn(rec.lsn);
  });
  const ms = performance.now() - t0;
  say(`    ${r.records} records in ${ms.toFixed(0)} ms; WAL ends at ${formatLsn(r.end.lsn)}: ${r.end.reason}`);
  for (const [k, v] of [...byRmgr].sort((a, b) => b[1].bytes - a[1].bytes)) {
    say(`      ${k.padEnd(12)} ${String(v.n).padStart(8)} records ${(v.bytes / 1e6).toFixed(2).padStart(8)} MB`);
  }
  say('4/4 checking against pg_waldump ...');
  let text = '';
  try {
    text = (await execFileP(`${pg.binDir}/pg_waldump`, ['-p', walDir, basename(files[0]!), basename(files[files.length - 1]!)], { maxBuffer: 1 << 30 })).stdout;
  } catch (e) {
    text = (e as { stdout?: string }).stdout ?? '';
  }
  const lines = text.split('\n').filter((l) => l.startsWith('rmgr:'));
  const theirLast = /lsn: ([0-9A-F]+\/[0-9A-F]+)/.exec(lines[lines.length - 1] ?? '')?.[1] ?? '?';
  const agree = lines.length === r.records && theirLast.replace(/\/0+(?=[0-9A-F])/, '/') === last;
  say(`    pg_waldump: ${lines.length} records, last at ${theirLast} -> ${agree ? 'Strata agrees' : 'MISMATCH'}`);
  say('');
  say('Next:');
  say(`  npx strata waldump ${walDir} | less          # one line per record`);
  say(`  npx strata waldump --json ${walDir} | head    # JSON, with typed bodies`);
  say('  npm test                                        # the test suite (real PostgreSQL)');
  if (!agree || !r.end.clean) process.exitCode = 1;
}

await main();
