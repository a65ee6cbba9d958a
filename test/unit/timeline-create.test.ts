/**
 * Timeline creation with a populate step (bootstrap, import): invisible until complete, removed
 * when populate fails, and removed at startup when a crash left the `uninit` mark behind.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TenantManager } from '../../src/pageserver/tenantmgr.ts';
import { UNINIT_MARK } from '../../src/pageserver/tenant.ts';
import { makeKey } from '../../src/storage/key.ts';

async function exists(p: string): Promise<boolean> {
  return access(p).then(() => true, () => false);
}

test('a timeline being populated is not listed, and a failed populate leaves nothing behind', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-tlc-'));
  const mgr = await TenantManager.open({ workdir: dir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 2000 });
  try {
    const tenant = await mgr.createTenant({});
    const timelinesDir = path.join(tenant.dir, 'timelines');
    let seenDuring: string[] = [];
    let markDuring = false;
    const id = 'aa'.repeat(16);
    await assert.rejects(tenant.createTimeline({
      timelineId: id, pgVersion: 15, startLsn: 0x100n,
      populate: async (tl) => {
        seenDuring = tenant.listTimelines().map((t) => t.timelineId);
        markDuring = await exists(path.join(tl.dir, UNINIT_MARK));
        tl.put(makeKey(0, 1663, 5, 16384, 0, 0), 0x108n, { kind: 'image', image: Buffer.alloc(8192, 1) });
        tl.finishRecord(0x108n, 0x100n);
        throw new Error('import failed half-way');
      },
    }), /import failed half-way/);
    assert.deepEqual(seenDuring, [], 'not listed while populating');
    assert.equal(markDuring, true, 'the directory carries the uninit mark while populating');
    assert.deepEqual(await readdir(timelinesDir), [], 'the directory is removed after a failed populate');
    assert.throws(() => tenant.getTimeline(id), /not found/);

    // The same id can be created afterwards; a successful populate drops the mark.
    const tl = await tenant.createTimeline({
      timelineId: id, pgVersion: 15, startLsn: 0x100n,
      populate: async (t) => {
        t.put(makeKey(0, 1663, 5, 16384, 0, 0), 0x108n, { kind: 'image', image: Buffer.alloc(8192, 2) });
        t.finishRecord(0x108n, 0x100n);
      },
    });
    assert.equal(await exists(path.join(tl.dir, UNINIT_MARK)), false);
    assert.equal(tl.diskConsistentLsn, 0x108n, 'populate results are flushed before the timeline is listed');
  } finally {
    await mgr.shutdown({ flush: false });
    await rm(dir, { recursive: true, force: true });
  }
});

test('a timeline directory left with the uninit mark by a crash is removed at startup', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-tlc-'));
  try {
    const mgr = await TenantManager.open({ workdir: dir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 2000 });
    const tenant = await mgr.createTenant({});
    const good = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    await mgr.shutdown({ flush: true });
    // What a crash during populate leaves: a complete-looking directory plus the mark.
    const crashedId = 'bb'.repeat(16);
    const crashed = path.join(tenant.dir, 'timelines', crashedId);
    await cp(good.dir, crashed, { recursive: true });
    await cp(path.join(good.dir, 'metadata'), path.join(crashed, UNINIT_MARK));
    const again = await TenantManager.open({ workdir: dir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 2000 });
    try {
      const t = again.getTenant(tenant.tenantId);
      assert.deepEqual(t.listTimelines().map((x) => x.timelineId), [good.timelineId]);
      assert.equal(await exists(crashed), false);
    } finally {
      await again.shutdown({ flush: false });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
