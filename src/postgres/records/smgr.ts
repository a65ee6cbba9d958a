/**
 * Storage manager (RM_SMGR_ID) record bodies: CREATE (a relation fork file comes into being) and
 * TRUNCATE (a relation is cut to `blkno` blocks; the flags say which forks).
 *
 * Both records carry no block references; the pageserver must act on them directly (create an
 * empty fork with size 0, or set the relation size). TRUNCATE of the VM/FSM forks also implies
 * zeroing the tail of the last kept VM/FSM page, which PostgreSQL does without logging an image;
 * the flags tell the caller which of those to do. A fork number outside 0..3 is rejected because
 * no PostgreSQL 15 relation has one.
 */
import type { DecodedRecord, RelFileNode } from '../xlogrecord.ts';
import { BodyReader } from './common.ts';

export const XLOG_SMGR_CREATE = 0x10;
export const XLOG_SMGR_TRUNCATE = 0x20;

export const SMGR_TRUNCATE_HEAP = 0x0001;
export const SMGR_TRUNCATE_VM = 0x0002;
export const SMGR_TRUNCATE_FSM = 0x0004;

/** MAX_FORKNUM (INIT_FORKNUM). */
export const MAX_FORKNUM = 3;

export interface SmgrCreateBody {
  rnode: RelFileNode;
  forkNum: number;
}

export interface SmgrTruncateBody {
  /** New size of the truncated forks' relation, in blocks (for VM/FSM: the heap block count they map). */
  blkno: number;
  rnode: RelFileNode;
  flags: number;
  truncateHeap: boolean;
  truncateVm: boolean;
  truncateFsm: boolean;
}

export function parseSmgrCreate(rec: DecodedRecord): SmgrCreateBody {
  const r = new BodyReader(rec);
  r.needTotal(16, 'xl_smgr_create');
  const rnode = r.relFileNode('rnode');
  const forkNum = r.i32('forkNum');
  if (forkNum < 0 || forkNum > MAX_FORKNUM) r.fail(`fork number ${forkNum} is not 0..${MAX_FORKNUM}`);
  return { rnode, forkNum };
}

export function parseSmgrTruncate(rec: DecodedRecord): SmgrTruncateBody {
  const r = new BodyReader(rec);
  r.needTotal(20, 'xl_smgr_truncate');
  const blkno = r.u32('blkno');
  const rnode = r.relFileNode('rnode');
  const flags = r.i32('flags');
  return {
    blkno, rnode, flags,
    truncateHeap: (flags & SMGR_TRUNCATE_HEAP) !== 0,
    truncateVm: (flags & SMGR_TRUNCATE_VM) !== 0,
    truncateFsm: (flags & SMGR_TRUNCATE_FSM) !== 0,
  };
}
