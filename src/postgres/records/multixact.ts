/**
 * MultiXact (RM_MULTIXACT_ID) record bodies: ZERO_OFF_PAGE / ZERO_MEM_PAGE (a new page of
 * pg_multixact/offsets or /members), CREATE_ID (a new multixact with its members) and TRUNCATE_ID.
 *
 * CREATE_ID is what the pageserver needs to rebuild the offsets and members SLRUs: multixact `mid`
 * starts at member offset `moff` and has `nmembers` {xid, status} pairs. A member status outside
 * MultiXactStatus (0..5) is rejected: redo would store it into 8 flag bits and corrupt neighbours.
 */
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader } from './common.ts';

export const XLOG_MULTIXACT_ZERO_OFF_PAGE = 0x00;
export const XLOG_MULTIXACT_ZERO_MEM_PAGE = 0x10;
export const XLOG_MULTIXACT_CREATE_ID = 0x20;
export const XLOG_MULTIXACT_TRUNCATE_ID = 0x30;

/** MultiXactStatus values, in enum order; the short names are the ones pg_waldump prints. */
export const MULTIXACT_STATUS_NAMES = ['keysh', 'sh', 'fornokeyupd', 'forupd', 'nokeyupd', 'upd'] as const;
export const MAX_MULTIXACT_STATUS = 5;

export interface MultiXactZeroPageBody {
  pageno: number;
}

export interface MultiXactMember {
  xid: number;
  /** MultiXactStatus: 0 ForKeyShare, 1 ForShare, 2 ForNoKeyUpdate, 3 ForUpdate, 4 NoKeyUpdate, 5 Update. */
  status: number;
}

export interface MultiXactCreateBody {
  mid: number;
  moff: number;
  nmembers: number;
  members: MultiXactMember[];
}

export interface MultiXactTruncateBody {
  oldestMultiDb: number;
  startTruncOff: number;
  endTruncOff: number;
  startTruncMemb: number;
  endTruncMemb: number;
}

export function parseMultiXactZeroPage(rec: DecodedRecord): MultiXactZeroPageBody {
  const r = new BodyReader(rec);
  const pageno = r.i32('pageno');
  if (pageno < 0) r.fail(`page number ${pageno} is negative`);
  return { pageno };
}

export function parseMultiXactCreate(rec: DecodedRecord): MultiXactCreateBody {
  const r = new BodyReader(rec);
  const mid = r.u32('mid');
  const moff = r.u32('moff');
  const nmembers = r.i32('nmembers');
  r.checkCount(nmembers, 8, `member count ${nmembers}`);
  const members = new Array<MultiXactMember>(nmembers);
  for (let i = 0; i < nmembers; i++) {
    const xid = r.u32At(r.pos);
    const status = r.u32At(r.pos + 4);
    if (status > MAX_MULTIXACT_STATUS) r.fail(`member ${i} (xid ${xid}) has status ${status}, not a MultiXactStatus (0..${MAX_MULTIXACT_STATUS})`);
    members[i] = { xid, status };
    r.pos += 8;
  }
  return { mid, moff, nmembers, members };
}

export function parseMultiXactTruncate(rec: DecodedRecord): MultiXactTruncateBody {
  const r = new BodyReader(rec);
  r.needTotal(20, 'xl_multixact_truncate');
  return { oldestMultiDb: r.u32At(0), startTruncOff: r.u32At(4), endTruncOff: r.u32At(8), startTruncMemb: r.u32At(12), endTruncMemb: r.u32At(16) };
}
