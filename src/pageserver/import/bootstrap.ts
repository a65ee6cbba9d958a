/**
 * Bootstrap: a new root timeline holding a freshly initialised PostgreSQL 15 cluster.
 *
 * 1. `initdb` into a scratch directory (as the postgres OS user when we are root). initdb ends
 *    with a clean shutdown, so pg_control says "shut down" and its checkpoint's redo LSN is the
 *    shutdown checkpoint record itself: the data directory is exactly the state at that LSN.
 * 2. The directory is imported as one image layer at that LSN (import/datadir.ts).
 * 3. The WAL from that LSN on (the shutdown checkpoint record) is ingested, so last_record_lsn
 *    and prev_record_lsn are real WAL positions a compute can continue from.
 * All of it happens inside Tenant.createTimeline's populate step: the timeline becomes visible
 * only once it is complete and flushed; a failure or crash leaves nothing behind.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { formatLsn } from '../../postgres/lsn.ts';
import { chownForPostgres, runPgTool } from '../../postgres/pgbin.ts';
import { DBState } from '../../postgres/pgcontrol.ts';
import type { Tenant } from '../tenant.ts';
import type { Timeline } from '../timeline/timeline.ts';
import { WalIngest } from '../walingest/walingest.ts';
import { ImportError, importDatadir, readControlFile } from './datadir.ts';
import { ingestWalFiles } from './wal.ts';

export interface BootstrapOptions {
  timelineId?: string;
  pgBinDir?: string;
  /** Superuser name (default `postgres`). */
  superuser?: string;
  /** Where to run initdb (default: the OS temp directory). */
  scratchDir?: string;
}

export async function bootstrapTimeline(tenant: Tenant, opts: BootstrapOptions = {}): Promise<Timeline> {
  tenant.checkActive();
  const scratch = await mkdtemp(path.join(opts.scratchDir ?? os.tmpdir(), 'strata-initdb-'));
  try {
    const dataDir = path.join(scratch, 'pgdata');
    await chownForPostgres(scratch);
    const started = Date.now();
    await runPgTool('initdb', [
      '-D', dataDir, '-U', opts.superuser ?? 'postgres', '-E', 'UTF8', '--locale=C', '--auth=trust', '--no-sync', '--no-instructions',
    ], { ...(opts.pgBinDir !== undefined ? { binDir: opts.pgBinDir } : {}), asServerUser: true });
    tenant.log.info('initdb done', { elapsed_ms: Date.now() - started });
    const control = await readControlFile(path.join(dataDir, 'global', 'pg_control'));
    const checkPointLsn = control.data.checkPoint;
    const redo = control.data.checkPointCopy.redoLsn;
    if (control.data.state !== DBState.SHUTDOWNED || checkPointLsn !== redo) {
      throw new ImportError(`initdb left a cluster that is not cleanly shut down (state ${control.data.state}, checkpoint ${formatLsn(checkPointLsn)}, redo ${formatLsn(redo)})`);
    }
    if ((redo & 7n) !== 0n) throw new ImportError(`initdb's checkpoint LSN ${formatLsn(redo)} is not 8-byte aligned`);
    return await tenant.createTimeline({
      ...(opts.timelineId !== undefined ? { timelineId: opts.timelineId } : {}),
      pgVersion: 15, startLsn: redo, initdbLsn: redo,
      populate: async (tl) => {
        await importDatadir({ timeline: tl, dataDir, lsn: redo, log: tl.log });
        const ingest = new WalIngest(tl);
        const res = await ingestWalFiles({ timeline: tl, ingest, paths: [path.join(dataDir, 'pg_wal')], startLsn: redo, systemId: control.data.systemIdentifier });
        tl.log.info('bootstrap WAL ingested', { records: res.records, last_record_lsn: formatLsn(res.endLsn) });
      },
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
