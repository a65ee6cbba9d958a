/**
 * Page-level operations for WAL redo: the PostgreSQL 15 "bufpage" toolkit, on an 8192-byte Buffer,
 * in place.
 *
 * Why exact: redo output is compared byte for byte with PostgreSQL's own post-change images after
 * masking, and the masks hide hint bits, the LSN, the checksum and the free space between pd_lower
 * and pd_upper — but not where tuples sit, not the line pointer array, not pd_lower/pd_upper/pd_special.
 * So every operation here reproduces PostgreSQL's layout decisions exactly: which line pointer an
 * item gets, where its bytes go (items are placed downwards from pd_upper, MAXALIGNed), how
 * compaction orders tuples (by line pointer order, packed down from pd_special), which line
 * pointers get truncated, and when the PD_HAS_FREE_LINES hint is set or cleared.
 *
 * Layout reminders (x86-64, little-endian):
 * - Header: pd_lsn (u32 hi, u32 lo) @0, pd_checksum @8, pd_flags @10, pd_lower @12, pd_upper @14,
 *   pd_special @16, pd_pagesize_version @18, pd_prune_xid u32 @20.
 * - Line pointer n (1-based OffsetNumber) is the u32 at 24 + 4*(n-1), a C bitfield packed from the
 *   low bit: lp_off in bits 0..14, lp_flags in bits 15..16, lp_len in bits 17..31.
 * - "Unused" line pointers are all-zero words; redirects keep their target in lp_off with lp_len 0;
 *   dead pointers without storage are (flags = DEAD, off 0, len 0).
 *
 * Errors: where PostgreSQL quietly returns InvalidOffsetNumber / false (no room, refused slot) the
 * functions here return 0 / false too; where PostgreSQL raises ERROR or PANIC (corrupted header
 * pointers, line pointers outside the tuple area, bad offsets) they throw PageCorruptError, which
 * the rmgr redo functions turn into a RedoError naming the record and block.
 *
 * Allocation: nothing is allocated per call except the item views pageGetItem/pageGetSpecialView
 * return. Compaction uses one module-level scratch page and module-level typed arrays sized for
 * the largest possible line pointer array ((8192 - 24) / 4 = 2042 entries), so every loop and
 * buffer is bounded by the page size.
 *
 * Where the code is: this file is only the entry point and re-exports the public names, so
 * importers need not know the split.
 * - src/redo/page/core.ts: header fields, line pointers, free space, PageAddItem.
 * - src/redo/page/compact.ts: fragmentation repair, line pointer truncation, index tuple delete,
 *   multi-delete, delete without compaction, overwrite (and the compaction scratch).
 * - src/redo/page/vm.ts: visibility-map page bits.
 */
export {
  BLCKSZ, FIRST_OFFSET_NUMBER, INVALID_OFFSET_NUMBER, ITEM_ID_SIZE, LP_DEAD, LP_NORMAL, LP_REDIRECT, LP_UNUSED,
  MAX_HEAP_TUPLE_SIZE, MAX_HEAP_TUPLES_PER_PAGE, MAX_INDEX_TUPLES_PER_PAGE, PD_ALL_VISIBLE, PD_HAS_FREE_LINES, PD_PAGE_FULL,
  PG_PAGE_LAYOUT_VERSION, PageCorruptError, SIZE_OF_PAGE_HEADER, itemIdGetFlags, itemIdGetLen, itemIdGetOff, itemIdGetWord,
  itemIdSet, maxAlign, pageAddItem, pageClearAllVisible, pageClearHasFreeLinePointers, pageGetExactFreeSpace, pageGetFlags,
  pageGetFreeSpace, pageGetHeapFreeSpace, pageGetItem, pageGetLower, pageGetLsn, pageGetMaxOffsetNumber, pageGetPruneXid,
  pageGetSpecial, pageGetSpecialView, pageGetUpper, pageHasFreeLinePointers, pageInit, pageIsAllVisible, pageIsNew,
  pageSetAllVisible, pageSetFlags, pageSetHasFreeLinePointers, pageSetLower, pageSetLsn, pageSetPrunable, pageSetPruneXid,
  pageSetSpecial, pageSetUpper, shortAlign, xidPrecedes,
} from './page/core.ts';
export type { PageAddItemOptions } from './page/core.ts';
export {
  pageIndexMultiDelete, pageIndexTupleDelete, pageIndexTupleDeleteNoCompact, pageIndexTupleOverwrite, pageRepairFragmentation,
  pageTruncateLinePointerArray,
} from './page/compact.ts';
export {
  VISIBILITYMAP_ALL_FROZEN, VISIBILITYMAP_ALL_VISIBLE, VISIBILITYMAP_VALID_BITS, VM_HEAPBLOCKS_PER_PAGE, VM_MAP_OFFSET,
  VM_MAP_SIZE_BYTES, vmBlockOfHeapBlock, vmClearBits, vmGetBits, vmSetBits,
} from './page/vm.ts';
