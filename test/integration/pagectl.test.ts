/**
 * `strata pagectl` (a real subprocess: bin/strata.js) on the files of a real pageserver.
 *
 * Setup: an in-process pageserver bootstraps a timeline with initdb (an image layer plus L0
 * deltas), a PostgreSQL 15 compute on it creates and fills a table, the timeline is flushed, a
 * branch gets writes of its own and is flushed too; a second tenant has a timeline written
 * directly with the value kinds a compute rarely produces under wal_consistency_checking (WAL
 * records, CLOG status, multixact members). The pageserver then shuts down with a flush.
 *
 * The CLI's answers are checked against what is on disk, read independently: the directory
 * listing and layer file names (parseLayerFileName), stat sizes, the layer reader's entries, the
 * Timeline objects' disk_consistent_lsn, the values the test itself wrote. Damaged copies
 * (a flipped byte, a truncated metadata file) must fail with one line naming the file and no
 * output on stdout.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { copyFile, mkdir, readFile, readdir, stat, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { bootstrapTimeline } from '../../src/pageserver/import/bootstrap.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import type { Tenant } from '../../src/pageserver/tenant.ts';
import { checkpoint } from '../../src/pageserver/timeline/flush.ts';
import type { Timeline } from '../../src/pageserver/timeline/timeline.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';
import { RM_HEAP_ID, recordTypeName, rmgrName } from '../../src/postgres/rmgr.ts';
import { SlruKind, keyToHex, relBlockKey, slruBlockKey, type Key } from '../../src/storage/key.ts';
import { ClogStatus } from '../../src/storage/value.ts';
import { BlockCache } from '../../src/storage/layerfile/blockcache.ts';
import { FdCache } from '../../src/storage/layerfile/fdcache.ts';
import { parseLayerFileName } from '../../src/storage/layerfile/format.ts';
import { LayerFileReader } from '../../src/storage/layerfile/reader.ts';
import { endpointTarget, psqlValue } from '../support/endpoint-target.ts';

const execFileP = promisify(execFile);
const STRATA = path.join(import.meta.dirname, '..', '..', 'bin', 'strata.js');

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function strata(args: string[]): Promise<CliResult> {
  try {
    const r = await execFileP(process.execPath, [STRATA, ...args], { maxBuffer: 256 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    if (typeof err.code !== 'number') throw e;
    return { code: err.code, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

async function strataOk(args: string[]): Promise<string> {
  const r = await strata(args);
  assert.equal(r.code, 0, `strata ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** A failure must be one line on stderr naming `mustName`, nothing on stdout, a non-zero exit. */
async function assertFails(args: string[], mustName: string, what: string): Promise<string> {
  const r = await strata(args);
  assert.notEqual(r.code, 0, `${what}: expected a non-zero exit, got 0 with stdout ${r.stdout.slice(0, 300)}`);
  assert.equal(r.stdout, '', `${what}: nothing may be written on stdout`);
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${r.stderr}`);
  assert.ok(lines[0]!.includes(mustName), `${what}: the message names ${mustName}: ${lines[0]}`);
  return lines[0]!;
}

function openLayer(file: string): LayerFileReader {
  return LayerFileReader.open(file, { blockCache: new BlockCache({ maxBytes: 1 << 20 }), fdCache: new FdCache({ maxOpenFiles: 4 }) });
}

/** Every (key hex, LSN text, value size) of a layer file, read with the storage engine's reader. */
function readerEntries(file: string): { key: string; lsn: string; sizeBytes: number }[] {
  const r = openLayer(file);
  try {
    return Array.from(r.indexEntries(), (e) => ({ key: keyToHex(e.key), lsn: formatLsn(e.lsn), sizeBytes: e.length }));
  } finally {
    r.close();
  }
}

/** Layer files of a timeline directory as the file system shows them (names that parse as layer names). */
async function layerFilesOnDisk(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => parseLayerFileName(n) !== null).sort();
}

function flipByte(buf: Buffer, at: number): void {
  buf[at] = buf[at]! ^ 0xff;
}

interface ListJson {
  kind: string;
  timelines: {
    dir: string; tenantId: string; timelineId: string; diskConsistentLsn: string;
    layers: { file: string; kind: string; lsnStart: string; lsnEnd: string; keyStart: string; keyEnd: string; sizeBytes: number; entryCount: number }[];
    layerCount: number; sizeBytes: number; entryCount: number;
  }[];
  total: { timelines: number; layerCount: number; sizeBytes: number; entryCount: number };
}

interface DumpLine {
  type: string;
  key?: string;
  keyDescription?: string;
  lsn?: string;
  sizeBytes?: number;
  value?: Record<string, unknown>;
  entryCount?: number;
  entries?: number;
  printed?: number;
  truncated?: boolean;
}

function parseNdjson(text: string): DumpLine[] {
  return text.split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as DumpLine);
}

describe('strata pagectl on a real pageserver work directory', { timeout: 300_000 }, () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'strata-pagectl-'));
  chmodSync(root, 0o755);
  const workdir = path.join(root, 'pageserver');
  const endpoints: Endpoint[] = [];
  let ps: Pageserver | null = null;
  let tenant: Tenant;
  let main: Timeline;
  let branch: Timeline;
  let synthetic: Timeline;
  let tableKey: Key;
  let tableKeyText = '';
  // What the test wrote into the synthetic timeline.
  const SYN_REL = { spcNode: 1663, dbNode: 5, relNode: 40000, forkNum: 0 };
  const SYN_XID = 4242;
  const SYN_CLOG_XIDS = [4242, 4243, 4250];
  const SYN_RECORD_START = 0x2000108n;
  const SYN_RECORD_END = 0x2000140n;

  const caughtUp = async (ep: Endpoint, tl: Timeline): Promise<void> => {
    const t = endpointTarget(ep.port);
    try {
      await tl.waitLsn(await t.currentLsn('insert'), 60_000);
    } finally {
      await t.close();
    }
  };

  before(async () => {
    ps = await Pageserver.start({
      workdir, pageCacheBytes: 16 << 20, blockCacheBytes: 8 << 20, waitLsnTimeoutMs: 60_000, listenPg: { host: '127.0.0.1', port: 0 },
    });
    tenant = await ps.tenants.createTenant({});
    main = await bootstrapTimeline(tenant);
    const ep = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: main.timelineId, dir: path.join(root, 'ep-main'), settings: { fsync: false, autovacuum: false } });
    endpoints.push(ep);
    await psqlValue(ep.port, "CREATE TABLE pagectl_t (id int, v text); INSERT INTO pagectl_t SELECT g, 'row ' || g FROM generate_series(1, 2000) g");
    const relNode = Number(await psqlValue(ep.port, "SELECT pg_relation_filenode('pagectl_t')"));
    const dbNode = Number(await psqlValue(ep.port, "SELECT oid FROM pg_database WHERE datname = current_database()"));
    tableKey = relBlockKey({ spcNode: 1663, dbNode, relNode, forkNum: 0 }, 0);
    tableKeyText = `rel 1663/${dbNode}/${relNode} main blk 0`;
    await caughtUp(ep, main);
    await checkpoint(main);

    branch = await tenant.branchTimeline({ ancestorTimelineId: main.timelineId });
    const epb = await Endpoint.start({ pageserver: ps, tenantId: tenant.tenantId, timelineId: branch.timelineId, dir: path.join(root, 'ep-branch'), settings: { fsync: false, autovacuum: false } });
    endpoints.push(epb);
    await psqlValue(epb.port, "INSERT INTO pagectl_t SELECT g, 'branch ' || g FROM generate_series(1, 300) g");
    await caughtUp(epb, branch);
    await checkpoint(branch);

    // A timeline holding values written by hand: a page image, then a WAL record and CLOG status.
    const other = await ps.tenants.createTenant({});
    synthetic = await other.createTimeline({
      pgVersion: 15, startLsn: 0x2000100n,
      populate: async (tl) => {
        tl.put(relBlockKey(SYN_REL, 0), 0x2000108n, { kind: 'image', image: Buffer.alloc(8192, 7) });
        tl.finishRecord(0x2000108n, 0x2000100n);
        // A heap insert record header (XLogRecord: tot_len, xid, prev, info, rmid, pad, crc) + a body.
        const record = Buffer.alloc(40);
        record.writeUInt32LE(record.length, 0);
        record.writeUInt32LE(SYN_XID, 4);
        record.writeBigUInt64LE(0x2000100n, 8);
        record[16] = 0x00;
        record[17] = RM_HEAP_ID;
        tl.put(relBlockKey(SYN_REL, 0), SYN_RECORD_END, { kind: 'pgRecord', willInit: false, recordLsn: SYN_RECORD_START, record });
        tl.put(slruBlockKey(SlruKind.clog, 0, 0), SYN_RECORD_END, { kind: 'clogSetStatus', status: ClogStatus.committed, xids: SYN_CLOG_XIDS, timestampUs: 800_000_000_000_000n });
        tl.finishRecord(SYN_RECORD_END, SYN_RECORD_START);
      },
    });

    for (const e of endpoints.splice(0)) await e.stop();
    await ps.shutdown({ flush: true });
    ps = null;
  });

  after(async () => {
    for (const e of endpoints) await e.kill().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(root, { recursive: true, force: true });
  });

  test('layer list finds every layer file on disk with the LSN ranges of its name, in all three directory kinds', async () => {
    const listing = JSON.parse(await strataOk(['pagectl', 'layer', 'list', '--json', workdir])) as ListJson;
    assert.equal(listing.kind, 'workdir');
    const expectedTimelines = [main, branch, synthetic].map((t) => `${t.tenantId}/${t.timelineId}`).sort();
    assert.deepEqual(listing.timelines.map((t) => `${t.tenantId}/${t.timelineId}`).sort(), expectedTimelines);
    let totalFiles = 0;
    let totalBytes = 0;
    for (const tl of listing.timelines) {
      const onDisk = await layerFilesOnDisk(tl.dir);
      assert.ok(onDisk.length > 0, `timeline ${tl.timelineId} has layer files`);
      assert.deepEqual(tl.layers.map((l) => l.file).sort(), onDisk, `timeline ${tl.timelineId}: the listed files are the files on disk`);
      for (const l of tl.layers) {
        const parsed = parseLayerFileName(l.file)!;
        assert.equal(l.kind, parsed.kind, l.file);
        assert.equal(l.lsnStart, formatLsn(parsed.lsnRange.start), l.file);
        assert.equal(l.lsnEnd, formatLsn(parsed.lsnRange.end), l.file);
        assert.equal(l.keyStart, keyToHex(parsed.keyRange.start), l.file);
        assert.equal(l.keyEnd, keyToHex(parsed.keyRange.end), l.file);
        const file = path.join(tl.dir, l.file);
        assert.equal(l.sizeBytes, (await stat(file)).size, `${l.file}: size`);
        assert.equal(l.entryCount, readerEntries(file).length, `${l.file}: entries`);
        totalBytes += l.sizeBytes;
      }
      totalFiles += onDisk.length;
    }
    assert.equal(listing.total.layerCount, totalFiles);
    assert.equal(listing.total.sizeBytes, totalBytes);
    const mainListed = listing.timelines.find((t) => t.timelineId === main.timelineId)!;
    assert.ok(mainListed.layers.some((l) => l.kind === 'image') && mainListed.layers.some((l) => l.kind === 'delta'), 'bootstrap wrote an image layer and deltas');

    // The human table: one row per file with its LSN range, and the total line.
    const text = await strataOk(['pagectl', 'layer', 'list', workdir]);
    for (const tl of listing.timelines) {
      for (const l of tl.layers) {
        const range = l.kind === 'image' ? l.lsnStart : `[${l.lsnStart}, ${l.lsnEnd})`;
        const row = text.split('\n').find((line) => line.includes(`${l.keyStart}-${l.keyEnd}`) && line.includes(range) && line.includes(` ${l.sizeBytes} `));
        assert.ok(row !== undefined, `a row for ${l.file} in:\n${text}`);
      }
    }
    assert.match(text, new RegExp(`^total: 3 timelines, ${totalFiles} layer files, ${totalBytes} bytes`, 'm'));

    // A tenant directory and a timeline directory list just their timelines.
    const tenantDir = path.join(workdir, 'tenants', tenant.tenantId);
    const byTenant = JSON.parse(await strataOk(['pagectl', 'layer', 'list', '--json', tenantDir])) as ListJson;
    assert.equal(byTenant.kind, 'tenant');
    assert.deepEqual(byTenant.timelines.map((t) => t.timelineId).sort(), [main.timelineId, branch.timelineId].sort());
    const byTimeline = JSON.parse(await strataOk(['pagectl', 'layer', 'list', '--json', branch.dir])) as ListJson;
    assert.equal(byTimeline.kind, 'timeline');
    assert.deepEqual(byTimeline.timelines.map((t) => t.timelineId), [branch.timelineId]);
    assert.deepEqual(byTimeline.timelines[0]!.layers.map((l) => l.file).sort(), await layerFilesOnDisk(branch.dir));
    assert.equal(byTimeline.timelines[0]!.diskConsistentLsn, formatLsn(branch.diskConsistentLsn));
  });

  test('layer dump prints every entry of a delta layer, including the table\'s first block', async () => {
    // The delta holding the table's block 0, found with the storage engine's reader.
    let file: string | null = null;
    for (const name of await layerFilesOnDisk(main.dir)) {
      if (parseLayerFileName(name)!.kind !== 'delta') continue;
      if (readerEntries(path.join(main.dir, name)).some((e) => e.key === keyToHex(tableKey))) file = path.join(main.dir, name);
    }
    assert.ok(file !== null, 'some delta holds the table\'s block 0');
    const expected = readerEntries(file);

    const lines = parseNdjson(await strataOk(['pagectl', 'layer', 'dump', '--json', file]));
    const head = lines[0]!;
    assert.equal(head.type, 'layer');
    assert.equal(head.entryCount, expected.length);
    const entries = lines.filter((l) => l.type === 'entry');
    assert.deepEqual(entries.map((e) => ({ key: e.key, lsn: e.lsn, sizeBytes: e.sizeBytes })), expected, 'every entry, in order, with its size');
    const end = lines[lines.length - 1]!;
    assert.deepEqual({ type: end.type, entries: end.entries, printed: end.printed, truncated: end.truncated }, { type: 'end', entries: expected.length, printed: expected.length, truncated: false });
    const tableEntries = entries.filter((e) => e.key === keyToHex(tableKey));
    assert.ok(tableEntries.length > 0);
    for (const e of tableEntries) assert.equal(e.keyDescription, tableKeyText);

    // Text: one line per entry, the known key described; --limit prints a prefix.
    const text = (await strataOk(['pagectl', 'layer', 'dump', file])).split('\n');
    const entryLines = text.filter((l) => /^[0-9A-F]{36} /.test(l));
    assert.equal(entryLines.length, expected.length);
    assert.ok(entryLines.some((l) => l.startsWith(keyToHex(tableKey)) && l.endsWith(`|  ${tableKeyText}`)), `a line for ${tableKeyText}`);
    assert.ok(text.some((l) => l.startsWith('checksums') && l.includes(`${expected.length} values`)), 'the summary says how many values were verified');
    const limited = parseNdjson(await strataOk(['pagectl', 'layer', 'dump', '--json', '--limit', '3', file]));
    assert.deepEqual(limited.filter((l) => l.type === 'entry').map((e) => e.key), expected.slice(0, 3).map((e) => e.key));
    assert.equal(limited[limited.length - 1]!.truncated, expected.length > 3);
  });

  test('layer dump names WAL records by resource manager and type, and shows CLOG status', async () => {
    const names = await layerFilesOnDisk(synthetic.dir);
    const deltas = names.filter((n) => parseLayerFileName(n)!.kind === 'delta');
    assert.equal(deltas.length, 1, `one delta in the synthetic timeline: ${names.join(', ')}`);
    const lines = parseNdjson(await strataOk(['pagectl', 'layer', 'dump', '--json', path.join(synthetic.dir, deltas[0]!)]));
    const entries = lines.filter((l) => l.type === 'entry');
    assert.equal(entries.length, 3);
    const rec = entries.find((e) => e.value?.['kind'] === 'pgRecord');
    assert.ok(rec !== undefined);
    assert.equal(rec.key, keyToHex(relBlockKey(SYN_REL, 0)));
    assert.equal(rec.lsn, formatLsn(SYN_RECORD_END));
    assert.equal(rec.value!['rmgr'], rmgrName(RM_HEAP_ID));
    assert.equal(rec.value!['type'], recordTypeName(RM_HEAP_ID, 0x00));
    assert.equal(rec.value!['xid'], SYN_XID);
    assert.equal(rec.value!['recordLsn'], formatLsn(SYN_RECORD_START));
    const clog = entries.find((e) => e.value?.['kind'] === 'clogSetStatus');
    assert.ok(clog !== undefined);
    assert.equal(clog.key, keyToHex(slruBlockKey(SlruKind.clog, 0, 0)));
    assert.equal(clog.value!['status'], 'committed');
    assert.deepEqual(clog.value!['xids'], SYN_CLOG_XIDS);
    const image = entries.find((e) => e.value?.['kind'] === 'image');
    assert.equal(image?.value?.['imageBytes'], 8192);

    const text = await strataOk(['pagectl', 'layer', 'dump', path.join(synthetic.dir, deltas[0]!)]);
    assert.ok(text.includes(`pgRecord ${rmgrName(RM_HEAP_ID)}/${recordTypeName(RM_HEAP_ID, 0x00)} xid ${SYN_XID}`), text);
  });

  test('metadata prints the timeline\'s disk_consistent_lsn and ancestry', async () => {
    const md = JSON.parse(await strataOk(['pagectl', 'metadata', '--json', path.join(branch.dir, 'metadata')])) as Record<string, unknown>;
    assert.equal(md['diskConsistentLsn'], formatLsn(branch.diskConsistentLsn));
    assert.equal(md['ancestorTimelineId'], main.timelineId);
    assert.equal(md['ancestorLsn'], formatLsn(branch.ancestorLsn));
    assert.equal(md['pgVersion'], 15);
    const text = await strataOk(['pagectl', 'metadata', path.join(main.dir, 'metadata')]);
    assert.match(text, new RegExp(`^disk_consistent_lsn +${formatLsn(main.diskConsistentLsn).replace('/', '\\/')}$`, 'm'));
    assert.match(text, /^ancestor_timeline +none$/m);
  });

  test('a damaged layer file fails with one line naming the file; nothing is printed', async () => {
    const scratch = path.join(root, 'damaged');
    await mkdir(scratch, { recursive: true });
    const names = await layerFilesOnDisk(main.dir);
    // The largest delta: flip one byte of its first value (caught by dump's value CRC check).
    let biggest = '';
    let biggestSize = -1;
    for (const n of names) {
      const s = (await stat(path.join(main.dir, n))).size;
      if (parseLayerFileName(n)!.kind === 'delta' && s > biggestSize) { biggest = n; biggestSize = s; }
    }
    const valueDamaged = path.join(scratch, biggest);
    const bytes = await readFile(path.join(main.dir, biggest));
    const r = openLayer(path.join(main.dir, biggest));
    const valuesOffset = r.summary.valuesOffset;
    r.close();
    flipByte(bytes, valuesOffset + 1);
    await writeFile(valueDamaged, bytes);
    const msg = await assertFails(['pagectl', 'layer', 'dump', valueDamaged], valueDamaged, 'dump of a layer with a damaged value');
    assert.match(msg, /CRC/);
    await assertFails(['pagectl', 'layer', 'dump', '--json', valueDamaged], valueDamaged, 'dump --json of a layer with a damaged value');

    // A timeline directory copy with a damaged summary: list fails (it checks every summary).
    const tlCopy = path.join(scratch, 'timeline');
    await mkdir(tlCopy);
    for (const n of [...names, 'metadata']) await copyFile(path.join(main.dir, n), path.join(tlCopy, n));
    await strataOk(['pagectl', 'layer', 'list', tlCopy]);
    const victim = path.join(tlCopy, names[0]!);
    const v = await readFile(victim);
    flipByte(v, 100);
    await writeFile(victim, v);
    await assertFails(['pagectl', 'layer', 'list', tlCopy], victim, 'list with a damaged layer summary');
    await assertFails(['pagectl', 'layer', 'list', '--json', tlCopy], victim, 'list --json with a damaged layer summary');
    await assertFails(['pagectl', 'layer', 'dump', victim], victim, 'dump of a layer with a damaged summary');

    // A truncated layer file.
    const cut = path.join(scratch, 'cut-' + biggest);
    await copyFile(path.join(main.dir, biggest), cut);
    await truncate(cut, biggestSize - 1);
    await assertFails(['pagectl', 'layer', 'dump', cut], cut, 'dump of a truncated layer');
  });

  test('a truncated or damaged metadata file, a missing file and a foreign directory fail cleanly', async () => {
    const scratch = path.join(root, 'badmeta');
    await mkdir(scratch, { recursive: true });
    const good = await readFile(path.join(main.dir, 'metadata'));
    const truncated = path.join(scratch, 'metadata');
    await writeFile(truncated, good.subarray(0, 300));
    await assertFails(['pagectl', 'metadata', truncated], truncated, 'truncated metadata');
    await assertFails(['pagectl', 'metadata', '--json', truncated], truncated, 'truncated metadata, --json');
    await assertFails(['pagectl', 'layer', 'list', scratch], truncated, 'list of a timeline directory with truncated metadata');
    const flipped = path.join(scratch, 'metadata-flipped');
    const f = Buffer.from(good);
    flipByte(f, 9);
    await writeFile(flipped, f);
    await assertFails(['pagectl', 'metadata', flipped], flipped, 'metadata with a flipped byte');

    const missing = path.join(scratch, 'no-such-file');
    await assertFails(['pagectl', 'metadata', missing], missing, 'missing metadata file');
    await assertFails(['pagectl', 'layer', 'dump', missing], missing, 'missing layer file');
    const foreign = root; // holds pageserver/, damaged/, badmeta/ and the endpoints' directories
    await assertFails(['pagectl', 'layer', 'list', foreign], foreign, 'a directory that is not a pageserver directory');
    await assertFails(['pagectl', 'layer', 'dump', path.join(main.dir, 'metadata')], path.join(main.dir, 'metadata'), 'dump of a file that is not a layer');
  });
});
