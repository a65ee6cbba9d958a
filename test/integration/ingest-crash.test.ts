/**
 * Crash safety of WAL ingest: a compute keeps writing (pgbench) while the pageserver process is
 * SIGKILLed at random moments again and again and restarted on the same directory. Each restart
 * must resume streaming at disk_consistent_lsn — the compute kept that WAL in the slot, because
 * the receiver only ever reported durable positions as flushed — and in the end a branch at the
 * compute's final LSN must dump exactly what the compute dumps, and pass amcheck.
 *
 * The invariant is checked directly after every kill: the slot's restart_lsn on the compute (below
 * it the compute may free WAL; it follows what the receiver reported as flushed) must not be
 * above the disk_consistent_lsn the restarted pageserver resumes from. The compute also runs
 * with a small max_wal_size and a CHECKPOINT after every kill, so it really frees what it may.
 * A gap would also show as the decoder's xl_prev check failing, "requested WAL segment ... has
 * already been removed" (the run never catches up), or a different dump.
 * STRATA_INGEST_CRASH_KILLS sets the number of kills (default 6).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import { formatLsn, parseLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { startPageserverChild, type PageserverChild } from '../support/pageserver-process.ts';
import { amcheckAll, assertSameDump, dumpAll, endpointTarget, runClientTool } from '../support/endpoint-target.ts';

const KILLS = Number(process.env['STRATA_INGEST_CRASH_KILLS'] ?? '6');

/** The first durable LSN a freshly started child reports (its disk_consistent_lsn at load). */
async function waitForDurable(child: PageserverChild, key: string): Promise<Lsn> {
  for (let i = 0; i < 300; i++) {
    const d = child.durable.get(key);
    if (d !== undefined) return d;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('the pageserver child reported no durable LSN');
}

test(`WAL ingest survives ${KILLS} SIGKILLs of the pageserver while a compute writes`, { timeout: 600_000 }, async (t) => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-ingest-crash-'));
  chmodSync(workdir, 0o755);
  const psDir = path.join(workdir, 'pageserver');
  let child: PageserverChild | null = null;
  let endpoint: Endpoint | null = null;
  let ps: Pageserver | null = await Pageserver.start({ workdir: psDir, pageCacheBytes: 16 << 20, blockCacheBytes: 8 << 20, waitLsnTimeoutMs: 60_000 });
  t.after(async () => {
    if (child !== null && child.proc.exitCode === null) child.proc.kill('SIGKILL');
    await endpoint?.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
  });

  // Set up in this process: a timeline (checkpoint_distance 4 MiB: flushes every second or so, while positions are reported as often), a compute
  // streaming into it. Then hand the directory to the child process; the compute keeps running.
  const tenant = await ps.tenants.createTenant({ config: { checkpointDistanceBytes: 4 * 1024 * 1024 } });
  const tl = await bootstrapTimeline(tenant);
  const key = `${tenant.tenantId}/${tl.timelineId}`;
  endpoint = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: tl.timelineId, dir: path.join(workdir, 'ep'), settings: { fsync: false, autovacuum: false, max_wal_size: '32MB', min_wal_size: '32MB' } });
  const port = endpoint.port;
  await runClientTool(port, 'pgbench', ['-i', '-q', '-s', '1']);
  await ps.shutdown({ flush: true });
  ps = null;

  // pgbench keeps writing while the pageserver is killed and restarted.
  const bench = runClientTool(port, 'pgbench', ['-n', '-c', '2', '-T', String(6 + KILLS * 2)]);
  let lastDurable = 0n;
  let restarts = 0;
  let freedUpTo = 0n; // the slot's restart_lsn after the last kill: the compute may free WAL below it
  for (let i = 0; i < KILLS; i++) {
    child = startPageserverChild(psDir);
    await child.ready;
    // The invariant: a restarted pageserver resumes at or below what the compute still keeps.
    const resumeAt = await waitForDurable(child, key);
    assert.ok(resumeAt >= freedUpTo,
      `the pageserver resumes at ${formatLsn(resumeAt)}, but the compute was allowed to free WAL up to ${formatLsn(freedUpTo)}`);
    await new Promise((r) => setTimeout(r, 700 + Math.floor(Math.random() * 1500)));
    const d = child.durable.get(key) ?? 0n;
    assert.ok(d >= lastDurable, `durable LSN went back after a restart: ${formatLsn(d)} < ${formatLsn(lastDurable)}`);
    lastDurable = d;
    child.proc.kill('SIGKILL');
    await child.exited;
    restarts++;
    // A checkpoint lets the compute remove every WAL segment its slot no longer protects.
    await runClientTool(port, 'psql', ['-X', '-q', '-c', 'CHECKPOINT']);
    const slot = await runClientTool(port, 'psql', ['-X', '-At', '-c', "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'strata'"]);
    freedUpTo = parseLsn(slot.stdout.trim());
  }
  await bench;
  assert.ok(lastDurable > tl.lastRecordLsn, `ingestion made durable progress across the kills (${formatLsn(lastDurable)})`);

  // Let a last child catch up, stop it cleanly, then check in this process.
  const target = endpointTarget(port);
  const finalLsn = await target.currentLsn();
  await target.close();
  child = startPageserverChild(psDir);
  await child.ready;
  const deadline = Date.now() + 120_000;
  while ((child.durable.get(key) ?? 0n) < finalLsn && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  child.proc.kill('SIGTERM');
  await child.exited;
  child = null;

  ps = await Pageserver.start({ workdir: psDir, pageCacheBytes: 16 << 20, blockCacheBytes: 8 << 20, waitLsnTimeoutMs: 60_000 });
  endpoint.usePageserver(ps);
  const tenant2 = ps.tenants.getTenant(tenant.tenantId);
  const main = tenant2.getTimeline(tl.timelineId);
  await main.waitLsn(finalLsn, 60_000);
  const expected = await dumpAll(port);
  const branch = await tenant2.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: finalLsn });
  const ep2 = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: branch.timelineId, dir: path.join(workdir, 'ep-branch'), settings: { fsync: false } });
  try {
    assertSameDump(await dumpAll(ep2.port), expected, `after ${restarts} SIGKILLs, a branch at ${formatLsn(finalLsn)}`);
    const check = await amcheckAll(ep2.port);
    assert.equal(check.exitCode, 0, check.stdout + check.stderr);
  } finally {
    await ep2.stop();
  }
  t.diagnostic(`${restarts} kills; last durable LSN before the final run ${formatLsn(lastDurable)}; compute ended at ${formatLsn(finalLsn)}`);
});
