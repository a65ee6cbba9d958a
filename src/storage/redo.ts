/**
 * Page reconstruction: turning "an older version plus the records written since" into the content
 * of a key at the requested LSN.
 *
 * The read path collects, for one key, the newest image at or below the request LSN and every
 * record above it (ReconstructState, newest first). `reconstructPage` turns that into one call of a
 * `Redo` implementation with the records oldest first. `Redo` is an interface because the way
 * Strata replays PostgreSQL records will grow in stages (DESIGN.md "Page reconstruction"): today
 * only full-page images can be replayed; TypeScript redo for heap, btree, … comes later and plugs
 * in behind the same call.
 *
 * BuiltinRedo replays:
 * - the storage-level records ingest derives from WAL (value.ts): clearing visibility-map bits,
 *   setting CLOG status bits (plus the commit-timestamp trailer of CLOG pages), writing multixact
 *   offsets and members. They follow PostgreSQL's own in-recovery rules (visibilitymap_clear,
 *   TransactionIdSetStatusBit, RecordNewMultiXact), and leave the page LSN alone as PostgreSQL
 *   does: VM clears are not WAL-logged against the VM page, and SLRU pages have no header.
 * - PostgreSQL WAL records whose block reference for this key carries a full-page image marked
 *   for apply: the image is restored and pd_lsn set to the version LSN (the record's end), unless
 *   the restored page is new (pd_upper = 0), exactly as XLogReadBufferForRedoExtended does.
 * Anything else is a RedoUnsupportedError naming the record — never a silently wrong page.
 *
 * Invariants and choices:
 * - `base.image` is never written: it may be a view into a layer file buffer or a cached page.
 *   The first record that changes the page makes one private copy; every later record writes into
 *   that copy, so an apply call costs at most one page copy however many records it replays (an
 *   FPI restores straight into the private buffer, or into a fresh one if none exists yet).
 * - CLOG pages are 8192 bytes, or 8200 when the last commit that touched them recorded its
 *   timestamp: 8 big-endian bytes (PostgreSQL TimestampTz) after the page, as in Neon. The private
 *   copy of a CLOG page is allocated with room for the trailer so adding it needs no second copy.
 *   A record without a timestamp keeps the existing trailer.
 * - Records must be strictly ascending in LSN and above the base LSN (checked: an ordering bug in
 *   a layer would otherwise produce a wrong page).
 * - A storage-level record that changes nothing on the page it is stored under (no heap block of a
 *   clear-VM-bits record maps to this VM page, no member of a members record falls on this page) is
 *   an error: ingest stored it under the wrong key. Members of a multixact whose list spans two
 *   members pages are legitimately stored under both keys; on each page only the members of that
 *   page are written and the others are skipped.
 */
import { restoreBlockImage } from '../postgres/blockimage.ts';
import { writePageLsn } from '../postgres/page.ts';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { recordTypeName, rmgrName } from '../postgres/rmgr.ts';
import { PG_BLCKSZ, SIZE_OF_XLOG_RECORD } from '../postgres/walformat.ts';
import { decodeXLogRecord, type BlockRef, type DecodedRecord } from '../postgres/xlogrecord.ts';
import { rmgrRedoFn } from '../redo/index.ts';
import { AssertionFailedError, StrataError, type ErrorContext } from '../util/errors.ts';
import {
  ForkNumber, KeyKind, SLRU_PAGES_PER_SEGMENT, SlruKind, describeKey, isRelBlockKey, isSlruBlockKey, keyFields, keyToHex,
  relBlockOfKey, type Key, type RelTag,
} from './key.ts';
import type { ReconstructRecord, ReconstructState } from './layer.ts';
import {
  NO_BLOCK, describeValue, valueWillInit, type ClearVmBitsValue, type ClogSetStatusValue, type MultixactMembersValue,
  type MultixactOffsetValue, type PgRecordValue,
} from './value.ts';

// ---------------------------------------------------------------------------------------------
// PostgreSQL 15 layout facts (BLCKSZ 8192).

/** Page header size, MAXALIGNed; the VM bitmap starts right after it. */
const VM_MAP_OFFSET = 24;
/** Two bits per heap block, four heap blocks per byte. */
export const VM_HEAPBLOCKS_PER_PAGE = (PG_BLCKSZ - VM_MAP_OFFSET) * 4;
/** VISIBILITYMAP_ALL_VISIBLE | VISIBILITYMAP_ALL_FROZEN. */
const VM_VALID_FLAGS = 0x03;

export const CLOG_XACTS_PER_PAGE = PG_BLCKSZ * 4;
/** A CLOG page with a commit-timestamp trailer. */
export const CLOG_PAGE_WITH_TIMESTAMP_BYTES = PG_BLCKSZ + 8;

export const MULTIXACT_OFFSETS_PER_PAGE = PG_BLCKSZ / 4;
const MULTIXACT_MEMBERS_PER_GROUP = 4;
/** 4 flag bytes (one per member) then 4 xids. */
const MULTIXACT_GROUP_BYTES = 4 + 4 * MULTIXACT_MEMBERS_PER_GROUP;
const MULTIXACT_GROUPS_PER_PAGE = Math.floor(PG_BLCKSZ / MULTIXACT_GROUP_BYTES);
export const MULTIXACT_MEMBERS_PER_PAGE = MULTIXACT_GROUPS_PER_PAGE * MULTIXACT_MEMBERS_PER_GROUP;
/** MultiXactStatusUpdate, the highest member status. */
const MULTIXACT_MAX_STATUS = 5;

const CLOG_SUBCOMMITTED = 3;
const CLOG_COMMITTED = 1;

// ---------------------------------------------------------------------------------------------
// Interface.

export interface RedoContext {
  tenantId: string;
  timelineId: string;
  key: Key;
  requestLsn: Lsn;
}

export interface Redo {
  /**
   * Replays `records` (OLDEST first, LSNs ascending and above `base.lsn`) over `base` and returns
   * a new buffer with the key's content. `base.image` is never modified. Throws RedoError or
   * RedoUnsupportedError.
   */
  apply(ctx: RedoContext, base: { lsn: Lsn; image: Buffer } | null, records: ReconstructRecord[]): Buffer;
}

/** Reconstruction failed: data missing or inconsistent (a bug in ingest or a damaged layer). */
export class RedoError extends StrataError {
  constructor(message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super('redo_failed', message, context, options);
    this.name = 'RedoError';
  }
}

/** The page needs redo of a record kind Strata cannot replay yet (and no full-page image helps). */
export class RedoUnsupportedError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('redo_unsupported', message, context);
    this.name = 'RedoUnsupportedError';
  }
}

// ---------------------------------------------------------------------------------------------
// Error text.

function describeRecordForError(r: ReconstructRecord): { text: string; context: ErrorContext } {
  const v = r.value;
  if (v.kind === 'pgRecord') {
    const known = v.record.length >= SIZE_OF_XLOG_RECORD;
    const rmid = known ? v.record[17]! : -1;
    const info = known ? v.record[16]! : 0;
    const rmgr = known ? rmgrName(rmid) : 'unknown rmgr';
    const type = known ? recordTypeName(rmid, info) : 'UNKNOWN';
    return {
      text: `${rmgr}/${type} record at ${formatLsn(v.recordLsn)} (version ${formatLsn(r.lsn)})`,
      context: { rmgr, recordType: type, recordLsn: formatLsn(v.recordLsn), versionLsn: formatLsn(r.lsn), valueKind: v.kind },
    };
  }
  return {
    text: `${describeValue(v)} record (version ${formatLsn(r.lsn)})`,
    context: { versionLsn: formatLsn(r.lsn), valueKind: v.kind },
  };
}

function errorParts(ctx: RedoContext, r: ReconstructRecord | null, reason: string): { message: string; context: ErrorContext } {
  const keyDesc = describeKey(ctx.key);
  const keyHex = keyToHex(ctx.key);
  const rec = r === null ? null : describeRecordForError(r);
  const message = `cannot reconstruct ${keyDesc} at ${formatLsn(ctx.requestLsn)} ` +
    `(tenant ${ctx.tenantId}, timeline ${ctx.timelineId}, key ${keyHex}): ` +
    (rec === null ? reason : `${rec.text} ${reason}`);
  return {
    message,
    context: {
      tenantId: ctx.tenantId, timelineId: ctx.timelineId, key: keyHex, keyDesc, requestLsn: formatLsn(ctx.requestLsn),
      ...rec?.context, reason,
    },
  };
}

function redoError(ctx: RedoContext, r: ReconstructRecord | null, reason: string, cause?: unknown): RedoError {
  const { message, context } = errorParts(ctx, r, reason);
  return new RedoError(message, context, cause === undefined ? undefined : { cause });
}

function unsupported(ctx: RedoContext, r: ReconstructRecord, reason: string): RedoUnsupportedError {
  const { message, context } = errorParts(ctx, r, reason);
  return new RedoUnsupportedError(message, context);
}

// ---------------------------------------------------------------------------------------------
// What the key is.

type PageKind = 'rel' | 'vm' | 'clog' | 'multixactOffsets' | 'multixactMembers' | 'other';

interface KeyTarget {
  kind: PageKind;
  /** Relation fork and block (rel and vm keys). */
  rel: RelTag | null;
  /** Relation block number, or SLRU page number (segNo * 32 + blk). */
  pageNo: number;
}

function classifyKey(key: Key): KeyTarget {
  if (isRelBlockKey(key)) {
    const { rel, blockNumber } = relBlockOfKey(key);
    return { kind: rel.forkNum === ForkNumber.vm ? 'vm' : 'rel', rel, pageNo: blockNumber };
  }
  if (isSlruBlockKey(key)) {
    const f = keyFields(key);
    const pageNo = f.f4 * SLRU_PAGES_PER_SEGMENT + f.f6;
    if (f.f1 === KeyKind.slru && f.f5 === 0) {
      if (f.f2 === SlruKind.clog) return { kind: 'clog', rel: null, pageNo };
      if (f.f2 === SlruKind.multixactOffsets) return { kind: 'multixactOffsets', rel: null, pageNo };
      if (f.f2 === SlruKind.multixactMembers) return { kind: 'multixactMembers', rel: null, pageNo };
    }
  }
  return { kind: 'other', rel: null, pageNo: -1 };
}

// ---------------------------------------------------------------------------------------------
// The page being rebuilt.

/**
 * The current content during one apply call. `buf` is borrowed (the base, or an image value) until
 * the first write, then a private copy of `capacity` bytes; `length` is the content's length.
 */
interface WorkPage {
  buf: Buffer | null;
  length: number;
  owned: boolean;
  capacity: number;
}

/** Makes the page private (one copy) and returns it. The caller has checked that a page exists. */
function writable(w: WorkPage): Buffer {
  const cur = w.buf!;
  if (w.owned) return cur;
  const copy = Buffer.allocUnsafe(Math.max(w.capacity, w.length));
  cur.copy(copy, 0, 0, w.length);
  w.buf = copy;
  w.owned = true;
  return copy;
}

// ---------------------------------------------------------------------------------------------

export class BuiltinRedo implements Redo {
  apply(ctx: RedoContext, base: { lsn: Lsn; image: Buffer } | null, records: ReconstructRecord[]): Buffer {
    const target = classifyKey(ctx.key);
    const capacity = target.kind === 'clog' ? CLOG_PAGE_WITH_TIMESTAMP_BYTES : PG_BLCKSZ;
    if (base !== null) {
      const len = base.image.length;
      const ok = target.kind === 'other' ||
        len === PG_BLCKSZ || (target.kind === 'clog' && len === CLOG_PAGE_WITH_TIMESTAMP_BYTES);
      if (!ok) {
        throw redoError(ctx, null,
          `base image at ${formatLsn(base.lsn)} is ${len} bytes, expected ${PG_BLCKSZ}` +
          (target.kind === 'clog' ? ` or ${CLOG_PAGE_WITH_TIMESTAMP_BYTES} (with a commit timestamp)` : ''));
      }
    }
    const w: WorkPage = { buf: base?.image ?? null, length: base?.image.length ?? 0, owned: false, capacity };

    let prevLsn = base === null ? -1n : base.lsn;
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      if (r.lsn <= prevLsn) { // (context built only on failure: this runs per record of every read)
        throw new AssertionFailedError('redo records must be oldest first, strictly above the base image LSN', {
          key: keyToHex(ctx.key), lsn: formatLsn(r.lsn), previousLsn: prevLsn < 0n ? 'none' : formatLsn(prevLsn), index: i,
        });
      }
      prevLsn = r.lsn;
      const v = r.value;
      if (v.kind === 'image') {
        // Not produced by the read path (images end the search), but harmless: it replaces the page.
        w.buf = v.image;
        w.length = v.image.length;
        w.owned = false;
        continue;
      }
      if (v.kind === 'pgRecord') {
        this.#applyPgRecord(ctx, target, w, r, v);
        continue;
      }
      if (w.buf === null) throw redoError(ctx, r, 'needs a base image, but there is no base image');
      switch (v.kind) {
        case 'clearVmBits': clearVmBits(ctx, target, w, r, v); break;
        case 'clogSetStatus': clogSetStatus(ctx, target, w, r, v); break;
        case 'multixactOffset': multixactOffset(ctx, target, w, r, v); break;
        case 'multixactMembers': multixactMembers(ctx, target, w, r, v); break;
      }
    }

    if (w.buf === null) throw redoError(ctx, null, 'no data: no base image and no records');
    if (!w.owned) return Buffer.from(w.buf.subarray(0, w.length));
    return w.length === w.buf.length ? w.buf : w.buf.subarray(0, w.length);
  }

  #applyPgRecord(ctx: RedoContext, target: KeyTarget, w: WorkPage, r: ReconstructRecord, v: PgRecordValue): void {
    if (target.rel === null) {
      throw unsupported(ctx, r, 'is stored under a key that is not a relation block; Strata cannot replay it there');
    }
    let rec: DecodedRecord;
    try {
      rec = decodeXLogRecord(v.record, v.recordLsn, r.lsn);
    } catch (err) {
      throw redoError(ctx, r, `does not decode: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    const rel = target.rel;
    let block: BlockRef | undefined;
    for (const b of rec.blocks) {
      if (b.blkno === target.pageNo && b.forkNum === rel.forkNum && b.rnode.relNode === rel.relNode &&
        b.rnode.dbNode === rel.dbNode && b.rnode.spcNode === rel.spcNode) {
        block = b;
        break;
      }
    }
    if (block === undefined) {
      throw unsupported(ctx, r, 'does not reference this block, so Strata cannot replay it here');
    }
    const image = block.image;
    if (image === undefined || !image.apply) {
      this.#redoInTypeScript(ctx, target, w, r, rec, block);
      return;
    }
    // The image replaces the page whatever it held: restore into the private buffer, or a new one.
    let out: Buffer;
    if (w.owned && w.buf !== null && w.buf.length >= PG_BLCKSZ) {
      out = w.buf;
    } else {
      out = Buffer.allocUnsafe(Math.max(w.capacity, PG_BLCKSZ));
      w.buf = out;
      w.owned = true;
    }
    try {
      restoreBlockImage(rec, block, out);
    } catch (err) {
      throw redoError(ctx, r, `has a full-page image that cannot be restored: ${err instanceof Error ? err.message : String(err)}`, err);
    }
    w.length = PG_BLCKSZ;
    const pdUpper = out[14]! | (out[15]! << 8);
    if (pdUpper !== 0) writePageLsn(out, r.lsn);
  }

  /**
   * A record without an image to apply: PostgreSQL's redo in TypeScript (src/redo/), for the
   * resource managers that have it, on the private copy of the previous version — or on a zeroed
   * page when the record re-initialises the block. A visibility-map page that does not exist yet
   * starts zeroed too: PostgreSQL extends the map without WAL (vm_extend), so the first record
   * that touches a new map page finds zeroes. Anything else without a previous version, and every
   * rmgr without TypeScript redo, is an error naming the record — never a guessed page.
   */
  #redoInTypeScript(ctx: RedoContext, target: KeyTarget, w: WorkPage, r: ReconstructRecord, rec: DecodedRecord, block: BlockRef): void {
    const fn = rmgrRedoFn(rec.rmid);
    const why = block.image === undefined ? 'no full-page image' : 'its full-page image is for consistency checking only, not marked for apply';
    if (fn === undefined) {
      if (!block.willInit && w.buf === null) throw redoError(ctx, r, `needs a base image, but there is no base image (${why})`);
      throw unsupported(ctx, r, `needs redo that Strata does not have for rmgr ${rmgrName(rec.rmid)} (${why}${block.willInit ? ', block re-initialised by redo' : ''})`);
    }
    let page: Buffer;
    if (block.willInit || (w.buf === null && target.kind === 'vm')) {
      page = w.owned && w.buf !== null && w.buf.length >= PG_BLCKSZ ? w.buf : Buffer.allocUnsafe(Math.max(w.capacity, PG_BLCKSZ));
      page.fill(0, 0, PG_BLCKSZ);
      w.buf = page;
      w.owned = true;
      w.length = PG_BLCKSZ;
    } else {
      if (w.buf === null) throw redoError(ctx, r, `needs the previous version of the page, but there is no base image (${why})`);
      if (w.length !== PG_BLCKSZ) throw redoError(ctx, r, `the previous version is ${w.length} bytes, expected ${PG_BLCKSZ}`);
      page = writable(w);
    }
    try {
      fn(page, rec, block.id, r.lsn);
    } catch (err) {
      if (err instanceof StrataError && err.code === 'redo_unsupported') throw unsupported(ctx, r, err.message);
      throw redoError(ctx, r, `TypeScript redo failed: ${err instanceof Error ? err.message : String(err)}`, err);
    }
  }
}

function clearVmBits(ctx: RedoContext, target: KeyTarget, w: WorkPage, r: ReconstructRecord, v: ClearVmBitsValue): void {
  if (target.kind !== 'vm') throw redoError(ctx, r, 'is stored under a key that is not a visibility-map block');
  if ((v.flags & ~VM_VALID_FLAGS) !== 0 || v.flags === 0) {
    throw redoError(ctx, r, `has invalid visibility-map flags 0x${v.flags.toString(16)} (valid: 0x1, 0x2, 0x3)`);
  }
  const vmBlock = target.pageNo;
  let page: Buffer | null = null;
  let matched = 0;
  for (let i = 0; i < 2; i++) {
    const heapBlock = i === 0 ? v.newHeapBlock : v.oldHeapBlock;
    if (heapBlock === NO_BLOCK || Math.floor(heapBlock / VM_HEAPBLOCKS_PER_PAGE) !== vmBlock) continue;
    matched++;
    page ??= writable(w);
    const inPage = heapBlock % VM_HEAPBLOCKS_PER_PAGE;
    const at = VM_MAP_OFFSET + (inPage >>> 2);
    page[at] = page[at]! & ~(v.flags << ((inPage & 3) * 2));
  }
  if (matched === 0) {
    throw redoError(ctx, r, `names no heap block of visibility-map block ${vmBlock} ` +
      `(heap blocks ${vmBlock * VM_HEAPBLOCKS_PER_PAGE}..${(vmBlock + 1) * VM_HEAPBLOCKS_PER_PAGE - 1}): stored under the wrong key`);
  }
}

function clogSetStatus(ctx: RedoContext, target: KeyTarget, w: WorkPage, r: ReconstructRecord, v: ClogSetStatusValue): void {
  if (target.kind !== 'clog') throw redoError(ctx, r, 'is stored under a key that is not a CLOG page');
  const status = v.status;
  if (!Number.isInteger(status) || status < 0 || status > 3) throw redoError(ctx, r, `has invalid CLOG status ${status}`);
  const pageNo = target.pageNo;
  const xids = v.xids;
  for (let i = 0; i < xids.length; i++) {
    const xid = xids[i]!;
    const xidPage = Math.floor(xid / CLOG_XACTS_PER_PAGE);
    if (xidPage !== pageNo) {
      throw redoError(ctx, r, `names xid ${xid}, which belongs to CLOG page ${xidPage}, not to this page ${pageNo}`);
    }
  }
  const page = writable(w);
  for (let i = 0; i < xids.length; i++) {
    const xid = xids[i]!;
    const at = (xid % CLOG_XACTS_PER_PAGE) >>> 2;
    const shift = (xid & 3) * 2;
    const byte = page[at]!;
    // As in recovery: sub-committing an already committed xid (two-phase commit of a subxact tree
    // spanning pages, replayed twice) leaves it committed.
    if (status === CLOG_SUBCOMMITTED && ((byte >> shift) & 3) === CLOG_COMMITTED) continue;
    page[at] = (byte & ~(3 << shift)) | (status << shift);
  }
  if (v.timestampUs !== null) {
    page.writeBigInt64BE(v.timestampUs, PG_BLCKSZ);
    w.length = CLOG_PAGE_WITH_TIMESTAMP_BYTES;
  }
}

function multixactOffset(ctx: RedoContext, target: KeyTarget, w: WorkPage, r: ReconstructRecord, v: MultixactOffsetValue): void {
  if (target.kind !== 'multixactOffsets') throw redoError(ctx, r, 'is stored under a key that is not a multixact offsets page');
  const multiPage = Math.floor(v.multi / MULTIXACT_OFFSETS_PER_PAGE);
  const next = v.next;
  const nextPage = next === undefined ? -1 : Math.floor(next.multi / MULTIXACT_OFFSETS_PER_PAGE);
  if (multiPage !== target.pageNo && nextPage !== target.pageNo) {
    throw redoError(ctx, r, `is for multixact ${v.multi}${next === undefined ? '' : ` (and ${next.multi})`}, which belongs to offsets page ${multiPage}, not to this page ${target.pageNo}`);
  }
  const page = writable(w);
  if (multiPage === target.pageNo) page.writeUInt32LE(v.offset >>> 0, (v.multi % MULTIXACT_OFFSETS_PER_PAGE) * 4);
  if (next !== undefined && nextPage === target.pageNo) page.writeUInt32LE(next.offset >>> 0, (next.multi % MULTIXACT_OFFSETS_PER_PAGE) * 4);
}

function multixactMembers(ctx: RedoContext, target: KeyTarget, w: WorkPage, r: ReconstructRecord, v: MultixactMembersValue): void {
  if (target.kind !== 'multixactMembers') throw redoError(ctx, r, 'is stored under a key that is not a multixact members page');
  const pageNo = target.pageNo;
  const members = v.members;
  let page: Buffer | null = null;
  let written = 0;
  for (let i = 0; i < members.length; i++) {
    const offset = (v.startOffset + i) >>> 0; // member offsets wrap at 2^32
    if (Math.floor(offset / MULTIXACT_MEMBERS_PER_PAGE) !== pageNo) continue; // the other page's share
    const m = members[i]!;
    if (!Number.isInteger(m.status) || m.status < 0 || m.status > MULTIXACT_MAX_STATUS) {
      throw redoError(ctx, r, `has invalid status ${m.status} for member ${i} (xid ${m.xid})`);
    }
    page ??= writable(w);
    const groupAt = ((offset >>> 2) % MULTIXACT_GROUPS_PER_PAGE) * MULTIXACT_GROUP_BYTES;
    const slot = offset & 3;
    page[groupAt + slot] = m.status;
    page.writeUInt32LE(m.xid >>> 0, groupAt + 4 + 4 * slot);
    written++;
  }
  if (written === 0) {
    throw redoError(ctx, r, `has no member on members page ${pageNo} ` +
      `(offsets ${v.startOffset}..${(v.startOffset + members.length - 1) >>> 0}): stored under the wrong key`);
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * The read path's reconstruction step: `state` as the layers filled it (records newest first,
 * then possibly an image below them). With no records the image itself is returned, not a copy:
 * the caller must not modify it. Otherwise `redo.apply` runs the records oldest first over the
 * image, or over nothing when the oldest record initialises the page.
 */
export function reconstructPage(redo: Redo, ctx: RedoContext, state: ReconstructState): Buffer {
  const { records, image } = state;
  const n = records.length;
  for (let i = 0; i < n; i++) {
    const r = records[i]!;
    if (i > 0) {
      const newer = records[i - 1]!;
      if (r.lsn >= newer.lsn) {
        throw new AssertionFailedError('reconstruct state records must be newest first with strictly decreasing LSNs', {
          key: keyToHex(ctx.key), index: i, lsn: formatLsn(r.lsn), newerLsn: formatLsn(newer.lsn),
        });
      }
    }
    if (image !== null) {
      if (r.lsn <= image.lsn) {
        throw new AssertionFailedError('reconstruct state records must lie above the image LSN', {
          key: keyToHex(ctx.key), index: i, lsn: formatLsn(r.lsn), imageLsn: formatLsn(image.lsn),
        });
      }
    }
  }
  if (n === 0) {
    if (image !== null) return image.image;
    throw redoError(ctx, null, 'no data: no image and no records at or below this LSN');
  }
  const oldest = records[n - 1]!;
  const willInit = valueWillInit(oldest.value);
  if (!willInit && image === null) {
    throw redoError(ctx, oldest, 'is the oldest record found and needs a base image, but there is no base image');
  }
  const oldestFirst = new Array<ReconstructRecord>(n);
  for (let i = 0; i < n; i++) oldestFirst[i] = records[n - 1 - i]!;
  return redo.apply(ctx, willInit ? null : image, oldestFirst);
}
