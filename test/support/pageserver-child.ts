/**
 * Child process of the ingest crash test: a pageserver on a work directory, nothing else. Its
 * timelines' WAL sources are persisted (wal-source.json), so on start every WAL receiver
 * reconnects to its compute by itself and resumes at disk_consistent_lsn.
 *
 * Protocol on stdout: `ready` once started; then, every 100 ms, `durable <tenant>/<timeline> <lsn>`
 * for the durable disk_consistent_lsn of each timeline (what the receiver may report as flushed).
 * A tiny checkpoint_distance makes flushes (and so durable progress) frequent.
 * Also `last <tenant>/<timeline> <lsn>`: last_record_lsn (what was ingested).
 * Usage: pageserver-child.ts <workdir> [<broker host:port>]
 */
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import { formatLsn } from '../../src/postgres/lsn.ts';

async function main(): Promise<void> {
  const [workdir, broker] = process.argv.slice(2);
  if (workdir === undefined) throw new Error('usage: pageserver-child.ts <workdir>');
  const ps = await Pageserver.start({
    workdir, pageCacheBytes: 16 << 20, blockCacheBytes: 8 << 20, waitLsnTimeoutMs: 60_000, listenPg: null,
    walReceiverBackoffMs: { min: 20, max: 500 }, brokerEndpoint: broker ?? null,
  });
  process.stdout.write('ready\n');
  setInterval(() => {
    for (const t of ps.tenants.listTenants()) {
      for (const tl of t.listTimelines()) {
        process.stdout.write(`durable ${t.tenantId}/${tl.timelineId} ${formatLsn(tl.diskConsistent.lsn)}\n`);
        process.stdout.write(`last ${t.tenantId}/${tl.timelineId} ${formatLsn(tl.lastRecordLsn)}\n`);
      }
    }
  }, 100);
  process.on('SIGTERM', () => {
    void ps.shutdown({ flush: true }).then(() => process.exit(0));
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`pageserver child failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
