/**
 * Database (RM_DBASE_ID) record bodies: CREATE_FILE_COPY, CREATE_WAL_LOG and DROP.
 *
 * CREATE_FILE_COPY means "copy the whole directory of the source database": the pageserver must
 * clone every relation of (srcTablespaceId, srcDbId) as of this LSN. CREATE_WAL_LOG (PostgreSQL 15's
 * default strategy) only creates the directory; the contents follow as FPI and RELMAP records.
 * DROP lists every tablespace directory of the database to remove.
 */
import type { DecodedRecord } from '../xlogrecord.ts';
import { BodyReader } from './common.ts';

export const XLOG_DBASE_CREATE_FILE_COPY = 0x00;
export const XLOG_DBASE_CREATE_WAL_LOG = 0x10;
export const XLOG_DBASE_DROP = 0x20;

export interface DbaseCreateFileCopyBody {
  dbId: number;
  tablespaceId: number;
  srcDbId: number;
  srcTablespaceId: number;
}

export interface DbaseCreateWalLogBody {
  dbId: number;
  tablespaceId: number;
}

export interface DbaseDropBody {
  dbId: number;
  tablespaceIds: number[];
}

export function parseDbaseCreateFileCopy(rec: DecodedRecord): DbaseCreateFileCopyBody {
  const r = new BodyReader(rec);
  r.needTotal(16, 'xl_dbase_create_file_copy_rec');
  return { dbId: r.u32At(0), tablespaceId: r.u32At(4), srcDbId: r.u32At(8), srcTablespaceId: r.u32At(12) };
}

export function parseDbaseCreateWalLog(rec: DecodedRecord): DbaseCreateWalLogBody {
  const r = new BodyReader(rec);
  r.needTotal(8, 'xl_dbase_create_wal_log_rec');
  return { dbId: r.u32At(0), tablespaceId: r.u32At(4) };
}

export function parseDbaseDrop(rec: DecodedRecord): DbaseDropBody {
  const r = new BodyReader(rec);
  const dbId = r.u32('db_id');
  return { dbId, tablespaceIds: r.countedU32s('tablespace') };
}
