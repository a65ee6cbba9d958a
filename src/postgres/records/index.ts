/**
 * Typed bodies of the WAL records a pageserver must interpret.
 *
 * `decodeRecordBody(rec)` looks at a DecodedRecord (../xlogrecord.ts's `decodeXLogRecord` turns raw
 * bytes into one; this goes a step further and reads the main data) and returns a discriminated union keyed by `rmgr` (rmgr.ts's name) and `type`
 * (rmgr.ts's recordTypeName, i.e. what pg_waldump prints, `INSERT+INIT` included), or `null` for
 * records whose bodies the pageserver does not need (index AMs, sequences, heap pruning, custom
 * rmgrs, ...) — those are applied purely from their block references by redo.
 *
 * Rules:
 * - An op code that PostgreSQL 15 never writes for an rmgr interpreted here is an error
 *   (PostgreSQL's redo would PANIC on it), not `null`.
 * - Every parse problem is a WalRecordBodyError naming rmgr, type and LSN.
 * - Byte arrays in bodies (invalidation messages, 2PC state, relmap data) are views into
 *   `rec.bytes`; copy them to keep them beyond the record buffer's life.
 */
import {
  RM_CLOG_ID, RM_DBASE_ID, RM_HEAP2_ID, RM_HEAP_ID, RM_MULTIXACT_ID, RM_RELMAP_ID, RM_SMGR_ID, RM_STANDBY_ID,
  RM_XACT_ID, RM_XLOG_ID,
} from '../rmgr.ts';
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader } from './common.ts';
import * as clog from './clog.ts';
import * as dbase from './dbase.ts';
import * as heap from './heap.ts';
import * as multixact from './multixact.ts';
import * as relmap from './relmap.ts';
import * as smgr from './smgr.ts';
import * as standby from './standby.ts';
import * as xact from './xact.ts';
import * as xlog from './xlog.ts';

export * from './common.ts';
export * from './clog.ts';
export * from './dbase.ts';
export * from './btree.ts';
export * from './heap.ts';
export * from './multixact.ts';
export * from './relmap.ts';
export * from './smgr.ts';
export * from './standby.ts';
export * from './xact.ts';
export * from './xlog.ts';

export type TypedRecord =
  | { rmgr: 'XLOG'; type: 'CHECKPOINT_SHUTDOWN' | 'CHECKPOINT_ONLINE'; body: xlog.ParsedCheckPoint }
  | { rmgr: 'XLOG'; type: 'NOOP' | 'SWITCH' | 'FPI' | 'FPI_FOR_HINT'; body: xlog.EmptyBody }
  | { rmgr: 'XLOG'; type: 'NEXTOID'; body: xlog.NextOidBody }
  | { rmgr: 'XLOG'; type: 'BACKUP_END'; body: xlog.BackupEndBody }
  | { rmgr: 'XLOG'; type: 'PARAMETER_CHANGE'; body: xlog.ParameterChangeBody }
  | { rmgr: 'XLOG'; type: 'RESTORE_POINT'; body: xlog.RestorePointBody }
  | { rmgr: 'XLOG'; type: 'FPW_CHANGE'; body: xlog.FpwChangeBody }
  | { rmgr: 'XLOG'; type: 'END_OF_RECOVERY'; body: xlog.EndOfRecoveryBody }
  | { rmgr: 'XLOG'; type: 'OVERWRITE_CONTRECORD'; body: xlog.OverwriteContrecordBody }
  | { rmgr: 'Transaction'; type: 'COMMIT' | 'ABORT' | 'COMMIT_PREPARED' | 'ABORT_PREPARED'; body: xact.XactFinishBody }
  | { rmgr: 'Transaction'; type: 'PREPARE'; body: xact.XactPrepareBody }
  | { rmgr: 'Transaction'; type: 'ASSIGNMENT'; body: xact.XactAssignmentBody }
  | { rmgr: 'Transaction'; type: 'INVALIDATION'; body: xact.XactInvalidationsBody }
  | { rmgr: 'Storage'; type: 'CREATE'; body: smgr.SmgrCreateBody }
  | { rmgr: 'Storage'; type: 'TRUNCATE'; body: smgr.SmgrTruncateBody }
  | { rmgr: 'CLOG'; type: 'ZEROPAGE'; body: clog.ClogZeroPageBody }
  | { rmgr: 'CLOG'; type: 'TRUNCATE'; body: clog.ClogTruncateBody }
  | { rmgr: 'Database'; type: 'CREATE_FILE_COPY'; body: dbase.DbaseCreateFileCopyBody }
  | { rmgr: 'Database'; type: 'CREATE_WAL_LOG'; body: dbase.DbaseCreateWalLogBody }
  | { rmgr: 'Database'; type: 'DROP'; body: dbase.DbaseDropBody }
  | { rmgr: 'MultiXact'; type: 'ZERO_OFF_PAGE' | 'ZERO_MEM_PAGE'; body: multixact.MultiXactZeroPageBody }
  | { rmgr: 'MultiXact'; type: 'CREATE_ID'; body: multixact.MultiXactCreateBody }
  | { rmgr: 'MultiXact'; type: 'TRUNCATE_ID'; body: multixact.MultiXactTruncateBody }
  | { rmgr: 'RelMap'; type: 'UPDATE'; body: relmap.RelmapUpdateBody }
  | { rmgr: 'Standby'; type: 'LOCK'; body: standby.StandbyLockBody }
  | { rmgr: 'Standby'; type: 'RUNNING_XACTS'; body: standby.RunningXactsBody }
  | { rmgr: 'Standby'; type: 'INVALIDATIONS'; body: standby.StandbyInvalidationsBody }
  | { rmgr: 'Heap'; type: 'INSERT' | 'INSERT+INIT'; body: heap.HeapInsertBody }
  | { rmgr: 'Heap'; type: 'DELETE'; body: heap.HeapDeleteBody }
  | { rmgr: 'Heap'; type: 'UPDATE' | 'UPDATE+INIT' | 'HOT_UPDATE' | 'HOT_UPDATE+INIT'; body: heap.HeapUpdateBody }
  | { rmgr: 'Heap'; type: 'LOCK'; body: heap.HeapLockBody }
  | { rmgr: 'Heap2'; type: 'MULTI_INSERT' | 'MULTI_INSERT+INIT'; body: heap.HeapMultiInsertBody }
  | { rmgr: 'Heap2'; type: 'LOCK_UPDATED'; body: heap.HeapLockUpdatedBody }
  | { rmgr: 'Heap2'; type: 'VISIBLE'; body: heap.HeapVisibleBody };

export type TypedRecordRmgr = TypedRecord['rmgr'];
export type TypedRecordType = TypedRecord['type'];

const EMPTY: xlog.EmptyBody = Object.freeze({}) as xlog.EmptyBody;

function unknownOp(rec: DecodedRecord): never {
  return new BodyReader(rec).fail(`xl_info 0x${rec.info.toString(16).padStart(2, '0')} is not a record type PostgreSQL 15 writes for this resource manager`);
}

function decodeXlog(rec: DecodedRecord): TypedRecord {
  const rmgr = 'XLOG';
  switch (rec.info & 0xf0) {
    case xlog.XLOG_CHECKPOINT_SHUTDOWN: return { rmgr, type: 'CHECKPOINT_SHUTDOWN', body: xlog.parseCheckpointRecord(rec) };
    case xlog.XLOG_CHECKPOINT_ONLINE: return { rmgr, type: 'CHECKPOINT_ONLINE', body: xlog.parseCheckpointRecord(rec) };
    case xlog.XLOG_NOOP: return { rmgr, type: 'NOOP', body: EMPTY };
    case xlog.XLOG_NEXTOID: return { rmgr, type: 'NEXTOID', body: xlog.parseNextOid(rec) };
    case xlog.XLOG_SWITCH: return { rmgr, type: 'SWITCH', body: EMPTY };
    case xlog.XLOG_BACKUP_END: return { rmgr, type: 'BACKUP_END', body: xlog.parseBackupEnd(rec) };
    case xlog.XLOG_PARAMETER_CHANGE: return { rmgr, type: 'PARAMETER_CHANGE', body: xlog.parseParameterChange(rec) };
    case xlog.XLOG_RESTORE_POINT: return { rmgr, type: 'RESTORE_POINT', body: xlog.parseRestorePoint(rec) };
    case xlog.XLOG_FPW_CHANGE: return { rmgr, type: 'FPW_CHANGE', body: xlog.parseFpwChange(rec) };
    case xlog.XLOG_END_OF_RECOVERY: return { rmgr, type: 'END_OF_RECOVERY', body: xlog.parseEndOfRecovery(rec) };
    case xlog.XLOG_FPI_FOR_HINT: return { rmgr, type: 'FPI_FOR_HINT', body: EMPTY };
    case xlog.XLOG_FPI: return { rmgr, type: 'FPI', body: EMPTY };
    case xlog.XLOG_OVERWRITE_CONTRECORD: return { rmgr, type: 'OVERWRITE_CONTRECORD', body: xlog.parseOverwriteContrecord(rec) };
    default: return unknownOp(rec);
  }
}

function decodeXact(rec: DecodedRecord): TypedRecord {
  const rmgr = 'Transaction';
  // XLOG_XACT_HAS_INFO (0x80) is a flag, not part of the op code.
  switch (rec.info & xact.XLOG_XACT_OPMASK) {
    case xact.XLOG_XACT_COMMIT: return { rmgr, type: 'COMMIT', body: xact.parseXactFinish(rec) };
    case xact.XLOG_XACT_PREPARE: return { rmgr, type: 'PREPARE', body: xact.parseXactPrepare(rec) };
    case xact.XLOG_XACT_ABORT: return { rmgr, type: 'ABORT', body: xact.parseXactFinish(rec) };
    case xact.XLOG_XACT_COMMIT_PREPARED: return { rmgr, type: 'COMMIT_PREPARED', body: xact.parseXactFinish(rec) };
    case xact.XLOG_XACT_ABORT_PREPARED: return { rmgr, type: 'ABORT_PREPARED', body: xact.parseXactFinish(rec) };
    case xact.XLOG_XACT_ASSIGNMENT: return { rmgr, type: 'ASSIGNMENT', body: xact.parseXactAssignment(rec) };
    case xact.XLOG_XACT_INVALIDATIONS: return { rmgr, type: 'INVALIDATION', body: xact.parseXactInvalidations(rec) };
    default: return unknownOp(rec);
  }
}

function decodeHeap(rec: DecodedRecord): TypedRecord | null {
  const rmgr = 'Heap';
  switch (rec.info & 0xf0) {
    case heap.XLOG_HEAP_INSERT: return { rmgr, type: 'INSERT', body: heap.parseHeapInsert(rec) };
    case heap.XLOG_HEAP_INSERT | heap.XLOG_HEAP_INIT_PAGE: return { rmgr, type: 'INSERT+INIT', body: heap.parseHeapInsert(rec) };
    case heap.XLOG_HEAP_DELETE: return { rmgr, type: 'DELETE', body: heap.parseHeapDelete(rec) };
    case heap.XLOG_HEAP_UPDATE: return { rmgr, type: 'UPDATE', body: heap.parseHeapUpdate(rec) };
    case heap.XLOG_HEAP_UPDATE | heap.XLOG_HEAP_INIT_PAGE: return { rmgr, type: 'UPDATE+INIT', body: heap.parseHeapUpdate(rec) };
    case heap.XLOG_HEAP_HOT_UPDATE: return { rmgr, type: 'HOT_UPDATE', body: heap.parseHeapUpdate(rec) };
    case heap.XLOG_HEAP_HOT_UPDATE | heap.XLOG_HEAP_INIT_PAGE: return { rmgr, type: 'HOT_UPDATE+INIT', body: heap.parseHeapUpdate(rec) };
    case heap.XLOG_HEAP_LOCK: return { rmgr, type: 'LOCK', body: heap.parseHeapLock(rec) };
    case heap.XLOG_HEAP_TRUNCATE:
    case heap.XLOG_HEAP_CONFIRM:
    case heap.XLOG_HEAP_INPLACE:
      return null;
    default: return unknownOp(rec);
  }
}

function decodeHeap2(rec: DecodedRecord): TypedRecord | null {
  const rmgr = 'Heap2';
  switch (rec.info & 0xf0) {
    case heap.XLOG_HEAP2_MULTI_INSERT: return { rmgr, type: 'MULTI_INSERT', body: heap.parseHeapMultiInsert(rec) };
    case heap.XLOG_HEAP2_MULTI_INSERT | heap.XLOG_HEAP_INIT_PAGE: return { rmgr, type: 'MULTI_INSERT+INIT', body: heap.parseHeapMultiInsert(rec) };
    case heap.XLOG_HEAP2_LOCK_UPDATED: return { rmgr, type: 'LOCK_UPDATED', body: heap.parseHeapLockUpdated(rec) };
    case heap.XLOG_HEAP2_VISIBLE: return { rmgr, type: 'VISIBLE', body: heap.parseHeapVisible(rec) };
    case heap.XLOG_HEAP2_REWRITE:
    case heap.XLOG_HEAP2_PRUNE:
    case heap.XLOG_HEAP2_VACUUM:
    case heap.XLOG_HEAP2_FREEZE_PAGE:
    case heap.XLOG_HEAP2_NEW_CID:
      return null;
    default: return unknownOp(rec);
  }
}

/**
 * The typed body of `rec`, or null when the pageserver does not interpret this record's body.
 * Throws WalRecordBodyError when the main data does not match the record type.
 */
export function decodeRecordBody(rec: DecodedRecord): TypedRecord | null {
  const op = rec.info & 0xf0;
  switch (rec.rmid) {
    case RM_XLOG_ID: return decodeXlog(rec);
    case RM_XACT_ID: return decodeXact(rec);
    case RM_SMGR_ID: {
      const rmgr = 'Storage';
      if (op === smgr.XLOG_SMGR_CREATE) return { rmgr, type: 'CREATE', body: smgr.parseSmgrCreate(rec) };
      if (op === smgr.XLOG_SMGR_TRUNCATE) return { rmgr, type: 'TRUNCATE', body: smgr.parseSmgrTruncate(rec) };
      return unknownOp(rec);
    }
    case RM_CLOG_ID: {
      const rmgr = 'CLOG';
      if (op === clog.CLOG_ZEROPAGE) return { rmgr, type: 'ZEROPAGE', body: clog.parseClogZeroPage(rec) };
      if (op === clog.CLOG_TRUNCATE) return { rmgr, type: 'TRUNCATE', body: clog.parseClogTruncate(rec) };
      return unknownOp(rec);
    }
    case RM_DBASE_ID: {
      const rmgr = 'Database';
      if (op === dbase.XLOG_DBASE_CREATE_FILE_COPY) return { rmgr, type: 'CREATE_FILE_COPY', body: dbase.parseDbaseCreateFileCopy(rec) };
      if (op === dbase.XLOG_DBASE_CREATE_WAL_LOG) return { rmgr, type: 'CREATE_WAL_LOG', body: dbase.parseDbaseCreateWalLog(rec) };
      if (op === dbase.XLOG_DBASE_DROP) return { rmgr, type: 'DROP', body: dbase.parseDbaseDrop(rec) };
      return unknownOp(rec);
    }
    case RM_MULTIXACT_ID: {
      const rmgr = 'MultiXact';
      if (op === multixact.XLOG_MULTIXACT_ZERO_OFF_PAGE) return { rmgr, type: 'ZERO_OFF_PAGE', body: multixact.parseMultiXactZeroPage(rec) };
      if (op === multixact.XLOG_MULTIXACT_ZERO_MEM_PAGE) return { rmgr, type: 'ZERO_MEM_PAGE', body: multixact.parseMultiXactZeroPage(rec) };
      if (op === multixact.XLOG_MULTIXACT_CREATE_ID) return { rmgr, type: 'CREATE_ID', body: multixact.parseMultiXactCreate(rec) };
      if (op === multixact.XLOG_MULTIXACT_TRUNCATE_ID) return { rmgr, type: 'TRUNCATE_ID', body: multixact.parseMultiXactTruncate(rec) };
      return unknownOp(rec);
    }
    case RM_RELMAP_ID:
      if (op === relmap.XLOG_RELMAP_UPDATE) return { rmgr: 'RelMap', type: 'UPDATE', body: relmap.parseRelmapUpdate(rec) };
      return unknownOp(rec);
    case RM_STANDBY_ID: {
      const rmgr = 'Standby';
      if (op === standby.XLOG_STANDBY_LOCK) return { rmgr, type: 'LOCK', body: standby.parseStandbyLock(rec) };
      if (op === standby.XLOG_RUNNING_XACTS) return { rmgr, type: 'RUNNING_XACTS', body: standby.parseRunningXacts(rec) };
      if (op === standby.XLOG_INVALIDATIONS) return { rmgr, type: 'INVALIDATIONS', body: standby.parseStandbyInvalidations(rec) };
      return unknownOp(rec);
    }
    case RM_HEAP_ID: return decodeHeap(rec);
    case RM_HEAP2_ID: return decodeHeap2(rec);
    default:
      return null;
  }
}
