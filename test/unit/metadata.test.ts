import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InvalidInputError, StrataError } from '../../src/util/errors.ts';
import { crc32c } from '../../src/postgres/crc32c.ts';
import { generateId } from '../../src/util/ids.ts';
import { MetadataCorruptionError, decodeMetadata, encodeMetadata, loadMetadata, saveMetadata } from '../../src/pageserver/metadata.ts';
import type { MetadataProblem, TimelineMetadata } from '../../src/pageserver/metadata.ts';
import { rng } from './test-compressors.ts';

const FILE = '/tenants/t/timelines/tl/metadata';

const FULL: TimelineMetadata = {
  diskConsistentLsn: 0x1_2345_6788n,
  prevRecordLsn: 0x1_2345_6700n,
  ancestorTimelineId: '00112233445566778899aabbccddeeff',
  ancestorLsn: 0x0_0100_0028n,
  latestGcCutoffLsn: 0x0_0090_0000n,
  initdbLsn: 0x0_0169_6a58n,
  pgVersion: 15,
};

const BARE: TimelineMetadata = {
  diskConsistentLsn: 0n,
  prevRecordLsn: null,
  ancestorTimelineId: null,
  ancestorLsn: 0n,
  latestGcCutoffLsn: 0x169_6a58n,
  initdbLsn: 0x169_6a58n,
  pgVersion: 15,
};

/** The layout from docs/formats-metadata.md, built by hand (little-endian, CRC over bytes 4..512). */
function handEncoded(md: TimelineMetadata): Uint8Array {
  const b = new Uint8Array(512);
  const dv = new DataView(b.buffer);
  dv.setUint16(4, 70, true);
  dv.setUint16(6, 1, true);
  dv.setBigUint64(8, md.diskConsistentLsn, true);
  if (md.prevRecordLsn !== null) {
    b[16] = 1;
    dv.setBigUint64(17, md.prevRecordLsn, true);
  }
  if (md.ancestorTimelineId !== null) {
    b[25] = 1;
    b.set(Buffer.from(md.ancestorTimelineId, 'hex'), 26);
  }
  dv.setBigUint64(42, md.ancestorLsn, true);
  dv.setBigUint64(50, md.latestGcCutoffLsn, true);
  dv.setBigUint64(58, md.initdbLsn, true);
  dv.setUint32(66, md.pgVersion, true);
  dv.setUint32(0, crc32c(b.subarray(4)), true);
  return b;
}

/** Copy of `bytes` with `edit` applied and the CRC recomputed, to reach the checks behind the CRC. */
function patched(bytes: Uint8Array, edit: (b: Uint8Array, dv: DataView) => void): Uint8Array {
  const b = Uint8Array.from(bytes);
  const dv = new DataView(b.buffer);
  edit(b, dv);
  dv.setUint32(0, crc32c(b.subarray(4)), true);
  return b;
}

function corruption(problem: MetadataProblem, file = FILE) {
  return (e: unknown): boolean => e instanceof MetadataCorruptionError && e.problem === problem && e.code === 'metadata_corruption' && e.message.includes(file);
}

function randomU64(rand: () => number): bigint {
  const hi = BigInt(Math.floor(rand() * 2 ** 32));
  const lo = BigInt(Math.floor(rand() * 2 ** 32));
  // Mix in the edge values now and then.
  const r = rand();
  if (r < 0.05) return 0n;
  if (r < 0.1) return 0xffff_ffff_ffff_ffffn;
  return (hi << 32n) | lo;
}

function randomMetadata(rand: () => number): TimelineMetadata {
  const hasAncestor = rand() < 0.5;
  return {
    diskConsistentLsn: randomU64(rand) & ~7n,
    prevRecordLsn: rand() < 0.5 ? null : randomU64(rand),
    ancestorTimelineId: hasAncestor ? Buffer.from(Array.from({ length: 16 }, () => Math.floor(rand() * 256))).toString('hex') : null,
    ancestorLsn: hasAncestor ? randomU64(rand) : 0n,
    latestGcCutoffLsn: randomU64(rand),
    initdbLsn: randomU64(rand),
    pgVersion: rand() < 0.5 ? 15 : Math.floor(rand() * 2 ** 32),
  };
}

test('encoding matches the documented byte layout', () => {
  for (const md of [FULL, BARE]) {
    const bytes = encodeMetadata(md);
    assert.equal(bytes.length, 512);
    assert.deepEqual(bytes, handEncoded(md));
  }
});

test('random metadata round-trips, and re-encoding reproduces the bytes', () => {
  const rand = rng(42);
  for (let i = 0; i < 1000; i++) {
    const md = randomMetadata(rand);
    const bytes = encodeMetadata(md);
    const back = decodeMetadata(bytes, { path: FILE });
    assert.deepEqual(back, md);
    assert.deepEqual(encodeMetadata(back), bytes);
  }
});

test('every single-byte change anywhere in the 512 bytes is detected', () => {
  for (const md of [FULL, BARE]) {
    const good = encodeMetadata(md);
    let checked = 0;
    for (let i = 0; i < 512; i++) {
      for (const x of [0x01, 0x80, 0xff, 0x5a]) {
        const bad = Uint8Array.from(good);
        bad[i] = bad[i]! ^ x;
        assert.throws(() => decodeMetadata(bad, { path: FILE }), corruption('checksum'), `byte ${i} ^ 0x${x.toString(16)}`);
        checked++;
      }
    }
    assert.equal(checked, 512 * 4);
  }
});

test('truncated and oversized images are rejected', () => {
  const good = encodeMetadata(FULL);
  for (const n of [0, 1, 8, 70, 511]) assert.throws(() => decodeMetadata(good.subarray(0, n), { path: FILE }), corruption('size'), String(n));
  for (const n of [513, 1024, 8192]) {
    const big = new Uint8Array(n);
    big.set(good);
    assert.throws(() => decodeMetadata(big, { path: FILE }), corruption('size'), String(n));
  }
});

test('structural problems behind a valid CRC are each named', () => {
  const full = encodeMetadata(FULL);
  const bare = encodeMetadata(BARE);
  const cases: Array<[string, Uint8Array, MetadataProblem]> = [
    ['unknown version', patched(full, (_b, dv) => dv.setUint16(6, 2, true)), 'version'],
    ['version 0', patched(full, (_b, dv) => dv.setUint16(6, 0, true)), 'version'],
    ['wrong size field', patched(full, (_b, dv) => dv.setUint16(4, 71, true)), 'header_size'],
    ['padding', patched(full, (b) => (b[511] = 1)), 'padding'],
    ['padding start', patched(full, (b) => (b[70] = 0x80)), 'padding'],
    ['prev flag 2', patched(full, (b) => (b[16] = 2)), 'flag'],
    ['ancestor flag 255', patched(full, (b) => (b[25] = 255)), 'flag'],
    ['absent prev with bytes', patched(bare, (b) => (b[20] = 1)), 'absent_value_not_zero'],
    ['absent ancestor with bytes', patched(bare, (b) => (b[41] = 1)), 'absent_value_not_zero'],
    ['unaligned disk_consistent_lsn', patched(full, (_b, dv) => dv.setBigUint64(8, 0x1001n, true)), 'alignment'],
    ['ancestor_lsn without ancestor', patched(bare, (_b, dv) => dv.setBigUint64(42, 0x100n, true)), 'ancestor_lsn'],
  ];
  for (const [name, bytes, problem] of cases) assert.throws(() => decodeMetadata(bytes, { path: FILE }), corruption(problem), name);
});

test('encoding refuses values the format cannot hold', () => {
  const bad: Array<[string, TimelineMetadata]> = [
    ['unaligned', { ...FULL, diskConsistentLsn: 0x1001n }],
    ['negative', { ...FULL, initdbLsn: -1n }],
    ['too big', { ...FULL, latestGcCutoffLsn: 1n << 64n }],
    ['prev too big', { ...FULL, prevRecordLsn: 1n << 64n }],
    ['upper-case id', { ...FULL, ancestorTimelineId: '00112233445566778899AABBCCDDEEFF' }],
    ['short id', { ...FULL, ancestorTimelineId: '0011' }],
    ['ancestor lsn without ancestor', { ...BARE, ancestorLsn: 8n }],
    ['pg_version too big', { ...FULL, pgVersion: 2 ** 32 }],
    ['pg_version fractional', { ...FULL, pgVersion: 15.5 }],
  ];
  for (const [name, md] of bad) assert.throws(() => encodeMetadata(md), InvalidInputError, name);
});

// ------------------------------------------------------------------------------- files

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-metadata-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('save/load round trip; the save is atomic and leaves no temporary file', async () => {
  await withTempDir(async (dir) => {
    await saveMetadata(dir, FULL);
    assert.deepEqual(await readdir(dir), ['metadata']);
    assert.equal((await stat(path.join(dir, 'metadata'))).size, 512);
    assert.deepEqual(await loadMetadata(dir), FULL);
    assert.deepEqual(new Uint8Array(await readFile(path.join(dir, 'metadata'))), handEncoded(FULL));

    const next = { ...FULL, diskConsistentLsn: FULL.diskConsistentLsn + 0x1000n, ancestorTimelineId: generateId() };
    await saveMetadata(dir, next);
    assert.deepEqual(await readdir(dir), ['metadata']);
    assert.deepEqual(await loadMetadata(dir), next);

    // A value that cannot be encoded fails before anything is written: the old file survives.
    await assert.rejects(saveMetadata(dir, { ...FULL, diskConsistentLsn: 3n }), InvalidInputError);
    assert.deepEqual(await readdir(dir), ['metadata']);
    assert.deepEqual(await loadMetadata(dir), next);
  });
});

test('loading a damaged, truncated, oversized or missing file names the file', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'metadata');
    const good = encodeMetadata(FULL);
    await writeFile(file, good.subarray(0, 300));
    await assert.rejects(loadMetadata(dir), corruption('size', file));
    const big = new Uint8Array(4096);
    big.set(good);
    await writeFile(file, big);
    await assert.rejects(loadMetadata(dir), corruption('size', file));
    const flipped = Uint8Array.from(good);
    flipped[100] = 1;
    await writeFile(file, flipped);
    await assert.rejects(loadMetadata(dir), corruption('checksum', file));
    await rm(file);
    await assert.rejects(loadMetadata(dir), (e: unknown) => e instanceof StrataError && e.code === 'not_found' && e.message.includes(file));
  });
});
