/**
 * Sequence resource manager redo: XLOG_SEQ_LOG.
 *
 * A sequence relation is one page holding one heap tuple (the sequence's state) and a 4-byte magic
 * number in the special area. Every change to a sequence (creation, nextval logging ahead,
 * setval, ALTER SEQUENCE) logs the complete new tuple, and redo simply rebuilds the page from
 * scratch: an empty page with an 8-byte special area (MAXALIGN of the 4-byte magic) holding
 * 0x1717, the tuple as item 1 at the top of the free space, pd_lsn = record end. Nothing of the
 * previous page survives, so the block reference is always willInit and the previous version is
 * never needed.
 *
 * Record layout: main data = xl_seq_rec (the RelFileNode, 12 bytes) followed by the tuple bytes;
 * block 0 is the sequence page. The page is built here directly (it is a two-step layout, not worth
 * a dependency on the general page helpers).
 */
import { writePageLsn } from '../postgres/page.ts';
import type { Lsn } from '../postgres/lsn.ts';
import { mainData, recordOp, type DecodedRecord } from '../postgres/xlogrecord.ts';
import { redoFailed } from './types.ts';

export const XLOG_SEQ_LOG = 0x00;
export const SEQ_MAGIC = 0x1717;
const XL_SEQ_REC_BYTES = 12;
const PAGE_BYTES = 8192;
const PAGE_HEADER_BYTES = 24;
const SPECIAL_BYTES = 8; // MAXALIGN(sizeof(sequence_magic))
const LP_NORMAL = 1;
const PAGE_SIZE_VERSION = 0x2004;

export function seqRedo(page: Buffer, rec: DecodedRecord, blockId: number, endLsn: Lsn): void {
  if (recordOp(rec) !== XLOG_SEQ_LOG) throw redoFailed(rec, blockId, `unknown Sequence op 0x${recordOp(rec).toString(16)}`);
  if (blockId !== 0 || rec.blocks.find((b) => b.id === 0) === undefined) {
    throw redoFailed(rec, blockId, 'SEQ_LOG changes exactly block ref 0');
  }
  if (page.length !== PAGE_BYTES) throw redoFailed(rec, blockId, `page buffer is ${page.length} bytes, expected ${PAGE_BYTES}`);
  const data = mainData(rec);
  if (data.length <= XL_SEQ_REC_BYTES) {
    throw redoFailed(rec, blockId, `main data is ${data.length} bytes: no sequence tuple after the ${XL_SEQ_REC_BYTES}-byte xl_seq_rec`);
  }
  const tuple = data.subarray(XL_SEQ_REC_BYTES);
  const special = PAGE_BYTES - SPECIAL_BYTES;
  const alignedLen = (tuple.length + 7) & ~7;
  const upper = special - alignedLen;
  const lower = PAGE_HEADER_BYTES + 4;
  if (upper < lower || tuple.length > 0x7fff) {
    throw redoFailed(rec, blockId, `sequence tuple of ${tuple.length} bytes does not fit on a page`);
  }
  // Build the new page in place: it replaces the old content entirely.
  page.fill(0);
  page.writeUInt16LE(lower, 12);
  page.writeUInt16LE(upper, 14);
  page.writeUInt16LE(special, 16);
  page.writeUInt16LE(PAGE_SIZE_VERSION, 18);
  page.writeUInt32LE(SEQ_MAGIC, special);
  page.writeUInt32LE((upper | (LP_NORMAL << 15) | (tuple.length << 17)) >>> 0, PAGE_HEADER_BYTES);
  page.set(tuple, upper);
  writePageLsn(page, endLsn);
}
