/**
 * Crash safety of the storage engine: a child process ingests a deterministic workload with a
 * tiny checkpoint_distance (layer files and metadata written many times a second) and is killed
 * with SIGKILL at a random moment, again and again on the same directory. After every kill the
 * directory is reopened in this process and must:
 * - open without error, with the tenant and timelines Active;
 * - have disk_consistent_lsn ≥ every position the child reported durable;
 * - resume ingestion at disk_consistent_lsn (last_record_lsn and prev_record_lsn as the model says);
 * - hold no temporary files and no layer beyond disk_consistent_lsn;
 * - return, for random keys and LSNs up to disk_consistent_lsn, exactly the model's pages, on
 *   the timeline (also through the image layers the child makes now and then) and on the branch
 *   made mid-run.
 * STRATA_CRASH_ITERATIONS sets the number of kills (default 12); the seed is printed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { formatLsn, parseLsn } from '../../src/postgres/lsn.ts';
import { TenantManager } from '../../src/pageserver/tenantmgr.ts';
import { getPage } from '../../src/pageserver/timeline/read.ts';
import { parseLayerFileName } from '../../src/storage/layerfile/format.ts';
import {
  BRANCH_POINT_RECORD, CRASH_BASE_LSN, CRASH_BRANCH_ID, CRASH_TENANT_ID, CRASH_TIMELINE_ID, ModelTimeline, crashRecord, crashRecordIndexOfEnd, modelKeys, prng,
} from '../support/storage-model.ts';

const ITERATIONS = Number(process.env['STRATA_CRASH_ITERATIONS'] ?? 12);
const SEED = process.env['STRATA_CRASH_SEED'] !== undefined ? Number(process.env['STRATA_CRASH_SEED']) : (Date.now() & 0x7fffffff);
const CHILD = fileURLToPath(new URL('../support/storage-crash-child.ts', import.meta.url));

interface ChildRun {
  maxDurable: bigint;
  branched: bigint | null;
  durableLines: number;
  ready: boolean;
  exitSignal: NodeJS.Signals | null;
  stderr: string;
}

async function runAndKill(dir: string, seed: number, killAfterMs: number): Promise<ChildRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(seed), '1000000'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, STRATA_LOG: 'error' },
  });
  const run: ChildRun = { maxDurable: 0n, branched: null, durableLines: 0, ready: false, exitSignal: null, stderr: '' };
  child.stderr.on('data', (d: Buffer) => { run.stderr += d.toString(); });
  const exited = new Promise<void>((resolve) => child.on('exit', (_code, signal) => { run.exitSignal = signal; resolve(); }));
  let timer: NodeJS.Timeout | null = null;
  try {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const [what, a, b] = line.split(' ');
      if (what === 'ready') {
        run.ready = true;
        timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      } else if (what === 'durable') {
        const lsn = parseLsn(a!);
        if (lsn > run.maxDurable) run.maxDurable = lsn;
        run.durableLines++;
      } else if (what === 'branched') {
        run.branched = parseLsn(b!);
      }
    });
    // Bound: a child that never becomes ready is killed after 60 s.
    const guard = setTimeout(() => child.kill('SIGKILL'), 60_000);
    await exited;
    clearTimeout(guard);
  } finally {
    if (timer !== null) clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  return run;
}

test(`storage survives ${ITERATIONS} SIGKILLs during flushes`, { timeout: 600_000 }, async () => {
  const seed = SEED;
  const rand = prng(seed);
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-crash-'));
  const model = new ModelTimeline({ id: CRASH_TIMELINE_ID, ancestor: null, ancestorLsn: 0n, lastLsn: CRASH_BASE_LSN, prevLsn: null, gcCutoff: CRASH_BASE_LSN });
  let modelRecords = 0;
  const extendModel = (throughLsn: bigint): void => {
    while (CRASH_BASE_LSN + 64n * BigInt(modelRecords) < throughLsn) {
      const rec = crashRecord(seed, modelRecords++);
      for (const p of rec.puts) model.writes.push({ lsn: rec.endLsn, key: p.key, value: p.value });
      model.records.push({ endLsn: rec.endLsn, startLsn: rec.startLsn });
      model.lastLsn = rec.endLsn;
    }
  };
  const { imageKeys, recordKeys } = modelKeys();
  const keys = [...imageKeys, ...recordKeys];
  let lastDcl = CRASH_BASE_LSN;
  let totalDurableLines = 0;
  let imageLayersSeen = 0;
  try {
    for (let it = 0; it < ITERATIONS; it++) {
      const killAfterMs = 40 + rand.int(400);
      const run = await runAndKill(dir, seed, killAfterMs);
      assert.ok(run.ready, `seed ${seed} iteration ${it}: child never became ready: ${run.stderr}`);
      assert.equal(run.exitSignal, 'SIGKILL', `seed ${seed} iteration ${it}: child exited by itself: ${run.stderr}`);
      totalDurableLines += run.durableLines;

      const mgr = await TenantManager.open({ workdir: dir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 2000 });
      try {
        const tenant = mgr.getTenant(CRASH_TENANT_ID);
        assert.equal(tenant.state, 'Active', `seed ${seed} iteration ${it}: tenant ${tenant.state}: ${tenant.brokenReason ?? ''}`);
        const tl = tenant.getTimeline(CRASH_TIMELINE_ID);
        assert.equal(tl.state, 'Active', `seed ${seed} iteration ${it}: timeline ${tl.state}: ${tl.brokenReason ?? ''}`);
        const dcl = tl.diskConsistentLsn;
        assert.ok(dcl >= run.maxDurable, `seed ${seed} iteration ${it}: disk_consistent_lsn ${formatLsn(dcl)} is below the acknowledged ${formatLsn(run.maxDurable)}`);
        assert.ok(dcl >= lastDcl, `seed ${seed} iteration ${it}: disk_consistent_lsn went back`);
        lastDcl = dcl;
        assert.equal(tl.lastRecordLsn, dcl, 'ingestion resumes at disk_consistent_lsn');
        const idx = crashRecordIndexOfEnd(dcl);
        assert.equal(tl.prevRecordLsn, idx >= 0 ? crashRecord(seed, idx).startLsn : null, `seed ${seed} iteration ${it}: prev_record_lsn`);
        for (const name of await readdir(tl.dir)) {
          assert.ok(!name.endsWith('.___temp'), `temporary file survived the reopen: ${name}`);
          const parsed = parseLayerFileName(name);
          if (parsed !== null) assert.ok(parsed.lsnRange.end <= dcl + 1n, `layer beyond disk_consistent_lsn survived: ${name}`);
        }
        imageLayersSeen += (await readdir(tl.dir)).filter((n) => parseLayerFileName(n)?.kind === 'image').length;
        extendModel(dcl);
        for (let i = 0; i < 40; i++) {
          const lsn = i === 0 ? dcl : CRASH_BASE_LSN + 8n * BigInt(rand.int(Number((dcl - CRASH_BASE_LSN) / 8n) + 1));
          const key = rand.pick(keys);
          const expected = model.expected(key, lsn);
          if (expected === null) {
            await assert.rejects(getPage(tl, key, lsn), (e: unknown) => (e as { code?: string }).code === 'key_not_found');
          } else {
            const page = await getPage(tl, key, lsn);
            assert.ok(page.equals(expected), `seed ${seed} iteration ${it}: page of ${key.length}-byte key at ${formatLsn(lsn)} differs from the model`);
          }
        }
        let branch = null;
        try { branch = tenant.getTimeline(CRASH_BRANCH_ID); } catch { branch = null; }
        if (run.branched !== null) assert.ok(branch !== null, `seed ${seed}: acknowledged branch is gone`);
        if (branch !== null) {
          const at = crashRecord(seed, BRANCH_POINT_RECORD).endLsn;
          assert.equal(branch.ancestorLsn, at);
          assert.equal(branch.ancestor?.timelineId, CRASH_TIMELINE_ID);
          for (const key of keys) {
            const expected = model.expected(key, at);
            if (expected !== null) assert.ok((await getPage(branch, key, at)).equals(expected), `seed ${seed}: branch page differs at the branch point`);
          }
        }
      } finally {
        await mgr.shutdown({ flush: false });
      }
    }
    console.log(`storage crash: seed ${seed}, ${ITERATIONS} kills, ${totalDurableLines} durable acknowledgements, ${imageLayersSeen} image layers seen at reopen, final disk_consistent_lsn ${formatLsn(lastDcl)} (${crashRecordIndexOfEnd(lastDcl) + 1} records)`);
    assert.ok(totalDurableLines > ITERATIONS, `seed ${seed}: the child acknowledged too few flushes (${totalDurableLines}) for the kills to land mid-flush`);
  } catch (err) {
    console.error(`storage crash test failed with seed ${seed} (replay: STRATA_CRASH_SEED=${seed})`);
    throw err;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
