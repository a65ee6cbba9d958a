/**
 * Basebackup: a complete PostgreSQL 15 data directory of a timeline at an LSN, such that an
 * unmodified `postgres` starts on it as a primary with no recovery at all.
 *
 * What goes in (postgres15.md §5): the directory skeleton, PG_VERSION files, pg_hba.conf /
 * pg_ident.conf / (minimal) postgresql.conf, every SLRU segment (CLOG pages without Strata's
 * commit-timestamp trailer), per database its directory, relmap and every relation fork as 1 GiB
 * segment files (an unlogged relation's init fork is also written as its main fork, since
 * PostgreSQL resets unlogged relations only when it recovers), two-phase state files, then
 * `global/pg_control` and the WAL.
 *
 * Why it works on vanilla PostgreSQL: the WAL segment holds a synthesised XLOG_CHECKPOINT_SHUTDOWN
 * record at L (L = the LSN, moved past a page header if it sits on a page boundary), carrying the
 * counters the ingest tracked (nextXid, nextOid, nextMulti, …); pg_control says "shut down" with
 * checkPoint = checkPointCopy.redo = L. PostgreSQL then starts without recovery and writes its
 * first record right after that checkpoint. The timeline ingests the very same record when the
 * compute streams its WAL from L, so the compute's WAL and the timeline agree byte for byte.
 *
 * The generator writes to a BasebackupSink: a tar stream (page service, `basebackup` command) or
 * a directory (an endpoint in the same process). Pages are read one at a time with reconstructAt,
 * so memory stays flat whatever the database size. An LSN that is not ingested yet is waited for;
 * one below the GC cutoff is refused. Any page Strata cannot reconstruct fails the whole backup
 * with an error naming the key and LSN — a compute never starts on a guessed page.
 *
 * Metrics: every basebackup is observed in pageserver_basebackup_query_seconds{result="ok"|"error"}
 * (as Neon labels it), from the call to the end of the stream: waiting for the LSN and the
 * receiver's pace included, which is what a starting compute experiences.
 */
import { chownSync, closeSync, fchownSync, mkdirSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Lsn } from '../postgres/lsn.ts';
import { formatLsn } from '../postgres/lsn.ts';
import { PG_BLCKSZ } from '../postgres/walformat.ts';
import { DBState, encodeControlFile, parseControlFile } from '../postgres/pgcontrol.ts';
import { twoPhaseFileBytes, twoPhaseFileName, type CheckPoint } from '../postgres/records/index.ts';
import { buildShutdownCheckpointSegment } from '../postgres/shutdownwal.ts';
import { TarWriter, type TarSink } from '../postgres/tar.ts';
import { InvalidInputError, StrataError, type ErrorContext } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { FORK_NAMES, SlruKind, type RelTag } from '../storage/key.ts';
import { relDirEntry, relDirEntryRel } from './datadir/dirs.ts';
import { DatadirView } from './datadir/view.ts';
import { DEFAULTTABLESPACE_OID, GLOBALTABLESPACE_OID, RELSEG_BLOCKS } from './import/datadir.ts';
import { waitForLsnWithAncestors } from './timeline/read.ts';
import { BasebackupResult as BasebackupOutcome } from './metrics.ts';
import type { Timeline } from './timeline/timeline.ts';

const PAGE_BYTES = PG_BLCKSZ;
const PG_MAJOR_VERSION_FILE = '15\n';
/** Pages gathered per sink write (1 MiB). */
const PAGES_PER_CHUNK = 128;

export const PGDATA_SUBDIRS = [
  'global', 'pg_wal', 'pg_wal/archive_status', 'pg_commit_ts', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots',
  'pg_subtrans', 'pg_twophase', 'pg_multixact', 'pg_multixact/members', 'pg_multixact/offsets', 'base', 'pg_replslot',
  'pg_tblspc', 'pg_stat', 'pg_stat_tmp', 'pg_xact', 'pg_logical', 'pg_logical/snapshots', 'pg_logical/mappings',
] as const;

const PG_HBA_CONF = [
  '# Written by Strata\'s basebackup: local connections are trusted (the endpoint listens on 127.0.0.1).',
  'local   all             all                                     trust',
  'host    all             all             127.0.0.1/32            trust',
  'host    all             all             ::1/128                 trust',
  'local   replication     all                                     trust',
  'host    replication     all             127.0.0.1/32            trust',
  'host    replication     all             ::1/128                 trust',
  '',
].join('\n');

const SLRU_DIR_NAMES: Record<number, string> = {
  [SlruKind.clog]: 'pg_xact',
  [SlruKind.multixactMembers]: 'pg_multixact/members',
  [SlruKind.multixactOffsets]: 'pg_multixact/offsets',
};

export class BasebackupError extends StrataError {
  constructor(message: string, context: ErrorContext, cause?: unknown) {
    super('basebackup_failed', message, context, { cause });
    this.name = 'BasebackupError';
  }
}

/** Where the files go. Calls are made one at a time, in order. */
export interface BasebackupSink {
  directory(relPath: string): Promise<void>;
  /** A file of exactly `sizeBytes`, whose content `fill` writes in chunks. */
  file(relPath: string, sizeBytes: number, fill: (write: (chunk: Buffer) => Promise<void>) => Promise<void>): Promise<void>;
  finish(): Promise<void>;
}

/** A tar stream (GNU tar and pg_basebackup-compatible ustar) into a byte sink. */
export function tarSink(sink: TarSink, opts: { endMarker?: boolean } = {}): BasebackupSink {
  const tar = new TarWriter(sink);
  return {
    directory: (p) => tar.addDirectory(p, { mode: 0o700 }),
    async file(p, sizeBytes, fill) {
      await tar.beginFile(p, sizeBytes, { mode: 0o600 });
      await fill((chunk) => tar.write(chunk));
      await tar.endFile();
    },
    finish: () => tar.finish(opts),
  };
}

/**
 * Files written straight into a directory, which must be empty or absent (an endpoint wipes its
 * data directory first: it is disposable). Files are written in place, not via temp + rename: a
 * crash mid-way leaves a directory nobody will start, and the next start wipes it again.
 */
export function directorySink(root: string, opts: { owner?: { uid: number; gid: number } | null } = {}): BasebackupSink {
  const owner = opts.owner ?? null;
  // Synchronous file calls: a basebackup creates about a thousand mostly tiny files, and a
  // thread-pool round trip per open/write/close costs more than the syscalls themselves (the
  // event loop is held for one page-cache write of at most 1 MiB at a time).
  const made = new Set<string>();
  const ensureDir = (dir: string): void => {
    if (made.has(dir)) return;
    const first = mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Hand every directory this call created to the owner (e.g. the postgres OS user as root).
    if (owner !== null && first !== undefined) {
      for (let d = dir; d.length >= first.length; d = path.dirname(d)) chownSync(d, owner.uid, owner.gid);
    }
    made.add(dir);
  };
  return {
    directory: async (p) => ensureDir(path.join(root, p)),
    async file(p, sizeBytes, fill) {
      const full = path.join(root, p);
      ensureDir(path.dirname(full));
      const fd = openSync(full, 'wx', 0o600);
      if (owner !== null) fchownSync(fd, owner.uid, owner.gid);
      let written = 0;
      try {
        await fill(async (chunk) => {
          written += chunk.length;
          let off = 0;
          while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
        });
      } finally {
        closeSync(fd);
      }
      if (written !== sizeBytes) throw new BasebackupError(`${p}: wrote ${written} bytes, expected ${sizeBytes}`, { path: p });
    },
    finish: async () => undefined,
  };
}

export interface BasebackupOptions {
  timeline: Timeline;
  /** Default: the timeline's last record LSN. Must be 8-byte aligned. */
  lsn?: Lsn;
  sink: BasebackupSink;
  log?: Logger;
  /** How long to wait for the LSN to be ingested (default: the pageserver's wait_lsn timeout). */
  timeoutMs?: number;
}

export interface BasebackupResult {
  /** The requested LSN (data as of it). */
  lsn: Lsn;
  /** Where the synthesised checkpoint record is (lsn, past a page header if on a boundary). */
  checkpointLsn: Lsn;
  /** Where the compute writes its first record. */
  nextRecordLsn: Lsn;
  prevLsn: Lsn | null;
  systemId: bigint;
  relationForks: number;
  blocks: number;
  bytes: number;
  elapsedMs: number;
}

function relPath(rel: RelTag, segNo: number, forkNum: number): string {
  const dir = rel.spcNode === GLOBALTABLESPACE_OID ? 'global' : `base/${rel.dbNode}`;
  const fork = forkNum === 0 ? '' : `_${FORK_NAMES[forkNum]}`;
  return `${dir}/${rel.relNode}${fork}${segNo === 0 ? '' : `.${segNo}`}`;
}

/** Generates a basebackup of `timeline` at `lsn` into the sink. */
export async function generateBasebackup(opts: BasebackupOptions): Promise<BasebackupResult> {
  const metrics = opts.timeline.resources.metrics.pageserver;
  const started = performance.now();
  let outcome: BasebackupOutcome = BasebackupOutcome.error;
  try {
    const result = await writeBasebackup(opts);
    outcome = BasebackupOutcome.ok;
    return result;
  } finally {
    metrics.observeBasebackup((performance.now() - started) / 1000, outcome);
  }
}

async function writeBasebackup(opts: BasebackupOptions): Promise<BasebackupResult> {
  const started = Date.now();
  const tl = opts.timeline;
  tl.checkReadable();
  const lsn = opts.lsn ?? tl.lastRecordLsn;
  if ((lsn & 7n) !== 0n) throw new InvalidInputError(`basebackup LSN ${formatLsn(lsn)} is not 8-byte aligned`, tl.context({ lsn: formatLsn(lsn) }));
  tl.checkLsnInScope(lsn);
  if (lsn < tl.initdbLsn && tl.ancestor === null) {
    throw new InvalidInputError(`basebackup LSN ${formatLsn(lsn)} is before the timeline's first LSN ${formatLsn(tl.initdbLsn)}`, tl.context());
  }
  await waitForLsnWithAncestors(tl, lsn, opts.timeoutMs ?? tl.resources.waitLsnTimeoutMs);
  const prevLsn = lsn === tl.lastRecordLsn ? tl.prevRecordLsn : null;
  const view = new DatadirView(tl, lsn);
  const sink = opts.sink;
  let bytes = 0;
  let blocks = 0;
  let forks = 0;

  const control = parseControlFile(view.controlFile());
  const cp: CheckPoint = view.checkpoint();
  const nowSec = BigInt(Math.floor(Date.now() / 1000));
  const wal = buildShutdownCheckpointSegment({
    lsn, systemId: control.systemIdentifier, timeline: 1, segmentSizeBytes: control.xlogSegSize,
    checkPoint: { ...cp, thisTimeLineId: 1, prevTimeLineId: 1, fullPageWrites: true, timeUnixSec: nowSec, oldestActiveXid: 0 },
    prevLsn: prevLsn ?? 0n,
  });
  if (control.dataChecksumVersion !== 0) {
    throw new BasebackupError('the cluster has data checksums enabled; Strata cannot yet recompute page checksums for a basebackup', tl.context());
  }

  const addFile = async (p: string, data: Buffer): Promise<void> => {
    bytes += data.length;
    await sink.file(p, data.length, (write) => write(data));
  };

  try {
    for (const d of PGDATA_SUBDIRS) await sink.directory(d);
    await addFile('PG_VERSION', Buffer.from(PG_MAJOR_VERSION_FILE));
    await addFile('pg_hba.conf', Buffer.from(PG_HBA_CONF));
    await addFile('pg_ident.conf', Buffer.alloc(0));
    await addFile('postgresql.auto.conf', Buffer.from('# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n'));
    await addFile('postgresql.conf', Buffer.from('# Written by Strata; a compute endpoint appends its settings.\n'));

    // SLRUs.
    for (const kind of [SlruKind.clog, SlruKind.multixactMembers, SlruKind.multixactOffsets]) {
      const segs = Array.from(view.slruSegments(kind)).sort((a, b) => a - b);
      for (const segNo of segs) {
        const n = view.slruSegmentSize(kind, segNo);
        const name = `${SLRU_DIR_NAMES[kind]}/${segNo.toString(16).toUpperCase().padStart(4, '0')}`;
        bytes += n * PAGE_BYTES;
        await sink.file(name, n * PAGE_BYTES, async (write) => {
          for (let b = 0; b < n; b++) {
            const page = view.slruPage(kind, segNo, b);
            if (page.length < PAGE_BYTES) throw new BasebackupError(`SLRU page ${name} block ${b} is ${page.length} bytes`, tl.context({ lsn: formatLsn(lsn) }));
            await write(page.length === PAGE_BYTES ? page : page.subarray(0, PAGE_BYTES));
          }
        });
      }
    }

    // Databases and relations.
    for (const db of view.dbDir()) {
      if (db.spcNode !== GLOBALTABLESPACE_OID && db.spcNode !== DEFAULTTABLESPACE_OID) {
        // A database's directory in another tablespace appears when a relation is created there
        // (Storage CREATE) and stays after the relations are dropped (PostgreSQL's regression
        // suite does this). Empty, it needs no files; with relations it cannot be served yet.
        if (!db.hasRelmap && view.relDir(db.spcNode, db.dbNode).size === 0) continue;
        throw new BasebackupError(`database ${db.dbNode} has relations in tablespace ${db.spcNode} at ${formatLsn(lsn)}; only pg_default and pg_global are supported`,
          tl.context({ lsn: formatLsn(lsn), tablespace: db.spcNode, database: db.dbNode }));
      }
      const isGlobal = db.spcNode === GLOBALTABLESPACE_OID;
      const dir = isGlobal ? 'global' : `base/${db.dbNode}`;
      if (!isGlobal) {
        await sink.directory(dir);
        await addFile(`${dir}/PG_VERSION`, Buffer.from(PG_MAJOR_VERSION_FILE));
      }
      if (db.hasRelmap) await addFile(`${dir}/pg_filenode.map`, Buffer.from(view.relmap(db.spcNode, db.dbNode)));
      const entries = view.relDir(db.spcNode, db.dbNode);
      for (const entry of Array.from(entries).sort((a, b) => a - b)) {
        const { relNode, forkNum } = relDirEntryRel(entry);
        const rel: RelTag = { spcNode: db.spcNode, dbNode: db.dbNode, relNode, forkNum };
        // An unlogged relation (it has an init fork) starts empty: its main fork is the init fork.
        if (forkNum === 0 && entries.has(relDirEntry(relNode, 3))) continue;
        forks++;
        const written = await writeFork(rel, rel, forkNum);
        blocks += written;
        if (forkNum === 3) await writeFork(rel, rel, 0);
      }
    }

    // Prepared transactions.
    for (const xid of Array.from(view.twoPhaseXids()).sort((a, b) => a - b)) {
      await addFile(`pg_twophase/${twoPhaseFileName(xid)}`, Buffer.from(twoPhaseFileBytes(view.twoPhaseState(xid))));
    }

    // pg_control: shut down at the synthesised checkpoint.
    const newControl = encodeControlFile({
      ...control,
      state: DBState.SHUTDOWNED,
      timeSec: nowSec,
      checkPoint: wal.recordLsn,
      checkPointCopy: wal.checkPoint,
      minRecoveryPoint: 0n, minRecoveryPointTli: 0, backupStartPoint: 0n, backupEndPoint: 0n, backupEndRequired: false,
    });
    await addFile('global/pg_control', newControl);
    for (const seg of wal.segments) await addFile(`pg_wal/${seg.fileName}`, seg.bytes);
    await sink.finish();
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw new BasebackupError(`basebackup of ${tl.timelineId} at ${formatLsn(lsn)} failed: ${err instanceof Error ? err.message : String(err)}`, tl.context({ lsn: formatLsn(lsn) }), err);
  }

  const result: BasebackupResult = {
    lsn, checkpointLsn: wal.recordLsn, nextRecordLsn: wal.nextRecordLsn, prevLsn, systemId: control.systemIdentifier,
    relationForks: forks, blocks, bytes, elapsedMs: Date.now() - started,
  };
  opts.log?.info('basebackup done', {
    lsn: formatLsn(lsn), relation_forks: forks, blocks, bytes, elapsed_ms: result.elapsedMs,
  });
  return result;

  /** Writes relation fork `src` as fork `asFork`'s segment files; returns the blocks written. */
  async function writeFork(src: RelTag, at: RelTag, asFork: number): Promise<number> {
    const n = view.relSize(src);
    const segCount = Math.max(1, Math.ceil(n / RELSEG_BLOCKS));
    for (let segNo = 0; segNo < segCount; segNo++) {
      const first = segNo * RELSEG_BLOCKS;
      const count = Math.min(RELSEG_BLOCKS, n - first);
      bytes += count * PAGE_BYTES;
      await sink.file(relPath(at, segNo, asFork), count * PAGE_BYTES, async (write) => {
        // Each chunk is a fresh buffer handed over to the sink, which may keep it (a socket write
        // completes later): one copy per page, from the layer read buffer into the chunk.
        let chunk = Buffer.allocUnsafe(Math.min(count, PAGES_PER_CHUNK) * PAGE_BYTES);
        let filled = 0;
        for (let b = 0; b < count; b++) {
          const page = view.relPage(src, first + b);
          if (page.length !== PAGE_BYTES) {
            throw new BasebackupError(`page ${first + b} of ${relPath(src, 0, src.forkNum)} is ${page.length} bytes`, tl.context({ lsn: formatLsn(lsn) }));
          }
          page.copy(chunk, filled * PAGE_BYTES);
          if (++filled === PAGES_PER_CHUNK) {
            await write(chunk);
            chunk = Buffer.allocUnsafe(Math.min(count - b - 1, PAGES_PER_CHUNK) * PAGE_BYTES);
            filled = 0;
          }
        }
        if (filled > 0) await write(chunk.subarray(0, filled * PAGE_BYTES));
      });
    }
    return n;
  }
}

/** Writes a basebackup tar to a file (tests, tools). */
export async function basebackupToTarFile(opts: Omit<BasebackupOptions, 'sink'> & { file: string }): Promise<BasebackupResult> {
  // Synchronous writes of at most 1 MiB (page cache): cheaper than a thread-pool round trip each.
  const fd = openSync(opts.file, 'w', 0o600);
  try {
    return await generateBasebackup({
      ...opts,
      sink: tarSink((chunk) => {
        let off = 0;
        while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off);
      }),
    });
  } finally {
    closeSync(fd);
  }
}
