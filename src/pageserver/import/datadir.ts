/**
 * Import of a PostgreSQL 15 data directory into an empty timeline, as one image layer at an LSN.
 *
 * Used by bootstrap (a fresh `initdb`, shut down cleanly) and by the import of an existing
 * cluster (a `pg_basebackup` tar, extracted). Every relation fork becomes page images plus a size
 * and a directory entry, every SLRU segment its pages, every relmap / two-phase file its value,
 * and pg_control both the control-file value and (its checkPointCopy) the running CheckPoint.
 *
 * Why one image layer written straight to a file: an import can be gigabytes; pushing it through
 * the in-memory layer would hold it all in memory and write it twice. Instead the directory is
 * scanned first (names only), the items are sorted into key order, and the pages are streamed
 * into a LayerFileWriter covering every key at exactly `lsn`, reading each file once in 1 MiB
 * chunks. The layer claims the whole key space at that LSN, which is true: nothing else exists.
 * The writer checks key order; after finishing, the entry count is compared with what was put.
 *
 * Only the two built-in tablespaces are supported (as in Neon): anything under pg_tblspc is an
 * error. pg_wal, configuration files, statistics and runtime directories are not imported (the
 * WAL is ingested separately; a compute gets fresh configuration).
 */
import { open, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { crc32c } from '../../postgres/crc32c.ts';
import { PG_CONTROL_FILE_SIZE, parseControlFile, type ControlFileData } from '../../postgres/pgcontrol.ts';
import type { Lsn } from '../../postgres/lsn.ts';
import { PG_BLCKSZ } from '../../postgres/walformat.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { encodeCheckPoint, type CheckPoint } from '../../postgres/records/xlog.ts';
import { RELMAP_FILE_SIZE, parseRelMapFile } from '../../postgres/records/relmap.ts';
import { InvalidInputError, StrataError, assert } from '../../util/errors.ts';
import type { Logger } from '../../util/log.ts';
import {
  CHECKPOINT_KEY, CONTROLFILE_KEY, DBDIR_KEY, KEY_MAX, KEY_MIN, SLRU_PAGES_PER_SEGMENT, SlruKind, TWOPHASEDIR_KEY, relBlockKey,
  relDirKey, relMapFileKey, relSizeKey, slruBlockKey, slruDirKey, slruSegmentSizeKey, twoPhaseFileKey, type Key, type RelTag,
} from '../../storage/key.ts';
import { encodeValue } from '../../storage/value.ts';
import { LayerFileWriter } from '../../storage/layerfile/writer.ts';
import { openLayerFile } from '../timeline/layerfiles.ts';
import type { Timeline } from '../timeline/timeline.ts';
import { encodeDbDir, encodeRelDir, encodeSize, encodeSlruDir, encodeTwoPhaseDir, relDirEntry, type DbDirEntry } from '../datadir/dirs.ts';

const PAGE_BYTES = PG_BLCKSZ;
/** RELSEG_SIZE: blocks per 1 GiB relation segment file. */
export const RELSEG_BLOCKS = 131072;
export const GLOBALTABLESPACE_OID = 1664;
export const DEFAULTTABLESPACE_OID = 1663;
const READ_CHUNK_BYTES = 1024 * 1024;
/** Bound on directory entries scanned (a cluster with more files than this is refused). */
const MAX_SCANNED_FILES = 5_000_000;

export class ImportError extends StrataError {
  constructor(message: string, context: Record<string, string | number> = {}) {
    super('import_failed', message, context);
    this.name = 'ImportError';
  }
}

interface RelItem {
  rel: RelTag;
  /** Segment files, index = segment number. */
  segments: string[];
}

interface Catalog {
  controlPath: string | null;
  dbs: Map<string, { spcNode: number; dbNode: number; relmapPath: string | null }>;
  rels: Map<string, RelItem>;
  slru: Map<SlruKind, Map<number, string>>;
  twoPhase: Map<number, string>;
}

const REL_FILE = /^(\d+)(?:_(fsm|vm|init))?(?:\.(\d+))?$/;
const FORKS: Record<string, number> = { fsm: 1, vm: 2, init: 3 };
const SLRU_DIRS: [string, SlruKind][] = [['pg_xact', SlruKind.clog], ['pg_multixact/members', SlruKind.multixactMembers], ['pg_multixact/offsets', SlruKind.multixactOffsets]];

function relId(rel: RelTag): string {
  return `${rel.spcNode}/${rel.dbNode}/${rel.relNode}/${rel.forkNum}`;
}

async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

function addRelFile(cat: Catalog, spcNode: number, dbNode: number, name: string, filePath: string): boolean {
  const m = REL_FILE.exec(name);
  if (m === null) return false;
  const relNode = Number(m[1]);
  if (!Number.isSafeInteger(relNode) || relNode <= 0 || relNode > 0xffff_ffff) return false;
  const rel: RelTag = { spcNode, dbNode, relNode, forkNum: m[2] === undefined ? 0 : FORKS[m[2]]! };
  const segNo = m[3] === undefined ? 0 : Number(m[3]);
  const id = relId(rel);
  let item = cat.rels.get(id);
  if (item === undefined) cat.rels.set(id, item = { rel, segments: [] });
  item.segments[segNo] = filePath;
  return true;
}

/** Lists what will be imported (file names only). */
async function scanDatadir(dataDir: string): Promise<Catalog> {
  const cat: Catalog = { controlPath: null, dbs: new Map(), rels: new Map(), slru: new Map(), twoPhase: new Map() };
  let files = 0;
  const count = (): void => {
    if (++files > MAX_SCANNED_FILES) throw new ImportError(`more than ${MAX_SCANNED_FILES} files in ${dataDir}`);
  };
  for (const name of await listDir(path.join(dataDir, 'pg_tblspc'))) {
    throw new ImportError(`tablespace ${name} (pg_tblspc/${name}): only pg_default and pg_global are supported`, { tablespace: name });
  }
  // global/
  const globalDir = path.join(dataDir, 'global');
  cat.dbs.set(`${GLOBALTABLESPACE_OID}/0`, { spcNode: GLOBALTABLESPACE_OID, dbNode: 0, relmapPath: null });
  for (const name of await listDir(globalDir)) {
    count();
    const p = path.join(globalDir, name);
    if (name === 'pg_control') cat.controlPath = p;
    else if (name === 'pg_filenode.map') cat.dbs.get(`${GLOBALTABLESPACE_OID}/0`)!.relmapPath = p;
    else addRelFile(cat, GLOBALTABLESPACE_OID, 0, name, p);
  }
  // base/<db>/
  const baseDir = path.join(dataDir, 'base');
  for (const dbName of await listDir(baseDir)) {
    if (!/^\d+$/.test(dbName)) continue; // pgsql_tmp and the like
    const dbNode = Number(dbName);
    const dbDir = path.join(baseDir, dbName);
    const entry = { spcNode: DEFAULTTABLESPACE_OID, dbNode, relmapPath: null as string | null };
    cat.dbs.set(`${DEFAULTTABLESPACE_OID}/${dbNode}`, entry);
    for (const name of await listDir(dbDir)) {
      count();
      const p = path.join(dbDir, name);
      if (name === 'pg_filenode.map') entry.relmapPath = p;
      else addRelFile(cat, DEFAULTTABLESPACE_OID, dbNode, name, p);
    }
  }
  for (const [dir, kind] of SLRU_DIRS) {
    const segs = new Map<number, string>();
    for (const name of await listDir(path.join(dataDir, dir))) {
      count();
      if (!/^[0-9A-F]{4,6}$/.test(name)) continue;
      segs.set(parseInt(name, 16), path.join(dataDir, dir, name));
    }
    cat.slru.set(kind, segs);
  }
  for (const name of await listDir(path.join(dataDir, 'pg_twophase'))) {
    count();
    if (/^[0-9A-F]{8}$/.test(name)) cat.twoPhase.set(parseInt(name, 16), path.join(dataDir, 'pg_twophase', name));
  }
  return cat;
}

export interface ImportResult {
  lsn: Lsn;
  /** The CheckPoint of pg_control (checkPointCopy). */
  checkpoint: CheckPoint;
  /** The raw 8 KiB pg_control. */
  controlFile: Buffer;
  databases: number;
  relationForks: number;
  blocks: number;
  layerFile: string;
  layerSizeBytes: number;
}

/** Reads pg_control and checks it (size, CRC, version: parseControlFile); keeps the raw bytes too. */
export async function readControlFile(p: string): Promise<{ bytes: Buffer; data: ControlFileData }> {
  const bytes = await readFile(p);
  if (bytes.length !== PG_CONTROL_FILE_SIZE) throw new ImportError(`${p} is ${bytes.length} bytes, expected ${PG_CONTROL_FILE_SIZE}`);
  try {
    return { bytes, data: parseControlFile(bytes) };
  } catch (err) {
    throw new ImportError(`${p}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

async function fileBlocks(p: string, what: string, maxBlocks: number): Promise<number> {
  const st = await stat(p);
  if (st.size % PAGE_BYTES !== 0) throw new ImportError(`${what} ${p} is ${st.size} bytes, not a whole number of ${PAGE_BYTES}-byte pages (truncated?)`, { path: p });
  const n = st.size / PAGE_BYTES;
  if (n > maxBlocks) throw new ImportError(`${what} ${p} has ${n} pages, more than ${maxBlocks}`, { path: p });
  return n;
}

/** Streams a file's pages to `put`, one 8 KiB page at a time. */
async function forEachPage(p: string, blocks: number, put: (page: Buffer) => void | Promise<void>): Promise<void> {
  const fh = await open(p, 'r');
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK_BYTES);
    let done = 0;
    while (done < blocks) {
      const want = Math.min(READ_CHUNK_BYTES, (blocks - done) * PAGE_BYTES);
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, done * PAGE_BYTES + got);
        if (bytesRead === 0) throw new ImportError(`${p} shrank while being imported`, { path: p });
        got += bytesRead;
      }
      for (let o = 0; o < want; o += PAGE_BYTES) {
        const pending = put(buf.subarray(o, o + PAGE_BYTES));
        if (pending !== undefined) await pending;
      }
      done += want / PAGE_BYTES;
    }
  } finally {
    await fh.close();
  }
}

export interface ImportOptions {
  timeline: Timeline;
  dataDir: string;
  /** The LSN the files are stamped at (the checkpoint's redo LSN). */
  lsn: Lsn;
  log: Logger;
}

/**
 * Imports `dataDir` into `timeline` as one image layer at `lsn` and adds it to the layer map.
 * The timeline must be empty, with disk_consistent_lsn = lsn.
 */
export async function importDatadir(opts: ImportOptions): Promise<ImportResult> {
  const { timeline, dataDir, lsn, log } = opts;
  assert(timeline.layers.historicLayers().length === 0 && timeline.layers.open === null, 'import into a timeline that has data', timeline.context());
  assert(timeline.diskConsistentLsn === lsn, 'import LSN must equal the new timeline\'s start', timeline.context({ lsn: formatLsn(lsn) }));
  const started = Date.now();
  const cat = await scanDatadir(dataDir);
  if (cat.controlPath === null) throw new ImportError(`${dataDir} has no global/pg_control: not a PostgreSQL data directory`);
  const control = await readControlFile(cat.controlPath);

  // Databases: the ones with a directory. Sorted, as keys sort.
  const dbs = Array.from(cat.dbs.values()).sort((a, b) => a.spcNode - b.spcNode || a.dbNode - b.dbNode);
  const relsByDb = new Map<string, RelItem[]>();
  for (const item of cat.rels.values()) {
    const k = `${item.rel.spcNode}/${item.rel.dbNode}`;
    let list = relsByDb.get(k);
    if (list === undefined) relsByDb.set(k, list = []);
    list.push(item);
  }

  const writer = await LayerFileWriter.create({
    dir: timeline.dir, kind: 'image', tenantId: timeline.tenantId, timelineId: timeline.timelineId,
    keyRange: { start: KEY_MIN, end: KEY_MAX }, lsnRange: { start: lsn, end: lsn + 1n },
  });
  let entries = 0;
  let blocks = 0;
  let forks = 0;
  let lastProgressMs = Date.now();
  const put = (key: Key, image: Buffer): void | Promise<void> => {
    entries++;
    return writer.put(key, lsn, encodeValue({ kind: 'image', image }));
  };
  const progress = (): void => {
    const now = Date.now();
    if (now - lastProgressMs < 5000) return;
    lastProgressMs = now;
    log.info('import in progress', { blocks, relation_forks: forks, elapsed_ms: now - started });
  };

  try {
    const dbEntries: DbDirEntry[] = dbs.map((d) => ({ spcNode: d.spcNode, dbNode: d.dbNode, hasRelmap: d.relmapPath !== null }));
    await put(DBDIR_KEY, encodeDbDir(dbEntries));
    for (const db of dbs) {
      if (db.relmapPath !== null) {
        const map = await readFile(db.relmapPath);
        if (map.length !== RELMAP_FILE_SIZE) throw new ImportError(`${db.relmapPath} is ${map.length} bytes, expected ${RELMAP_FILE_SIZE}`);
        parseRelMapFile(map, db.relmapPath); // checks magic and CRC
        await put(relMapFileKey(db.spcNode, db.dbNode), map);
      }
      const rels = (relsByDb.get(`${db.spcNode}/${db.dbNode}`) ?? [])
        .sort((a, b) => a.rel.relNode - b.rel.relNode || a.rel.forkNum - b.rel.forkNum);
      await put(relDirKey(db.spcNode, db.dbNode), encodeRelDir(rels.map((r) => relDirEntry(r.rel.relNode, r.rel.forkNum))));
      for (const item of rels) {
        forks++;
        let relBlocks = 0;
        for (let segNo = 0; segNo < item.segments.length; segNo++) {
          const p = item.segments[segNo];
          if (p === undefined) throw new ImportError(`relation ${relId(item.rel)} is missing segment ${segNo} (later segments exist)`);
          const n = await fileBlocks(p, 'relation segment', RELSEG_BLOCKS);
          if (segNo < item.segments.length - 1 && n !== RELSEG_BLOCKS) {
            throw new ImportError(`relation segment ${p} has ${n} blocks but is not the last segment (expected ${RELSEG_BLOCKS})`);
          }
          await forEachPage(p, n, (page) => {
            const r = put(relBlockKey(item.rel, relBlocks++), page);
            blocks++;
            return r;
          });
          progress();
        }
        await put(relSizeKey(item.rel), encodeSize(relBlocks));
      }
    }
    for (const [, kind] of SLRU_DIRS) {
      const segs = cat.slru.get(kind) ?? new Map<number, string>();
      const sorted = Array.from(segs.keys()).sort((a, b) => a - b);
      await put(slruDirKey(kind), encodeSlruDir(sorted));
      for (const segNo of sorted) {
        const p = segs.get(segNo)!;
        const n = await fileBlocks(p, 'SLRU segment', SLRU_PAGES_PER_SEGMENT);
        let b = 0;
        await forEachPage(p, n, (page) => put(slruBlockKey(kind, segNo, b++), page));
        await put(slruSegmentSizeKey(kind, segNo), encodeSize(n));
      }
    }
    const xids = Array.from(cat.twoPhase.keys()).sort((a, b) => a - b);
    await put(TWOPHASEDIR_KEY, encodeTwoPhaseDir(xids));
    for (const xid of xids) {
      const p = cat.twoPhase.get(xid)!;
      const file = await readFile(p);
      if (file.length < 8) throw new ImportError(`two-phase file ${p} is too short`);
      const body = file.subarray(0, file.length - 4);
      if (crc32c(body) !== file.readUInt32LE(file.length - 4)) throw new ImportError(`two-phase file ${p} fails its CRC check`);
      await put(twoPhaseFileKey(xid), Buffer.from(body));
    }
    await put(CONTROLFILE_KEY, control.bytes);
    await put(CHECKPOINT_KEY, Buffer.from(encodeCheckPoint(control.data.checkPointCopy)));
    const info = await writer.finish();
    if (info.entryCount !== entries) {
      throw new ImportError(`image layer ${info.fileName} has ${info.entryCount} entries, ${entries} were written`);
    }
    const handle = openLayerFile(timeline, info.fileName);
    timeline.layers.addHistoric(handle);
    log.info('data directory imported', {
      lsn: formatLsn(lsn), databases: dbs.length, relation_forks: forks, blocks, layer: info.fileName,
      size_bytes: info.sizeBytes, elapsed_ms: Date.now() - started,
    });
    return {
      lsn, checkpoint: control.data.checkPointCopy, controlFile: control.bytes, databases: dbs.length, relationForks: forks, blocks,
      layerFile: info.fileName, layerSizeBytes: info.sizeBytes,
    };
  } catch (err) {
    await writer.abort().catch(() => undefined);
    if (err instanceof InvalidInputError) throw new ImportError(err.message);
    throw err;
  }
}
