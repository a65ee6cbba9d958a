/**
 * XLOG (RM_XLOG_ID) record bodies, and the CheckPoint struct codec.
 *
 * CheckPoint (88 bytes, catalog/pg_control.h) is shared by the checkpoint records and pg_control's
 * checkPointCopy, and the basebackup code synthesizes one, so it has both a parser and an encoder
 * here (`encodeCheckPoint` zero-fills the padding at 17..23, 60..63 and 84..87, so encoding a parsed
 * struct reproduces PostgreSQL's bytes whenever PostgreSQL's padding was zero). nextXid is a
 * FullTransactionId (epoch << 32 | xid) and kept whole as a bigint; the parser also returns the split
 * that pg_waldump prints as `xid epoch:xid`. CheckPoint.time is pg_time_t — Unix *seconds* — unlike
 * the TimestampTz (µs since 2000) fields of the other records.
 *
 * SWITCH and NOOP have no body; FPI and FPI_FOR_HINT have only block references (the images), so
 * their typed body is empty and callers use `rec.blocks`.
 */
import { InvalidInputError } from '../../util/errors.ts';
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader, decodeCString, fullXidEpoch, fullXidXid } from './common.ts';

export const XLOG_CHECKPOINT_SHUTDOWN = 0x00;
export const XLOG_CHECKPOINT_ONLINE = 0x10;
export const XLOG_NOOP = 0x20;
export const XLOG_NEXTOID = 0x30;
export const XLOG_SWITCH = 0x40;
export const XLOG_BACKUP_END = 0x50;
export const XLOG_PARAMETER_CHANGE = 0x60;
export const XLOG_RESTORE_POINT = 0x70;
export const XLOG_FPW_CHANGE = 0x80;
export const XLOG_END_OF_RECOVERY = 0x90;
export const XLOG_FPI_FOR_HINT = 0xa0;
export const XLOG_FPI = 0xb0;
export const XLOG_OVERWRITE_CONTRECORD = 0xd0;

export const SIZE_OF_CHECKPOINT = 88;

/** The CheckPoint struct. */
export interface CheckPoint {
  redoLsn: bigint;
  thisTimeLineId: number;
  prevTimeLineId: number;
  fullPageWrites: boolean;
  /** FullTransactionId: epoch << 32 | xid. */
  nextXid: bigint;
  nextOid: number;
  nextMulti: number;
  nextMultiOffset: number;
  oldestXid: number;
  oldestXidDb: number;
  oldestMulti: number;
  oldestMultiDb: number;
  /** pg_time_t: Unix seconds. */
  timeUnixSec: bigint;
  oldestCommitTsXid: number;
  newestCommitTsXid: number;
  oldestActiveXid: number;
}

/** A parsed CheckPoint, with nextXid also split the way pg_waldump prints it. */
export interface ParsedCheckPoint extends CheckPoint {
  nextXidEpoch: number;
  /** The 32-bit TransactionId part of nextXid. */
  nextXid32: number;
}

function readCheckPoint(dv: DataView): ParsedCheckPoint {
  const nextXid = dv.getBigUint64(24, true);
  return {
    redoLsn: dv.getBigUint64(0, true),
    thisTimeLineId: dv.getUint32(8, true),
    prevTimeLineId: dv.getUint32(12, true),
    fullPageWrites: dv.getUint8(16) !== 0,
    nextXid,
    nextXidEpoch: fullXidEpoch(nextXid),
    nextXid32: fullXidXid(nextXid),
    nextOid: dv.getUint32(32, true),
    nextMulti: dv.getUint32(36, true),
    nextMultiOffset: dv.getUint32(40, true),
    oldestXid: dv.getUint32(44, true),
    oldestXidDb: dv.getUint32(48, true),
    oldestMulti: dv.getUint32(52, true),
    oldestMultiDb: dv.getUint32(56, true),
    timeUnixSec: dv.getBigInt64(64, true),
    oldestCommitTsXid: dv.getUint32(72, true),
    newestCommitTsXid: dv.getUint32(76, true),
    oldestActiveXid: dv.getUint32(80, true),
  };
}

/** Parses an 88-byte CheckPoint (a checkpoint record's main data, or pg_control bytes [40, 128)). */
export function parseCheckPoint(bytes: Uint8Array): ParsedCheckPoint {
  if (bytes.byteLength !== SIZE_OF_CHECKPOINT) {
    throw new InvalidInputError(`CheckPoint is ${bytes.byteLength} bytes, expected ${SIZE_OF_CHECKPOINT}`, { sizeBytes: bytes.byteLength });
  }
  return readCheckPoint(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

function checkU32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new InvalidInputError(`CheckPoint.${name} = ${v} is not a 32-bit unsigned integer`, { field: name });
  return v;
}

/** Encodes a CheckPoint into its 88-byte form (padding zeroed). Extra fields (nextXidEpoch, ...) are ignored. */
export function encodeCheckPoint(cp: CheckPoint): Uint8Array {
  const out = new Uint8Array(SIZE_OF_CHECKPOINT);
  const dv = new DataView(out.buffer);
  if (cp.redoLsn < 0n || cp.redoLsn > 0xffff_ffff_ffff_ffffn) throw new InvalidInputError(`CheckPoint.redoLsn ${cp.redoLsn} is out of range`, { field: 'redoLsn' });
  if (cp.nextXid < 0n || cp.nextXid > 0xffff_ffff_ffff_ffffn) throw new InvalidInputError(`CheckPoint.nextXid ${cp.nextXid} is out of range`, { field: 'nextXid' });
  if (cp.timeUnixSec < -(2n ** 63n) || cp.timeUnixSec >= 2n ** 63n) throw new InvalidInputError(`CheckPoint.timeUnixSec ${cp.timeUnixSec} is out of range`, { field: 'timeUnixSec' });
  dv.setBigUint64(0, cp.redoLsn, true);
  dv.setUint32(8, checkU32('thisTimeLineId', cp.thisTimeLineId), true);
  dv.setUint32(12, checkU32('prevTimeLineId', cp.prevTimeLineId), true);
  dv.setUint8(16, cp.fullPageWrites ? 1 : 0);
  dv.setBigUint64(24, cp.nextXid, true);
  dv.setUint32(32, checkU32('nextOid', cp.nextOid), true);
  dv.setUint32(36, checkU32('nextMulti', cp.nextMulti), true);
  dv.setUint32(40, checkU32('nextMultiOffset', cp.nextMultiOffset), true);
  dv.setUint32(44, checkU32('oldestXid', cp.oldestXid), true);
  dv.setUint32(48, checkU32('oldestXidDb', cp.oldestXidDb), true);
  dv.setUint32(52, checkU32('oldestMulti', cp.oldestMulti), true);
  dv.setUint32(56, checkU32('oldestMultiDb', cp.oldestMultiDb), true);
  dv.setBigInt64(64, cp.timeUnixSec, true);
  dv.setUint32(72, checkU32('oldestCommitTsXid', cp.oldestCommitTsXid), true);
  dv.setUint32(76, checkU32('newestCommitTsXid', cp.newestCommitTsXid), true);
  dv.setUint32(80, checkU32('oldestActiveXid', cp.oldestActiveXid), true);
  return out;
}

/** CHECKPOINT_SHUTDOWN / CHECKPOINT_ONLINE. */
export function parseCheckpointRecord(rec: DecodedRecord): ParsedCheckPoint {
  const r = new BodyReader(rec);
  r.needTotal(SIZE_OF_CHECKPOINT, 'CheckPoint');
  return readCheckPoint(r.view);
}

export type EmptyBody = Record<string, never>;

export interface NextOidBody {
  nextOid: number;
}

export function parseNextOid(rec: DecodedRecord): NextOidBody {
  const r = new BodyReader(rec);
  return { nextOid: r.u32('nextOid') };
}

export interface BackupEndBody {
  /** The backup's start point (redo LSN of its checkpoint). */
  startLsn: bigint;
}

export function parseBackupEnd(rec: DecodedRecord): BackupEndBody {
  const r = new BodyReader(rec);
  return { startLsn: r.u64('backup start point') };
}

export const WAL_LEVEL_NAMES = ['minimal', 'replica', 'logical'] as const;

export interface ParameterChangeBody {
  maxConnections: number;
  maxWorkerProcesses: number;
  maxWalSenders: number;
  maxPreparedXacts: number;
  maxLocksPerXact: number;
  /** 0 minimal, 1 replica, 2 logical. */
  walLevel: number;
  /** The name pg_waldump prints, or '?' for an unknown level. */
  walLevelName: string;
  walLogHints: boolean;
  trackCommitTimestamp: boolean;
}

export function parseParameterChange(rec: DecodedRecord): ParameterChangeBody {
  const r = new BodyReader(rec);
  // sizeof(xl_parameter_change) is 28 (6 ints, 2 bools, 2 bytes of padding); PostgreSQL copies all 28.
  r.needTotal(28, 'xl_parameter_change');
  const walLevel = r.i32At(20);
  return {
    maxConnections: r.i32At(0),
    maxWorkerProcesses: r.i32At(4),
    maxWalSenders: r.i32At(8),
    maxPreparedXacts: r.i32At(12),
    maxLocksPerXact: r.i32At(16),
    walLevel,
    walLevelName: WAL_LEVEL_NAMES[walLevel] ?? '?',
    walLogHints: r.data[24]! !== 0,
    trackCommitTimestamp: r.data[25]! !== 0,
  };
}

export const MAXFNAMELEN = 64;

export interface RestorePointBody {
  timeUs: bigint;
  name: string;
}

export function parseRestorePoint(rec: DecodedRecord): RestorePointBody {
  const r = new BodyReader(rec);
  r.needTotal(8 + MAXFNAMELEN, 'xl_restore_point');
  const timeUs = r.i64At(0);
  const nameBytes = r.data.subarray(8, 8 + MAXFNAMELEN);
  const nul = nameBytes.indexOf(0);
  if (nul < 0) r.fail(`restore point name has no terminating NUL within ${MAXFNAMELEN} bytes`);
  return { timeUs, name: decodeCString(nameBytes.subarray(0, nul)) };
}

export interface FpwChangeBody {
  fullPageWrites: boolean;
}

export function parseFpwChange(rec: DecodedRecord): FpwChangeBody {
  const r = new BodyReader(rec);
  return { fullPageWrites: r.bool('full_page_writes') };
}

export interface EndOfRecoveryBody {
  endTimeUs: bigint;
  thisTimeLineId: number;
  prevTimeLineId: number;
}

export function parseEndOfRecovery(rec: DecodedRecord): EndOfRecoveryBody {
  const r = new BodyReader(rec);
  r.needTotal(16, 'xl_end_of_recovery');
  return { endTimeUs: r.i64At(0), thisTimeLineId: r.u32At(8), prevTimeLineId: r.u32At(12) };
}

export interface OverwriteContrecordBody {
  overwrittenLsn: bigint;
  timeUs: bigint;
}

export function parseOverwriteContrecord(rec: DecodedRecord): OverwriteContrecordBody {
  const r = new BodyReader(rec);
  r.needTotal(16, 'xl_overwrite_contrecord');
  return { overwrittenLsn: r.u64At(0), timeUs: r.i64At(8) };
}
