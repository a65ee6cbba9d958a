/**
 * Child process of bench:wal: decodes the WAL files given as arguments with Strata's decoder
 * (no printing) `WARMUP + RUNS` times and prints one JSON line with the timings. Run in its own
 * process so the measurement sees a clean heap, as pg_waldump does.
 */
import { scanWal } from '../src/postgres/walfiles.ts';

const warmups = Number(process.env.WARMUP ?? 3);
const runs = Number(process.env.RUNS ?? 5);
const files = process.argv.slice(2);
const msList: number[] = [];
let records = 0;
let bytes = 0;
for (let i = 0; i < warmups + runs; i++) {
  let n = 0;
  let firstLsn = 0n;
  let lastLsn = 0n;
  const t0 = performance.now();
  const r = await scanWal(files, {}, (rec) => {
    if (n === 0) firstLsn = rec.lsn;
    lastLsn = rec.endLsn;
    n++;
  });
  const ms = performance.now() - t0;
  if (!r.end.clean) throw new Error(`Strata's decoder did not end cleanly: ${r.end.reason}`);
  if (i > 0 && n !== records) throw new Error(`run ${i} decoded ${n} records, the first ${records}`);
  records = n;
  bytes = Number(lastLsn - firstLsn);
  if (i >= warmups) msList.push(ms);
}
console.log(JSON.stringify({ msList, records, bytes }));
