/**
 * The pg_waldump parser and the record comparison the integration tests rely on: if these were
 * wrong, "Strata agrees with pg_waldump" would prove nothing, so they get their own tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diffAgainstPgWaldump, parsePgWaldump, type StrataJsonRecord } from '../support/pgwaldump.ts';

const SAMPLE = [
  'rmgr: Heap        len (rec/tot):     54/   150, tx:        735, lsn: 0/01D41E88, prev 0/01D41E50, desc: INSERT+INIT off 1 flags 0x00',
  '\tblkref #0: rel 1663/5/16384 fork main blk 0 (FPW); hole: offset: 48, length: 392, compression saved: 100, method: lz4',
  '\tblkref #2: rel 1663/5/16384 fork vm blk 3 (FPW for WAL verification); hole: offset: 0, length: 0',
  'rmgr: Transaction len (rec/tot):     34/    34, tx:        735, lsn: 0/01D41F20, prev 0/01D41E88, desc: COMMIT 2026-11-24 17:00:00.000000 UTC',
  'rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/01D41F48, prev 0/01D41F20, desc: UNKNOWN (e0) ',
  'pg_waldump: error: error in WAL record at 0/1D41F48: invalid record length at 0/1D41F60: wanted 24, got 0',
].join('\n');

function ours(): StrataJsonRecord[] {
  return [
    {
      lsn: '0/1D41E88', prev: '0/1D41E50', xid: 735, rmgr: 'Heap', info: 'INSERT+INIT', totalLen: 150, recLen: 54,
      blocks: [
        { id: 0, spc: 1663, db: 5, rel: 16384, fork: 'main', blk: 0, image: true, apply: true, hole: { offset: 48, length: 392 }, compression: 'lz4' },
        { id: 2, spc: 1663, db: 5, rel: 16384, fork: 'vm', blk: 3, image: true, apply: false, hole: { offset: 0, length: 0 }, compression: 'none' },
      ],
    },
    { lsn: '0/1D41F20', prev: '0/1D41E88', xid: 735, rmgr: 'Transaction', info: 'COMMIT', totalLen: 34, recLen: 34, blocks: [] },
    { lsn: '0/1D41F48', prev: '0/1D41F20', xid: 0, rmgr: 'XLOG', info: 'UNKNOWN (e0)', totalLen: 24, recLen: 24, blocks: [] },
  ];
}

test('pg_waldump -b output is parsed into records and block references', () => {
  const recs = parsePgWaldump(SAMPLE);
  assert.equal(recs.length, 3);
  assert.deepEqual(
    { rmgr: recs[0]!.rmgr, recLen: recs[0]!.recLen, totLen: recs[0]!.totLen, xid: recs[0]!.xid, lsn: recs[0]!.lsn, prev: recs[0]!.prev, info: recs[0]!.info },
    { rmgr: 'Heap', recLen: 54, totLen: 150, xid: 735, lsn: '0/1D41E88', prev: '0/1D41E50', info: 'INSERT+INIT' },
  );
  assert.deepEqual(recs[0]!.blocks[0], { id: 0, spc: 1663, db: 5, rel: 16384, fork: 'main', blk: 0, image: 'apply', holeOffset: 48, holeLength: 392, method: 'lz4' });
  assert.equal(recs[0]!.blocks[1]!.image, 'check');
  assert.equal(recs[2]!.info, 'UNKNOWN (e0)');
  assert.throws(() => parsePgWaldump('rmgr: garbage'), /unparsed pg_waldump record line/);
});

test('the comparison finds every kind of disagreement', () => {
  const theirs = parsePgWaldump(SAMPLE);
  assert.deepEqual(diffAgainstPgWaldump(ours(), theirs), []);
  const mutations: [string, (r: StrataJsonRecord[]) => void, RegExp][] = [
    ['lsn', (r) => void (r[1]!.lsn = '0/1D41F28'), /lsn/],
    ['prev', (r) => void (r[1]!.prev = '0/0'), /prev/],
    ['xid', (r) => void (r[0]!.xid = 1), /xid/],
    ['info', (r) => void (r[0]!.info = 'INSERT'), /info/],
    ['total length', (r) => void (r[0]!.totalLen = 151), /totalLen/],
    ['rec length', (r) => void (r[0]!.recLen = 53), /recLen/],
    ['block fork', (r) => void (r[0]!.blocks[1]!.fork = 'main'), /fork/],
    ['block number', (r) => void (r[0]!.blocks[0]!.blk = 1), /blk/],
    ['apply flag', (r) => void (r[0]!.blocks[1]!.apply = true), /image/],
    ['hole', (r) => void (r[0]!.blocks[0]!.hole = { offset: 48, length: 390 }), /hole length/],
    ['compression', (r) => void (r[0]!.blocks[0]!.compression = 'zstd'), /compression/],
    ['a missing block', (r) => void r[0]!.blocks.pop(), /block count/],
    ['a missing record', (r) => void r.pop(), /record count/],
  ];
  for (const [what, mutate, pattern] of mutations) {
    const r = ours();
    mutate(r);
    const problems = diffAgainstPgWaldump(r, theirs);
    assert.ok(problems.some((p) => pattern.test(p)), `${what}: ${JSON.stringify(problems)}`);
  }
});
