/**
 * global/pg_control (ControlFileData) for PostgreSQL 15: parse and encode.
 *
 * Why Strata needs it: a basebackup hands a vanilla PostgreSQL a data directory that says "shut
 * down cleanly at L". pg_control is where the server first looks: its CRC and build constants must
 * match the binary, `checkPoint` must point at a checkpoint record in pg_wal, and `state` must be
 * DB_SHUTDOWNED for startup to skip recovery. We start from a real cluster's pg_control (keeping its
 * system identifier, mock-auth nonce and compile-time constants) and change only the checkpoint
 * fields, so the codec must reproduce PostgreSQL's bytes exactly.
 *
 * Layout (x86-64, little-endian; docs/formats-basebackup-draft.md has the table): a 296-byte C
 * struct with natural alignment, followed in the file by zeros up to 8192 bytes. The CRC-32C covers
 * bytes [0, 288) and is stored at 288. Padding inside the struct (20..23, 148..151, 169..171,
 * 177..179, 201..203, 249..251, 292..295) is written as zeros, which is what PostgreSQL writes (the
 * struct lives in zeroed shared memory and the file buffer is zeroed before the copy); the bytes
 * after 296 are zeros too. So parse → encode is byte-exact for every file PostgreSQL wrote; a file
 * whose padding is not zero is still parsed, but re-encoding it normalizes the padding (the CRC is
 * recomputed, so the result stays valid).
 *
 * The CheckPoint struct inside (checkPointCopy, bytes [40, 128)) uses the codec in records/xlog.ts,
 * the same one that reads checkpoint WAL records.
 */
import { crc32c } from './crc32c.ts';
import { formatLsn, type Lsn } from './lsn.ts';
import { encodeCheckPoint, parseCheckPoint, SIZE_OF_CHECKPOINT, type CheckPoint } from './records/xlog.ts';
import { InvalidInputError, StrataError, type ErrorContext } from '../util/errors.ts';

/** PG_CONTROL_VERSION of PostgreSQL 15. */
export const PG_CONTROL_VERSION = 1300;
/** CATALOG_VERSION_NO of PostgreSQL 15 (informational: we keep whatever the file says). */
export const PG15_CATALOG_VERSION_NO = 202209061;
/** Bytes of the file (PG_CONTROL_FILE_SIZE). */
export const PG_CONTROL_FILE_SIZE = 8192;
/** sizeof(ControlFileData) on x86-64. */
export const SIZE_OF_CONTROL_FILE_DATA = 296;
/** Offset of the CRC; the CRC covers [0, CONTROL_FILE_CRC_OFFSET). */
export const CONTROL_FILE_CRC_OFFSET = 288;
export const MOCK_AUTH_NONCE_LEN = 32;
/** The floatFormat constant PostgreSQL uses to detect an incompatible float representation. */
export const FLOAT_FORMAT_VALUE = 1234567.0;

/** DBState (pg_control.h). */
export const DBState = {
  STARTUP: 0,
  SHUTDOWNED: 1,
  SHUTDOWNED_IN_RECOVERY: 2,
  SHUTDOWNING: 3,
  IN_CRASH_RECOVERY: 4,
  IN_ARCHIVE_RECOVERY: 5,
  IN_PRODUCTION: 6,
} as const;
export type DBStateValue = (typeof DBState)[keyof typeof DBState];

/** What pg_controldata prints for each DBState ("Database cluster state:"). */
export const DB_STATE_NAMES: Readonly<Record<number, string>> = {
  0: 'starting up',
  1: 'shut down',
  2: 'shut down in recovery',
  3: 'shutting down',
  4: 'in crash recovery',
  5: 'in archive recovery',
  6: 'in production',
};

/** ControlFileData. Field names follow pg_control.h; units are in the names where they matter. */
export interface ControlFileData {
  systemIdentifier: bigint;
  pgControlVersion: number;
  catalogVersionNo: number;
  /** A DBState value (kept as a number so a parsed file with an unknown state still round-trips). */
  state: number;
  /** pg_time_t of the last pg_control update: Unix seconds. */
  timeSec: bigint;
  /** LSN of the last checkpoint record. */
  checkPoint: Lsn;
  checkPointCopy: CheckPoint;
  /** Fake LSN counter for unlogged relations. */
  unloggedLsn: Lsn;
  minRecoveryPoint: Lsn;
  minRecoveryPointTli: number;
  backupStartPoint: Lsn;
  backupEndPoint: Lsn;
  backupEndRequired: boolean;
  /** 0 minimal, 1 replica, 2 logical. */
  walLevel: number;
  walLogHints: boolean;
  maxConnections: number;
  maxWorkerProcesses: number;
  maxWalSenders: number;
  maxPreparedXacts: number;
  maxLocksPerXact: number;
  trackCommitTimestamp: boolean;
  maxAlign: number;
  floatFormat: number;
  blcksz: number;
  /** Blocks per relation segment file. */
  relsegSize: number;
  xlogBlcksz: number;
  xlogSegSize: number;
  nameDataLen: number;
  indexMaxKeys: number;
  toastMaxChunkSize: number;
  loblksize: number;
  float8ByVal: boolean;
  dataChecksumVersion: number;
  /** 32 bytes. */
  mockAuthNonce: Uint8Array;
}

/** pg_control is unusable: wrong size, bad CRC, or a version we do not speak. */
export class ControlFileError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('control_file_invalid', message, context);
    this.name = 'ControlFileError';
  }
}

// Field offsets inside ControlFileData.
const OFF = {
  systemIdentifier: 0,
  pgControlVersion: 8,
  catalogVersionNo: 12,
  state: 16,
  time: 24,
  checkPoint: 32,
  checkPointCopy: 40,
  unloggedLsn: 128,
  minRecoveryPoint: 136,
  minRecoveryPointTli: 144,
  backupStartPoint: 152,
  backupEndPoint: 160,
  backupEndRequired: 168,
  walLevel: 172,
  walLogHints: 176,
  maxConnections: 180,
  maxWorkerProcesses: 184,
  maxWalSenders: 188,
  maxPreparedXacts: 192,
  maxLocksPerXact: 196,
  trackCommitTimestamp: 200,
  maxAlign: 204,
  floatFormat: 208,
  blcksz: 216,
  relsegSize: 220,
  xlogBlcksz: 224,
  xlogSegSize: 228,
  nameDataLen: 232,
  indexMaxKeys: 236,
  toastMaxChunkSize: 240,
  loblksize: 244,
  float8ByVal: 248,
  dataChecksumVersion: 252,
  mockAuthNonce: 256,
  crc: CONTROL_FILE_CRC_OFFSET,
} as const;

/**
 * Parses pg_control. Checks the size (at least the 296-byte struct; real files are 8192 bytes),
 * the CRC-32C and PG_CONTROL_VERSION; throws ControlFileError saying which check failed.
 */
export function parseControlFile(bytes: Uint8Array): ControlFileData {
  if (bytes.byteLength < SIZE_OF_CONTROL_FILE_DATA) {
    throw new ControlFileError(`pg_control is ${bytes.byteLength} bytes, shorter than the ${SIZE_OF_CONTROL_FILE_DATA}-byte ControlFileData (a real file is ${PG_CONTROL_FILE_SIZE} bytes)`, { sizeBytes: bytes.byteLength });
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const storedCrc = dv.getUint32(OFF.crc, true);
  const computedCrc = crc32c(bytes.subarray(0, CONTROL_FILE_CRC_OFFSET));
  if (storedCrc !== computedCrc) {
    throw new ControlFileError(
      `pg_control CRC mismatch: stored 0x${storedCrc.toString(16).padStart(8, '0')}, computed 0x${computedCrc.toString(16).padStart(8, '0')} over bytes [0, ${CONTROL_FILE_CRC_OFFSET}): the file is damaged or not a PostgreSQL control file`,
      { storedCrc, computedCrc },
    );
  }
  const version = dv.getUint32(OFF.pgControlVersion, true);
  if (version !== PG_CONTROL_VERSION) {
    throw new ControlFileError(`pg_control version is ${version}, expected ${PG_CONTROL_VERSION} (PostgreSQL 15)`, { pgControlVersion: version });
  }
  const bool = (off: number): boolean => dv.getUint8(off) !== 0;
  const u32 = (off: number): number => dv.getUint32(off, true);
  const i32 = (off: number): number => dv.getInt32(off, true);
  const u64 = (off: number): bigint => dv.getBigUint64(off, true);
  const cp = parseCheckPoint(bytes.subarray(OFF.checkPointCopy, OFF.checkPointCopy + SIZE_OF_CHECKPOINT));
  return {
    systemIdentifier: u64(OFF.systemIdentifier),
    pgControlVersion: version,
    catalogVersionNo: u32(OFF.catalogVersionNo),
    state: i32(OFF.state),
    timeSec: dv.getBigInt64(OFF.time, true),
    checkPoint: u64(OFF.checkPoint),
    checkPointCopy: {
      redoLsn: cp.redoLsn,
      thisTimeLineId: cp.thisTimeLineId,
      prevTimeLineId: cp.prevTimeLineId,
      fullPageWrites: cp.fullPageWrites,
      nextXid: cp.nextXid,
      nextOid: cp.nextOid,
      nextMulti: cp.nextMulti,
      nextMultiOffset: cp.nextMultiOffset,
      oldestXid: cp.oldestXid,
      oldestXidDb: cp.oldestXidDb,
      oldestMulti: cp.oldestMulti,
      oldestMultiDb: cp.oldestMultiDb,
      timeUnixSec: cp.timeUnixSec,
      oldestCommitTsXid: cp.oldestCommitTsXid,
      newestCommitTsXid: cp.newestCommitTsXid,
      oldestActiveXid: cp.oldestActiveXid,
    },
    unloggedLsn: u64(OFF.unloggedLsn),
    minRecoveryPoint: u64(OFF.minRecoveryPoint),
    minRecoveryPointTli: u32(OFF.minRecoveryPointTli),
    backupStartPoint: u64(OFF.backupStartPoint),
    backupEndPoint: u64(OFF.backupEndPoint),
    backupEndRequired: bool(OFF.backupEndRequired),
    walLevel: i32(OFF.walLevel),
    walLogHints: bool(OFF.walLogHints),
    maxConnections: i32(OFF.maxConnections),
    maxWorkerProcesses: i32(OFF.maxWorkerProcesses),
    maxWalSenders: i32(OFF.maxWalSenders),
    maxPreparedXacts: i32(OFF.maxPreparedXacts),
    maxLocksPerXact: i32(OFF.maxLocksPerXact),
    trackCommitTimestamp: bool(OFF.trackCommitTimestamp),
    maxAlign: u32(OFF.maxAlign),
    floatFormat: dv.getFloat64(OFF.floatFormat, true),
    blcksz: u32(OFF.blcksz),
    relsegSize: u32(OFF.relsegSize),
    xlogBlcksz: u32(OFF.xlogBlcksz),
    xlogSegSize: u32(OFF.xlogSegSize),
    nameDataLen: u32(OFF.nameDataLen),
    indexMaxKeys: u32(OFF.indexMaxKeys),
    toastMaxChunkSize: u32(OFF.toastMaxChunkSize),
    loblksize: u32(OFF.loblksize),
    float8ByVal: bool(OFF.float8ByVal),
    dataChecksumVersion: u32(OFF.dataChecksumVersion),
    mockAuthNonce: new Uint8Array(bytes.subarray(OFF.mockAuthNonce, OFF.mockAuthNonce + MOCK_AUTH_NONCE_LEN)), // a copy, not a Buffer view
  };
}

function checkInt(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new InvalidInputError(`pg_control field ${name} = ${v} is not an integer in [${min}, ${max}]`, { field: name });
  }
  return v;
}

function checkU64(name: string, v: bigint): bigint {
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new InvalidInputError(`pg_control field ${name} = ${v} is not a 64-bit unsigned integer`, { field: name });
  return v;
}

const U32_MAX = 0xffff_ffff;
const I32_MIN = -0x8000_0000;
const I32_MAX = 0x7fff_ffff;

/**
 * Encodes pg_control: PG_CONTROL_FILE_SIZE bytes, the struct at the start, zeros elsewhere, CRC
 * recomputed. Throws InvalidInputError for a field out of its C type's range or a nonce that is
 * not 32 bytes.
 */
export function encodeControlFile(data: ControlFileData): Buffer {
  const out = Buffer.alloc(PG_CONTROL_FILE_SIZE);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const u32 = (name: string, off: number, v: number): void => dv.setUint32(off, checkInt(name, v, 0, U32_MAX), true);
  const i32 = (name: string, off: number, v: number): void => dv.setInt32(off, checkInt(name, v, I32_MIN, I32_MAX), true);
  const u64 = (name: string, off: number, v: bigint): void => dv.setBigUint64(off, checkU64(name, v), true);
  const bool = (off: number, v: boolean): void => dv.setUint8(off, v ? 1 : 0);

  u64('systemIdentifier', OFF.systemIdentifier, data.systemIdentifier);
  u32('pgControlVersion', OFF.pgControlVersion, data.pgControlVersion);
  u32('catalogVersionNo', OFF.catalogVersionNo, data.catalogVersionNo);
  i32('state', OFF.state, data.state);
  if (data.timeSec < -(2n ** 63n) || data.timeSec >= 2n ** 63n) throw new InvalidInputError(`pg_control field timeSec = ${data.timeSec} is out of range`, { field: 'timeSec' });
  dv.setBigInt64(OFF.time, data.timeSec, true);
  u64('checkPoint', OFF.checkPoint, data.checkPoint);
  out.set(encodeCheckPoint(data.checkPointCopy), OFF.checkPointCopy);
  u64('unloggedLsn', OFF.unloggedLsn, data.unloggedLsn);
  u64('minRecoveryPoint', OFF.minRecoveryPoint, data.minRecoveryPoint);
  u32('minRecoveryPointTli', OFF.minRecoveryPointTli, data.minRecoveryPointTli);
  u64('backupStartPoint', OFF.backupStartPoint, data.backupStartPoint);
  u64('backupEndPoint', OFF.backupEndPoint, data.backupEndPoint);
  bool(OFF.backupEndRequired, data.backupEndRequired);
  i32('walLevel', OFF.walLevel, data.walLevel);
  bool(OFF.walLogHints, data.walLogHints);
  i32('maxConnections', OFF.maxConnections, data.maxConnections);
  i32('maxWorkerProcesses', OFF.maxWorkerProcesses, data.maxWorkerProcesses);
  i32('maxWalSenders', OFF.maxWalSenders, data.maxWalSenders);
  i32('maxPreparedXacts', OFF.maxPreparedXacts, data.maxPreparedXacts);
  i32('maxLocksPerXact', OFF.maxLocksPerXact, data.maxLocksPerXact);
  bool(OFF.trackCommitTimestamp, data.trackCommitTimestamp);
  u32('maxAlign', OFF.maxAlign, data.maxAlign);
  if (!Number.isFinite(data.floatFormat)) throw new InvalidInputError(`pg_control field floatFormat = ${data.floatFormat} is not finite`, { field: 'floatFormat' });
  dv.setFloat64(OFF.floatFormat, data.floatFormat, true);
  u32('blcksz', OFF.blcksz, data.blcksz);
  u32('relsegSize', OFF.relsegSize, data.relsegSize);
  u32('xlogBlcksz', OFF.xlogBlcksz, data.xlogBlcksz);
  u32('xlogSegSize', OFF.xlogSegSize, data.xlogSegSize);
  u32('nameDataLen', OFF.nameDataLen, data.nameDataLen);
  u32('indexMaxKeys', OFF.indexMaxKeys, data.indexMaxKeys);
  u32('toastMaxChunkSize', OFF.toastMaxChunkSize, data.toastMaxChunkSize);
  u32('loblksize', OFF.loblksize, data.loblksize);
  bool(OFF.float8ByVal, data.float8ByVal);
  u32('dataChecksumVersion', OFF.dataChecksumVersion, data.dataChecksumVersion);
  if (data.mockAuthNonce.byteLength !== MOCK_AUTH_NONCE_LEN) {
    throw new InvalidInputError(`pg_control mockAuthNonce is ${data.mockAuthNonce.byteLength} bytes, expected ${MOCK_AUTH_NONCE_LEN}`, { field: 'mockAuthNonce' });
  }
  out.set(data.mockAuthNonce, OFF.mockAuthNonce);
  dv.setUint32(OFF.crc, crc32c(out.subarray(0, CONTROL_FILE_CRC_OFFSET)), true);
  return out;
}

/** A short description for logs: state, checkpoint and redo LSNs. */
export function describeControlFile(data: ControlFileData): string {
  const state = DB_STATE_NAMES[data.state] ?? `unknown state ${data.state}`;
  return `pg_control: ${state}, checkpoint ${formatLsn(data.checkPoint)}, redo ${formatLsn(data.checkPointCopy.redoLsn)}, system ${data.systemIdentifier}`;
}
