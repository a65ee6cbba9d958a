/**
 * Keys, values, the in-memory layer and the layer map's search rule, in isolation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CHECKPOINT_KEY, CONTROLFILE_KEY, DBDIR_KEY, KEY_MAX, KEY_MIN, SlruKind, compareKeys, dbDirKeyRange, describeKey, keyFields, keyFromHex,
  keyNext, keyRangeContains, keyToHex, makeKey, readKey, relBlockKey, relDirKey, relKeyRange, relMapFileKey, relSizeKey, slruBlockKey,
  slruSegmentKeyRange, slruSegmentSizeKey, twoPhaseFileKey, writeKey, type Key,
} from '../../src/storage/key.ts';
import { decodeValue, encodeValue, encodedValueWillInit, valueWillInit, type Value } from '../../src/storage/value.ts';
import { InMemoryLayer } from '../../src/storage/inmemorylayer.ts';
import { LayerMap, type HistoricLayer } from '../../src/storage/layermap.ts';
import { newReconstructState, type LayerDesc, type ReconstructState } from '../../src/storage/layer.ts';
import { FdCache } from '../../src/storage/layerfile/fdcache.ts';
import { prng } from '../support/storage-model.ts';

const REL = { spcNode: 1663, dbNode: 5, relNode: 16384, forkNum: 0 };

test('key order is the byte order of the 18-byte form, field by field', () => {
  const rand = prng(42);
  const keys: Key[] = [];
  for (let i = 0; i < 2000; i++) {
    const f = () => rand.int(3) === 0 ? 0xffffffff : rand.int(3) === 0 ? rand.int(4) : rand.int(0xffffffff) >>> 0;
    keys.push(makeKey(rand.int(4), f(), f(), f(), rand.int(4), f()));
  }
  const byString = [...keys].sort(compareKeys);
  const byBytes = [...keys].sort((a, b) => Buffer.compare(Buffer.from(keyToHex(a), 'hex'), Buffer.from(keyToHex(b), 'hex')));
  assert.deepEqual(byString, byBytes);
  const byFields = [...keys].sort((a, b) => {
    const x = keyFields(a), y = keyFields(b);
    for (const n of ['f1', 'f2', 'f3', 'f4', 'f5', 'f6'] as const) if (x[n] !== y[n]) return x[n] - y[n];
    return 0;
  });
  assert.deepEqual(byString, byFields);
  for (const k of keys.slice(0, 200)) {
    assert.equal(keyFromHex(keyToHex(k)), k);
    const buf = Buffer.alloc(20);
    writeKey(k, buf, 2);
    assert.equal(readKey(buf, 2), k);
  }
});

test('key layout: sizes after blocks, ranges, next, descriptions', () => {
  const last = relBlockKey(REL, 0xfffffffe);
  const size = relSizeKey(REL);
  assert.ok(last < size, 'the size key sorts after the last block');
  const range = relKeyRange(REL);
  assert.ok(keyRangeContains(range, relBlockKey(REL, 0)) && keyRangeContains(range, size));
  assert.ok(!keyRangeContains(range, relBlockKey({ ...REL, forkNum: 1 }, 0)));
  const db = dbDirKeyRange(1663, 5);
  assert.ok(keyRangeContains(db, relMapFileKey(1663, 5)) && keyRangeContains(db, relDirKey(1663, 5)) && keyRangeContains(db, size));
  assert.ok(!keyRangeContains(db, relBlockKey({ ...REL, dbNode: 6 }, 0)));
  const seg = slruSegmentKeyRange(SlruKind.clog, 3);
  assert.ok(keyRangeContains(seg, slruBlockKey(SlruKind.clog, 3, 31)) && keyRangeContains(seg, slruSegmentSizeKey(SlruKind.clog, 3)));
  assert.ok(!keyRangeContains(seg, slruBlockKey(SlruKind.clog, 4, 0)));
  assert.equal(keyToHex(keyNext(makeKey(0, 0, 0, 0, 0, 0xffffffff))), keyToHex(makeKey(0, 0, 0, 0, 1, 0)));
  assert.throws(() => keyNext(KEY_MAX));
  assert.throws(() => makeKey(256, 0, 0, 0, 0, 0));
  assert.throws(() => slruBlockKey(SlruKind.clog, 0, 32));
  assert.throws(() => relBlockKey({ ...REL, relNode: 0 }, 1));
  assert.throws(() => keyFromHex('00'));
  assert.equal(describeKey(relBlockKey(REL, 7)), 'rel 1663/5/16384 main blk 7');
  assert.equal(describeKey(size), 'rel 1663/5/16384 main size');
  assert.equal(describeKey(slruBlockKey(SlruKind.multixactOffsets, 2, 3)), 'multixact offsets seg 2 blk 3');
  assert.equal(describeKey(DBDIR_KEY), 'db directory');
  assert.equal(describeKey(CONTROLFILE_KEY), 'control file');
  assert.equal(describeKey(CHECKPOINT_KEY), 'checkpoint');
  assert.equal(describeKey(twoPhaseFileKey(1234)), 'twophase xid 1234');
  assert.ok(KEY_MIN < DBDIR_KEY || KEY_MIN === DBDIR_KEY);
});

test('values round-trip and malformed bytes are refused', () => {
  const values: Value[] = [
    { kind: 'image', image: Buffer.alloc(8192, 3) },
    { kind: 'pgRecord', willInit: true, recordLsn: 0x1_0000_0028n, record: Buffer.from([1, 2, 3, 4, 5]) },
    { kind: 'pgRecord', willInit: false, recordLsn: 0n, record: Buffer.alloc(0) },
    { kind: 'clearVmBits', newHeapBlock: 32672, oldHeapBlock: 0xffffffff, flags: 3 },
    { kind: 'clogSetStatus', status: 1, xids: [3, 4, 32767], timestampUs: -5n },
    { kind: 'clogSetStatus', status: 2, xids: [], timestampUs: null },
    { kind: 'multixactOffset', multi: 4095, offset: 0xffffffff },
    { kind: 'multixactOffset', multi: 4095, offset: 7, next: { multi: 4096, offset: 9 } },
    { kind: 'multixactMembers', startOffset: 0xfffffffe, members: [{ xid: 9, status: 5 }, { xid: 10, status: 0 }] },
  ];
  for (const v of values) {
    const enc = encodeValue(v);
    assert.deepEqual(decodeValue(enc), v);
    assert.equal(encodedValueWillInit(enc), valueWillInit(v));
    if (enc.length > 1 && v.kind !== 'image' && v.kind !== 'pgRecord') {
      assert.throws(() => decodeValue(enc.subarray(0, enc.length - 1)), { code: 'value_corrupt' });
    }
  }
  assert.throws(() => decodeValue(Buffer.from([9, 0, 0])), { code: 'value_corrupt' });
  assert.throws(() => decodeValue(Buffer.alloc(0)), { code: 'value_corrupt' });
  assert.throws(() => decodeValue(Buffer.from([1, 7, 0, 0, 0, 0, 0, 0, 0, 0])), { code: 'value_corrupt' });
  assert.throws(() => encodeValue({ kind: 'multixactOffset', multi: -1, offset: 0 }));
});

test('in-memory layer: versions newest first within a window; later write of one version wins', () => {
  const layer = new InMemoryLayer({ tenantId: 't', timelineId: 'l', startLsn: 0x10n });
  const k = relBlockKey(REL, 1);
  layer.put(k, 0x18n, { kind: 'image', image: Buffer.alloc(8, 1) });
  layer.put(k, 0x20n, { kind: 'multixactOffset', multi: 1, offset: 1 });
  layer.put(k, 0x20n, { kind: 'multixactOffset', multi: 1, offset: 2 });
  layer.put(k, 0x28n, { kind: 'multixactOffset', multi: 1, offset: 3 });
  assert.equal(layer.entryCount, 3);
  let st = newReconstructState();
  assert.equal(layer.getValueReconstructData(k, 0n, 0x28n, st), true);
  assert.deepEqual(st.records.map((r) => r.lsn), [0x20n]);
  assert.equal((st.records[0]!.value as { offset: number }).offset, 2);
  assert.equal(st.image?.lsn, 0x18n);
  st = newReconstructState();
  assert.equal(layer.getValueReconstructData(k, 0x20n, 0x30n, st), false, 'floor above the image: incomplete');
  assert.deepEqual(st.records.map((r) => r.lsn), [0x28n, 0x20n]);
  assert.throws(() => layer.put(k, 0x20n, { kind: 'image', image: Buffer.alloc(1) }), /LSN order/);
  layer.freeze(0x29n);
  assert.throws(() => layer.put(k, 0x30n, { kind: 'image', image: Buffer.alloc(1) }), /frozen/);
  const entries = [...layer.sortedEntries()].map((e) => e.lsn);
  assert.deepEqual(entries, [0x18n, 0x20n, 0x28n]);
});

/** A fake file layer that records the window it was asked for. */
function fakeLayer(name: string, kind: 'delta' | 'image', start: bigint, end: bigint, keyRange = { start: KEY_MIN, end: KEY_MAX }): HistoricLayer & { asked: [bigint, bigint][] } {
  const desc: LayerDesc = { kind, tenantId: 't', timelineId: 'l', keyRange, lsnRange: { start, end } };
  const asked: [bigint, bigint][] = [];
  return {
    desc, fileName: name, sizeBytes: 0, asked,
    indexEntries: () => [],
    close: () => undefined,
    getValueReconstructData(_k: Key, floor: bigint, endLsn: bigint, _s: ReconstructState): boolean {
      asked.push([floor, endLsn]);
      return false;
    },
  };
}

test('layer map: the newest layer below the LSN wins; an image inside a delta splits its window', () => {
  const map = new LayerMap();
  const d1 = fakeLayer('d1', 'delta', 0x10n, 0x100n);
  const d2 = fakeLayer('d2', 'delta', 0x100n, 0x200n);
  const img = fakeLayer('img', 'image', 0x150n, 0x151n);
  const imgOther = fakeLayer('img2', 'image', 0x180n, 0x181n, { start: makeKey(1, 0, 0, 0, 0, 0), end: KEY_MAX });
  for (const l of [d1, d2, img, imgOther]) map.addHistoric(l);
  const k = relBlockKey(REL, 1);
  let r = map.search(k, 0x1f0n)!;
  assert.equal(r.layer, d2);
  assert.equal(r.lsnFloor, 0x151n, 'read the delta only above the image');
  r = map.search(k, 0x151n)!;
  assert.equal(r.layer, img, 'at the image top the image wins the tie');
  assert.equal(r.lsnFloor, 0x150n);
  r = map.search(k, 0x150n)!;
  assert.equal(r.layer, d2);
  assert.equal(r.lsnFloor, 0x100n);
  r = map.search(k, 0x100n)!;
  assert.equal(r.layer, d1);
  assert.equal(map.search(k, 0x10n), null);
  assert.throws(() => map.addHistoric(fakeLayer('dup', 'delta', 0x1f0n, 0x210n)), /overlap/);
  // In-memory layers sit above the files.
  const open = new InMemoryLayer({ tenantId: 't', timelineId: 'l', startLsn: 0x200n });
  map.open = open;
  r = map.search(k, 0x300n)!;
  assert.equal(r.layer, open);
  assert.equal(r.lsnFloor, 0x200n);
});

test('fd cache keeps at most maxOpenFiles open and closes the least recently used', () => {
  const cache = new FdCache({ maxOpenFiles: 2 });
  const released: string[] = [];
  const holder = (name: string) => ({ fdLastUse: 0, releaseFd: () => { released.push(name); } });
  const a = holder('a'), b = holder('b'), c = holder('c');
  cache.opened(a);
  cache.opened(b);
  cache.touch(a);
  cache.opened(c);
  assert.deepEqual(released, ['b'], 'b was the least recently used');
  assert.equal(cache.stats().open, 2);
  cache.closed(a);
  cache.opened(b);
  assert.deepEqual(released, ['b'], 'closing a made room');
  assert.deepEqual(cache.stats(), { open: 2, opens: 4, evictions: 1 });
  assert.throws(() => new FdCache({ maxOpenFiles: 0 }));
});
