/**
 * Ingest of WAL from segment files (a bootstrap's pg_wal, an imported cluster's WAL) into a
 * timeline, from a record boundary up to where the WAL ends (or a given end LSN).
 *
 * The WAL must end cleanly (zeros, a stale recycled page, or exactly at `endLsn`): anything else
 * means the files are damaged, and importing part of a cluster's history silently would be worse
 * than refusing. Back-pressure: after every chunk of records the timeline may freeze and flush
 * (checkpointIfNeeded), so a long WAL never piles up in memory.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { scanWal } from '../../postgres/walfiles.ts';
import { checkpointIfNeeded } from '../timeline/flush.ts';
import type { Timeline } from '../timeline/timeline.ts';
import { IngestError } from '../datadir/writer.ts';
import { WalIngest } from '../walingest/walingest.ts';

export interface WalFileIngestResult {
  records: number;
  endLsn: Lsn;
  endReason: string;
}

export async function ingestWalFiles(opts: {
  timeline: Timeline;
  ingest: WalIngest;
  paths: string[];
  startLsn: Lsn;
  endLsn?: Lsn;
  systemId?: bigint;
}): Promise<WalFileIngestResult> {
  const { timeline, ingest } = opts;
  let records = 0;
  const result = await scanWal(opts.paths, {
    startLsn: opts.startLsn,
    ...(opts.endLsn !== undefined ? { endLsn: opts.endLsn } : {}),
    ...(opts.systemId !== undefined ? { systemId: opts.systemId } : {}),
    afterChunk: () => checkpointIfNeeded(timeline),
  }, (rec) => {
    ingest.ingest(rec);
    records++;
  });
  const end = result.end;
  if (!end.clean) {
    throw new IngestError(`WAL in ${opts.paths.join(', ')} is damaged at ${formatLsn(end.lsn)}: ${end.reason}`,
      timeline.context({ lsn: formatLsn(end.lsn), code: end.code }));
  }
  if (opts.endLsn !== undefined && timeline.lastRecordLsn < opts.endLsn) {
    throw new IngestError(`WAL ends at ${formatLsn(timeline.lastRecordLsn)}, before the expected end ${formatLsn(opts.endLsn)} (${end.reason})`,
      timeline.context({ lsn: formatLsn(timeline.lastRecordLsn) }));
  }
  return { records, endLsn: timeline.lastRecordLsn, endReason: end.reason };
}
