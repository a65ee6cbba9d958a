/**
 * Full-page images (FPIs): turning a block reference's stored image back into an 8192-byte page.
 *
 * What PostgreSQL stores (XLogRecordAssemble / XLogCompressBackupBlock): for a "standard" page the
 * unused gap between pd_lower and pd_upper — the hole — is cut out; the remaining 8192 - hole bytes
 * are optionally compressed with pglz, lz4 (raw block) or zstd (one frame). Restoring is the reverse
 * (RestoreBlockImage): decompress to exactly 8192 - hole bytes, then put the hole back as zeros.
 *
 * We do the hole re-insertion in place: the image is decompressed (or copied) to the start of the
 * output page, the part after the hole is moved up by holeLength (copyWithin is memmove-safe) and
 * the hole is zero-filled, so a restore needs no scratch page.
 *
 * Checks, stricter than PostgreSQL's (which only tests "the decompressor did not fail"):
 * - the decompressed size must be exactly 8192 - holeLength (each codec enforces it);
 * - an uncompressed image must be exactly 8192 - holeLength bytes;
 * - for an image with a hole, the restored pd_lower/pd_upper must equal the hole's bounds: PostgreSQL
 *   computes the hole from those two fields of the very page it copies, so any mismatch means the
 *   image is damaged (this also catches many corruptions a codec cannot see).
 * Every failure is a WalImageError naming the record LSN, block ref, relation, fork and block, with
 * the codec's DecompressionError as `cause` when there is one. The record CRC-32C remains the main
 * protection for image bytes: a flipped literal byte decodes "successfully" in every codec.
 */
import { StrataError } from '../util/errors.ts';
import { formatLsn } from './lsn.ts';
import { PG_BLCKSZ } from './walformat.ts';
import { FORK_NAMES, type BlockImageRef, type BlockRef, type DecodedRecord } from './xlogrecord.ts';
import { DecompressionError } from './compression/errors.ts';
import { pglzDecompress } from './compression/pglz.ts';
import { lz4DecompressBlock } from './compression/lz4.ts';
import { zstdDecompress, zstdDecompressAsync } from './compression/zstd.ts';
import { pageHeaderProblem, readPageHeader } from './page.ts';

export class WalImageError extends StrataError {
  constructor(rec: DecodedRecord, block: BlockRef, cause: string, options?: { cause?: unknown }) {
    const fork = FORK_NAMES[block.forkNum] ?? `fork${block.forkNum}`;
    const { spcNode, dbNode, relNode } = block.rnode;
    const method = block.image?.compression ?? 'no image';
    super('wal_image_invalid',
      `could not restore full-page image at ${formatLsn(rec.lsn)}, block ref #${block.id} ` +
      `(rel ${spcNode}/${dbNode}/${relNode} fork ${fork} blk ${block.blkno}, ${method}): ${cause}`,
      {
        lsn: formatLsn(rec.lsn), blockId: block.id, spcNode, dbNode, relNode, fork, blkno: block.blkno,
        compression: method, holeOffset: block.image?.holeOffset, holeLength: block.image?.holeLength,
        storedBytes: block.image?.lengthBytes, reason: cause,
      },
      options);
    this.name = 'WalImageError';
  }
}

/**
 * Restores the image of `block` (a block ref of `rec`) into `out` (at least 8192 bytes; a new page
 * is allocated when omitted) and returns the 8192-byte page. Throws WalImageError. On failure the
 * contents of `out` are unspecified.
 */
export function restoreBlockImage(rec: DecodedRecord, block: BlockRef, out?: Uint8Array): Uint8Array {
  const { page, src, raw } = prepareRestore(rec, block, out);
  const image = block.image!;
  if (image.compression === 'none') {
    if (src.length !== raw.length) {
      throw new WalImageError(rec, block, `uncompressed image is ${src.length} bytes, expected ${raw.length} (8192 minus a ${image.holeLength}-byte hole)`);
    }
    raw.set(src);
  } else {
    try {
      if (image.compression === 'pglz') pglzDecompress(src, raw, { checkComplete: true });
      else if (image.compression === 'lz4') lz4DecompressBlock(src, raw, { checkComplete: true });
      else zstdDecompress(src, raw);
    } catch (err) {
      if (err instanceof DecompressionError) throw new WalImageError(rec, block, err.message, { cause: err });
      throw err;
    }
  }
  return finishRestore(rec, block, page);
}

/**
 * restoreBlockImage, but zstd images are decompressed asynchronously (native thread pool on
 * Node < 22.15, see compression/zstd.ts); other images are restored synchronously.
 */
export async function restoreBlockImageAsync(rec: DecodedRecord, block: BlockRef, out?: Uint8Array): Promise<Uint8Array> {
  if (block.image?.compression !== 'zstd') return restoreBlockImage(rec, block, out);
  const { page, src, raw } = prepareRestore(rec, block, out);
  try {
    await zstdDecompressAsync(src, raw);
  } catch (err) {
    if (err instanceof DecompressionError) throw new WalImageError(rec, block, err.message, { cause: err });
    throw err;
  }
  return finishRestore(rec, block, page);
}

function prepareRestore(rec: DecodedRecord, block: BlockRef, out: Uint8Array | undefined): { page: Uint8Array; src: Uint8Array; raw: Uint8Array } {
  const image = block.image;
  if (image === undefined) throw new WalImageError(rec, block, 'the block reference has no image');
  if (out !== undefined && out.length < PG_BLCKSZ) {
    throw new WalImageError(rec, block, `output buffer has ${out.length} bytes, a page needs ${PG_BLCKSZ}`);
  }
  const page = out === undefined ? new Uint8Array(PG_BLCKSZ) : out.length === PG_BLCKSZ ? out : out.subarray(0, PG_BLCKSZ);
  const { holeOffset, holeLength, lengthBytes } = image;
  if (holeOffset + holeLength > PG_BLCKSZ) {
    throw new WalImageError(rec, block, `hole at ${holeOffset} of ${holeLength} bytes runs past the page`);
  }
  if (image.offset + lengthBytes > rec.bytes.length) {
    throw new WalImageError(rec, block, `image bytes [${image.offset}, ${image.offset + lengthBytes}) lie outside the ${rec.bytes.length}-byte record`);
  }
  return { page, src: rec.bytes.subarray(image.offset, image.offset + lengthBytes), raw: page.subarray(0, PG_BLCKSZ - holeLength) };
}

/** Re-inserts the hole (in place) and checks pd_lower/pd_upper against it. */
function finishRestore(rec: DecodedRecord, block: BlockRef, page: Uint8Array): Uint8Array {
  const { holeOffset, holeLength } = block.image!;
  if (holeLength > 0) {
    page.copyWithin(holeOffset + holeLength, holeOffset, PG_BLCKSZ - holeLength);
    page.fill(0, holeOffset, holeOffset + holeLength);
    const lower = page[12]! | (page[13]! << 8);
    const upper = page[14]! | (page[15]! << 8);
    if (lower !== holeOffset || upper !== holeOffset + holeLength) {
      throw new WalImageError(rec, block,
        `restored page has pd_lower ${lower}, pd_upper ${upper}, but the image's hole is [${holeOffset}, ${holeOffset + holeLength})`);
    }
  }
  return page;
}

/**
 * Checks a restored page against its image: the header must be valid (page.ts pageHeaderProblem;
 * all-zero pages pass) and, when the image has a hole, pd_lower == holeOffset and
 * pd_upper == holeOffset + holeLength. Returns null when consistent, otherwise the first problem.
 */
export function checkPageHeaderAgainstHole(page: Uint8Array, image: BlockImageRef): string | null {
  const problem = pageHeaderProblem(page);
  if (problem !== null) return problem;
  if (image.holeLength > 0) {
    const h = readPageHeader(page);
    if (h.lower !== image.holeOffset || h.upper !== image.holeOffset + image.holeLength) {
      return `pd_lower ${h.lower} / pd_upper ${h.upper} do not match the hole [${image.holeOffset}, ${image.holeOffset + image.holeLength})`;
    }
  }
  return null;
}
