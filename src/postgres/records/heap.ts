/**
 * Heap (RM_HEAP_ID) and Heap2 (RM_HEAP2_ID) record bodies — only the main-data headers that tell
 * the pageserver about visibility-map side effects.
 *
 * Redo of these records changes the heap page (block reference 0, or 1 for an update's old page)
 * and, when a flag says PD_ALL_VISIBLE was cleared, also clears the page's bits in the visibility
 * map — without a block reference to the VM page. A pageserver that stores VM pages separately has
 * to synthesize that VM change from these flags, so each body exposes the raw flags plus named
 * booleans (`allVisibleCleared`, `oldAllVisibleCleared`, `newAllVisibleCleared`, `allFrozenCleared`).
 * `initPage` is XLOG_HEAP_INIT_PAGE from xl_info (the page is rebuilt from scratch).
 *
 * Layouts (packed little-endian, offsets from the start of the main data):
 *   xl_heap_insert        offnum u16 @0, flags u8 @2                                   (3 bytes)
 *   xl_heap_delete        xmax u32 @0, offnum u16 @4, infobits u8 @6, flags u8 @7      (8)
 *   xl_heap_update        old_xmax @0, old_offnum @4, old_infobits @6, flags @7,
 *                         new_xmax @8, new_offnum u16 @12                              (14)
 *   xl_heap_lock          locking_xid @0, offnum @4, infobits i8 @6, flags @7          (8)
 *   xl_heap_lock_updated  xmax @0, offnum @4, infobits @6, flags @7                    (8)
 *   xl_heap_multi_insert  flags u8 @0, ntuples u16 @2, offsets u16[ntuples] @4 unless INIT_PAGE
 *   xl_heap_visible       cutoff_xid @0, flags u8 @4                                   (5)
 */
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader } from './common.ts';

export const XLOG_HEAP_INSERT = 0x00;
export const XLOG_HEAP_DELETE = 0x10;
export const XLOG_HEAP_UPDATE = 0x20;
export const XLOG_HEAP_TRUNCATE = 0x30;
export const XLOG_HEAP_HOT_UPDATE = 0x40;
export const XLOG_HEAP_CONFIRM = 0x50;
export const XLOG_HEAP_LOCK = 0x60;
export const XLOG_HEAP_INPLACE = 0x70;
export const XLOG_HEAP_OPMASK = 0x70;
export const XLOG_HEAP_INIT_PAGE = 0x80;

export const XLOG_HEAP2_REWRITE = 0x00;
export const XLOG_HEAP2_PRUNE = 0x10;
export const XLOG_HEAP2_VACUUM = 0x20;
export const XLOG_HEAP2_FREEZE_PAGE = 0x30;
export const XLOG_HEAP2_VISIBLE = 0x40;
export const XLOG_HEAP2_MULTI_INSERT = 0x50;
export const XLOG_HEAP2_LOCK_UPDATED = 0x60;
export const XLOG_HEAP2_NEW_CID = 0x70;

export const XLH_INSERT_ALL_VISIBLE_CLEARED = 1 << 0;
export const XLH_INSERT_LAST_IN_MULTI = 1 << 1;
export const XLH_INSERT_IS_SPECULATIVE = 1 << 2;
export const XLH_INSERT_CONTAINS_NEW_TUPLE = 1 << 3;
export const XLH_INSERT_ON_TOAST_RELATION = 1 << 4;
export const XLH_INSERT_ALL_FROZEN_SET = 1 << 5;

export const XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED = 1 << 0;
export const XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED = 1 << 1;

export const XLH_DELETE_ALL_VISIBLE_CLEARED = 1 << 0;

export const XLH_LOCK_ALL_FROZEN_CLEARED = 0x01;

export const VISIBILITYMAP_ALL_VISIBLE = 0x01;
export const VISIBILITYMAP_ALL_FROZEN = 0x02;

export interface HeapInsertBody {
  offnum: number;
  flags: number;
  allVisibleCleared: boolean;
  /** XLH_INSERT_ALL_FROZEN_SET (COPY FREEZE): the page is marked all-visible and all-frozen. */
  allFrozenSet: boolean;
  initPage: boolean;
}

export interface HeapDeleteBody {
  xmax: number;
  offnum: number;
  infobitsSet: number;
  flags: number;
  allVisibleCleared: boolean;
}

export interface HeapUpdateBody {
  oldXmax: number;
  oldOffnum: number;
  oldInfobitsSet: number;
  flags: number;
  newXmax: number;
  newOffnum: number;
  /** PD_ALL_VISIBLE cleared on the old tuple's page (block 1 if present, else block 0). */
  oldAllVisibleCleared: boolean;
  /** PD_ALL_VISIBLE cleared on the new tuple's page (block 0). */
  newAllVisibleCleared: boolean;
  initPage: boolean;
}

export interface HeapLockBody {
  /** May be a MultiXactId. */
  lockingXid: number;
  offnum: number;
  infobitsSet: number;
  flags: number;
  allFrozenCleared: boolean;
}

export interface HeapLockUpdatedBody {
  xmax: number;
  offnum: number;
  infobitsSet: number;
  flags: number;
  allFrozenCleared: boolean;
}

export interface HeapMultiInsertBody {
  flags: number;
  ntuples: number;
  allVisibleCleared: boolean;
  allFrozenSet: boolean;
  initPage: boolean;
}

export interface HeapVisibleBody {
  cutoffXid: number;
  /** VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN bits to set. */
  flags: number;
  allVisible: boolean;
  allFrozen: boolean;
}

function initPage(rec: DecodedRecord): boolean {
  return (rec.info & XLOG_HEAP_INIT_PAGE) !== 0;
}

export function parseHeapInsert(rec: DecodedRecord): HeapInsertBody {
  const r = new BodyReader(rec);
  r.needTotal(3, 'xl_heap_insert');
  const flags = r.data[2]!;
  return {
    offnum: r.u16At(0),
    flags,
    allVisibleCleared: (flags & XLH_INSERT_ALL_VISIBLE_CLEARED) !== 0,
    allFrozenSet: (flags & XLH_INSERT_ALL_FROZEN_SET) !== 0,
    initPage: initPage(rec),
  };
}

export function parseHeapDelete(rec: DecodedRecord): HeapDeleteBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_heap_delete');
  const flags = r.data[7]!;
  return { xmax: r.u32At(0), offnum: r.u16At(4), infobitsSet: r.data[6]!, flags, allVisibleCleared: (flags & XLH_DELETE_ALL_VISIBLE_CLEARED) !== 0 };
}

/** UPDATE and HOT_UPDATE. */
export function parseHeapUpdate(rec: DecodedRecord): HeapUpdateBody {
  const r = new BodyReader(rec);
  r.needTotal(14, 'xl_heap_update');
  const flags = r.data[7]!;
  return {
    oldXmax: r.u32At(0),
    oldOffnum: r.u16At(4),
    oldInfobitsSet: r.data[6]!,
    flags,
    newXmax: r.u32At(8),
    newOffnum: r.u16At(12),
    oldAllVisibleCleared: (flags & XLH_UPDATE_OLD_ALL_VISIBLE_CLEARED) !== 0,
    newAllVisibleCleared: (flags & XLH_UPDATE_NEW_ALL_VISIBLE_CLEARED) !== 0,
    initPage: initPage(rec),
  };
}

export function parseHeapLock(rec: DecodedRecord): HeapLockBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_heap_lock');
  const flags = r.data[7]!;
  return { lockingXid: r.u32At(0), offnum: r.u16At(4), infobitsSet: r.data[6]!, flags, allFrozenCleared: (flags & XLH_LOCK_ALL_FROZEN_CLEARED) !== 0 };
}

export function parseHeapLockUpdated(rec: DecodedRecord): HeapLockUpdatedBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_heap_lock_updated');
  const flags = r.data[7]!;
  return { xmax: r.u32At(0), offnum: r.u16At(4), infobitsSet: r.data[6]!, flags, allFrozenCleared: (flags & XLH_LOCK_ALL_FROZEN_CLEARED) !== 0 };
}

export function parseHeapMultiInsert(rec: DecodedRecord): HeapMultiInsertBody {
  const r = new BodyReader(rec);
  r.needTotal(4, 'xl_heap_multi_insert');
  const flags = r.data[0]!;
  const ntuples = r.u16At(2);
  const init = initPage(rec);
  if (!init) {
    // Without INIT_PAGE the offsets array follows; check it is all there (it is not returned).
    r.pos = 4;
    r.need(2 * ntuples, `offsets of ${ntuples} tuples`);
  }
  return {
    flags,
    ntuples,
    allVisibleCleared: (flags & XLH_INSERT_ALL_VISIBLE_CLEARED) !== 0,
    allFrozenSet: (flags & XLH_INSERT_ALL_FROZEN_SET) !== 0,
    initPage: init,
  };
}

export function parseHeapVisible(rec: DecodedRecord): HeapVisibleBody {
  const r = new BodyReader(rec);
  r.needTotal(5, 'xl_heap_visible');
  const flags = r.data[4]!;
  return {
    cutoffXid: r.u32At(0),
    flags,
    allVisible: (flags & VISIBILITYMAP_ALL_VISIBLE) !== 0,
    allFrozen: (flags & VISIBILITYMAP_ALL_FROZEN) !== 0,
  };
}
