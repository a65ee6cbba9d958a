/**
 * CLOG (RM_CLOG_ID) record bodies: ZEROPAGE (a new pg_xact page is started) and TRUNCATE (pages
 * before `pageno` are removed; oldestXact/oldestXactDb advance the cluster's wraparound horizon).
 * Page numbers are signed ints in PostgreSQL; negative values cannot occur and are rejected.
 */
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader } from './common.ts';

export const CLOG_ZEROPAGE = 0x00;
export const CLOG_TRUNCATE = 0x10;

export interface ClogZeroPageBody {
  pageno: number;
}

export interface ClogTruncateBody {
  pageno: number;
  oldestXact: number;
  oldestXactDb: number;
}

export function parseClogZeroPage(rec: DecodedRecord): ClogZeroPageBody {
  const r = new BodyReader(rec);
  const pageno = r.i32('pageno');
  if (pageno < 0) r.fail(`page number ${pageno} is negative`);
  return { pageno };
}

export function parseClogTruncate(rec: DecodedRecord): ClogTruncateBody {
  const r = new BodyReader(rec);
  r.needTotal(12, 'xl_clog_truncate');
  const pageno = r.i32At(0);
  if (pageno < 0) r.fail(`page number ${pageno} is negative`);
  return { pageno, oldestXact: r.u32At(4), oldestXactDb: r.u32At(8) };
}
