/**
 * Compute endpoints: an unmodified PostgreSQL 15 running on a Strata timeline.
 *
 * start():
 *   1. Only one compute may write a timeline: any WAL source of the timeline is detached first.
 *   2. A basebackup of the timeline at its last record LSN is written into the endpoint's data
 *      directory (wiped first: a compute's local files are disposable, the timeline is the truth).
 *   3. postgresql.conf gets the settings Strata relies on: the port, wal_level=replica, WAL
 *      senders and slots for the pageserver, full_page_writes=on, and wal_consistency_checking for
 *      every resource manager Strata cannot redo yet (with the tenant's redo_mode = images that is
 *      all of them), with wal_compression=zstd to keep those images small. (computeSettings and
 *      startComputeFromBasebackup are shared with the CLI's out-of-process endpoints,
 *      src/control/endpoints.ts.)
 *   4. postgres starts (as the postgres OS user when we are root) and must accept queries.
 *   5. The pageserver is told to stream this compute's WAL through a physical slot `strata`,
 *      from the basebackup LSN, where the compute's own WAL starts with the synthesised
 *      checkpoint record.
 * stop(): a fast shutdown makes PostgreSQL write a shutdown checkpoint and wait until the
 * pageserver has flushed it; then the WAL source is detached. The next start() continues at the
 * tip. stop('immediate') is a crash: WAL the pageserver had not received is lost with the compute.
 */
import { appendFile, mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { chownForPostgres, postgresRunAs } from '../postgres/pgbin.ts';
import type { Logger } from '../util/log.ts';
import { directorySink, generateBasebackup, type BasebackupSink } from '../pageserver/basebackup.ts';
import type { Pageserver } from '../pageserver/pageserver.ts';
import type { Timeline } from '../pageserver/timeline/timeline.ts';
import type { RedoMode } from '../pageserver/tenantconfig.ts';
import { ComputeError, PostgresProcess, freePort, type StopMode } from './postgresprocess.ts';
import { runElection, synchronousStandbyNames, waitForCommit, type SafekeeperAddress } from './election.ts';
import { COMPUTE_TERM_SETTING } from '../safekeeper/puller.ts';
import { standbyNameFor } from '../safekeeper/membership.ts';
import { DatadirView } from '../pageserver/datadir/view.ts';
import { parseControlFile } from '../postgres/pgcontrol.ts';
import pg from 'pg';
import { supportedRmgrs } from '../redo/index.ts';

/** Slot the pageserver streams through; the compute keeps WAL until the pageserver has flushed it. */
export const STRATA_SLOT = 'strata';
export const STRATA_APPLICATION_NAME = 'strata_pageserver';

/** PostgreSQL 15's resource managers that take part in wal_consistency_checking (they have a mask). */
const CONSISTENCY_CHECKED_RMGRS = ['Heap2', 'Heap', 'Btree', 'Hash', 'Gin', 'Gist', 'Sequence', 'SPGist', 'BRIN', 'Generic'] as const;

/**
 * wal_consistency_checking for a compute, by the tenant's redo mode. `images` (and `verify`, which
 * compares our redo with the images) make PostgreSQL log a full image with every change, which is
 * what Strata stores. `typescript` asks images only for the resource managers Strata cannot redo
 * itself (src/redo/): their records must still carry the page, the others are replayed.
 */
export function walConsistencyChecking(mode: RedoMode): string {
  switch (mode) {
    case 'images': return 'all';
    case 'verify': return 'all';
    case 'typescript': {
      const replayed = new Set(supportedRmgrs().map((r) => r.name));
      return CONSISTENCY_CHECKED_RMGRS.filter((n) => !replayed.has(n)).map((n) => n.toLowerCase()).join(',');
    }
  }
}

export interface EndpointOptions {
  pageserver: Pageserver;
  tenantId: string;
  timelineId: string;
  /** The endpoint's own directory (data directory, log, socket). */
  dir: string;
  /** Default: a free port on 127.0.0.1. */
  port?: number;
  pgBinDir?: string;
  /** Extra postgresql.conf settings (tests: fsync=off). */
  settings?: Readonly<Record<string, string | number | boolean>>;
  log?: Logger;
  /**
   * The timeline's safekeepers. When given, the compute's WAL goes to them (synchronous standbys,
   * a majority must fsync every commit) and the pageserver gets it from them via the broker; the
   * start runs an election first (election.ts). Without it, the pageserver streams straight from
   * the compute (development mode: a commit is only as durable as the compute's own disk).
   */
  safekeepers?: readonly SafekeeperAddress[];
}

export interface EndpointInfo {
  tenantId: string;
  timelineId: string;
  port: number;
  pid: number;
  dataDir: string;
  logFile: string;
  /** The LSN the compute started at (its basebackup LSN). */
  startLsn: Lsn;
  /** The safekeeper term this compute writes in (null without safekeepers). */
  term: bigint | null;
  connectionString: string;
}

function confValue(v: string | number | boolean): string {
  if (typeof v === 'number') return String(v);
  if (typeof v === 'boolean') return v ? 'on' : 'off';
  return `'${v.replace(/'/g, "''")}'`;
}

export class Endpoint {
  readonly tenantId: string;
  readonly timelineId: string;
  readonly dir: string;
  readonly dataDir: string;
  readonly startLsn: Lsn;
  readonly term: bigint | null;
  readonly safekeepers: readonly SafekeeperAddress[] | null;
  private pageserver: Pageserver;
  private readonly process: PostgresProcess;

  private constructor(opts: EndpointOptions, process: PostgresProcess, startLsn: Lsn, term: bigint | null) {
    this.tenantId = opts.tenantId;
    this.timelineId = opts.timelineId;
    this.dir = opts.dir;
    this.dataDir = path.join(opts.dir, 'pgdata');
    this.pageserver = opts.pageserver;
    this.process = process;
    this.startLsn = startLsn;
    this.term = term;
    this.safekeepers = opts.safekeepers ?? null;
  }

  get port(): number {
    return this.process.port;
  }

  /** After a pageserver restart (a new Pageserver object), the endpoint talks to the new one. */
  usePageserver(ps: Pageserver): void {
    this.pageserver = ps;
  }

  get pid(): number {
    return this.process.pid;
  }

  get isRunning(): boolean {
    return this.process.isRunning;
  }

  get logFile(): string {
    return this.process.logFile;
  }

  connectionString(database = 'postgres'): string {
    return `postgresql://postgres@127.0.0.1:${this.port}/${database}`;
  }

  info(): EndpointInfo {
    return {
      tenantId: this.tenantId, timelineId: this.timelineId, port: this.port, pid: this.pid, dataDir: this.dataDir,
      logFile: this.logFile, startLsn: this.startLsn, term: this.term, connectionString: this.connectionString(),
    };
  }

  static async start(opts: EndpointOptions): Promise<Endpoint> {
    if (opts.safekeepers !== undefined) return Endpoint.startWithSafekeepers(opts, opts.safekeepers);
    const ps = opts.pageserver;
    const tl = ps.getTimeline(opts.tenantId, opts.timelineId);
    const tenant = ps.tenants.getTenant(tl.tenantId);
    const log = (opts.log ?? tl.log).child({ endpoint: path.basename(opts.dir) });
    await checkReachableByServerUser(opts.dir);
    // One writer per timeline: a compute whose WAL is being streamed is alive and would fork the
    // timeline's history. A source that is not streaming (its compute died) is replaced.
    const current = ps.walReceiver(opts.tenantId, opts.timelineId);
    if (current !== null && current.status.state === 'streaming') {
      throw new ComputeError(`timeline ${opts.timelineId} already has a running compute (${current.status.connectedTo}); stop it first`,
        { tenant: opts.tenantId, timeline: opts.timelineId, compute: current.status.connectedTo });
    }
    await ps.detachWalSource(opts.tenantId, opts.timelineId);

    const port = opts.port ?? await freePort();
    const { bb, proc } = await materializeAndStart(opts, tl, log, {
      port, lsn: undefined, timeoutMs: undefined,
      settings: computeSettings({ port, socketDir: opts.dir, redoMode: tenant.config.redoMode, safekeepers: null, term: null }),
    });
    try {
      await ps.attachWalSource(opts.tenantId, opts.timelineId, {
        host: '127.0.0.1', port, user: 'postgres', slotName: STRATA_SLOT, applicationName: STRATA_APPLICATION_NAME,
      });
    } catch (err) {
      await proc.stop('immediate');
      throw err;
    }
    log.info('endpoint started', { port, pid: proc.pid, start_lsn: formatLsn(bb.lsn) });
    return new Endpoint(opts, proc, bb.lsn, null);
  }

  /**
   * Start through the safekeepers: elect a term (its start LSN is the end of the most advanced WAL
   * a quorum has), wait until a quorum has that WAL and the pageserver ingested it, take the
   * basebackup exactly there, start PostgreSQL as the primary of that term with the safekeepers as
   * its synchronous standbys, and create their slots.
   */
  private static async startWithSafekeepers(opts: EndpointOptions, safekeepers: readonly SafekeeperAddress[]): Promise<Endpoint> {
    if (safekeepers.length === 0) throw new ComputeError('an endpoint needs at least one safekeeper when safekeepers are given');
    const ps = opts.pageserver;
    const tl = ps.getTimeline(opts.tenantId, opts.timelineId);
    const tenant = ps.tenants.getTenant(tl.tenantId);
    const log = (opts.log ?? tl.log).child({ endpoint: path.basename(opts.dir) });
    await checkReachableByServerUser(opts.dir);
    await ps.attachSafekeepers(opts.tenantId, opts.timelineId);
    const control = parseControlFile(new DatadirView(tl, tl.lastRecordLsn).controlFile());
    const port = opts.port ?? await freePort();
    const election = await runElection({
      safekeepers, tenantId: opts.tenantId, timelineId: opts.timelineId, systemId: control.systemIdentifier,
      walSegSizeBytes: control.xlogSegSize, startLsnIfNew: tl.lastRecordLsn,
      compute: { host: '127.0.0.1', port, user: 'postgres' }, log,
    });
    const startLsn = election.startLsn;
    if (tl.lastRecordLsn > startLsn) {
      throw new ComputeError(`the pageserver has WAL of timeline ${opts.timelineId} up to ${formatLsn(tl.lastRecordLsn)}, beyond the safekeepers' ${formatLsn(startLsn)}: it was written without these safekeepers`,
        { tenant: opts.tenantId, timeline: opts.timelineId });
    }
    const waitMs = tl.resources.waitLsnTimeoutMs;
    await waitForCommit({ safekeepers, tenantId: opts.tenantId, timelineId: opts.timelineId, lsn: startLsn, timeoutMs: waitMs });

    // The basebackup waits (bounded) until the pageserver has ingested up to startLsn.
    const settings = computeSettings({ port, socketDir: opts.dir, redoMode: tenant.config.redoMode, safekeepers, term: election.term });
    const { bb, proc } = await materializeAndStart(opts, tl, log, { port, lsn: startLsn, timeoutMs: waitMs, settings });
    try {
      await createSafekeeperSlots(port, safekeepers);
    } catch (err) {
      await proc.stop('immediate');
      throw err;
    }
    log.info('endpoint started', { port, pid: proc.pid, start_lsn: formatLsn(bb.lsn), term: election.term, synchronous_standby_names: String(settings['synchronous_standby_names']) });
    return new Endpoint(opts, proc, bb.lsn, election.term);
  }

  /**
   * Stops the compute. 'fast' (default) and 'smart' wait for the pageserver to have ingested the
   * shutdown checkpoint (PostgreSQL's walsender does not exit before); 'immediate' is a crash.
   */
  async stop(mode: StopMode = 'fast'): Promise<void> {
    await this.process.stop(mode);
    if (this.safekeepers !== null) return; // the safekeepers keep the WAL; the pageserver stays subscribed
    await this.pageserver.detachWalSource(this.tenantId, this.timelineId).catch((err: unknown) => {
      throw new ComputeError(`could not detach the WAL source: ${err instanceof Error ? err.message : String(err)}`, {}, err);
    });
  }

  /** SIGKILL (a crash of the compute's host, as far as PostgreSQL can tell). */
  async kill(): Promise<void> {
    await this.process.kill();
    if (this.safekeepers !== null) return;
    await this.pageserver.detachWalSource(this.tenantId, this.timelineId);
  }
}

/** Writes a basebackup of `tl` at `lsn` (default: its last record) and starts postgres on it. */
async function materializeAndStart(opts: EndpointOptions, tl: Timeline, log: Logger,
  extra: { port: number; lsn: Lsn | undefined; timeoutMs: number | undefined; settings: Record<string, string | number | boolean> },
): Promise<{ bb: { lsn: Lsn }; proc: PostgresProcess }> {
  const { startLsn, proc } = await startComputeFromBasebackup({
    dir: opts.dir, port: extra.port, settings: { ...extra.settings, ...(opts.settings ?? {}) },
    ...(opts.pgBinDir !== undefined ? { pgBinDir: opts.pgBinDir } : {}),
    fill: async (sink) => (await generateBasebackup({
      timeline: tl, sink, log,
      ...(extra.lsn !== undefined ? { lsn: extra.lsn } : {}), ...(extra.timeoutMs !== undefined ? { timeoutMs: extra.timeoutMs } : {}),
    })).lsn,
  });
  return { bb: { lsn: startLsn }, proc };
}

/**
 * The postgresql.conf settings a Strata compute runs with — one definition for the in-process
 * endpoints here and the CLI's out-of-process ones (src/control/endpoints.ts): the port, loopback
 * only, wal_level=replica, full_page_writes, wal_compression=zstd, wal_consistency_checking for the
 * tenant's redo mode, WAL senders and slots; with safekeepers also `synchronous_standby_names =
 * 'ANY k (sk_…)'`, synchronous_commit=on and the compute's term (`strata.term`).
 */
export function computeSettings(o: {
  port: number; socketDir: string; redoMode: RedoMode; safekeepers: readonly SafekeeperAddress[] | null; term: bigint | null;
}): Record<string, string | number | boolean> {
  const settings: Record<string, string | number | boolean> = {
    port: o.port,
    listen_addresses: '127.0.0.1',
    unix_socket_directories: o.socketDir,
    wal_level: 'replica',
    full_page_writes: true,
    wal_compression: 'zstd',
    max_prepared_transactions: 16,
    logging_collector: false,
    max_wal_senders: 10 + (o.safekeepers?.length ?? 0),
    max_replication_slots: 10 + (o.safekeepers?.length ?? 0),
    wal_consistency_checking: walConsistencyChecking(o.redoMode),
  };
  if (o.safekeepers !== null) {
    if (o.term === null) throw new ComputeError('a compute writing to safekeepers needs its term');
    settings['synchronous_standby_names'] = synchronousStandbyNames(o.safekeepers);
    settings['synchronous_commit'] = 'on';
    settings[COMPUTE_TERM_SETTING] = o.term.toString();
  }
  return settings;
}

/**
 * The steps every compute start shares once it knows where its data comes from: wipe the data
 * directory (a compute's local files are disposable: the timeline is the truth), make the endpoint
 * directory reachable by the postgres OS user, let `fill` write a whole basebackup into a directory sink
 * (files owned by the postgres OS user when root, PostgreSQL's modes), append `settings` to
 * postgresql.conf, start postgres and wait until it accepts queries. `outliveUs`: the server keeps
 * running after this process exits (CLI endpoints).
 */
export async function startComputeFromBasebackup(o: {
  dir: string; port: number; settings: Record<string, string | number | boolean>; pgBinDir?: string; outliveUs?: boolean;
  fill: (sink: BasebackupSink) => Promise<Lsn>;
}): Promise<{ startLsn: Lsn; proc: PostgresProcess }> {
  const dataDir = path.join(o.dir, 'pgdata');
  await rm(dataDir, { recursive: true, force: true });
  await mkdir(o.dir, { recursive: true, mode: 0o755 });
  await chownForPostgres(o.dir);
  // Files are created owned by the postgres OS user (when root), so no second pass over them.
  const sink = directorySink(dataDir, { owner: postgresRunAs() });
  const startLsn = await o.fill(sink);
  const conf = ['', '# Strata compute endpoint settings', ...Object.entries(o.settings).map(([k, v]) => `${k} = ${confValue(v)}`), ''].join('\n');
  await appendFile(path.join(dataDir, 'postgresql.conf'), conf);
  const proc = await PostgresProcess.start({
    dataDir, port: o.port, logFile: path.join(o.dir, 'postgres.log'),
    ...(o.pgBinDir !== undefined ? { binDir: o.pgBinDir } : {}), ...(o.outliveUs === true ? { outliveUs: true } : {}),
  });
  return { startLsn, proc };
}

/**
 * One physical slot per safekeeper, reserving WAL from now on: a safekeeper that is down keeps the
 * WAL it has not got yet on the compute until it comes back (each safekeeper also creates its slot
 * itself if missing). pg_create_physical_replication_slot writes no transaction, so it does not
 * wait for the synchronous standbys.
 */
export async function createSafekeeperSlots(port: number, safekeepers: readonly SafekeeperAddress[]): Promise<void> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres', connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    for (const sk of safekeepers) {
      const name = standbyNameFor(sk.id);
      try {
        await client.query('SELECT pg_create_physical_replication_slot($1, true)', [name]);
      } catch (err) {
        // The safekeeper creates its slot itself when it connects first: that is success too.
        if ((err as { code?: string }).code !== '42710') throw err;
      }
    }
  } finally {
    await client.end();
  }
}

/**
 * As root, PostgreSQL runs as the postgres OS user, which must be able to reach the endpoint
 * directory: every ancestor needs search permission for it. Say so up front instead of letting
 * postgres fail with "Permission denied" in its log.
 */
export async function checkReachableByServerUser(dir: string): Promise<void> {
  const user = postgresRunAs();
  if (user === null) return;
  const abs = path.resolve(dir);
  for (let p = path.dirname(abs); ; p = path.dirname(p)) {
    const st = await stat(p).catch(() => null);
    if (st !== null) {
      const ok = st.uid === user.uid ? (st.mode & 0o100) !== 0 : st.gid === user.gid ? (st.mode & 0o010) !== 0 : (st.mode & 0o001) !== 0;
      if (!ok) throw new ComputeError(`the postgres OS user cannot reach ${abs}: ${p} is not searchable by it (mode ${(st.mode & 0o777).toString(8)}); use a directory others can traverse (chmod o+x)`, { dir: abs });
    }
    if (p === path.dirname(p)) break;
  }
}
