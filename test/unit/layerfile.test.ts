/**
 * Layer files (src/storage/layerfile): writer → reader round trips checked against an in-memory
 * reference, file names, the block cache, and corruption handling.
 *
 * The reference is a plain sorted array of what the test put; expected lookup results are computed
 * from it by linear scans here (filter by key and LSN window, newest first, stop at the first
 * value that needs nothing older), never by calling the code under test. Random inputs come from a
 * seeded PRNG; set LAYERFILE_SEED to replay a failure (the seed is printed in every failure).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readdirSync, readFileSync, writeFileSync, copyFileSync, truncateSync, appendFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { rng } from './test-compressors.ts';
import { formatLsn, type Lsn } from '../../src/postgres/lsn.ts';
import { makeKey, keyToHex, describeKey, KEY_MIN, KEY_MAX, type Key, type KeyRange } from '../../src/storage/key.ts';
import { encodeValue, type Value } from '../../src/storage/value.ts';
import { newReconstructState, type LsnRange, type ReconstructState } from '../../src/storage/layer.ts';
import { AssertionFailedError, InvalidInputError } from '../../src/util/errors.ts';
import { TEMP_SUFFIX } from '../../src/util/durable.ts';
import { LayerFileWriter } from '../../src/storage/layerfile/writer.ts';
import { LayerFileReader } from '../../src/storage/layerfile/reader.ts';
import { BlockCache } from '../../src/storage/layerfile/blockcache.ts';
import { FdCache } from '../../src/storage/layerfile/fdcache.ts';
import { LayerCorruptionError, layerFileName, parseLayerFileName, ENTRIES_PER_INDEX_BLOCK } from '../../src/storage/layerfile/format.ts';

/** Small on purpose: readers lose their descriptor to each other and must reopen transparently. */
const TEST_FD_CACHE = new FdCache({ maxOpenFiles: 2 });

const BASE_SEED = process.env.LAYERFILE_SEED !== undefined ? Number(process.env.LAYERFILE_SEED) : (Date.now() % 2 ** 31);
const TENANT = '0123456789abcdef0123456789abcdef';
const TIMELINE = 'fedcba9876543210fedcba9876543210';

const root = mkdtempSync(path.join(tmpdir(), 'strata-layerfile-'));
after(() => rmSync(root, { recursive: true, force: true }));
let dirCounter = 0;
function newDir(): string {
  return mkdtempSync(path.join(root, `d${dirCounter++}-`));
}

/** Runs `body` with a seed; any failure message names the seed. */
async function withSeed(offset: number, body: (rand: () => number, seed: number) => Promise<void> | void): Promise<void> {
  const seed = (BASE_SEED + offset) % 2 ** 31;
  try {
    await body(rng(seed), seed);
  } catch (err) {
    if (err instanceof Error) err.message = `[LAYERFILE_SEED=${BASE_SEED}, sub-seed ${seed}] ${err.message}`;
    throw err;
  }
}

// ------------------------------------------------------------------------------------------------
// Reference model.

interface RefEntry {
  key: Key;
  lsn: Lsn;
  encoded: Buffer;
  willInit: boolean;
}

function randInt(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

function randBuf(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

function randomValue(rand: () => number, opts: { willInitShare: number; bigImages?: boolean }): { value: Value; willInit: boolean } {
  const r = rand();
  if (r < opts.willInitShare / 2) {
    const sizes = [1, 17, 8192, randInt(rand, 0, 3000)];
    const size = opts.bigImages === true ? 8192 : sizes[randInt(rand, 0, sizes.length - 1)]!;
    return { value: { kind: 'image', image: randBuf(rand, size) }, willInit: true };
  }
  if (r < opts.willInitShare) {
    return { value: { kind: 'pgRecord', willInit: true, recordLsn: BigInt(randInt(rand, 0, 1e9)), record: randBuf(rand, randInt(rand, 24, 400)) }, willInit: true };
  }
  const k = randInt(rand, 0, 3);
  switch (k) {
    case 0: return { value: { kind: 'pgRecord', willInit: false, recordLsn: BigInt(randInt(rand, 0, 1e9)), record: randBuf(rand, randInt(rand, 24, 600)) }, willInit: false };
    case 1: return { value: { kind: 'clearVmBits', newHeapBlock: randInt(rand, 0, 1e6), oldHeapBlock: 0xffff_ffff, flags: 1 }, willInit: false };
    case 2: return { value: { kind: 'clogSetStatus', status: 1, xids: [randInt(rand, 3, 1e6), randInt(rand, 3, 1e6)], timestampUs: rand() < 0.5 ? null : 12345n }, willInit: false };
    default: return { value: { kind: 'multixactOffset', multi: randInt(rand, 1, 1e6), offset: randInt(rand, 0, 1e6) }, willInit: false };
  }
}

function randomKey(rand: () => number, relCount: number, blockCount: number): Key {
  return makeKey(0, 1663, 5, 16384 + randInt(rand, 0, relCount - 1), randInt(rand, 0, 2), randInt(rand, 0, blockCount - 1));
}

/** Sorted, distinct keys. */
function randomKeys(rand: () => number, n: number, relCount: number, blockCount: number): Key[] {
  const set = new Set<Key>();
  for (let guard = 0; set.size < n && guard < n * 100; guard++) set.add(randomKey(rand, relCount, blockCount));
  return [...set].sort();
}

function compareRef(a: RefEntry, b: RefEntry): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : a.lsn < b.lsn ? -1 : a.lsn > b.lsn ? 1 : 0;
}

/** Expected reconstruct data: newest-first (lsn, encoded) list and whether it is complete. */
function expectedReconstruct(ref: RefEntry[], key: Key, floor: Lsn, end: Lsn): { items: { lsn: Lsn; encoded: Buffer }[]; complete: boolean } {
  const mine = ref.filter((e) => e.key === key && e.lsn >= floor && e.lsn < end).sort((a, b) => (a.lsn > b.lsn ? -1 : 1));
  const items: { lsn: Lsn; encoded: Buffer }[] = [];
  for (const e of mine) {
    items.push({ lsn: e.lsn, encoded: e.encoded });
    if (e.willInit) return { items, complete: true };
  }
  return { items, complete: false };
}

function stateItems(state: ReconstructState): { lsn: Lsn; encoded: Buffer }[] {
  const items = state.records.map((r) => ({ lsn: r.lsn, encoded: encodeValue(r.value) }));
  if (state.image !== null) items.push({ lsn: state.image.lsn, encoded: encodeValue({ kind: 'image', image: state.image.image }) });
  return items;
}

function expectedNewest(ref: RefEntry[], key: Key, lsn: Lsn): RefEntry | null {
  let best: RefEntry | null = null;
  for (const e of ref) if (e.key === key && e.lsn <= lsn && (best === null || e.lsn > best.lsn)) best = e;
  return best;
}

function checkLookup(reader: LayerFileReader, ref: RefEntry[], key: Key, floor: Lsn, end: Lsn, what: string): void {
  const state = newReconstructState();
  const complete = reader.getValueReconstructData(key, floor, end, state);
  const exp = expectedReconstruct(ref, key, floor, end);
  const got = stateItems(state);
  const label = `${what}: ${describeKey(key)} [${formatLsn(floor)}, ${formatLsn(end)})`;
  assert.equal(complete, exp.complete, `${label}: complete`);
  assert.equal(got.length, exp.items.length, `${label}: number of versions`);
  for (let i = 0; i < got.length; i++) {
    assert.equal(got[i]!.lsn, exp.items[i]!.lsn, `${label}: version ${i} LSN`);
    assert.ok(got[i]!.encoded.equals(exp.items[i]!.encoded), `${label}: version ${i} bytes`);
  }
}

async function putAll(w: LayerFileWriter, ref: RefEntry[]): Promise<void> {
  for (const e of ref) {
    const p = w.put(e.key, e.lsn, e.encoded);
    if (p !== undefined) await p;
  }
}

interface DeltaSpec {
  keys: number;
  maxVersions: number;
  longChainKeys?: number;
  longChainLength?: number;
  willInitShare: number;
}

const DELTA_LSNS: LsnRange = { start: 0x1_0000_0000n, end: 0x1_0100_0000n };
const ALL_KEYS: KeyRange = { start: makeKey(0, 0, 0, 0, 0, 0), end: makeKey(1, 0, 0, 0, 0, 0) };

function makeDeltaRef(rand: () => number, spec: DeltaSpec): RefEntry[] {
  const keys = randomKeys(rand, spec.keys, 8, 4000);
  const long = new Set<Key>();
  for (let i = 0; i < (spec.longChainKeys ?? 0); i++) long.add(keys[randInt(rand, 0, keys.length - 1)]!);
  const ref: RefEntry[] = [];
  const span = Number(DELTA_LSNS.end - DELTA_LSNS.start);
  for (const key of keys) {
    const n = long.has(key) ? (spec.longChainLength ?? 600) : randInt(rand, 1, spec.maxVersions);
    const lsns = new Set<number>();
    for (let guard = 0; lsns.size < n && guard < n * 100; guard++) lsns.add(randInt(rand, 0, span - 1));
    for (const off of [...lsns].sort((a, b) => a - b)) {
      // Long chains: no willInit at all, so a lookup walks the whole chain across index blocks.
      const { value, willInit } = long.has(key) ? randomValue(rand, { willInitShare: 0 }) : randomValue(rand, { willInitShare: spec.willInitShare });
      ref.push({ key, lsn: DELTA_LSNS.start + BigInt(off), encoded: encodeValue(value), willInit });
    }
  }
  ref.sort(compareRef);
  return ref;
}

function randomQueries(rand: () => number, ref: RefEntry[], lsnRange: LsnRange, count: number): { key: Key; floor: Lsn; end: Lsn }[] {
  const qs: { key: Key; floor: Lsn; end: Lsn }[] = [];
  const span = Number(lsnRange.end - lsnRange.start);
  for (let i = 0; i < count; i++) {
    const r = rand();
    const e = ref.length > 0 ? ref[randInt(rand, 0, ref.length - 1)]! : null;
    const key = e !== null && r < 0.8 ? e.key : randomKey(rand, 8, 4000);
    let end: Lsn;
    let floor: Lsn;
    const mode = randInt(rand, 0, 5);
    if (e !== null && mode === 0) { end = e.lsn; floor = lsnRange.start; } // exclusive end: e itself excluded
    else if (e !== null && mode === 1) { end = e.lsn + 1n; floor = e.lsn; } // exactly e
    else if (mode === 2) { end = lsnRange.end + 1000n; floor = 0n; } // beyond the layer
    else if (mode === 3) { end = lsnRange.start; floor = 0n; } // below the layer: nothing
    else {
      end = lsnRange.start + BigInt(randInt(rand, 0, span));
      floor = lsnRange.start + BigInt(randInt(rand, 0, span));
      if (floor > end) [floor, end] = [end, floor];
    }
    qs.push({ key, floor, end });
  }
  return qs;
}

async function writeLayer(dir: string, kind: 'delta' | 'image', keyRange: KeyRange, lsnRange: LsnRange, ref: RefEntry[], writeBufferSizeBytes?: number) {
  const w = await LayerFileWriter.create({ dir, kind, tenantId: TENANT, timelineId: TIMELINE, keyRange, lsnRange, ...(writeBufferSizeBytes !== undefined ? { writeBufferSizeBytes } : {}) });
  await putAll(w, ref);
  return w.finish();
}

function checkAll(reader: LayerFileReader, ref: RefEntry[], lsnRange: LsnRange, rand: () => number, queries: number): void {
  for (const q of randomQueries(rand, ref, lsnRange, queries)) checkLookup(reader, ref, q.key, q.floor, q.end, 'random query');
  // findNewest at and around every 7th entry.
  for (let i = 0; i < ref.length; i += 7) {
    const e = ref[i]!;
    for (const lsn of [e.lsn, e.lsn - 1n, e.lsn + 1n]) {
      const got = reader.findNewest(e.key, lsn);
      const exp = expectedNewest(ref, e.key, lsn);
      if (exp === null) assert.equal(got, null, `findNewest ${describeKey(e.key)} ${formatLsn(lsn)}`);
      else {
        assert.ok(got !== null, `findNewest ${describeKey(e.key)} ${formatLsn(lsn)} found nothing`);
        assert.equal(got.lsn, exp.lsn);
        assert.equal(got.key, exp.key);
        assert.equal(got.length, exp.encoded.length);
        assert.equal(got.willInit, exp.willInit);
        assert.ok(reader.readValue(got).equals(exp.encoded));
      }
    }
  }
  // entries(): everything, in order.
  let i = 0;
  for (const e of reader.entries()) {
    const r = ref[i++]!;
    assert.ok(r !== undefined, 'entries() yielded more than was written');
    assert.equal(e.key, r.key);
    assert.equal(e.lsn, r.lsn);
    assert.equal(e.willInit, r.willInit);
    assert.ok(e.value.equals(r.encoded), `entries() value ${i - 1}`);
  }
  assert.equal(i, ref.length, 'entries() count');
}

// ------------------------------------------------------------------------------------------------
// Round trips.

test('delta layer round trip: random keys/LSNs/values, many index blocks, long chains across blocks', async () => {
  await withSeed(1, async (rand) => {
    const ref = makeDeltaRef(rand, { keys: 1500, maxVersions: 6, longChainKeys: 3, longChainLength: 700, willInitShare: 0.35 });
    const dir = newDir();
    const info = await writeLayer(dir, 'delta', ALL_KEYS, DELTA_LSNS, ref);
    assert.equal(info.entryCount, ref.length);
    assert.equal(info.desc.kind, 'delta');
    assert.equal(info.fileName, layerFileName({ kind: 'delta', keyRange: ALL_KEYS, lsnRange: DELTA_LSNS }));
    assert.deepEqual(readdirSync(dir), [info.fileName], 'only the final file is left, no temp file');

    for (const cacheBlocks of [1000, 1]) {
      const cache = new BlockCache({ maxBytes: cacheBlocks * 8192 });
      const reader = LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: cache, expect: { tenantId: TENANT, timelineId: TIMELINE } });
      try {
        assert.equal(reader.entryCount, ref.length);
        assert.equal(reader.sizeBytes, info.sizeBytes);
        assert.ok(reader.summary.indexBlockCount >= 10, `index spans several blocks (${reader.summary.indexBlockCount})`);
        assert.equal(reader.summary.indexBlockCount, Math.ceil(ref.length / ENTRIES_PER_INDEX_BLOCK));
        assert.deepEqual(reader.desc, { kind: 'delta', tenantId: TENANT, timelineId: TIMELINE, keyRange: ALL_KEYS, lsnRange: DELTA_LSNS });
        checkAll(reader, ref, DELTA_LSNS, rand, 3000);
        // Full walks of each long chain: newest to oldest, crossing index block boundaries.
        const chainKeys = [...new Set(ref.map((e) => e.key))].filter((k) => ref.filter((e) => e.key === k).length >= 700);
        assert.ok(chainKeys.length >= 1);
        for (const k of chainKeys) {
          checkLookup(reader, ref, k, 0n, DELTA_LSNS.end, 'long chain');
          const mine = ref.filter((e) => e.key === k);
          checkLookup(reader, ref, k, mine[100]!.lsn, mine[650]!.lsn, 'long chain window');
        }
        assert.ok(cache.sizeBytes <= cache.maxBytes);
        assert.ok(cache.hits > 0 && cache.misses > 0);
      } finally {
        reader.close();
      }
      assert.equal(cache.blocksOf(reader.fileId), 0, 'close drops the file from the cache');
    }
  });
});

test('the same key continues across an index block boundary', async () => {
  await withSeed(2, async (rand) => {
    // 201 other entries, then one key with 410 versions (the last 3 entries of block 0, all of
    // block 1, most of block 2), then one more key: 612 entries = exactly 3 full blocks.
    const ref: RefEntry[] = [];
    let lsn = DELTA_LSNS.start + 10n;
    for (let i = 0; i < ENTRIES_PER_INDEX_BLOCK - 3; i++) {
      const { value, willInit } = randomValue(rand, { willInitShare: 0.3 });
      ref.push({ key: makeKey(0, 1663, 5, 100, 0, i), lsn: lsn++, encoded: encodeValue(value), willInit });
    }
    const key = makeKey(0, 1663, 5, 200, 0, 0);
    for (let i = 0; i < 2 * ENTRIES_PER_INDEX_BLOCK + 2; i++) {
      const value: Value = i === 0 ? { kind: 'image', image: randBuf(rand, 8192) } : { kind: 'pgRecord', willInit: false, recordLsn: lsn, record: randBuf(rand, 50) };
      ref.push({ key, lsn: lsn++, encoded: encodeValue(value), willInit: i === 0 });
    }
    ref.push({ key: makeKey(0, 1663, 5, 300, 0, 0), lsn: lsn++, encoded: encodeValue({ kind: 'image', image: randBuf(rand, 10) }), willInit: true });
    const info = await writeLayer(newDir(), 'delta', ALL_KEYS, DELTA_LSNS, ref);
    const reader = LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 8192 }) });
    try {
      assert.equal(reader.summary.indexBlockCount, 3);
      const mine = ref.filter((e) => e.key === key);
      checkLookup(reader, ref, key, 0n, DELTA_LSNS.end, 'whole chain to the image');
      checkLookup(reader, ref, key, mine[5]!.lsn, mine[ENTRIES_PER_INDEX_BLOCK + 10]!.lsn, 'window across the boundary');
      for (let i = 0; i < mine.length; i += 9) checkLookup(reader, ref, key, 0n, mine[i]!.lsn + 1n, `chain up to version ${i}`);
      const state = newReconstructState();
      assert.equal(reader.getValueReconstructData(key, 0n, DELTA_LSNS.end, state), true);
      assert.equal(state.records.length, mine.length - 1);
      assert.ok(state.image !== null && state.image.lsn === mine[0]!.lsn);
    } finally {
      reader.close();
    }
  });
});

test('image layer round trip', async () => {
  await withSeed(3, async (rand) => {
    const lsn = 0x2_0000_1000n;
    const lsnRange = { start: lsn, end: lsn + 1n };
    const keyRange = { start: makeKey(0, 1663, 5, 16384, 0, 0), end: makeKey(0, 1663, 5, 16384 + 8, 0, 0) };
    const ref: RefEntry[] = randomKeys(rand, 2500, 8, 4000)
      .filter((k) => k >= keyRange.start && k < keyRange.end)
      .map((key) => ({ key, lsn, encoded: encodeValue({ kind: 'image', image: randBuf(rand, rand() < 0.7 ? 8192 : randInt(rand, 0, 100)) }), willInit: true }));
    const dir = newDir();
    const info = await writeLayer(dir, 'image', keyRange, lsnRange, ref);
    assert.equal(info.fileName, `${keyToHex(keyRange.start)}-${keyToHex(keyRange.end)}__${'0000000200001000'}`);
    const reader = LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 1 << 20 }) });
    try {
      assert.equal(reader.desc.kind, 'image');
      assert.equal(reader.summary.keyCount, ref.length);
      checkAll(reader, ref, lsnRange, rand, 2000);
      for (const e of ref.slice(0, 200)) {
        checkLookup(reader, ref, e.key, 0n, lsn + 1n, 'image at its LSN');
        checkLookup(reader, ref, e.key, 0n, lsn, 'below the image LSN');
        checkLookup(reader, ref, e.key, lsn + 1n, lsn + 100n, 'above the image LSN');
      }
    } finally {
      reader.close();
    }
  });
});

test('empty layers', async () => {
  for (const kind of ['delta', 'image'] as const) {
    const lsnRange = kind === 'image' ? { start: 500n, end: 501n } : { start: 500n, end: 900n };
    const dir = newDir();
    const info = await writeLayer(dir, kind, ALL_KEYS, lsnRange, []);
    assert.equal(info.entryCount, 0);
    assert.equal(info.sizeBytes, readFileSync(info.path).length);
    const reader = LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 8192 }) });
    try {
      assert.equal(reader.summary.indexBlockCount, 0);
      const state = newReconstructState();
      assert.equal(reader.getValueReconstructData(makeKey(0, 1, 2, 3, 0, 4), 0n, 1000n, state), false);
      assert.deepEqual(state, newReconstructState());
      assert.equal(reader.findNewest(makeKey(0, 1, 2, 3, 0, 4), 1000n), null);
      assert.equal([...reader.entries()].length, 0);
    } finally {
      reader.close();
    }
    assert.deepEqual(readdirSync(dir), [info.fileName]);
  }
});

test('values larger than the write buffer, tiny buffers, and a value of several MiB', async () => {
  await withSeed(4, async (rand) => {
    const ref: RefEntry[] = [];
    let lsn = DELTA_LSNS.start;
    for (let i = 0; i < 300; i++) {
      const size = rand() < 0.2 ? randInt(rand, 5000, 40000) : randInt(rand, 20, 3000);
      const value: Value = { kind: 'image', image: randBuf(rand, size) };
      ref.push({ key: makeKey(0, 1663, 5, 16384, 0, i), lsn: lsn += 3n, encoded: encodeValue(value), willInit: true });
    }
    ref.push({ key: makeKey(0, 1663, 5, 16384, 0, 100_000), lsn: lsn += 3n, encoded: encodeValue({ kind: 'image', image: randBuf(rand, 3 * 1024 * 1024 + 7) }), willInit: true });
    ref.push({ key: makeKey(0, 1663, 5, 16384, 0, 100_001), lsn: lsn += 3n, encoded: encodeValue({ kind: 'image', image: randBuf(rand, 5) }), willInit: true });
    const small = await writeLayer(newDir(), 'delta', ALL_KEYS, DELTA_LSNS, ref, 4096);
    const big = await writeLayer(newDir(), 'delta', ALL_KEYS, DELTA_LSNS, ref);
    assert.ok(readFileSync(small.path).equals(readFileSync(big.path)), 'the file does not depend on the write buffer size');
    const reader = LayerFileReader.open(small.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 65536 }) });
    try {
      checkAll(reader, ref, DELTA_LSNS, rand, 300);
    } finally {
      reader.close();
    }
  });
});

test('put validation: order, ranges, image LSN, value size; a pending put blocks the next', async () => {
  const dir = newDir();
  const keyRange = { start: makeKey(0, 1663, 5, 100, 0, 0), end: makeKey(0, 1663, 5, 200, 0, 0) };
  const w = await LayerFileWriter.create({ dir, kind: 'delta', tenantId: TENANT, timelineId: TIMELINE, keyRange, lsnRange: { start: 1000n, end: 2000n }, writeBufferSizeBytes: 4096 });
  const v = encodeValue({ kind: 'image', image: Buffer.alloc(100, 1) });
  const k1 = makeKey(0, 1663, 5, 150, 0, 1);
  const k2 = makeKey(0, 1663, 5, 150, 0, 2);
  assert.equal(w.put(k1, 1500n, v), undefined);
  assert.throws(() => w.put(k1, 1500n, v), AssertionFailedError, 'equal (key, lsn)');
  assert.throws(() => w.put(k1, 1499n, v), AssertionFailedError, 'lower LSN, same key');
  assert.throws(() => w.put(makeKey(0, 1663, 5, 150, 0, 0), 1600n, v), AssertionFailedError, 'lower key');
  assert.throws(() => w.put(makeKey(0, 1663, 5, 99, 0, 9), 1600n, v), (e) => e instanceof InvalidInputError || e instanceof AssertionFailedError);
  assert.throws(() => w.put(makeKey(0, 1663, 5, 200, 0, 0), 1600n, v), InvalidInputError, 'key at the exclusive end');
  assert.throws(() => w.put(k2, 999n, v), InvalidInputError, 'LSN below range');
  assert.throws(() => w.put(k2, 2000n, v), InvalidInputError, 'LSN at the exclusive end');
  assert.throws(() => w.put(k2, 1500n, Buffer.alloc(0)), InvalidInputError, 'empty value');
  assert.throws(() => w.put(k2, 1500n, Buffer.alloc(64 * 1024 * 1024 + 1)), InvalidInputError, 'value over 64 MiB');
  // Rejected puts change nothing: the writer goes on.
  const p = w.put(k2, 1500n, Buffer.concat([Buffer.from([0]), Buffer.alloc(10_000, 2)]));
  assert.ok(p instanceof Promise, 'a value larger than the buffer needs the disk');
  assert.throws(() => w.put(makeKey(0, 1663, 5, 150, 0, 3), 1500n, v), AssertionFailedError, 'put before the previous promise settled');
  await p;
  assert.equal(w.put(makeKey(0, 1663, 5, 150, 0, 3), 1500n, v), undefined);
  const info = await w.finish();
  assert.equal(info.entryCount, 3);
  assert.throws(() => w.put(makeKey(0, 1663, 5, 150, 0, 4), 1500n, v), AssertionFailedError, 'put after finish');

  const img = await LayerFileWriter.create({ dir, kind: 'image', tenantId: TENANT, timelineId: TIMELINE, keyRange, lsnRange: { start: 1000n, end: 1001n } });
  assert.throws(() => img.put(k1, 1001n, v), InvalidInputError, 'image entry at another LSN');
  assert.equal(img.put(k1, 1000n, v), undefined);
  assert.throws(() => img.put(k1, 1000n, v), AssertionFailedError, 'two entries for one key in an image');
  await img.abort();
  await assert.rejects(LayerFileWriter.create({ dir, kind: 'image', tenantId: TENANT, timelineId: TIMELINE, keyRange, lsnRange: { start: 1000n, end: 1002n } }), InvalidInputError);
  await assert.rejects(LayerFileWriter.create({ dir, kind: 'delta', tenantId: 'xyz', timelineId: TIMELINE, keyRange, lsnRange: { start: 1000n, end: 1002n } }), InvalidInputError);
  await assert.rejects(LayerFileWriter.create({ dir, kind: 'delta', tenantId: TENANT, timelineId: TIMELINE, keyRange: { start: keyRange.end, end: keyRange.start }, lsnRange: { start: 1000n, end: 1002n } }), InvalidInputError);
  assert.deepEqual(readdirSync(dir), [info.fileName]);
});

test('abort removes the temp file; no temp file is left after finish', async () => {
  await withSeed(5, async (rand) => {
    const dir = newDir();
    const ref = makeDeltaRef(rand, { keys: 400, maxVersions: 3, willInitShare: 0.5 });
    const w = await LayerFileWriter.create({ dir, kind: 'delta', tenantId: TENANT, timelineId: TIMELINE, keyRange: ALL_KEYS, lsnRange: DELTA_LSNS, writeBufferSizeBytes: 8192 });
    const names = readdirSync(dir);
    assert.equal(names.length, 1);
    assert.ok(names[0]!.endsWith(TEMP_SUFFIX) && names[0]!.startsWith(w.fileName), `temp name ${names[0]}`);
    await putAll(w, ref);
    // Leave a write possibly in flight, then abort.
    const pending = w.put(makeKey(0, 1663, 5, 99_999, 0, 0), DELTA_LSNS.start, encodeValue({ kind: 'image', image: Buffer.alloc(20_000) }));
    assert.ok(pending instanceof Promise);
    await w.abort(); // without awaiting the put first: abort waits for it
    await pending;
    assert.deepEqual(readdirSync(dir), []);
    await w.abort(); // idempotent
    await assert.rejects(w.finish(), AssertionFailedError);

    const w2 = await LayerFileWriter.create({ dir, kind: 'delta', tenantId: TENANT, timelineId: TIMELINE, keyRange: ALL_KEYS, lsnRange: DELTA_LSNS });
    await putAll(w2, ref);
    const info = await w2.finish();
    assert.deepEqual(readdirSync(dir), [info.fileName]);
    await w2.abort(); // after finish: keeps the file
    assert.deepEqual(readdirSync(dir), [info.fileName]);
  });
});

// ------------------------------------------------------------------------------------------------
// Names.

test('layer file names: format and round trip', async () => {
  // Built by hand from the key fields: f1 u8 | f2 u32 | f3 u32 | f4 u32 | f5 u8 | f6 u32, big-endian.
  const start = makeKey(0, 1663, 5, 16384, 0, 7);
  const end = makeKey(0, 1663, 5, 16385, 0, 0);
  const startHex = '00' + '0000067F' + '00000005' + '00004000' + '00' + '00000007';
  const endHex = '00' + '0000067F' + '00000005' + '00004001' + '00' + '00000000';
  assert.equal(layerFileName({ kind: 'delta', keyRange: { start, end }, lsnRange: { start: 0x16B3D80n, end: 0x1_0000_0000n } }), `${startHex}-${endHex}__00000000016B3D80-0000000100000000`);
  assert.equal(layerFileName({ kind: 'image', keyRange: { start, end }, lsnRange: { start: 0xABCn, end: 0xABDn } }), `${startHex}-${endHex}__0000000000000ABC`);
  assert.deepEqual(parseLayerFileName(`${startHex}-${endHex}__0000000000000ABC`), { kind: 'image', keyRange: { start, end }, lsnRange: { start: 0xABCn, end: 0xABDn } });

  await withSeed(6, (rand) => {
    for (let i = 0; i < 500; i++) {
      let a = randomKey(rand, 100, 1_000_000);
      let b = rand() < 0.1 ? KEY_MAX : randomKey(rand, 100, 1_000_000);
      if (rand() < 0.1) a = KEY_MIN;
      if (a === b) continue;
      if (a > b) [a, b] = [b, a];
      const l1 = BigInt(randInt(rand, 0, 2 ** 30)) * BigInt(randInt(rand, 1, 2 ** 30));
      const l2 = l1 + BigInt(randInt(rand, 1, 2 ** 30));
      const delta = { kind: 'delta' as const, keyRange: { start: a, end: b }, lsnRange: { start: l1, end: l2 } };
      const image = { kind: 'image' as const, keyRange: { start: a, end: b }, lsnRange: { start: l1, end: l1 + 1n } };
      for (const d of [delta, image]) {
        const name = layerFileName(d);
        assert.match(name, d.kind === 'delta' ? /^[0-9A-F]{36}-[0-9A-F]{36}__[0-9A-F]{16}-[0-9A-F]{16}$/ : /^[0-9A-F]{36}-[0-9A-F]{36}__[0-9A-F]{16}$/);
        assert.deepEqual(parseLayerFileName(name), d);
      }
    }
  });
  const good = `${startHex}-${endHex}__00000000016B3D80-0000000100000000`;
  for (const bad of [
    `${good}.abcd1234${TEMP_SUFFIX}`,
    good.toLowerCase(),
    `${endHex}-${startHex}__00000000016B3D80-0000000100000000`, // key start > end
    `${startHex}-${startHex}__00000000016B3D80`, // empty key range
    `${startHex}-${endHex}__0000000100000000-00000000016B3D80`, // LSN start > end
    `${startHex}-${endHex}__0000000100000000-0000000100000000`, // empty LSN range
    `${startHex}-${endHex}__FFFFFFFFFFFFFFFF`, // image at the last LSN: no L+1
    `${startHex}-${endHex}_00000000016B3D80`,
    `${startHex.slice(2)}-${endHex}__00000000016B3D80`,
    'metadata', 'index_part.json', '',
  ]) {
    assert.equal(parseLayerFileName(bad), null, bad);
  }
  assert.throws(() => layerFileName({ kind: 'inMemory', keyRange: { start, end }, lsnRange: { start: 1n, end: 2n } }), InvalidInputError);
  assert.throws(() => layerFileName({ kind: 'image', keyRange: { start, end }, lsnRange: { start: 1n, end: 3n } }), InvalidInputError);
});

// ------------------------------------------------------------------------------------------------
// Block cache.

test('block cache: bounded LRU, counters, per-file drop, shared by readers', async () => {
  const cache = new BlockCache({ maxBytes: 3 * 8192 + 100 });
  assert.equal(cache.maxBlocks, 3);
  const bufs = [0, 1, 2, 3].map((i) => Buffer.alloc(8192, i));
  cache.insert(1, 0, bufs[0]!);
  cache.insert(1, 1, bufs[1]!);
  cache.insert(2, 0, bufs[2]!);
  assert.equal(cache.get(1, 0), bufs[0]); // 1:0 becomes the newest; 1:1 is now the oldest
  cache.insert(2, 1, bufs[3]!);
  assert.equal(cache.get(1, 1), undefined, 'the least recently used block was evicted');
  assert.equal(cache.get(1, 0), bufs[0]);
  assert.equal(cache.get(2, 0), bufs[2]);
  assert.equal(cache.get(2, 1), bufs[3]);
  assert.equal(cache.sizeBytes, 3 * 8192);
  assert.deepEqual({ hits: cache.hits, misses: cache.misses, evictions: cache.evictions }, { hits: 4, misses: 1, evictions: 1 });
  cache.dropFile(2);
  assert.equal(cache.get(2, 0), undefined);
  assert.equal(cache.get(1, 0), bufs[0]);
  assert.equal(cache.blocksOf(1), 1);
  assert.equal(cache.blocksOf(2), 0);
  assert.throws(() => new BlockCache({ maxBytes: 100 }), InvalidInputError);

  // Two files through one small cache: results stay right while blocks of both evict each other.
  await withSeed(7, async (rand) => {
    const refA = makeDeltaRef(rand, { keys: 800, maxVersions: 4, willInitShare: 0.4 });
    const refB = makeDeltaRef(rand, { keys: 800, maxVersions: 4, willInitShare: 0.4 });
    const a = await writeLayer(newDir(), 'delta', ALL_KEYS, DELTA_LSNS, refA);
    const b = await writeLayer(newDir(), 'delta', ALL_KEYS, DELTA_LSNS, refB);
    const shared = new BlockCache({ maxBytes: 2 * 8192 });
    const ra = LayerFileReader.open(a.path, { fdCache: TEST_FD_CACHE, blockCache: shared });
    const rb = LayerFileReader.open(b.path, { fdCache: TEST_FD_CACHE, blockCache: shared });
    try {
      const qa = randomQueries(rand, refA, DELTA_LSNS, 1500);
      const qb = randomQueries(rand, refB, DELTA_LSNS, 1500);
      for (let i = 0; i < qa.length; i++) {
        checkLookup(ra, refA, qa[i]!.key, qa[i]!.floor, qa[i]!.end, 'file A');
        checkLookup(rb, refB, qb[i]!.key, qb[i]!.floor, qb[i]!.end, 'file B');
      }
      assert.ok(shared.sizeBytes <= 2 * 8192);
      assert.ok(shared.evictions > 0);
    } finally {
      ra.close();
      rb.close();
    }
    assert.equal(shared.stats().blocks, 0);
  });
});

// ------------------------------------------------------------------------------------------------
// Corruption.

function flipByte(file: string, offset: number): void {
  const b = readFileSync(file);
  b[offset] = b[offset]! ^ 0x5a;
  writeFileSync(file, b);
}

function isCorruption(err: unknown, file: string): boolean {
  return err instanceof LayerCorruptionError && err.code === 'layer_corrupt' && err.message.includes(file) && err.context.path === file;
}

/**
 * Every lookup either returns exactly the reference result or throws LayerCorruptionError; returns
 * the errors seen.
 */
function readEverything(reader: LayerFileReader, ref: RefEntry[], keys: Key[], file: string): LayerCorruptionError[] {
  const errors: LayerCorruptionError[] = [];
  for (const key of keys) {
    try {
      checkLookup(reader, ref, key, 0n, DELTA_LSNS.end, 'after corruption');
    } catch (err) {
      if (!isCorruption(err, file)) throw err;
      errors.push(err as LayerCorruptionError);
    }
  }
  try {
    let i = 0;
    for (const e of reader.entries()) {
      const r = ref[i++]!;
      assert.ok(e.key === r.key && e.lsn === r.lsn && e.value.equals(r.encoded), `entries() returned wrong data at ${i - 1}`);
    }
    assert.equal(i, ref.length);
  } catch (err) {
    if (!isCorruption(err, file)) throw err;
    errors.push(err as LayerCorruptionError);
  }
  return errors;
}

test('corruption: summary, index block, value, fence, truncation, wrong tenant — errors, never wrong data', async () => {
  await withSeed(8, async (rand) => {
    const ref = makeDeltaRef(rand, { keys: 700, maxVersions: 5, willInitShare: 0.4 });
    const keys = [...new Set(ref.map((e) => e.key))];
    const info = await writeLayer(newDir(), 'delta', ALL_KEYS, DELTA_LSNS, ref);
    const probe = LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 8192 }) });
    const s = probe.summary;
    probe.close();
    assert.ok(s.indexBlockCount >= 5);
    const work = newDir();
    let n = 0;
    const copy = (): string => {
      const p = path.join(work, `copy-${n++}`);
      copyFileSync(info.path, p);
      return p;
    };
    const open = (p: string, cache = new BlockCache({ maxBytes: 1 << 20 })) => LayerFileReader.open(p, { fdCache: TEST_FD_CACHE, blockCache: cache });

    // (a) summary: magic, a range field, the CRC itself, the reserved area.
    for (const off of [0, 9, 30, 60, 100, 115, 140, 186, 2000, 4093]) {
      const p = copy();
      flipByte(p, off);
      assert.throws(() => open(p), (e) => isCorruption(e, p), `summary byte ${off}`);
    }
    {
      const p = copy();
      flipByte(p, 0);
      assert.throws(() => open(p), /not a Strata layer file/);
      const q = copy();
      flipByte(q, 40);
      assert.throws(() => open(q), /summary CRC-32C mismatch/);
    }

    // (b) an index block (entry bytes, then header bytes): open works, lookups through it fail.
    for (const [block, inBlock] of [[2, 16 + 40 * 7 + 3], [s.indexBlockCount - 1, 5], [0, 16 + 18 + 7]] as const) {
      const p = copy();
      flipByte(p, s.indexOffset + block * 8192 + inBlock);
      const reader = open(p);
      try {
        const errors = readEverything(reader, ref, keys, p);
        assert.ok(errors.length > 0, `a damaged index block ${block} is noticed`);
        assert.ok(errors.some((e) => /index block \d+ CRC-32C mismatch/.test(e.message)), errors[0]?.message);
        // A lookup error names the key (description and hex) and the LSN read.
        const keyed = errors.find((e) => e.context.key !== undefined)!;
        assert.ok(keyed !== undefined);
        const key = keys.find((k) => keyToHex(k) === keyed.context.key)!;
        assert.ok(keyed.message.includes(describeKey(key)) && keyed.message.includes(keyToHex(key)), keyed.message);
        assert.ok(keyed.message.includes(`LSN ${formatLsn(DELTA_LSNS.end - 1n)}`), keyed.message);
      } finally {
        reader.close();
      }
    }

    // (c) a value: exactly the lookups that read it fail, naming its key and LSN.
    {
      // The newest version of its key, so the full-range lookup of that key reads it.
      let vi = Math.floor(ref.length / 2);
      while (ref[vi + 1]!.key === ref[vi]!.key) vi++;
      const victim = ref[vi]!;
      const ref0 = LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 8192 }) });
      const at = ref0.findNewest(victim.key, victim.lsn)!;
      ref0.close();
      const p = copy();
      flipByte(p, at.offset + Math.floor(at.length / 2));
      const reader = open(p);
      try {
        const errors = readEverything(reader, ref, keys, p);
        assert.ok(errors.length >= 2, 'the lookup and the scan hit the damaged value');
        for (const e of errors) {
          assert.match(e.message, /value CRC-32C mismatch/);
          assert.ok(e.message.includes(keyToHex(victim.key)) && e.message.includes(describeKey(victim.key)), e.message);
          assert.ok(e.message.includes(formatLsn(victim.lsn)), e.message);
        }
        assert.throws(() => reader.readValue(at), (e) => isCorruption(e, p));
      } finally {
        reader.close();
      }
    }

    // (d) the fence.
    for (const off of [0, 25, s.fenceLengthBytes - 1]) {
      const p = copy();
      flipByte(p, s.fenceOffset + off);
      assert.throws(() => open(p), (e) => isCorruption(e, p) && /fence CRC-32C mismatch/.test((e as Error).message));
    }

    // Truncated and extended files.
    for (const size of [0, 100, 4096, s.indexOffset, s.fileSizeBytes - 1]) {
      const p = copy();
      truncateSync(p, size);
      assert.throws(() => open(p), (e) => isCorruption(e, p) && /truncated/.test((e as Error).message), `truncated to ${size}`);
    }
    {
      const p = copy();
      appendFileSync(p, Buffer.from([0]));
      assert.throws(() => open(p), (e) => isCorruption(e, p) && /extra bytes/.test((e as Error).message));
    }

    // A file under another layer's name.
    {
      const other = path.join(work, layerFileName({ kind: 'delta', keyRange: ALL_KEYS, lsnRange: { start: DELTA_LSNS.start, end: DELTA_LSNS.end + 1n } }));
      copyFileSync(info.path, other);
      assert.throws(() => open(other), (e) => isCorruption(e, other) && /file name/.test((e as Error).message));
      renameSync(other, path.join(work, 'renamed-ok'));
      open(path.join(work, 'renamed-ok')).close();
    }

    // Wrong tenant / timeline expectation.
    const other = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa';
    assert.throws(() => LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 8192 }), expect: { tenantId: other, timelineId: TIMELINE } }), (e) => isCorruption(e, info.path) && (e as Error).message.includes(other));
    assert.throws(() => LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 8192 }), expect: { tenantId: TENANT, timelineId: other } }), (e) => isCorruption(e, info.path));
    LayerFileReader.open(info.path, { fdCache: TEST_FD_CACHE, blockCache: new BlockCache({ maxBytes: 8192 }), expect: { tenantId: TENANT.toUpperCase(), timelineId: TIMELINE } }).close();

    // Random single-byte damage anywhere: an error or exactly the right data, never anything else.
    let detected = 0;
    for (let i = 0; i < 40; i++) {
      const p = copy();
      const off = randInt(rand, 0, s.fileSizeBytes - 1);
      flipByte(p, off);
      let reader: LayerFileReader;
      try {
        reader = open(p, new BlockCache({ maxBytes: 3 * 8192 }));
      } catch (err) {
        assert.ok(isCorruption(err, p), `byte ${off}: ${(err as Error).message}`);
        detected++;
        continue;
      }
      try {
        if (readEverything(reader, ref, keys, p).length > 0) detected++;
      } finally {
        reader.close();
      }
    }
    assert.ok(detected > 0);
  });
});
