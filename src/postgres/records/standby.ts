/**
 * Standby (RM_STANDBY_ID) record bodies: RUNNING_XACTS (a snapshot of running transactions, which
 * gives the pageserver lower bounds for nextXid and the oldest running xid), LOCK (the
 * AccessExclusiveLocks a hot standby must take) and INVALIDATIONS (summarised: counts only).
 *
 * RUNNING_XACTS quirk: the xid array (xcnt top-level xids followed by subxcnt subxids) is logged
 * only when xcnt > 0, so with xcnt == 0 no subxids are read even if subxcnt says otherwise.
 */
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader, SIZE_OF_SHARED_INVAL_MESSAGE } from './common.ts';

export const XLOG_STANDBY_LOCK = 0x00;
export const XLOG_RUNNING_XACTS = 0x10;
export const XLOG_INVALIDATIONS = 0x20;

export interface RunningXactsBody {
  xcnt: number;
  subxcnt: number;
  subxidOverflow: boolean;
  nextXid: number;
  oldestRunningXid: number;
  latestCompletedXid: number;
  /** The xcnt top-level xids. */
  xids: number[];
  /** The subxcnt subtransaction xids (empty when xcnt is 0, see above). */
  subxids: number[];
}

export function parseRunningXacts(rec: DecodedRecord): RunningXactsBody {
  const r = new BodyReader(rec);
  r.needTotal(24, 'xl_running_xacts');
  const xcnt = r.i32At(0);
  const subxcnt = r.i32At(4);
  const subxidOverflow = r.data[8]! !== 0;
  const nextXid = r.u32At(12);
  const oldestRunningXid = r.u32At(16);
  const latestCompletedXid = r.u32At(20);
  r.pos = 24;
  if (xcnt < 0) r.fail(`xcnt ${xcnt} is negative`);
  if (subxcnt < 0) r.fail(`subxcnt ${subxcnt} is negative`);
  let xids: number[] = [];
  let subxids: number[] = [];
  if (xcnt > 0) {
    r.checkCount(xcnt + subxcnt, 4, `xcnt ${xcnt} + subxcnt ${subxcnt} xids`);
    xids = r.u32Array(xcnt, 'xid');
    subxids = r.u32Array(subxcnt, 'subxid');
  }
  return { xcnt, subxcnt, subxidOverflow, nextXid, oldestRunningXid, latestCompletedXid, xids, subxids };
}

export interface StandbyLock {
  xid: number;
  dbOid: number;
  relOid: number;
}

export interface StandbyLockBody {
  locks: StandbyLock[];
}

export function parseStandbyLock(rec: DecodedRecord): StandbyLockBody {
  const r = new BodyReader(rec);
  const n = r.i32('lock count');
  r.checkCount(n, 12, `lock count ${n}`);
  const locks = new Array<StandbyLock>(n);
  for (let i = 0; i < n; i++) {
    const p = r.pos + 12 * i;
    locks[i] = { xid: r.u32At(p), dbOid: r.u32At(p + 4), relOid: r.u32At(p + 8) };
  }
  r.pos += 12 * n;
  return { locks };
}

export interface StandbyInvalidationsBody {
  dbId: number;
  tsId: number;
  relcacheInitFileInval: boolean;
  count: number;
}

export function parseStandbyInvalidations(rec: DecodedRecord): StandbyInvalidationsBody {
  const r = new BodyReader(rec);
  r.needTotal(16, 'xl_invalidations');
  const count = r.i32At(12);
  r.pos = 16;
  r.checkCount(count, SIZE_OF_SHARED_INVAL_MESSAGE, `invalidation message count ${count}`);
  return { dbId: r.u32At(0), tsId: r.u32At(4), relcacheInitFileInval: r.data[8]! !== 0, count };
}
