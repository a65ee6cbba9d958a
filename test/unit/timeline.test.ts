/**
 * Timelines, branching and restart: deterministic scenarios for the edges the randomized model
 * test reaches only by chance — a version exactly at the branch point, deep branch chains,
 * branch and read waits, GC cutoff refusals, layers beyond disk_consistent_lsn after a crash,
 * corrupted layer files, records Strata cannot redo, checkpoint_distance / checkpoint_timeout.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, open, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { relBlockKey, SlruKind, slruBlockKey, type Key } from '../../src/storage/key.ts';
import type { Value } from '../../src/storage/value.ts';
import { TenantManager } from '../../src/pageserver/tenantmgr.ts';
import type { Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { checkpoint, checkpointIfNeeded } from '../../src/pageserver/timeline/flush.ts';
import { getPage } from '../../src/pageserver/timeline/read.ts';
import { createImageLayer } from '../../src/pageserver/timeline/images.ts';
import { parseLayerFileName } from '../../src/storage/layerfile/format.ts';
import { KEY_MAX, KEY_MIN } from '../../src/storage/key.ts';
import { encodeRecord } from '../../src/postgres/walwriter.ts';

process.env['STRATA_LOG'] ??= 'error';

const K1 = relBlockKey({ spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: 0 }, 0);
const K2 = relBlockKey({ spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: 0 }, 1);
const MX = slruBlockKey(SlruKind.multixactOffsets, 0, 0);

function page(fill: number): Buffer {
  return Buffer.alloc(8192, fill);
}

function image(fill: number): Value {
  return { kind: 'image', image: page(fill) };
}

async function withStore(fn: (ctx: { dir: string; open: () => Promise<TenantManager> }) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-tl-'));
  const opened: TenantManager[] = [];
  const openStore = async (): Promise<TenantManager> => {
    const mgr = await TenantManager.open({ workdir: dir, pageCacheBytes: 1 << 20, blockCacheBytes: 1 << 20, waitLsnTimeoutMs: 2000 });
    opened.push(mgr);
    return mgr;
  };
  try {
    await fn({ dir, open: openStore });
  } finally {
    for (const m of opened) await m.shutdown({ flush: false }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

function write(tl: Timeline, endLsn: bigint, puts: [Key, Value][]): void {
  for (const [k, v] of puts) tl.put(k, endLsn, v);
  tl.finishRecord(endLsn, tl.lastRecordLsn);
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

test('a fresh branch sees the version written exactly at its branch point, through three levels', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    write(main, 0x110n, [[K1, image(2)], [K2, image(9)]]);
    write(main, 0x118n, [[K1, image(3)]]);
    const b1 = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: 0x110n });
    assert.equal(b1.prevRecordLsn, null, 'prev is unknown below the ancestor tip');
    assert.deepEqual(await getPage(b1, K1, 0x110n), page(2));
    assert.deepEqual(await getPage(b1, K1, 0x108n), page(1));
    write(b1, 0x120n, [[K2, image(10)]]);
    const b2 = await tenant.branchTimeline({ ancestorTimelineId: b1.timelineId });
    assert.equal(b2.ancestorLsn, 0x120n);
    assert.equal(b2.prevRecordLsn, 0x110n, 'prev of a branch at the tip is the ancestor prev');
    const b3 = await tenant.branchTimeline({ ancestorTimelineId: b2.timelineId, ancestorStartLsn: 0x118n });
    // b3 at 0x118 falls through b2 (nothing), b1 (0x110 < 0x118: own data only from 0x120) to main at 0x110.
    assert.deepEqual(await getPage(b3, K1, 0x118n), page(2), 'main at 0x118 wrote 3, but b1 branched at 0x110');
    assert.deepEqual(await getPage(b2, K2, 0x120n), page(10));
    assert.deepEqual(await getPage(b3, K2, 0x118n), page(9));
    assert.deepEqual(await getPage(main, K1, 0x118n), page(3));
    // The same after a restart (all from layer files).
    await mgr.shutdown({ flush: true });
    const mgr2 = await openStore();
    const t2 = mgr2.getTenant(tenant.tenantId);
    assert.deepEqual(await getPage(t2.getTimeline(b3.timelineId), K1, 0x118n), page(2));
    assert.deepEqual(await getPage(t2.getTimeline(b3.timelineId), K2, 0x118n), page(9));
    assert.deepEqual(await getPage(t2.getTimeline(b2.timelineId), K2, 0x120n), page(10));
  });
});

test('branch and read wait for WAL not yet ingested, and time out cleanly', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    const branching = tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: 0x120n, timeoutMs: 5000 });
    const reading = getPage(main, K1, 0x118n, { timeoutMs: 5000 });
    setTimeout(() => { write(main, 0x118n, [[K1, image(2)]]); write(main, 0x120n, [[K2, image(3)]]); }, 30);
    const branch = await branching;
    assert.equal(branch.ancestorLsn, 0x120n);
    assert.deepEqual(await reading, page(2));
    assert.equal(await codeOf(getPage(main, K1, 0x200n, { timeoutMs: 30 })), 'wait_lsn_timeout');
    assert.equal(await codeOf(tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: 0x200n, timeoutMs: 30 })), 'wait_lsn_timeout');
    assert.equal(tenant.listTimelines().length, 2, 'a failed branch leaves nothing behind');
    // Unaligned start LSNs are aligned up to 8 bytes, as Neon does.
    const aligned = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: 0x111n });
    assert.equal(aligned.ancestorLsn, 0x118n);
  });
});

test('GC cutoff: reads and branches below it are refused, and it survives a restart', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    for (let i = 1; i <= 10; i++) write(main, 0x100n + 8n * BigInt(i), [[K1, image(i)]]);
    await main.advanceGcCutoff(0x128n);
    await main.advanceGcCutoff(0x110n); // never moves back
    assert.equal(main.latestGcCutoffLsn, 0x128n);
    assert.equal(await codeOf(getPage(main, K1, 0x120n)), 'lsn_below_gc_cutoff');
    assert.deepEqual(await getPage(main, K1, 0x128n), page(5));
    assert.equal(await codeOf(tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: 0x120n })), 'lsn_below_gc_cutoff');
    const b = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId, ancestorStartLsn: 0x130n });
    assert.equal(b.latestGcCutoffLsn, 0x128n, 'a branch inherits the cutoff');
    await mgr.shutdown({ flush: false });
    const mgr2 = await openStore();
    assert.equal(mgr2.getTenant(tenant.tenantId).getTimeline(main.timelineId).latestGcCutoffLsn, 0x128n);
  });
});

test('restart removes layer files beyond disk_consistent_lsn and temporary leftovers', async () => {
  await withStore(async ({ dir, open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    await checkpoint(main);
    const saved = path.join(dir, 'metadata.saved');
    await copyFile(path.join(main.dir, 'metadata'), saved);
    write(main, 0x110n, [[K1, image(2)]]);
    await checkpoint(main);
    assert.equal(main.diskConsistentLsn, 0x110n);
    await mgr.shutdown({ flush: false });
    // A crash after the second layer file was renamed into place but before its metadata update:
    await copyFile(saved, path.join(main.dir, 'metadata'));
    await writeFile(path.join(main.dir, 'leftover.___temp'), 'partial');
    await mkdir(path.join(path.dirname(main.dir), 'ffffffffffffffffffffffffffffffff.___temp'));
    const before = (await readdir(main.dir)).filter((n) => parseLayerFileName(n) !== null);
    assert.equal(before.length, 2);

    const mgr2 = await openStore();
    const tl = mgr2.getTenant(tenant.tenantId).getTimeline(main.timelineId);
    assert.equal(tl.diskConsistentLsn, 0x108n);
    assert.equal(tl.lastRecordLsn, 0x108n, 'ingestion resumes at disk_consistent_lsn');
    const after = await readdir(tl.dir);
    assert.deepEqual(after.filter((n) => parseLayerFileName(n) !== null).length, 1);
    assert.ok(!after.includes('leftover.___temp'));
    assert.ok(!(await readdir(path.dirname(tl.dir))).some((n) => n.endsWith('.___temp')));
    assert.deepEqual(await getPage(tl, K1, 0x108n), page(1));
    // Re-ingesting the lost WAL works and gives the same answer.
    write(tl, 0x110n, [[K1, image(2)]]);
    assert.deepEqual(await getPage(tl, K1, 0x110n), page(2));
  });
});

test('a corrupted layer file gives a clear error, never wrong data', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(0x41)], [K2, image(0x42)]]);
    await checkpoint(main);
    await mgr.shutdown({ flush: false });
    const file = (await readdir(main.dir)).find((n) => parseLayerFileName(n) !== null)!;
    const filePath = path.join(main.dir, file);
    // Flip one byte inside K1's page (values start after the 4 KiB summary).
    const fh = await open(filePath, 'r+');
    const buf = Buffer.alloc(1);
    await fh.read(buf, 0, 1, 4096 + 100);
    buf[0] = buf[0]! ^ 0xff;
    await fh.write(buf, 0, 1, 4096 + 100);
    await fh.close();

    const mgr2 = await openStore();
    const tl = mgr2.getTenant(tenant.tenantId).getTimeline(main.timelineId);
    const err = await getPage(tl, K1, 0x108n).then(() => null, (e: unknown) => e as Error & { code: string });
    assert.ok(err !== null, 'reading a corrupted value must fail');
    assert.equal(err.code, 'layer_corrupt');
    assert.match(err.message, /rel 1663\/5\/16384 main blk 0/);
    assert.match(err.message, /0\/108/);
    assert.ok(err.message.includes(file), 'the error names the file');
    assert.deepEqual(await getPage(tl, K2, 0x108n), page(0x42), 'undamaged values stay readable');
    await mgr2.shutdown({ flush: false });

    // A damaged summary: the timeline is Broken at load, with the reason.
    const fh2 = await open(filePath, 'r+');
    await fh2.write(Buffer.from([0x58]), 0, 1, 20);
    await fh2.close();
    const mgr3 = await openStore();
    const tenant3 = mgr3.getTenant(tenant.tenantId);
    const tl3 = tenant3.getTimeline(main.timelineId);
    assert.equal(tl3.state, 'Broken');
    assert.match(tl3.brokenReason ?? '', /layer|summary|checksum|corrupt/i);
    assert.equal(await codeOf(getPage(tl3, K1, 0x108n)), 'timeline_not_active');
    assert.ok((await stat(filePath)).size > 0, 'the damaged file is kept for inspection');
  });
});

test('a WAL record Strata cannot redo is an error naming the record, key and LSN', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    // A Gin record (rmgr 13, info 0x10; Gin has no TypeScript redo) touching K1's block, without a full-page image.
    const record = encodeRecord({
      xid: 700, info: 0x10, rmid: 13,
      blocks: [{ id: 0, forkNum: 0, rnode: { spcNode: 1663, dbNode: 5, relNode: 16384 }, blkno: 0, data: Buffer.alloc(20, 7) }],
      mainData: Buffer.alloc(3),
    }, 0x100n);
    write(main, 0x150n, [[K1, { kind: 'pgRecord', willInit: false, recordLsn: 0x108n, record: Buffer.from(record) }]]);
    const err = await getPage(main, K1, 0x150n).then(() => null, (e: unknown) => e as Error & { code: string });
    assert.ok(err !== null);
    assert.equal(err.code, 'redo_unsupported');
    assert.match(err.message, /Gin\/CREATE_PTREE/);
    assert.match(err.message, /0\/108/);
    assert.match(err.message, /rel 1663\/5\/16384 main blk 0/);
    assert.deepEqual(await getPage(main, K1, 0x148n), page(1), 'older versions stay readable');
  });
});

test('checkpoint_distance and checkpoint_timeout freeze the open layer; image layers serve reads', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant({ config: { checkpointDistanceBytes: 64 * 1024, checkpointTimeoutMs: 50 } });
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    // 8 × 8 KiB images pass 64 KiB of values: the open layer must freeze.
    let lsn = 0x100n;
    for (let i = 0; i < 9; i++) {
      lsn += 8n;
      write(main, lsn, [[i % 2 === 0 ? K1 : K2, image(i)]]);
      await checkpointIfNeeded(main);
    }
    await main.flushTask;
    assert.ok(main.diskConsistentLsn > 0x100n, 'a freeze by size happened and was flushed');
    const dclBefore = main.diskConsistentLsn;
    lsn += 8n;
    write(main, lsn, [[MX, image(0)]]);
    // No ingest call: the tenant's background tick must notice checkpoint_timeout on its own.
    const deadline = Date.now() + 5000;
    while (main.diskConsistentLsn !== lsn && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.ok(main.diskConsistentLsn > dclBefore && main.diskConsistentLsn === lsn, 'checkpoint_timeout froze and flushed the idle layer');
    lsn += 8n;
    write(main, lsn, [[MX, { kind: 'multixactOffset', multi: 5, offset: 77 }]]);
    await checkpoint(main);
    const img = await createImageLayer(main, { start: KEY_MIN, end: KEY_MAX }, lsn);
    assert.equal(img.desc.kind, 'image');
    const expected = page(0);
    expected.writeUInt32LE(77, 5 * 4);
    assert.deepEqual(await getPage(main, MX, lsn), expected);
    assert.deepEqual(await getPage(main, K1, lsn), page(8));
    assert.equal(await codeOf(createImageLayer(main, { start: KEY_MIN, end: KEY_MAX }, lsn + 8n)), 'invalid_input', 'images above disk_consistent_lsn are refused');
  });
});

test('writes must move forward and be aligned', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    assert.throws(() => main.put(K1, 0x108n, image(2)), /not after the last record/);
    assert.throws(() => main.finishRecord(0x10cn, 0x108n), /aligned/);
    assert.throws(() => main.finishRecord(0x100n, null), /after the last record/);
    assert.equal(await codeOf(tenant.createTimeline({ pgVersion: 15, timelineId: main.timelineId })), 'conflict');
    assert.equal(await codeOf(getPage(main, K2, 0x108n)), 'key_not_found');
  });
});

test('timeline deletion: refused with children, gone for good after a restart', async () => {
  await withStore(async ({ dir, open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    const child = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId });
    assert.equal(await codeOf(tenant.deleteTimeline(main.timelineId)), 'conflict');
    await tenant.deleteTimeline(child.timelineId);
    assert.equal(await codeOf(getPage(child, K1, 0x108n)), 'timeline_not_active');
    assert.throws(() => tenant.getTimeline(child.timelineId), { code: 'not_found' });
    await mkdir(path.join(dir, 'tenants', tenant.tenantId, 'timelines', 'not-a-timeline'));
    await mgr.shutdown({ flush: true });
    const mgr2 = await openStore();
    const t2 = mgr2.getTenant(tenant.tenantId);
    assert.equal(t2.state, 'Active', 'an unknown directory entry does not break the tenant');
    assert.deepEqual(t2.listTimelines().map((t) => t.timelineId), [main.timelineId]);
    assert.deepEqual(await getPage(t2.getTimeline(main.timelineId), K1, 0x108n), page(1));
  });
});

test('tenant config persists; a failed flush breaks the timeline instead of acknowledging', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant({ config: { checkpointDistanceBytes: 1 << 20, gcHorizonBytes: 0 } });
    assert.equal(tenant.config.checkpointDistanceBytes, 1 << 20);
    assert.equal(tenant.config.compactionThreshold, 10, 'unset fields keep the defaults');
    await tenant.setConfig({ checkpointDistanceBytes: 2 << 20 });
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    // The timeline directory disappears under us: the flush cannot write its file.
    await rm(main.dir, { recursive: true, force: true });
    const err = await checkpoint(main).then(() => null, (e: unknown) => e as Error);
    assert.ok(err !== null, 'checkpoint must fail');
    assert.equal(main.state, 'Broken');
    assert.equal(main.diskConsistentLsn, 0x100n, 'nothing beyond what is durable is claimed');
    assert.equal(await codeOf(getPage(main, K1, 0x108n)), 'timeline_not_active');
    await mgr.shutdown({ flush: false });
    const mgr2 = await openStore();
    const t2 = mgr2.getTenant(tenant.tenantId);
    assert.equal(t2.config.checkpointDistanceBytes, 2 << 20);
    assert.equal(t2.config.gcHorizonBytes, 1 << 26, 'setConfig replaced the overrides');
  });
});

test('a branch never reads through a broken ancestor (a missing layer could expose an older version)', async () => {
  await withStore(async ({ open: openStore }) => {
    const mgr = await openStore();
    const tenant = await mgr.createTenant();
    const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
    write(main, 0x108n, [[K1, image(1)]]);
    await checkpoint(main);
    write(main, 0x110n, [[K1, image(2)]]);
    await checkpoint(main);
    const child = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId });
    write(child, 0x118n, [[K2, image(3)]]);
    await mgr.shutdown({ flush: true });
    // Damage the summary of main's newest layer: on load it is refused and main is Broken.
    const newest = (await readdir(main.dir)).filter((n) => parseLayerFileName(n)?.lsnRange.start === 0x109n);
    assert.equal(newest.length, 1);
    const fh = await open(path.join(main.dir, newest[0]!), 'r+');
    await fh.write(Buffer.from([0x58]), 0, 1, 20);
    await fh.close();
    const mgr2 = await openStore();
    const t2 = mgr2.getTenant(tenant.tenantId);
    assert.equal(t2.getTimeline(main.timelineId).state, 'Broken');
    const c2 = t2.getTimeline(child.timelineId);
    assert.deepEqual(await getPage(c2, K2, 0x118n), page(3), 'the branch\u2019s own data is readable');
    const err = await getPage(c2, K1, 0x118n).then(() => null, (e: unknown) => e as Error & { code: string });
    assert.ok(err !== null, 'reading K1 would have returned the older image 1 from the layer that did load');
    assert.equal(err.code, 'timeline_not_active');
    assert.match(err.message, /ancestor .* is broken/);
  });
});

test('a missing layer file is noticed at restart (L0 files tile the LSN range, empty ones included)', async () => {
  for (const which of ['middle', 'newest', 'branch-first'] as const) {
    await withStore(async ({ open: openStore }) => {
      const mgr = await openStore();
      const tenant = await mgr.createTenant();
      const main = await tenant.createTimeline({ pgVersion: 15, startLsn: 0x100n });
      const branch = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId });
      write(main, 0x108n, [[K1, image(1)]]);
      await checkpoint(main);
      main.finishRecord(0x110n, 0x108n); // a record without values still gets its (empty) layer file
      await checkpoint(main);
      write(main, 0x118n, [[K1, image(3)]]);
      await checkpoint(main);
      write(branch, 0x108n, [[K2, image(4)]]);
      await checkpoint(branch);
      await mgr.shutdown({ flush: true });
      const layers = (await readdir(main.dir)).filter((n) => parseLayerFileName(n) !== null).sort();
      assert.equal(layers.length, 3, 'three flushes, three files');
      const victim = which === 'branch-first'
        ? path.join(branch.dir, (await readdir(branch.dir)).find((n) => parseLayerFileName(n) !== null)!)
        : path.join(main.dir, which === 'middle' ? layers[1]! : layers[2]!);
      await rm(victim);
      const mgr2 = await openStore();
      const t2 = mgr2.getTenant(tenant.tenantId);
      const broken = t2.getTimeline(which === 'branch-first' ? branch.timelineId : main.timelineId);
      assert.equal(broken.state, 'Broken', `${which}: the timeline must not serve reads`);
      assert.match(broken.brokenReason ?? '', /uncovered|missing|no layer file/);
      assert.equal(await codeOf(getPage(broken, K1, broken.lastRecordLsn)), 'timeline_not_active');
    });
  }
});
