/**
 * Visibility-map page helpers: which VM block covers a heap block, and reading, setting and
 * clearing that block's two bits. A VM page is an ordinary page without a special area, so these
 * need only the page size and header size from core.ts; they are kept apart from the bufpage
 * operations because they work on the map bytes, never on line pointers or items.
 * Importers use src/redo/page.ts, which re-exports everything here.
 */
import { BLCKSZ, SIZE_OF_PAGE_HEADER, maxAlign } from './core.ts';

// ---------------------------------------------------------------------------------------------
// Visibility map pages. A VM page is a standard page with no special area; its map starts right
// after the 24-byte header and holds 2 bits per heap block (bit 0 all-visible, bit 1 all-frozen),
// four heap blocks per byte, low bits first.

export const VISIBILITYMAP_ALL_VISIBLE = 0x01;
export const VISIBILITYMAP_ALL_FROZEN = 0x02;
export const VISIBILITYMAP_VALID_BITS = 0x03;
/** Offset of the map within a VM page: MAXALIGN(page header). */
export const VM_MAP_OFFSET = maxAlign(SIZE_OF_PAGE_HEADER);
/** Map bytes per VM page and heap blocks covered by one VM page (8168 * 4 = 32672). */
export const VM_MAP_SIZE_BYTES = BLCKSZ - VM_MAP_OFFSET;
export const VM_HEAPBLOCKS_PER_PAGE = VM_MAP_SIZE_BYTES * 4;

/** The VM block that holds the bits of heap block `heapBlk`. */
export function vmBlockOfHeapBlock(heapBlk: number): number {
  return Math.floor(heapBlk / VM_HEAPBLOCKS_PER_PAGE);
}

/** The two VM bits of heap block `heapBlk` on its VM page. */
export function vmGetBits(vmPage: Buffer, heapBlk: number): number {
  const inPage = heapBlk % VM_HEAPBLOCKS_PER_PAGE;
  return (vmPage[VM_MAP_OFFSET + (inPage >>> 2)]! >>> ((inPage & 3) * 2)) & VISIBILITYMAP_VALID_BITS;
}

/**
 * Sets `flags` for heap block `heapBlk` on its VM page (visibilitymap_set's page change). Returns
 * true when `flags` differed from the current bits — the case in which PostgreSQL dirties the page
 * and stamps its LSN (even if the OR changes nothing, e.g. setting ALL_VISIBLE when both are set).
 */
export function vmSetBits(vmPage: Buffer, heapBlk: number, flags: number): boolean {
  const inPage = heapBlk % VM_HEAPBLOCKS_PER_PAGE;
  const at = VM_MAP_OFFSET + (inPage >>> 2);
  const shift = (inPage & 3) * 2;
  const cur = (vmPage[at]! >>> shift) & VISIBILITYMAP_VALID_BITS;
  if (flags === cur) return false;
  vmPage[at] = vmPage[at]! | ((flags & VISIBILITYMAP_VALID_BITS) << shift);
  return true;
}

/** Clears `flags` for heap block `heapBlk` (visibilitymap_clear); true when a bit was set. */
export function vmClearBits(vmPage: Buffer, heapBlk: number, flags: number): boolean {
  const inPage = heapBlk % VM_HEAPBLOCKS_PER_PAGE;
  const at = VM_MAP_OFFSET + (inPage >>> 2);
  const mask = (flags & VISIBILITYMAP_VALID_BITS) << ((inPage & 3) * 2);
  if ((vmPage[at]! & mask) === 0) return false;
  vmPage[at] = vmPage[at]! & ~mask;
  return true;
}
