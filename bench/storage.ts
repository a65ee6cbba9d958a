/**
 * bench:storage — the storage engine in-process: ingest into in-memory layers (with the L0 flushes
 * it triggers) and GetPage@LSN from image layers, from L0 deltas, and through a branch chain, next
 * to plain 8 KiB `Buffer.copy`s as the ceiling.
 *
 * What is measured (all on one tenant, default pageserver caches: page cache 64 MiB, index block
 * cache 32 MiB):
 *  1. Ingest: ≥ 1 GiB of 8 KiB page images (131,072 keys over 4 relations, one image per WAL
 *     record) through `timeline.put` + `finishRecord`, with `checkpointIfNeeded` and one event
 *     loop turn after every batch of records, as a WAL receiver fed by a socket would run. The
 *     default checkpoint_distance (256 MiB) makes real L0 flushes happen while ingesting; the
 *     back-pressure (MAX_FROZEN_LAYERS frozen layers) is part of the figure. Reported: values/s
 *     and MB/s of value bytes up to the last record, and MB/s including the final checkpoint.
 *  2. (a) An image layer over the ingested relations at the checkpointed LSN, then random
 *     GetPage (`reconstructAt`, synchronous, the read path minus wait_lsn) over all keys, twice;
 *     the layer file is hot in the OS page cache (just written). An awaited `getPage` pass shows
 *     the cost of the async wrapper.
 *  3. (c) A 3-deep branch chain main → b1 → b2 → b3, each branch with its own writes (flushed to
 *     an L0 of its own), reading the main keys of (a) through b3: three L0 lookups that miss,
 *     then the image layer on main.
 *  4. (b) Multixact-offsets SLRU pages, each a base image plus k records (k uniform in 1..10,
 *     `multixactOffset` values whose multi lies on the page), all in L0 deltas, no image layer
 *     above. Two layouts: "one L0" (base and records in the same L0, as when a page is touched
 *     several times within one checkpoint_distance — and as after compaction) and "L0 stack"
 *     (base in one L0, record round r in the r-th of ten further L0s: every read walks 11 L0s).
 *     Cold: the materialized page cache is cleared first and every key is read once, so each
 *     read reconstructs. Warm: a hot subset that fits the page cache, read after a fill pass.
 *  5. Ceiling: the same number of 8 KiB `Buffer.copy`s as the image reads, from random pages of a
 *     256 MiB pool (larger than L2 and L3) into one destination, timed the same way. Ratios are
 *     Strata pages/s ÷ copy pages/s.
 *
 * Timing: per operation with process.hrtime.bigint() into a preallocated Float64Array (p50/p99
 * from it); pages/s from the wall time of the whole timed loop. Every timed loop follows an
 * untimed warm-up of the same operation (JIT, OS cache). Every page read is checked (its stamp,
 * or the offset the newest record wrote), outside the timer but inside the loop, so a fast wrong
 * answer cannot pass.
 *
 * Memory: RSS is sampled during ingest and reads (every batch / every 4096 reads) and the
 * process's maxRSS is read before the copy ceiling (whose pool would otherwise dominate it).
 *
 * Memory: RSS is also recorded at each quarter of the ingest, so a plateau shows that memory
 * follows checkpoint_distance, not the data size; BENCH_STORAGE_MIB=<n> ingests n MiB instead of
 * the default to check that on a larger data set.
 *
 * Runs in a child process (clean heap, its own maxRSS); the parent owns the temporary directory
 * and removes it whatever happens to the child. BENCH_QUICK=1: 128 MiB of pages with
 * checkpoint_distance 32 MiB, smaller read sets. The last line printed is one JSON object.
 * MB = 10^6 bytes; MiB/GiB = 2^20/2^30 bytes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyKind, SlruKind, makeKey, relBlockKey, slruBlockKey, type Key } from '../src/storage/key.ts';
import type { ImageValue, MultixactOffsetValue } from '../src/storage/value.ts';
import { DEFAULT_BLOCK_CACHE_BYTES, DEFAULT_PAGE_CACHE_BYTES, TenantManager } from '../src/pageserver/tenantmgr.ts';
import { TENANT_CONFIG_DEFAULTS } from '../src/pageserver/tenantconfig.ts';
import { MAX_FROZEN_LAYERS, type Timeline } from '../src/pageserver/timeline/timeline.ts';
import { checkpoint, checkpointIfNeeded } from '../src/pageserver/timeline/flush.ts';
import { getPage, reconstructAt } from '../src/pageserver/timeline/read.ts';
import { createImageLayer } from '../src/pageserver/timeline/images.ts';
import { rng } from '../test/unit/test-compressors.ts';

const CHILD_DIR_ENV = 'STRATA_BENCH_STORAGE_CHILD_DIR';
const quick = process.env['BENCH_QUICK'] === '1';

const PAGE_BYTES = 8192;
const MIB = 1024 * 1024;
const MB = 1e6;

/** Sizes of one run. BENCH_STORAGE_MIB overrides how much is ingested (to show RSS does not grow with it). */
const SIZE_OVERRIDE_MIB = Number(process.env['BENCH_STORAGE_MIB'] ?? 0);
const BASE_SIZES = quick
  ? { mainPages: 16_384, checkpointDistanceBytes: 32 * MIB, deltaKeys: 4096, warmKeys: 2048, branchPages: 1024, imagePasses: 2, asyncReads: 16_384, branchReads: 32_768, warmPasses: 4 }
  : { mainPages: 131_072, checkpointDistanceBytes: TENANT_CONFIG_DEFAULTS.checkpointDistanceBytes, deltaKeys: 16_384, warmKeys: 4096, branchPages: 4096, imagePasses: 2, asyncReads: 65_536, branchReads: 131_072, warmPasses: 4 };
if (!(Number.isInteger(SIZE_OVERRIDE_MIB) && SIZE_OVERRIDE_MIB >= 0 && SIZE_OVERRIDE_MIB <= 64 * 1024)) {
  throw new Error(`BENCH_STORAGE_MIB must be a whole number of MiB up to 65536, got ${process.env['BENCH_STORAGE_MIB']}`);
}
const SIZES = SIZE_OVERRIDE_MIB > 0 ? { ...BASE_SIZES, mainPages: (SIZE_OVERRIDE_MIB * MIB) / PAGE_BYTES } : BASE_SIZES;

const RELATIONS = 4;
const SPC = 1663;
const DB = 5;
const FIRST_REL = 16_384;
/** Branch b_n writes relation BRANCH_REL_BASE + n. */
const BRANCH_REL_BASE = 20_000;
/** Distinct source page contents used for ingest (content does not change any cost measured). */
const POOL_PAGES = 64;
/** Records per batch between checkpointIfNeeded calls (≈ 512 KiB of WAL). */
const BATCH_RECORDS = 64;
/** WAL bytes of one full-page-image record (header + block header + 8 KiB image, aligned). */
const FPI_RECORD_BYTES = 8248n;
/** WAL bytes of one multixact create record. */
const SMALL_RECORD_BYTES = 56n;
const START_LSN = 0x100_0000n;
const MAX_RECORDS_PER_PAGE = 10;
const MULTIXACT_OFFSETS_PER_PAGE = 2048;
const WARMUP_OPS = 20_000;
const COPY_POOL_BYTES = 256 * MIB;
const RSS_SAMPLE_EVERY = 4096;

function log(msg: string): void {
  process.stderr.write(`[bench:storage] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Parent: owns the temp directory, runs the measurement in a child, prints the figures.

interface LatencyFigures {
  ops: number;
  pagesPerSec: number;
  p50Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
}

interface ChildResult {
  quick: boolean;
  dataMB: number;
  mainPages: number;
  checkpointDistanceMiB: number;
  pageCacheMiB: number;
  blockCacheMiB: number;
  maxFrozenLayers: number;
  ingestValues: number;
  ingestSec: number;
  ingestDurableSec: number;
  ingestL0Files: number;
  /** Time the ingest loop spent in checkpointIfNeeded (waiting for flushes: back-pressure). */
  ingestBackPressureSec: number;
  /** Peak RSS sampled up to 25, 50, 75 and 100 % of the ingest. */
  ingestRssByQuarterMB: number[];
  imageLayerCreateSec: number;
  image: LatencyFigures;
  imageAsync: LatencyFigures;
  branch: LatencyFigures;
  deltaOneL0Cold: LatencyFigures;
  deltaOneL0Warm: LatencyFigures;
  deltaStackCold: LatencyFigures;
  deltaStackWarm: LatencyFigures;
  deltaAvgRecordsApplied: number;
  deltaStackL0s: number;
  copy: LatencyFigures;
  pageCacheHitRate: { image: number; branch: number; deltaCold: number; deltaWarm: number };
  blockCacheHitRate: { image: number; branch: number; deltaCold: number };
  rss: { baselineMB: number; peakIngestMB: number; peakImageCreateMB: number; peakReadsMB: number; maxRssMB: number };
}

async function parent(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-bench-storage-'));
  let child: ChildProcess | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    child?.kill(sig);
    void rm(dir, { recursive: true, force: true }).finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let out = '';
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child = spawn(process.execPath, [...process.execArgv, import.meta.filename], {
        env: { ...process.env, [CHILD_DIR_ENV]: dir },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.length > 1 << 20) out = out.slice(-(1 << 19)); // keep the tail; the result is the last line
      });
      child.on('error', reject);
      child.on('exit', (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`bench:storage child exited with code ${code}`);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await rm(dir, { recursive: true, force: true });
  }
  const r = JSON.parse(out.trim().split('\n').pop()!) as ChildResult;
  report(r);
}

function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function report(r: ChildResult): void {
  const ingestMBPerSec = r.dataMB / r.ingestSec;
  const ratio = (f: LatencyFigures): number => f.pagesPerSec / r.copy.pagesPerSec;
  console.log(`Strata storage engine${r.quick ? ' (BENCH_QUICK)' : ''}: ${fmt(r.mainPages)} pages of 8 KiB = ${fmt(r.dataMB, 1)} MB ingested; ` +
    `checkpoint_distance ${r.checkpointDistanceMiB} MiB, page cache ${r.pageCacheMiB} MiB, block cache ${r.blockCacheMiB} MiB`);
  console.log(`ingest: ${fmt(r.ingestValues / r.ingestSec)} values/s, ${fmt(ingestMBPerSec, 1)} MB/s (target >= 200) into in-memory layers with ${r.ingestL0Files} L0 flushes; ` +
    `${fmt(r.dataMB / r.ingestDurableSec, 1)} MB/s including the final checkpoint; ${fmt(r.ingestBackPressureSec, 2)} s of ${fmt(r.ingestSec, 2)} s waiting for flushes`);
  console.log(`image layer creation: ${fmt(r.imageLayerCreateSec, 1)} s (${fmt(r.dataMB / r.imageLayerCreateSec, 1)} MB/s of pages)`);
  console.log('');
  console.log('| GetPage@LSN | reads | pages/s | p50 µs | p99 µs | p99.9 µs | ratio vs copy |');
  console.log('|---|---|---|---|---|---|---|');
  const row = (name: string, f: LatencyFigures, showRatio = true): void => {
    console.log(`| ${name} | ${fmt(f.ops)} | ${fmt(f.pagesPerSec)} | ${fmt(f.p50Us, 1)} | ${fmt(f.p99Us, 1)} | ${fmt(f.p999Us, 1)} | ${showRatio ? fmt(ratio(f), 3) : '—'} |`);
  };
  row('(a) image layer (reconstructAt)', r.image);
  row('(a) image layer (await getPage)', r.imageAsync);
  row(`(b) deltas, one L0, cold page cache (avg ${fmt(r.deltaAvgRecordsApplied, 2)} records)`, r.deltaOneL0Cold);
  row('(b) deltas, one L0, warm page cache', r.deltaOneL0Warm);
  row(`(b) deltas, stack of ${r.deltaStackL0s} L0s, cold page cache`, r.deltaStackCold);
  row(`(b) deltas, stack of ${r.deltaStackL0s} L0s, warm page cache`, r.deltaStackWarm);
  row('(c) 3-deep branch chain → image on main', r.branch);
  row('ceiling: 8 KiB Buffer.copy from a 256 MiB pool', r.copy, false);
  console.log('');
  console.log(`page cache hit rate: image ${fmt(r.pageCacheHitRate.image * 100, 1)} %, branch ${fmt(r.pageCacheHitRate.branch * 100, 1)} %, ` +
    `deltas cold ${fmt(r.pageCacheHitRate.deltaCold * 100, 1)} %, warm ${fmt(r.pageCacheHitRate.deltaWarm * 100, 1)} %; ` +
    `index block cache hit rate: image ${fmt(r.blockCacheHitRate.image * 100, 1)} %, branch ${fmt(r.blockCacheHitRate.branch * 100, 1)} %, deltas ${fmt(r.blockCacheHitRate.deltaCold * 100, 1)} %`);
  console.log(`peak RSS after 25/50/75/100 % of the ingest: ${r.ingestRssByQuarterMB.map((m) => fmt(m)).join(' / ')} MB`);
  const boundMB = ((1 + r.maxFrozenLayers) * r.checkpointDistanceMiB * MIB + (r.pageCacheMiB + r.blockCacheMiB) * MIB) / MB;
  console.log(`RSS: baseline ${fmt(r.rss.baselineMB)} MB; peak during ingest ${fmt(r.rss.peakIngestMB)} MB, image creation ${fmt(r.rss.peakImageCreateMB)} MB, reads ${fmt(r.rss.peakReadsMB)} MB; ` +
    `maxRSS ${fmt(r.rss.maxRssMB)} MB (bound (1 + ${r.maxFrozenLayers}) × checkpoint_distance + caches = ${fmt(boundMB)} MB, plus baseline)`);
  const result = {
    quick: r.quick,
    dataMB: r.dataMB,
    pages: r.mainPages,
    checkpointDistanceMiB: r.checkpointDistanceMiB,
    pageCacheMiB: r.pageCacheMiB,
    blockCacheMiB: r.blockCacheMiB,
    ingestMBPerSec: round(ingestMBPerSec, 1),
    ingestValuesPerSec: Math.round(r.ingestValues / r.ingestSec),
    ingestDurableMBPerSec: round(r.dataMB / r.ingestDurableSec, 1),
    ingestL0Files: r.ingestL0Files,
    ingestBackPressureSec: round(r.ingestBackPressureSec, 2),
    imageLayerCreateMBPerSec: round(r.dataMB / r.imageLayerCreateSec, 1),
    imagePagesPerSec: Math.round(r.image.pagesPerSec),
    imageP50Us: round(r.image.p50Us, 1),
    imageP99Us: round(r.image.p99Us, 1),
    imageAsyncPagesPerSec: Math.round(r.imageAsync.pagesPerSec),
    imageAsyncP99Us: round(r.imageAsync.p99Us, 1),
    deltaPagesPerSec: Math.round(r.deltaOneL0Cold.pagesPerSec),
    deltaP50Us: round(r.deltaOneL0Cold.p50Us, 1),
    deltaP99Us: round(r.deltaOneL0Cold.p99Us, 1),
    deltaWarmPagesPerSec: Math.round(r.deltaOneL0Warm.pagesPerSec),
    deltaWarmP99Us: round(r.deltaOneL0Warm.p99Us, 1),
    deltaStackPagesPerSec: Math.round(r.deltaStackCold.pagesPerSec),
    deltaStackP50Us: round(r.deltaStackCold.p50Us, 1),
    deltaStackP99Us: round(r.deltaStackCold.p99Us, 1),
    deltaStackWarmPagesPerSec: Math.round(r.deltaStackWarm.pagesPerSec),
    deltaAvgRecordsApplied: round(r.deltaAvgRecordsApplied, 2),
    branchPagesPerSec: Math.round(r.branch.pagesPerSec),
    branchP50Us: round(r.branch.p50Us, 1),
    branchP99Us: round(r.branch.p99Us, 1),
    copyPagesPerSec: Math.round(r.copy.pagesPerSec),
    copyP50Us: round(r.copy.p50Us, 2),
    copyP99Us: round(r.copy.p99Us, 2),
    ratioImageVsCopy: round(ratio(r.image), 3),
    ratioDeltaVsCopy: round(ratio(r.deltaOneL0Cold), 3),
    ratioDeltaStackVsCopy: round(ratio(r.deltaStackCold), 3),
    ratioBranchVsCopy: round(ratio(r.branch), 3),
    peakRssMB: Math.round(r.rss.maxRssMB),
    peakRssIngestMB: Math.round(r.rss.peakIngestMB),
    peakRssIngestByQuarterMB: r.ingestRssByQuarterMB.map((m) => Math.round(m)),
    rssBaselineMB: Math.round(r.rss.baselineMB),
    targetIngestMBPerSec: 200,
    targetImagePagesPerSec: 100_000,
  };
  console.log(JSON.stringify(result));
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

// ---------------------------------------------------------------------------------------------
// Child: the measurement.

function permutation(n: number, rand: () => number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** Peak sampled RSS per phase; 'ceiling' (the copy pool) is sampled but not reported. */
const rssPeaks = { ingest: 0, imageCreate: 0, reads: 0, ceiling: 0 };
type RssPhase = keyof typeof rssPeaks;
let rssPhase: RssPhase = 'ingest';

function sampleRss(): void {
  const rss = process.memoryUsage.rss();
  if (rss > rssPeaks[rssPhase]) rssPeaks[rssPhase] = rss;
}

/** Latency samples of the current measurement, in ns (reused, never reallocated while timing). */
let latencyNs = new Float64Array(0);

function ensureLatencyCapacity(n: number): void {
  if (latencyNs.length < n) latencyNs = new Float64Array(n);
}

function figures(ops: number, wallNs: number): LatencyFigures {
  const sorted = latencyNs.slice(0, ops).sort();
  const at = (q: number): number => sorted[Math.min(ops - 1, Math.floor(q * ops))]! / 1000;
  return { ops, pagesPerSec: ops / (wallNs / 1e9), p50Us: at(0.5), p99Us: at(0.99), p999Us: at(0.999), maxUs: sorted[ops - 1]! / 1000 };
}

/**
 * Runs `op(i)` for i in [0, ops) with one timer pair around each call, after `warmup` untimed
 * calls of `warmOp` (default `op`). `op` does its own correctness check.
 */
function measure(ops: number, op: (i: number) => void, warmup: number, warmOp: (i: number) => void = op): LatencyFigures {
  for (let i = 0; i < warmup; i++) warmOp(i);
  ensureLatencyCapacity(ops);
  const lat = latencyNs;
  const start = process.hrtime.bigint();
  for (let i = 0; i < ops; i++) {
    const t0 = process.hrtime.bigint();
    op(i);
    lat[i] = Number(process.hrtime.bigint() - t0);
    if ((i & (RSS_SAMPLE_EVERY - 1)) === 0) sampleRss();
  }
  const wall = Number(process.hrtime.bigint() - start);
  return figures(ops, wall);
}

async function measureAsync(ops: number, op: (i: number) => Promise<void>, warmup: number): Promise<LatencyFigures> {
  for (let i = 0; i < warmup; i++) await op(i);
  ensureLatencyCapacity(ops);
  const lat = latencyNs;
  const start = process.hrtime.bigint();
  for (let i = 0; i < ops; i++) {
    const t0 = process.hrtime.bigint();
    await op(i);
    lat[i] = Number(process.hrtime.bigint() - t0);
    if ((i & (RSS_SAMPLE_EVERY - 1)) === 0) sampleRss();
  }
  const wall = Number(process.hrtime.bigint() - start);
  return figures(ops, wall);
}

let mismatches = 0;
let firstMismatch = '';

function mismatch(what: string): void {
  if (mismatches++ === 0) firstMismatch = what;
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function randomPages(n: number, rand: () => number): Buffer[] {
  const pages: Buffer[] = [];
  for (let p = 0; p < n; p++) {
    const b = Buffer.allocUnsafe(PAGE_BYTES);
    for (let i = 0; i < PAGE_BYTES; i += 4) b.writeUInt32LE((rand() * 4294967296) >>> 0, i);
    pages.push(b);
  }
  return pages;
}

/**
 * Writes `count` page images, one per record, stamped with their index (bytes 8..11) and record
 * LSN (bytes 0..7), checkpointIfNeeded + one event loop turn per batch. Returns the time in ms
 * up to the last record.
 */
async function ingestImages(tl: Timeline, keys: Key[], pool: Buffer[], stats?: { backPressureMs: number; rssByQuarter: number[] }): Promise<number> {
  const value: ImageValue = { kind: 'image', image: pool[0]! };
  let lsn = tl.lastRecordLsn;
  const quarter = Math.max(1, Math.floor(keys.length / 4));
  const t0 = performance.now();
  for (let i = 0; i < keys.length; i++) {
    const page = pool[i % POOL_PAGES]!;
    const end = lsn + FPI_RECORD_BYTES;
    page.writeBigUInt64LE(end, 0);
    page.writeUInt32LE(i, 8);
    value.image = page;
    tl.put(keys[i]!, end, value);
    tl.finishRecord(end, lsn);
    lsn = end;
    if ((i + 1) % BATCH_RECORDS === 0) {
      const w0 = performance.now();
      await checkpointIfNeeded(tl);
      if (stats !== undefined) stats.backPressureMs += performance.now() - w0;
      await yieldToEventLoop();
      sampleRss();
    }
    if (stats !== undefined && ((i + 1) % quarter === 0 || i + 1 === keys.length) && stats.rssByQuarter.length < 4) {
      sampleRss();
      stats.rssByQuarter.push(rssPeaks.ingest);
    }
  }
  return performance.now() - t0;
}

interface DeltaSet {
  keys: Key[];
  /** Records per key (1..10). */
  counts: Uint8Array;
  /** Page number (segNo · 32 + block) per key: the multi of record r is pageNo · 2048 + r. */
  firstPageNo: number;
}

function deltaSet(n: number, firstPageNo: number, rand: () => number): DeltaSet {
  const keys: Key[] = [];
  const counts = new Uint8Array(n);
  for (let j = 0; j < n; j++) {
    const pageNo = firstPageNo + j;
    keys.push(slruBlockKey(SlruKind.multixactOffsets, Math.floor(pageNo / 32), pageNo % 32));
    counts[j] = 1 + Math.floor(rand() * MAX_RECORDS_PER_PAGE);
  }
  return { keys, counts, firstPageNo };
}

/** The offset record r of key j writes (and the check reads back). */
function offsetOf(j: number, r: number): number {
  return j * 16 + r;
}

/**
 * Writes a delta set on `tl`: base images, then record rounds 1..10 (round r writes record r of
 * every key with at least r records). With `stack`, a checkpoint after the base and after every
 * round puts each in an L0 of its own; otherwise one checkpoint at the end.
 */
async function writeDeltaSet(tl: Timeline, set: DeltaSet, pool: Buffer[], stack: boolean): Promise<void> {
  const image: ImageValue = { kind: 'image', image: pool[0]! };
  const rec: MultixactOffsetValue = { kind: 'multixactOffset', multi: 0, offset: 0 };
  let lsn = tl.lastRecordLsn;
  for (let j = 0; j < set.keys.length; j++) {
    const end = lsn + FPI_RECORD_BYTES;
    image.image = pool[j % POOL_PAGES]!;
    tl.put(set.keys[j]!, end, image);
    tl.finishRecord(end, lsn);
    lsn = end;
  }
  if (stack) await checkpoint(tl);
  for (let r = 1; r <= MAX_RECORDS_PER_PAGE; r++) {
    for (let j = 0; j < set.keys.length; j++) {
      if (set.counts[j]! < r) continue;
      const end = lsn + SMALL_RECORD_BYTES;
      rec.multi = (set.firstPageNo + j) * MULTIXACT_OFFSETS_PER_PAGE + r;
      rec.offset = offsetOf(j, r);
      tl.put(set.keys[j]!, end, rec);
      tl.finishRecord(end, lsn);
      lsn = end;
    }
    if (stack) await checkpoint(tl);
  }
  if (!stack) await checkpoint(tl);
}

function hitRate(hits: number, misses: number): number {
  return hits + misses === 0 ? 0 : hits / (hits + misses);
}

async function child(dir: string): Promise<void> {
  process.env['STRATA_LOG'] ??= 'warn';
  const S = SIZES;
  const rand = rng(0x5eed); // seeded (mulberry32), so runs read the same key orders
  const mgr = await TenantManager.open({
    workdir: dir, pageCacheBytes: DEFAULT_PAGE_CACHE_BYTES, blockCacheBytes: DEFAULT_BLOCK_CACHE_BYTES, waitLsnTimeoutMs: 60_000,
  });
  const pageCache = mgr.shared.pageCache;
  const blockCache = mgr.shared.blockCache;
  try {
    const tenant = await mgr.createTenant({ config: quick ? { checkpointDistanceBytes: S.checkpointDistanceBytes } : {} });
    if (tenant.config.checkpointDistanceBytes !== S.checkpointDistanceBytes) throw new Error('tenant checkpoint_distance is not what the bench expects');
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: START_LSN });
    const pool = randomPages(POOL_PAGES, rand);
    // Keys, built before timing (a WAL ingest builds them from decoded block references).
    const mainKeys: Key[] = [];
    for (let i = 0; i < S.mainPages; i++) {
      mainKeys.push(relBlockKey({ spcNode: SPC, dbNode: DB, relNode: FIRST_REL + (i % RELATIONS), forkNum: 0 }, Math.floor(i / RELATIONS)));
    }
    const baselineRss = process.memoryUsage.rss();

    // 1. Ingest.
    log(`ingesting ${S.mainPages} pages (${(S.mainPages * PAGE_BYTES / MB).toFixed(1)} MB), checkpoint_distance ${S.checkpointDistanceBytes / MIB} MiB ...`);
    rssPhase = 'ingest';
    const tIngest0 = performance.now();
    const ingestStats = { backPressureMs: 0, rssByQuarter: [] as number[] };
    const ingestMs = await ingestImages(main, mainKeys, pool, ingestStats);
    await checkpoint(main);
    const ingestDurableMs = performance.now() - tIngest0;
    sampleRss();
    const ingestL0Files = main.layers.historicLayers().length;
    log(`ingest: ${ingestMs.toFixed(0)} ms to the last record (${ingestStats.backPressureMs.toFixed(0)} ms of it waiting for flushes), ` +
      `${ingestDurableMs.toFixed(0)} ms durable, ${ingestL0Files} L0 files`);

    // 2. Image layer at the checkpointed LSN.
    rssPhase = 'imageCreate';
    const imageLsn = main.lastRecordLsn;
    const relRange = { start: makeKey(KeyKind.rel, SPC, DB, FIRST_REL, 0, 0), end: makeKey(KeyKind.rel, SPC, DB, FIRST_REL + RELATIONS, 0, 0) };
    const tImg0 = performance.now();
    await createImageLayer(main, relRange, imageLsn);
    const imageCreateMs = performance.now() - tImg0;
    sampleRss();
    log(`image layer: ${imageCreateMs.toFixed(0)} ms`);

    // (a) Random GetPage over all keys from the image layer.
    rssPhase = 'reads';
    const n = S.mainPages;
    const order = permutation(n, rand);
    const warmOrder = permutation(n, rand);
    const readImage = (i: number): void => {
      const k = order[i % n]!;
      const page = reconstructAt(main, mainKeys[k]!, imageLsn);
      if (page.readUInt32LE(8) !== k) mismatch(`image read of key ${k}`);
    };
    const warmImage = (i: number): void => {
      const k = warmOrder[i % n]!;
      reconstructAt(main, mainKeys[k]!, imageLsn);
    };
    let pc0 = { h: pageCache.hits, m: pageCache.misses };
    let bc0 = { h: blockCache.hits, m: blockCache.misses };
    const image = measure(n * S.imagePasses, readImage, WARMUP_OPS, warmImage);
    const imagePageHit = hitRate(pageCache.hits - pc0.h, pageCache.misses - pc0.m);
    const imageBlockHit = hitRate(blockCache.hits - bc0.h, blockCache.misses - bc0.m);
    log(`(a) image: ${image.pagesPerSec.toFixed(0)} pages/s, p50 ${image.p50Us.toFixed(1)} µs, p99 ${image.p99Us.toFixed(1)} µs`);
    const imageAsync = await measureAsync(S.asyncReads, async (i: number): Promise<void> => {
      const k = order[i % n]!;
      const page = await getPage(main, mainKeys[k]!, imageLsn);
      if (page.readUInt32LE(8) !== k) mismatch(`async image read of key ${k}`);
    }, Math.min(WARMUP_OPS, S.asyncReads));
    log(`(a) image, await getPage: ${imageAsync.pagesPerSec.toFixed(0)} pages/s`);

    // (c) Branch chain main → b1 → b2 → b3, each with writes of its own.
    let parentTl = main;
    let b3: Timeline = main;
    for (let level = 1; level <= 3; level++) {
      const b = await tenant.branchTimeline({ ancestorTimelineId: parentTl.timelineId });
      const keys: Key[] = [];
      for (let i = 0; i < S.branchPages; i++) keys.push(relBlockKey({ spcNode: SPC, dbNode: DB, relNode: BRANCH_REL_BASE + level, forkNum: 0 }, i));
      await ingestImages(b, keys, pool);
      await checkpoint(b);
      if (b.layers.historicLayers().length !== 1) throw new Error(`branch b${level} has ${b.layers.historicLayers().length} layer files, expected 1`);
      parentTl = b;
      b3 = b;
    }
    const branchLsn = b3.lastRecordLsn;
    pc0 = { h: pageCache.hits, m: pageCache.misses };
    bc0 = { h: blockCache.hits, m: blockCache.misses };
    const branch = measure(S.branchReads, (i: number): void => {
      const k = order[i % n]!;
      const page = reconstructAt(b3, mainKeys[k]!, branchLsn);
      if (page.readUInt32LE(8) !== k) mismatch(`branch read of key ${k}`);
    }, WARMUP_OPS);
    const branchPageHit = hitRate(pageCache.hits - pc0.h, pageCache.misses - pc0.m);
    const branchBlockHit = hitRate(blockCache.hits - bc0.h, blockCache.misses - bc0.m);
    log(`(c) branch chain: ${branch.pagesPerSec.toFixed(0)} pages/s, p99 ${branch.p99Us.toFixed(1)} µs`);

    // (b) Deltas: one L0, then a stack of L0s.
    const deltaRead = (tl: Timeline, set: DeltaSet, keyOrder: Uint32Array, lsn: bigint) => (i: number): void => {
      const j = keyOrder[i % keyOrder.length]!;
      const page = reconstructAt(tl, set.keys[j]!, lsn);
      const r = set.counts[j]!;
      if (page.readUInt32LE(r * 4) !== offsetOf(j, r)) mismatch(`delta read of page ${set.firstPageNo + j}`);
    };
    const measureDeltas = (set: DeltaSet): { cold: LatencyFigures; warm: LatencyFigures; coldHit: number; warmHit: number; coldBlockHit: number } => {
      const lsn = main.lastRecordLsn;
      const dn = set.keys.length;
      // Warm-up (JIT) on a different order, then an empty page cache for the cold pass.
      const warmupOrder = permutation(dn, rand);
      const coldOrder = permutation(dn, rand);
      const warmRead = deltaRead(main, set, warmupOrder, lsn);
      for (let i = 0; i < Math.min(WARMUP_OPS, dn); i++) warmRead(i);
      pageCache.clear();
      let p = { h: pageCache.hits, m: pageCache.misses };
      const b = { h: blockCache.hits, m: blockCache.misses };
      const cold = measure(dn, deltaRead(main, set, coldOrder, lsn), 0);
      const coldHit = hitRate(pageCache.hits - p.h, pageCache.misses - p.m);
      const coldBlockHit = hitRate(blockCache.hits - b.h, blockCache.misses - b.m);
      // Warm: a hot subset that fits the page cache, filled by one pass.
      const hot = permutation(dn, rand).subarray(0, Math.min(S.warmKeys, dn));
      const hotRead = deltaRead(main, set, hot, lsn);
      pageCache.clear();
      for (let i = 0; i < hot.length; i++) hotRead(i);
      const hotOrder = new Uint32Array(hot.length * S.warmPasses);
      for (let pass = 0; pass < S.warmPasses; pass++) {
        const perm = permutation(hot.length, rand);
        for (let i = 0; i < hot.length; i++) hotOrder[pass * hot.length + i] = hot[perm[i]!]!;
      }
      p = { h: pageCache.hits, m: pageCache.misses };
      const warm = measure(hotOrder.length, deltaRead(main, set, hotOrder, lsn), 0);
      const warmHit = hitRate(pageCache.hits - p.h, pageCache.misses - p.m);
      return { cold, warm, coldHit, warmHit, coldBlockHit };
    };

    const layersBefore = main.layers.historicLayers().length;
    const oneL0 = deltaSet(S.deltaKeys, 0, rand);
    await writeDeltaSet(main, oneL0, pool, false);
    if (main.layers.historicLayers().length !== layersBefore + 1) throw new Error('the one-L0 delta set did not end up in exactly one L0');
    const d1 = measureDeltas(oneL0);
    log(`(b) one L0: cold ${d1.cold.pagesPerSec.toFixed(0)} pages/s p99 ${d1.cold.p99Us.toFixed(1)} µs; warm ${d1.warm.pagesPerSec.toFixed(0)} pages/s`);

    const stackBefore = main.layers.historicLayers().length;
    const stack = deltaSet(S.deltaKeys, S.deltaKeys, rand);
    await writeDeltaSet(main, stack, pool, true);
    const stackL0s = main.layers.historicLayers().length - stackBefore;
    if (stackL0s !== 1 + MAX_RECORDS_PER_PAGE) throw new Error(`the stacked delta set made ${stackL0s} L0s, expected ${1 + MAX_RECORDS_PER_PAGE}`);
    const d2 = measureDeltas(stack);
    log(`(b) stack of ${stackL0s} L0s: cold ${d2.cold.pagesPerSec.toFixed(0)} pages/s p99 ${d2.cold.p99Us.toFixed(1)} µs; warm ${d2.warm.pagesPerSec.toFixed(0)} pages/s`);

    let recordsTotal = 0;
    for (let j = 0; j < oneL0.counts.length; j++) recordsTotal += oneL0.counts[j]!;
    const avgRecords = recordsTotal / oneL0.counts.length;

    sampleRss();
    // getrusage's maxRSS (KiB) and the sampled RSS differ by rounding; report the larger.
    const maxRssMB = Math.max(process.resourceUsage().maxRSS * 1024, rssPeaks.ingest, rssPeaks.imageCreate, rssPeaks.reads) / MB;

    // Ceiling: Buffer.copy of 8 KiB pages from a pool larger than the CPU caches.
    rssPhase = 'ceiling';
    const poolPages = COPY_POOL_BYTES / PAGE_BYTES;
    const copyPool = Buffer.alloc(COPY_POOL_BYTES, 0x5a);
    const dest = Buffer.alloc(PAGE_BYTES);
    const copyOrder = permutation(poolPages, rand);
    const copy = measure(image.ops, (i: number): void => {
      const at = copyOrder[i % poolPages]! * PAGE_BYTES;
      copyPool.copy(dest, 0, at, at + PAGE_BYTES);
      if (dest[8] !== 0x5a) mismatch('copy');
    }, WARMUP_OPS);
    log(`ceiling: ${copy.pagesPerSec.toFixed(0)} copies/s`);

    if (mismatches > 0) throw new Error(`${mismatches} reads returned wrong data; first: ${firstMismatch}`);

    const result: ChildResult = {
      quick,
      dataMB: (S.mainPages * PAGE_BYTES) / MB,
      mainPages: S.mainPages,
      checkpointDistanceMiB: S.checkpointDistanceBytes / MIB,
      pageCacheMiB: DEFAULT_PAGE_CACHE_BYTES / MIB,
      blockCacheMiB: DEFAULT_BLOCK_CACHE_BYTES / MIB,
      maxFrozenLayers: MAX_FROZEN_LAYERS,
      ingestValues: S.mainPages,
      ingestSec: ingestMs / 1000,
      ingestDurableSec: ingestDurableMs / 1000,
      ingestL0Files,
      ingestBackPressureSec: ingestStats.backPressureMs / 1000,
      ingestRssByQuarterMB: ingestStats.rssByQuarter.map((b) => b / MB),
      imageLayerCreateSec: imageCreateMs / 1000,
      image, imageAsync, branch,
      deltaOneL0Cold: d1.cold, deltaOneL0Warm: d1.warm, deltaStackCold: d2.cold, deltaStackWarm: d2.warm,
      deltaAvgRecordsApplied: avgRecords,
      deltaStackL0s: stackL0s,
      copy,
      pageCacheHitRate: { image: imagePageHit, branch: branchPageHit, deltaCold: d1.coldHit, deltaWarm: d1.warmHit },
      blockCacheHitRate: { image: imageBlockHit, branch: branchBlockHit, deltaCold: d1.coldBlockHit },
      rss: {
        baselineMB: baselineRss / MB,
        peakIngestMB: rssPeaks.ingest / MB,
        peakImageCreateMB: rssPeaks.imageCreate / MB,
        peakReadsMB: rssPeaks.reads / MB,
        maxRssMB,
      },
    };
    console.log(JSON.stringify(result));
  } finally {
    await mgr.shutdown({ flush: false });
  }
}

const childDir = process.env[CHILD_DIR_ENV];
if (childDir !== undefined && childDir !== '') await child(childDir);
else await parent();
