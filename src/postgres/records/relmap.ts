/**
 * Relation mapper (RM_RELMAP_ID): the UPDATE record and the pg_filenode.map file it carries.
 *
 * Mapped catalogs (pg_class and friends) have relfilenode 0 in pg_class; their real file numbers
 * live in a 512-byte map file, one shared (global/pg_filenode.map, dbId 0) and one per database.
 * An UPDATE record carries the complete new file, CRC included, so the pageserver stores `data` as
 * the file's content at this LSN. PostgreSQL's redo refuses (PANIC) any size other than 512, and so
 * does this parser.
 *
 * File layout (RelMapFile, PG15): magic i32 = 0x592717 @0, num_mappings i32 @4, 62 pairs
 * {mapoid, mapfilenode} @8..504, CRC-32C of bytes [0, 504) @504, 4 pad bytes @508 (not covered by the
 * CRC and possibly garbage).
 */
import { StrataError, type ErrorContext } from '../../util/errors.ts';
import { crc32c } from '../crc32c.ts';
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader } from './common.ts';

export const XLOG_RELMAP_UPDATE = 0x00;

export const RELMAPPER_FILEMAGIC = 0x592717;
export const RELMAP_MAX_MAPPINGS = 62;
export const RELMAP_FILE_SIZE = 512;
const RELMAP_CRC_OFFSET = 8 + RELMAP_MAX_MAPPINGS * 8; // 504

export interface RelmapUpdateBody {
  /** 0 for the shared map (global/pg_filenode.map). */
  dbId: number;
  tsId: number;
  nbytes: number;
  /** The new pg_filenode.map, 512 bytes (a view into the record; copy it to keep it). */
  data: Uint8Array;
}

export function parseRelmapUpdate(rec: DecodedRecord): RelmapUpdateBody {
  const r = new BodyReader(rec);
  const dbId = r.u32('dbid');
  const tsId = r.u32('tsid');
  const nbytes = r.i32('nbytes');
  if (nbytes !== RELMAP_FILE_SIZE) r.fail(`relmap size is ${nbytes}, PostgreSQL 15 only writes ${RELMAP_FILE_SIZE}-byte maps`);
  const data = r.bytes(nbytes, `relmap data of ${nbytes} bytes`);
  return { dbId, tsId, nbytes, data };
}

/** A pg_filenode.map file is not valid. */
export class RelMapFileError extends StrataError {
  constructor(message: string, context: ErrorContext = {}) {
    super('relmap_file_invalid', message, context);
    this.name = 'RelMapFileError';
  }
}

export interface RelMapping {
  /** OID of the mapped catalog. */
  oid: number;
  filenode: number;
}

export interface RelMapFile {
  numMappings: number;
  mappings: RelMapping[];
  crc: number;
}

/**
 * Parses and verifies a pg_filenode.map (size, magic, mapping count, CRC-32C), as PostgreSQL's
 * load_relmap_file does. `where` names the file or record for the error message.
 */
export function parseRelMapFile(bytes: Uint8Array, where = 'pg_filenode.map'): RelMapFile {
  if (bytes.byteLength !== RELMAP_FILE_SIZE) {
    throw new RelMapFileError(`${where}: relation map is ${bytes.byteLength} bytes, expected ${RELMAP_FILE_SIZE}`, { where, sizeBytes: bytes.byteLength });
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = dv.getInt32(0, true);
  if (magic !== RELMAPPER_FILEMAGIC) {
    throw new RelMapFileError(`${where}: relation map magic is 0x${(magic >>> 0).toString(16)}, expected 0x${RELMAPPER_FILEMAGIC.toString(16)}`, { where, magic });
  }
  const numMappings = dv.getInt32(4, true);
  if (numMappings < 0 || numMappings > RELMAP_MAX_MAPPINGS) {
    throw new RelMapFileError(`${where}: relation map says ${numMappings} mappings, must be 0..${RELMAP_MAX_MAPPINGS}`, { where, numMappings });
  }
  const crc = dv.getUint32(RELMAP_CRC_OFFSET, true);
  const computed = crc32c(bytes.subarray(0, RELMAP_CRC_OFFSET));
  if (computed !== crc) {
    throw new RelMapFileError(`${where}: relation map CRC is 0x${crc.toString(16)}, computed 0x${computed.toString(16)}`, { where, crc, computed });
  }
  const mappings = new Array<RelMapping>(numMappings);
  for (let i = 0; i < numMappings; i++) mappings[i] = { oid: dv.getUint32(8 + 8 * i, true), filenode: dv.getUint32(12 + 8 * i, true) };
  return { numMappings, mappings, crc };
}
