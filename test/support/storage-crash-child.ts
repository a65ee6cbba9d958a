/**
 * Child process of the crash-safety test: ingests the deterministic workload of
 * test/support/storage-model.ts (crashRecord) into a pageserver directory as fast as it can,
 * with a tiny checkpoint_distance so layer flushes and metadata writes happen all the time, and
 * an image layer now and then, until it is killed.
 *
 * Protocol on stdout (one line each, flushed before the next step):
 *   ready <tenant> <timeline> <resume-lsn>     after opening (and, first time, creating) the store
 *   durable <lsn>                              disk_consistent_lsn reached <lsn> and is persisted
 *   branched <timeline> <lsn>                  a branch exists durably
 * Usage: storage-crash-child.ts <workdir> <seed> <max-records>
 */
import { TenantManager } from '../../src/pageserver/tenantmgr.ts';
import { checkpointIfNeeded } from '../../src/pageserver/timeline/flush.ts';
import { createImageLayer } from '../../src/pageserver/timeline/images.ts';
import { KEY_MAX, KEY_MIN } from '../../src/storage/key.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';
import {
  BRANCH_AT_RECORD, BRANCH_POINT_RECORD, CRASH_BASE_LSN, CRASH_BRANCH_ID, CRASH_TENANT_ID, CRASH_TIMELINE_ID, crashRecord, crashRecordIndexOfEnd,
} from './storage-model.ts';

async function main(): Promise<void> {
  const [workdir, seedText, maxText] = process.argv.slice(2);
  if (workdir === undefined || seedText === undefined || maxText === undefined) throw new Error('usage: storage-crash-child.ts <workdir> <seed> <max-records>');
  const seed = Number(seedText);
  const maxRecords = Number(maxText);
  const mgr = await TenantManager.open({ workdir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 5000, maxOpenLayerFiles: 8 });
  let tenant;
  try {
    tenant = mgr.getTenant(CRASH_TENANT_ID);
  } catch {
    tenant = await mgr.createTenant({ tenantId: CRASH_TENANT_ID, config: { checkpointDistanceBytes: 48 * 1024 } });
  }
  if (tenant.state !== 'Active') throw new Error(`tenant is ${tenant.state}: ${tenant.brokenReason ?? ''}`);
  let timeline;
  try {
    timeline = tenant.getTimeline(CRASH_TIMELINE_ID);
  } catch {
    timeline = await tenant.createTimeline({ timelineId: CRASH_TIMELINE_ID, pgVersion: 15, startLsn: CRASH_BASE_LSN });
  }
  if (timeline.state !== 'Active') throw new Error(`timeline is ${timeline.state}: ${timeline.brokenReason ?? ''}`);
  const out = (line: string): void => { process.stdout.write(line + '\n'); };
  out(`ready ${CRASH_TENANT_ID} ${CRASH_TIMELINE_ID} ${formatLsn(timeline.lastRecordLsn)}`);

  let printed = timeline.diskConsistent.lsn;
  const first = crashRecordIndexOfEnd(timeline.lastRecordLsn) + 1;
  for (let i = first; i < maxRecords; i++) {
    const rec = crashRecord(seed, i);
    for (const p of rec.puts) timeline.put(p.key, rec.endLsn, p.value);
    timeline.finishRecord(rec.endLsn, rec.startLsn);
    if (i === BRANCH_AT_RECORD) {
      let exists = true;
      try { tenant.getTimeline(CRASH_BRANCH_ID); } catch { exists = false; }
      if (!exists) {
        const lsn = crashRecord(seed, BRANCH_POINT_RECORD).endLsn;
        await tenant.branchTimeline({ timelineId: CRASH_BRANCH_ID, ancestorTimelineId: CRASH_TIMELINE_ID, ancestorStartLsn: lsn });
        out(`branched ${CRASH_BRANCH_ID} ${formatLsn(lsn)}`);
      }
    }
    if (i % 4 === 0) await checkpointIfNeeded(timeline);
    // Now and then an image layer of everything at disk_consistent_lsn, so kills also land in
    // image layer writes and restarts load image layers.
    if (i % 700 === 350 && timeline.diskConsistentLsn > CRASH_BASE_LSN) {
      const lsn = timeline.diskConsistentLsn;
      const exists = timeline.layers.historicLayers().some((l) => l.desc.kind === 'image' && l.desc.lsnRange.start === lsn);
      if (!exists) await createImageLayer(timeline, { start: KEY_MIN, end: KEY_MAX }, lsn);
    }
    const durable = timeline.diskConsistent.lsn;
    if (durable > printed) {
      out(`durable ${formatLsn(durable)}`);
      printed = durable;
    }
    if (i % 64 === 0) await new Promise((r) => setImmediate(r)); // let the flush loop run
  }
  await mgr.shutdown({ flush: true });
  out('done');
}

main().catch((err: unknown) => {
  process.stderr.write(`crash child failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
