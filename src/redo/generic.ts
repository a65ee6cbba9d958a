/**
 * Generic WAL records (RM_GENERIC_ID): the page-delta format extensions such as contrib/bloom use
 * through generic_xlog.h.
 *
 * Each block reference is either a full-page image for apply (GENERIC_XLOG_FULL_IMAGE, or an image
 * forced by a checkpoint — restored by the caller, no redo), or carries as its block data a delta:
 * a sequence of fragments, each `u16 offset, u16 length, length bytes` (little-endian), meaning
 * "these bytes of the page become these". Redo copies every fragment into the page in order, then
 * zeroes the gap [pd_lower, pd_upper) of the resulting page, because the delta never describes that
 * gap and the primary zeroed it too when it installed the new page; finally pd_lsn = record end.
 *
 * Checks beyond PostgreSQL's (which trusts the record): a fragment header or payload that runs past
 * the delta, a fragment that runs past the page, and a resulting header with pd_lower > pd_upper or
 * pd_upper past the page are 'redo_failed' — we never write outside the page or guess.
 */
import { writePageLsn } from '../postgres/page.ts';
import type { Lsn } from '../postgres/lsn.ts';
import { blockData, type DecodedRecord } from '../postgres/xlogrecord.ts';
import { redoFailed } from './types.ts';

const PAGE_BYTES = 8192;
const FRAGMENT_HEADER_BYTES = 4;
/** MAX_GENERIC_XLOG_PAGES in PostgreSQL 15: block ids 0..3. */
export const MAX_GENERIC_XLOG_PAGES = 4;

/** Applies a generic delta to `page` in place (no hole zeroing, no LSN). Returns an error text or null. */
export function applyGenericDelta(page: Uint8Array, delta: Uint8Array): string | null {
  let pos = 0;
  let fragments = 0;
  while (pos < delta.length) {
    if (pos + FRAGMENT_HEADER_BYTES > delta.length) {
      return `delta ends inside a fragment header at byte ${pos} of ${delta.length}`;
    }
    const offset = delta[pos]! | (delta[pos + 1]! << 8);
    const length = delta[pos + 2]! | (delta[pos + 3]! << 8);
    pos += FRAGMENT_HEADER_BYTES;
    if (pos + length > delta.length) return `fragment ${fragments} (offset ${offset}, length ${length}) runs past the end of the ${delta.length}-byte delta`;
    if (offset + length > PAGE_BYTES) return `fragment ${fragments} (offset ${offset}, length ${length}) runs past the page`;
    page.set(delta.subarray(pos, pos + length), offset);
    pos += length;
    fragments++;
  }
  return null;
}

export function genericRedo(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  const block = rec.blocks.find((b) => b.id === blockId);
  if (block === undefined) throw redoFailed(rec, blockId, 'record has no block reference with this id');
  if (blockId >= MAX_GENERIC_XLOG_PAGES) throw redoFailed(rec, blockId, `generic records have at most ${MAX_GENERIC_XLOG_PAGES} block refs`);
  if (block.image?.apply === true) throw redoFailed(rec, blockId, 'block has a full-page image for apply: the caller must restore it instead of running redo');
  if (page.length !== PAGE_BYTES) throw redoFailed(rec, blockId, `page buffer is ${page.length} bytes, expected ${PAGE_BYTES}`);
  const problem = applyGenericDelta(page, blockData(rec, block));
  if (problem !== null) throw redoFailed(rec, blockId, `malformed generic delta: ${problem}`);
  const lower = page.readUInt16LE(12);
  const upper = page.readUInt16LE(14);
  if (lower > upper || upper > PAGE_BYTES) {
    throw redoFailed(rec, blockId, `page after the delta has pd_lower ${lower} > pd_upper ${upper} (or past the page): cannot clear the free space`);
  }
  page.fill(0, lower, upper);
  writePageLsn(page, endLsn);
}
