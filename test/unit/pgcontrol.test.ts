/**
 * pg_control codec on synthesized files: field offsets (checked against the layout table in
 * docs/formats-basebackup-draft.md / postgres15.md §5.2, read back with a DataView here rather
 * than with the parser), CRC placement, zero padding, round trips, and every rejection.
 * The byte-exact round trip of a real file and the comparison with pg_controldata are in
 * test/integration/basebackup-formats.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ControlFileError, DBState, encodeControlFile, parseControlFile, PG_CONTROL_FILE_SIZE, type ControlFileData,
} from '../../src/postgres/pgcontrol.ts';
import { crc32cJs } from '../../src/postgres/crc32c.ts';
import { InvalidInputError, StrataError } from '../../src/util/errors.ts';

function sample(): ControlFileData {
  const nonce = new Uint8Array(32);
  for (let i = 0; i < 32; i++) nonce[i] = (i * 37 + 11) & 0xff;
  return {
    systemIdentifier: 0x6b05ebd1_9339f580n,
    pgControlVersion: 1300,
    catalogVersionNo: 202209061,
    state: DBState.SHUTDOWNED,
    timeSec: 1_790_000_000n,
    checkPoint: 0x1_0500_0708n,
    checkPointCopy: {
      redoLsn: 0x1_0500_06d0n,
      thisTimeLineId: 3,
      prevTimeLineId: 2,
      fullPageWrites: true,
      nextXid: (2n << 32n) | 724n,
      nextOid: 13572,
      nextMulti: 5,
      nextMultiOffset: 17,
      oldestXid: 716,
      oldestXidDb: 1,
      oldestMulti: 1,
      oldestMultiDb: 4,
      timeUnixSec: 1_789_999_999n,
      oldestCommitTsXid: 0,
      newestCommitTsXid: 0,
      oldestActiveXid: 0,
    },
    unloggedLsn: 1000n,
    minRecoveryPoint: 0x2_0000_0010n,
    minRecoveryPointTli: 7,
    backupStartPoint: 0x123n,
    backupEndPoint: 0x456n,
    backupEndRequired: true,
    walLevel: 1,
    walLogHints: true,
    maxConnections: 100,
    maxWorkerProcesses: 8,
    maxWalSenders: 10,
    maxPreparedXacts: 3,
    maxLocksPerXact: 64,
    trackCommitTimestamp: true,
    maxAlign: 8,
    floatFormat: 1234567.0,
    blcksz: 8192,
    relsegSize: 131072,
    xlogBlcksz: 8192,
    xlogSegSize: 16 * 1024 * 1024,
    nameDataLen: 64,
    indexMaxKeys: 32,
    toastMaxChunkSize: 1996,
    loblksize: 2048,
    float8ByVal: true,
    dataChecksumVersion: 1,
    mockAuthNonce: nonce,
  };
}

/** Rewrites the CRC after a test modified bytes [0, 288). */
function fixCrc(buf: Buffer): void {
  buf.writeUInt32LE(crc32cJs(buf.subarray(0, 288)), 288);
}

test('encodeControlFile puts every field at its documented offset', () => {
  const d = sample();
  const b = encodeControlFile(d);
  assert.equal(b.byteLength, PG_CONTROL_FILE_SIZE);
  assert.equal(b.readBigUInt64LE(0), 0x6b05ebd1_9339f580n);
  assert.equal(b.readUInt32LE(8), 1300);
  assert.equal(b.readUInt32LE(12), 202209061);
  assert.equal(b.readInt32LE(16), 1);
  assert.equal(b.readBigInt64LE(24), 1_790_000_000n);
  assert.equal(b.readBigUInt64LE(32), 0x1_0500_0708n);
  // checkPointCopy at 40: redo, TLIs, fpw, nextXid, nextOid, ..., time, oldestActiveXid
  assert.equal(b.readBigUInt64LE(40), 0x1_0500_06d0n);
  assert.equal(b.readUInt32LE(48), 3);
  assert.equal(b.readUInt32LE(52), 2);
  assert.equal(b[56], 1);
  assert.equal(b.readBigUInt64LE(64), (2n << 32n) | 724n);
  assert.equal(b.readUInt32LE(72), 13572);
  assert.equal(b.readUInt32LE(76), 5);
  assert.equal(b.readUInt32LE(80), 17);
  assert.equal(b.readUInt32LE(84), 716);
  assert.equal(b.readUInt32LE(88), 1);
  assert.equal(b.readUInt32LE(92), 1);
  assert.equal(b.readUInt32LE(96), 4);
  assert.equal(b.readBigInt64LE(104), 1_789_999_999n);
  assert.equal(b.readBigUInt64LE(128), 1000n);
  assert.equal(b.readBigUInt64LE(136), 0x2_0000_0010n);
  assert.equal(b.readUInt32LE(144), 7);
  assert.equal(b.readBigUInt64LE(152), 0x123n);
  assert.equal(b.readBigUInt64LE(160), 0x456n);
  assert.equal(b[168], 1);
  assert.equal(b.readInt32LE(172), 1);
  assert.equal(b[176], 1);
  assert.deepEqual([180, 184, 188, 192, 196].map((o) => b.readInt32LE(o)), [100, 8, 10, 3, 64]);
  assert.equal(b[200], 1);
  assert.equal(b.readUInt32LE(204), 8);
  assert.equal(b.readDoubleLE(208), 1234567.0);
  assert.deepEqual([216, 220, 224, 228, 232, 236, 240, 244].map((o) => b.readUInt32LE(o)), [8192, 131072, 8192, 16777216, 64, 32, 1996, 2048]);
  assert.equal(b[248], 1);
  assert.equal(b.readUInt32LE(252), 1);
  assert.deepEqual(new Uint8Array(b.subarray(256, 288)), d.mockAuthNonce);
  assert.equal(b.readUInt32LE(288), crc32cJs(b.subarray(0, 288)));
  // Padding inside the struct and everything after it is zero.
  for (const [from, to] of [[20, 24], [148, 152], [169, 172], [177, 180], [201, 204], [249, 252], [292, 8192]] as const) {
    assert.ok(b.subarray(from, to).every((x) => x === 0), `bytes [${from}, ${to}) are zero`);
  }
});

test('parseControlFile(encodeControlFile(d)) gives d back, and re-encoding is byte-identical', () => {
  const d = sample();
  const b = encodeControlFile(d);
  const p = parseControlFile(b);
  assert.deepEqual(p, d);
  assert.ok(encodeControlFile(p).equals(b));
  // Bools decode from any non-zero byte; a 296-byte buffer (struct only) parses too.
  const short = Buffer.from(b.subarray(0, 296));
  assert.deepEqual(parseControlFile(short), d);
});

test('a control file with other values in every field round-trips', () => {
  const d = sample();
  d.state = DBState.IN_PRODUCTION;
  d.checkPointCopy = { ...d.checkPointCopy, fullPageWrites: false, nextXid: 0xffff_ffff_ffff_fffen, oldestActiveXid: 0xffff_ffff };
  d.backupEndRequired = false;
  d.walLogHints = false;
  d.trackCommitTimestamp = false;
  d.float8ByVal = false;
  d.walLevel = 2;
  d.timeSec = -5n;
  d.systemIdentifier = 0xffff_ffff_ffff_ffffn;
  const p = parseControlFile(encodeControlFile(d));
  assert.deepEqual(p, d);
});

function expectControlError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ControlFileError, `expected ControlFileError, got ${String(e)}`);
    assert.ok(e instanceof StrataError);
    assert.equal(e.code, 'control_file_invalid');
    assert.match(e.message, re);
    return true;
  });
}

test('parseControlFile rejects a short file, a bad CRC and another pg_control_version', () => {
  const b = encodeControlFile(sample());
  expectControlError(() => parseControlFile(b.subarray(0, 295)), /295 bytes, shorter than the 296-byte/);
  expectControlError(() => parseControlFile(new Uint8Array(0)), /0 bytes/);

  for (const off of [0, 17, 100, 287, 288, 291]) {
    const bad = Buffer.from(b);
    bad[off] = bad[off]! ^ 0x40;
    expectControlError(() => parseControlFile(bad), /CRC mismatch/);
  }
  // A flip after the struct is not covered (PostgreSQL reads only the struct).
  const tail = Buffer.from(b);
  tail[4000] = 1;
  assert.doesNotThrow(() => parseControlFile(tail));

  const v = Buffer.from(b);
  v.writeUInt32LE(1201, 8); // PG 13's version
  fixCrc(v);
  expectControlError(() => parseControlFile(v), /version is 1201, expected 1300/);
});

test('encodeControlFile rejects values its C types cannot hold', () => {
  const cases: [string, (d: ControlFileData) => void, RegExp][] = [
    ['nonce', (d) => { d.mockAuthNonce = new Uint8Array(31); }, /mockAuthNonce is 31 bytes/],
    ['u32', (d) => { d.blcksz = 2 ** 32; }, /blcksz/],
    ['i32', (d) => { d.maxConnections = 2 ** 31; }, /maxConnections/],
    ['fraction', (d) => { d.nameDataLen = 1.5; }, /nameDataLen/],
    ['u64', (d) => { d.checkPoint = -1n; }, /checkPoint/],
    ['float', (d) => { d.floatFormat = Number.NaN; }, /floatFormat/],
    ['checkpoint', (d) => { d.checkPointCopy = { ...d.checkPointCopy, nextOid: -1 }; }, /nextOid/],
  ];
  for (const [name, mutate, re] of cases) {
    const d = sample();
    mutate(d);
    assert.throws(() => encodeControlFile(d), (e: unknown) => e instanceof InvalidInputError && re.test(e.message), name);
  }
});
