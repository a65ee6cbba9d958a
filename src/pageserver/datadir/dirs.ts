/**
 * Encodings of the cluster-level "directory" values: which databases, relations, SLRU segments and
 * prepared transactions exist, and how big relations and SLRU segments are.
 *
 * Why directories: a data directory is more than pages. A basebackup must list every database
 * and every relation fork (even empty ones), every SLRU segment and every two-phase file at an
 * LSN; a dropped relation must disappear although its block keys stay in the layers. So existence
 * lives in a few small values, versioned by LSN like everything else, and block keys are reachable
 * only through them (blocks below the fork's size key). Dropping a relation is an update of its
 * directory; its blocks become unreachable garbage for GC, never visible data.
 *
 * Format (docs/formats.md "Directory values"): `kind u8 | version u8 | count u32 | entries`,
 * little-endian, entries sorted and unique. Every decoder checks kind, version, exact length,
 * order and uniqueness: a corrupt directory is an error, never a silently shorter listing.
 */
import { StrataError } from '../../util/errors.ts';

export const DirKind = {
  db: 1,
  rel: 2,
  slruSegments: 3,
  twoPhase: 4,
} as const;
type DirKind = (typeof DirKind)[keyof typeof DirKind];

const DIR_VERSION = 1;
const HEADER_BYTES = 6;
/** Far above anything real (PostgreSQL's own limits are lower); bounds decoding work. */
const MAX_DIR_ENTRIES = 16 * 1024 * 1024;

export class DirectoryCorruptError extends StrataError {
  constructor(message: string, context: Record<string, string | number> = {}) {
    super('directory_corrupt', message, context);
    this.name = 'DirectoryCorruptError';
  }
}

/** One database directory: `base/<db>` (spc 1663) or `global` (spc 1664, db 0). */
export interface DbDirEntry {
  spcNode: number;
  dbNode: number;
  /** Whether a pg_filenode.map exists for it (written by RELMAP UPDATE or the import). */
  hasRelmap: boolean;
}

function header(kind: DirKind, count: number, entryBytes: number): Buffer {
  if (count > MAX_DIR_ENTRIES) throw new DirectoryCorruptError(`directory of ${count} entries exceeds the limit ${MAX_DIR_ENTRIES}`);
  const out = Buffer.alloc(HEADER_BYTES + count * entryBytes);
  out[0] = kind;
  out[1] = DIR_VERSION;
  out.writeUInt32LE(count, 2);
  return out;
}

function checkHeader(buf: Buffer, kind: DirKind, entryBytes: number, what: string): number {
  if (buf.length < HEADER_BYTES) throw new DirectoryCorruptError(`${what} is ${buf.length} bytes, shorter than its header`);
  if (buf[0] !== kind) throw new DirectoryCorruptError(`${what} has kind ${buf[0]}, expected ${kind}`);
  if (buf[1] !== DIR_VERSION) throw new DirectoryCorruptError(`${what} has format version ${buf[1]}, this build reads ${DIR_VERSION}`);
  const count = buf.readUInt32LE(2);
  if (count > MAX_DIR_ENTRIES || buf.length !== HEADER_BYTES + count * entryBytes) {
    throw new DirectoryCorruptError(`${what} claims ${count} entries but is ${buf.length} bytes`);
  }
  return count;
}

// ---------------------------------------------------------------------------------------------
// Databases.

const DB_ENTRY_BYTES = 9;

function dbOrder(a: DbDirEntry, b: DbDirEntry): number {
  return a.spcNode - b.spcNode || a.dbNode - b.dbNode;
}

export function encodeDbDir(entries: Iterable<DbDirEntry>): Buffer {
  const list = Array.from(entries).sort(dbOrder);
  const out = header(DirKind.db, list.length, DB_ENTRY_BYTES);
  let o = HEADER_BYTES;
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    if (i > 0 && dbOrder(list[i - 1]!, e) === 0) throw new DirectoryCorruptError(`duplicate database ${e.spcNode}/${e.dbNode}`);
    out.writeUInt32LE(e.spcNode, o);
    out.writeUInt32LE(e.dbNode, o + 4);
    out[o + 8] = e.hasRelmap ? 1 : 0;
    o += DB_ENTRY_BYTES;
  }
  return out;
}

export function decodeDbDir(buf: Buffer): DbDirEntry[] {
  const count = checkHeader(buf, DirKind.db, DB_ENTRY_BYTES, 'database directory');
  const out: DbDirEntry[] = new Array(count);
  let o = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const flag = buf[o + 8]!;
    if (flag > 1) throw new DirectoryCorruptError(`database directory entry ${i} has relmap flag ${flag}`);
    const e = { spcNode: buf.readUInt32LE(o), dbNode: buf.readUInt32LE(o + 4), hasRelmap: flag === 1 };
    if (i > 0 && dbOrder(out[i - 1]!, e) >= 0) throw new DirectoryCorruptError(`database directory is not sorted at entry ${i}`);
    out[i] = e;
    o += DB_ENTRY_BYTES;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Relation forks of one database: entries are (relNode, forkNum), packed as relNode * 4 + fork
// in memory (exact in a JS number: relNode < 2^32, fork < 4).

const REL_ENTRY_BYTES = 5;
const MAX_FORK = 3;

export function relDirEntry(relNode: number, forkNum: number): number {
  return relNode * 4 + forkNum;
}

export function relDirEntryRel(entry: number): { relNode: number; forkNum: number } {
  return { relNode: Math.floor(entry / 4), forkNum: entry % 4 };
}

export function encodeRelDir(entries: Iterable<number>): Buffer {
  const list = Array.from(entries).sort((a, b) => a - b);
  const out = header(DirKind.rel, list.length, REL_ENTRY_BYTES);
  let o = HEADER_BYTES;
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    if (i > 0 && list[i - 1] === e) throw new DirectoryCorruptError(`duplicate relation entry ${e}`);
    const { relNode, forkNum } = relDirEntryRel(e);
    out.writeUInt32LE(relNode, o);
    out[o + 4] = forkNum;
    o += REL_ENTRY_BYTES;
  }
  return out;
}

export function decodeRelDir(buf: Buffer): Set<number> {
  const count = checkHeader(buf, DirKind.rel, REL_ENTRY_BYTES, 'relation directory');
  const out = new Set<number>();
  let prev = -1;
  let o = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const relNode = buf.readUInt32LE(o);
    const fork = buf[o + 4]!;
    if (fork > MAX_FORK || relNode === 0) throw new DirectoryCorruptError(`relation directory entry ${i} is invalid (rel ${relNode} fork ${fork})`);
    const e = relDirEntry(relNode, fork);
    if (e <= prev) throw new DirectoryCorruptError(`relation directory is not sorted at entry ${i}`);
    out.add(e);
    prev = e;
    o += REL_ENTRY_BYTES;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Lists of u32: SLRU segment numbers, prepared transaction xids.

function encodeU32Set(kind: DirKind, values: Iterable<number>): Buffer {
  const list = Array.from(values).sort((a, b) => a - b);
  const out = header(kind, list.length, 4);
  for (let i = 0; i < list.length; i++) {
    if (i > 0 && list[i - 1] === list[i]) throw new DirectoryCorruptError(`duplicate entry ${list[i]}`);
    out.writeUInt32LE(list[i]!, HEADER_BYTES + 4 * i);
  }
  return out;
}

function decodeU32Set(buf: Buffer, kind: DirKind, what: string): Set<number> {
  const count = checkHeader(buf, kind, 4, what);
  const out = new Set<number>();
  let prev = -1;
  for (let i = 0; i < count; i++) {
    const v = buf.readUInt32LE(HEADER_BYTES + 4 * i);
    if (v <= prev) throw new DirectoryCorruptError(`${what} is not sorted at entry ${i}`);
    out.add(v);
    prev = v;
  }
  return out;
}

export function encodeSlruDir(segments: Iterable<number>): Buffer {
  return encodeU32Set(DirKind.slruSegments, segments);
}

export function decodeSlruDir(buf: Buffer): Set<number> {
  return decodeU32Set(buf, DirKind.slruSegments, 'SLRU segment directory');
}

export function encodeTwoPhaseDir(xids: Iterable<number>): Buffer {
  return encodeU32Set(DirKind.twoPhase, xids);
}

export function decodeTwoPhaseDir(buf: Buffer): Set<number> {
  return decodeU32Set(buf, DirKind.twoPhase, 'two-phase directory');
}

// ---------------------------------------------------------------------------------------------
// Sizes (relation forks and SLRU segments, in blocks): a bare u32.

export function encodeSize(blocks: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32LE(blocks, 0);
  return out;
}

export function decodeSize(buf: Buffer, what: string): number {
  if (buf.length !== 4) throw new DirectoryCorruptError(`${what} size value is ${buf.length} bytes, expected 4`);
  return buf.readUInt32LE(0);
}
