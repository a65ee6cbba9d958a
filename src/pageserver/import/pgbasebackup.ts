/**
 * Import of an existing PostgreSQL 15 cluster from `pg_basebackup -Ft -X stream` output: the way a
 * user brings a database into Strata.
 *
 * Input: the directory pg_basebackup wrote — `base.tar` (the data directory, with a backup_label)
 * and `pg_wal.tar` (the WAL streamed during the backup), optionally `backup_manifest`. Compressed
 * archives are refused with a message (decompress first).
 *
 * A base backup is fuzzy: files were copied while the server ran, so a page may be torn or newer
 * than the backup's start. PostgreSQL makes it consistent by replaying WAL from the start
 * checkpoint's redo LSN (backup_label: START WAL LOCATION) to the backup end (XLOG_BACKUP_END);
 * every page changed in between has a full-page image in that WAL. Strata does the same: the files
 * become an image layer at the start LSN, the WAL from there is ingested, and the timeline's GC
 * cutoff is set to the backup's end, so nobody can read or branch at an LSN where the data was
 * still fuzzy. The import fails if the WAL does not reach the backup end.
 *
 * Limit (until TypeScript redo lands, issue 7): the source does not run with
 * wal_consistency_checking, so a record in the backup window that changes a page already
 * imaged there has no image Strata can use; reading that page then fails with redo_unsupported
 * naming the record. Back up a quiet source (or one with wal_consistency_checking = all).
 */
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { pathExists } from '../../util/durable.ts';
import os from 'node:os';
import path from 'node:path';
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn, parseLsn } from '../../postgres/lsn.ts';
import { readTar } from '../../postgres/tar.ts';
import { RM_XLOG_ID } from '../../postgres/rmgr.ts';
import { XLOG_BACKUP_END, parseBackupEnd } from '../../postgres/records/xlog.ts';
import { scanWal } from '../../postgres/walfiles.ts';
import type { Tenant } from '../tenant.ts';
import type { Timeline } from '../timeline/timeline.ts';
import { checkpointIfNeeded } from '../timeline/flush.ts';
import { WalIngest } from '../walingest/walingest.ts';
import { IngestError } from '../datadir/writer.ts';
import { ImportError, importDatadir, readControlFile } from './datadir.ts';

/** Files bigger than this in a base backup are refused (PostgreSQL writes at most 1 GiB segments). */
const MAX_TAR_ENTRY_BYTES = 1024 * 1024 * 1024 + 8192;
const MAX_TAR_ENTRIES = 5_000_000;

export interface BackupLabel {
  startLsn: Lsn;
  checkpointLsn: Lsn;
  startTimeline: number;
}

export function parseBackupLabel(text: string): BackupLabel {
  const start = /^START WAL LOCATION: ([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/m.exec(text);
  const cp = /^CHECKPOINT LOCATION: ([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/m.exec(text);
  const tli = /^START TIMELINE: (\d+)/m.exec(text);
  if (start === null || cp === null) throw new ImportError('backup_label has no START WAL LOCATION / CHECKPOINT LOCATION line: not a PostgreSQL base backup label');
  return { startLsn: parseLsn(start[1]!), checkpointLsn: parseLsn(cp[1]!), startTimeline: tli === null ? 1 : Number(tli[1]) };
}

/** Extracts a tar into `dest` (created), refusing absolute paths, `..`, and links. */
async function extractTar(tarPath: string, dest: string): Promise<number> {
  await mkdir(dest, { recursive: true });
  let entries = 0;
  const root = path.resolve(dest);
  for await (const e of readTar(createReadStream(tarPath, { highWaterMark: 1024 * 1024 }), { maxEntrySizeBytes: MAX_TAR_ENTRY_BYTES })) {
    if (++entries > MAX_TAR_ENTRIES) throw new ImportError(`${tarPath} has more than ${MAX_TAR_ENTRIES} entries`);
    const target = path.resolve(root, e.path);
    if (target !== root && !target.startsWith(root + path.sep)) throw new ImportError(`${tarPath}: entry "${e.path}" points outside the archive root`);
    if (e.type === 'directory') {
      await mkdir(target, { recursive: true });
    } else if (e.type === 'file') {
      await mkdir(path.dirname(target), { recursive: true });
      const fh = await open(target, 'w', 0o600);
      try {
        let written = 0;
        for await (const chunk of e.content()) {
          let off = 0;
          while (off < chunk.length) off += (await fh.write(chunk, off, chunk.length - off)).bytesWritten;
          written += chunk.length;
        }
        if (written !== e.sizeBytes) throw new ImportError(`${tarPath}: entry "${e.path}" has ${written} of ${e.sizeBytes} bytes`);
      } finally {
        await fh.close();
      }
    } else if (e.type === 'symlink') {
      throw new ImportError(`${tarPath}: "${e.path}" is a symlink (a tablespace?): only pg_default and pg_global are supported`);
    }
  }
  return entries;
}

export interface PgBasebackupImportOptions {
  /** The directory pg_basebackup -Ft wrote (base.tar, pg_wal.tar). */
  backupDir: string;
  timelineId?: string;
  scratchDir?: string;
}

export interface PgBasebackupImportResult {
  timeline: Timeline;
  startLsn: Lsn;
  /** Where the backup became consistent (end of its XLOG_BACKUP_END record): the GC cutoff. */
  consistentLsn: Lsn;
  walRecords: number;
}

/** Imports a pg_basebackup tar backup as a new root timeline of `tenant`. */
export async function importPgBasebackup(tenant: Tenant, opts: PgBasebackupImportOptions): Promise<PgBasebackupImportResult> {
  tenant.checkActive();
  const baseTar = path.join(opts.backupDir, 'base.tar');
  const walTar = path.join(opts.backupDir, 'pg_wal.tar');
  for (const compressed of ['base.tar.gz', 'base.tar.lz4', 'base.tar.zst']) {
    if (await pathExists(path.join(opts.backupDir, compressed))) throw new ImportError(`${compressed}: compressed backups are not supported; decompress to base.tar first`);
  }
  if (!(await pathExists(baseTar))) throw new ImportError(`${baseTar} not found: expected the output directory of pg_basebackup -Ft -X stream`);
  if (!(await pathExists(walTar))) throw new ImportError(`${walTar} not found: take the backup with -X stream (or -X fetch) so the WAL it needs is included`);

  const scratch = await mkdtemp(path.join(opts.scratchDir ?? os.tmpdir(), 'strata-import-'));
  try {
    const dataDir = path.join(scratch, 'data');
    const walDir = path.join(scratch, 'wal');
    await extractTar(baseTar, dataDir);
    await extractTar(walTar, walDir);
    let labelText: string;
    try {
      labelText = await readFile(path.join(dataDir, 'backup_label'), 'utf8');
    } catch {
      throw new ImportError(`${baseTar} has no backup_label: not a base backup taken with pg_basebackup`);
    }
    const label = parseBackupLabel(labelText);
    const control = await readControlFile(path.join(dataDir, 'global', 'pg_control'));
    if (control.data.dataChecksumVersion !== 0) {
      throw new ImportError('the cluster has data checksums enabled; Strata cannot import such clusters yet (it would have to recompute page checksums)');
    }
    const start = label.startLsn;
    if ((start & 7n) !== 0n) throw new ImportError(`backup start ${formatLsn(start)} is not 8-byte aligned`);

    let consistentLsn: Lsn = 0n;
    let walRecords = 0;
    const tl = await tenant.createTimeline({
      ...(opts.timelineId !== undefined ? { timelineId: opts.timelineId } : {}),
      pgVersion: 15, startLsn: start, initdbLsn: start,
      populate: async (timeline) => {
        await importDatadir({ timeline, dataDir, lsn: start, log: timeline.log });
        const ingest = new WalIngest(timeline);
        const res = await scanWal([walDir], { startLsn: start, systemId: control.data.systemIdentifier, afterChunk: () => checkpointIfNeeded(timeline) }, (rec) => {
          ingest.ingest(rec);
          walRecords++;
          if (consistentLsn === 0n && rec.rmid === RM_XLOG_ID && (rec.info & 0xf0) === XLOG_BACKUP_END && parseBackupEnd(rec).startLsn === start) {
            consistentLsn = rec.endLsn;
          }
        });
        if (!res.end.clean) {
          throw new IngestError(`the backup's WAL is damaged at ${formatLsn(res.end.lsn)}: ${res.end.reason}`, timeline.context());
        }
        if (consistentLsn === 0n) {
          throw new ImportError(`the backup's WAL ends at ${formatLsn(timeline.lastRecordLsn)} without the backup-end record for start ${formatLsn(start)}: the backup is incomplete`);
        }
        await timeline.advanceGcCutoff(consistentLsn);
        timeline.log.info('pg_basebackup imported', {
          start_lsn: formatLsn(start), consistent_lsn: formatLsn(consistentLsn), last_record_lsn: formatLsn(timeline.lastRecordLsn), wal_records: walRecords,
        });
      },
    });
    return { timeline: tl, startLsn: start, consistentLsn, walRecords };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
