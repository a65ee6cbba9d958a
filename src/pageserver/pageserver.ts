/**
 * The pageserver process in one object: the tenant manager, the page service (libpq protocol),
 * and the WAL intake of every timeline that has a WAL source.
 *
 * WAL sources are persisted per timeline (`wal-source.json` in the timeline directory, written
 * durably) so that after a restart intake resumes by itself from disk_consistent_lsn. Two kinds:
 *   - `safekeepers`: the timeline's WAL comes from its safekeepers. A ConnectionManager
 *     (connmanager.ts) subscribes to the broker for the timeline and keeps one connection to the
 *     safekeeper with the most committed WAL, switching when it goes silent or falls behind;
 *     safekeepers serve only committed WAL, and our 'z' feedback tells them what is durable here.
 *   - `compute` (development mode, no safekeepers): a WalReceiver streams straight from the
 *     compute through a slot, as before.
 *
 * Page service commands (simple Query protocol):
 *   basebackup <tenant_id> <timeline_id> [<lsn>]   → CopyOut of a tar stream (psql writes it to stdout)
 *   get_last_record_rlsn <tenant_id> <timeline_id> → one row (prev_lsn, last_lsn)
 *   set …                                          → ignored (client compatibility)
 * Anything else is an error naming the command. Errors keep the connection usable.
 */
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { formatLsn, parseLsn } from '../postgres/lsn.ts';
import { startPgWireServer, type PgWireServer, type QueryContext } from '../postgres/pgwire/server.ts';
import { writeFileDurable } from '../util/durable.ts';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { parseId } from '../util/ids.ts';
import { rootLogger, type Logger } from '../util/log.ts';
import { generateBasebackup, tarSink } from './basebackup.ts';
import { TenantManager, type TenantManagerOptions } from './tenantmgr.ts';
import type { Timeline } from './timeline/timeline.ts';
import { WalReceiver, safekeeperConnectionFactory, type WalSource } from './walreceiver.ts';
import { ConnectionManager } from './connmanager.ts';
import { BrokerClient } from '../broker/client.ts';

export const WAL_SOURCE_FILE = 'wal-source.json';

export interface PageserverOptions extends TenantManagerOptions {
  /** Page service listen address; null = no page service. */
  listenPg?: { host: string; port: number } | null;
  /** WAL receiver reconnect backoff bounds (tests use small ones). */
  walReceiverBackoffMs?: { min: number; max: number };
  /** host:port of the storage broker; needed for timelines whose WAL comes from safekeepers. */
  brokerEndpoint?: string | null;
}

export class Pageserver {
  readonly tenants: TenantManager;
  readonly log: Logger;
  private pageService: PgWireServer | null = null;
  private readonly receivers = new Map<string, WalReceiver>();
  private readonly managers = new Map<string, ConnectionManager>();
  private readonly backoff: { min: number; max: number };
  private readonly broker: BrokerClient | null;
  private readonly brokerAbort = new AbortController();
  private closed = false;

  private constructor(tenants: TenantManager, opts: PageserverOptions) {
    this.tenants = tenants;
    this.log = opts.log ?? rootLogger;
    this.backoff = opts.walReceiverBackoffMs ?? { min: 100, max: 5_000 };
    this.broker = opts.brokerEndpoint !== undefined && opts.brokerEndpoint !== null ? new BrokerClient({ endpoint: opts.brokerEndpoint, log: this.log }) : null;
  }

  static async start(opts: PageserverOptions): Promise<Pageserver> {
    const tenants = await TenantManager.open(opts);
    const ps = new Pageserver(tenants, opts);
    try {
      if (opts.listenPg !== undefined && opts.listenPg !== null) {
        ps.pageService = await startPgWireServer({
          host: opts.listenPg.host, port: opts.listenPg.port, logger: ps.log,
          onQuery: (q, conn) => ps.handleQuery(q, conn),
        });
        ps.log.info('page service listening', { host: opts.listenPg.host, port: ps.pageService.port });
      }
      await ps.startPersistedReceivers();
    } catch (err) {
      await ps.shutdown({ flush: false });
      throw err;
    }
    return ps;
  }

  get pageServicePort(): number | null {
    return this.pageService?.port ?? null;
  }

  getTimeline(tenantId: string, timelineId: string): Timeline {
    return this.tenants.getTenant(parseId(tenantId, 'tenant')).getTimeline(parseId(timelineId, 'timeline'));
  }

  // ---------------------------------------------------------------------------------------------
  // WAL sources.

  private static receiverKey(tl: Timeline): string {
    return `${tl.tenantId}/${tl.timelineId}`;
  }

  private async startPersistedReceivers(): Promise<void> {
    for (const tenant of this.tenants.listTenants()) {
      if (tenant.state !== 'Active') continue;
      for (const tl of tenant.listTimelines()) {
        let text: string;
        try {
          text = await readFile(path.join(tl.dir, WAL_SOURCE_FILE), 'utf8');
        } catch {
          continue;
        }
        const source = parseWalSource(text, path.join(tl.dir, WAL_SOURCE_FILE));
        if (tl.state !== 'Active') continue;
        if (source === 'safekeepers') this.startManager(tl);
        else this.startReceiver(tl, source);
      }
    }
  }

  private startReceiver(tl: Timeline, source: WalSource): WalReceiver {
    const r = new WalReceiver({ timeline: tl, source, log: tl.log, minBackoffMs: this.backoff.min, maxBackoffMs: this.backoff.max });
    this.receivers.set(Pageserver.receiverKey(tl), r);
    r.start();
    return r;
  }

  /** Streams the timeline's WAL from `source` from now on (and after restarts). */
  async attachWalSource(tenantId: string, timelineId: string, source: WalSource): Promise<WalReceiver> {
    const tl = this.getTimeline(tenantId, timelineId);
    tl.checkReadable();
    await this.detachWalSource(tenantId, timelineId);
    await writeFileDurable(path.join(tl.dir, WAL_SOURCE_FILE), Buffer.from(JSON.stringify({ version: 1, ...source }, null, 2) + '\n'));
    return this.startReceiver(tl, source);
  }

  /** Stops streaming the timeline's WAL and forgets its source. */
  async detachWalSource(tenantId: string, timelineId: string): Promise<void> {
    const tl = this.getTimeline(tenantId, timelineId);
    const key = Pageserver.receiverKey(tl);
    const r = this.receivers.get(key);
    if (r !== undefined) {
      this.receivers.delete(key);
      await r.stop();
    }
    const m = this.managers.get(key);
    if (m !== undefined) {
      this.managers.delete(key);
      await m.stop();
    }
    await rm(path.join(tl.dir, WAL_SOURCE_FILE), { force: true });
  }

  /**
   * The timeline's WAL comes from its safekeepers from now on (and after restarts): subscribe to
   * the broker and stream from the best safekeeper. Idempotent.
   */
  async attachSafekeepers(tenantId: string, timelineId: string): Promise<ConnectionManager> {
    const tl = this.getTimeline(tenantId, timelineId);
    tl.checkReadable();
    if (this.broker === null) {
      throw new StrataError('no_broker', 'this pageserver has no storage broker configured (brokerEndpoint), so it cannot find safekeepers', tl.context());
    }
    const key = Pageserver.receiverKey(tl);
    const existing = this.managers.get(key);
    if (existing !== undefined) return existing;
    const r = this.receivers.get(key);
    if (r !== undefined) {
      this.receivers.delete(key);
      await r.stop();
    }
    await writeFileDurable(path.join(tl.dir, WAL_SOURCE_FILE), Buffer.from(JSON.stringify({ version: 1, kind: 'safekeepers' }, null, 2) + '\n'));
    return this.startManager(tl);
  }

  private startManager(tl: Timeline): ConnectionManager {
    const key = Pageserver.receiverKey(tl);
    if (this.broker === null) {
      throw new StrataError('no_broker', `timeline ${tl.timelineId} streams from safekeepers, but this pageserver has no storage broker configured`, tl.context());
    }
    const conf = this.tenants.getTenant(tl.tenantId).config;
    const m = new ConnectionManager({
      tenantId: tl.tenantId, timelineId: tl.timelineId, lastRecordLsn: () => tl.lastRecordLsn, log: tl.log,
      walreceiverConnectTimeoutMs: conf.walreceiverConnectTimeoutMs, laggingWalTimeoutMs: conf.laggingWalTimeoutMs,
      maxLsnWalLagBytes: conf.maxLsnWalLagBytes,
      connect: safekeeperConnectionFactory({ timeline: tl, log: tl.log, connectTimeoutMs: conf.walreceiverConnectTimeoutMs }),
      updates: this.broker.subscribe({ tenantId: tl.tenantId, timelineId: tl.timelineId }, { signal: this.brokerAbort.signal }),
    });
    this.managers.set(key, m);
    m.start();
    return m;
  }

  /** The connection manager of a timeline that streams from safekeepers. */
  connectionManager(tenantId: string, timelineId: string): ConnectionManager | null {
    return this.managers.get(`${parseId(tenantId, 'tenant')}/${parseId(timelineId, 'timeline')}`) ?? null;
  }

  /** True when a storage broker is configured: timelines can take their WAL from safekeepers. */
  get hasBroker(): boolean {
    return this.broker !== null;
  }

  /** Where the timeline's WAL comes from right now. */
  walSourceKind(tenantId: string, timelineId: string): 'safekeepers' | 'compute' | 'none' {
    const key = `${tenantId}/${timelineId}`;
    if (this.managers.has(key)) return 'safekeepers';
    if (this.receivers.has(key)) return 'compute';
    return 'none';
  }

  walReceiver(tenantId: string, timelineId: string): WalReceiver | null {
    return this.receivers.get(`${parseId(tenantId, 'tenant')}/${parseId(timelineId, 'timeline')}`) ?? null;
  }

  // ---------------------------------------------------------------------------------------------
  // Page service.

  private async handleQuery(query: string, conn: QueryContext): Promise<void> {
    const words = query.trim().replace(/;$/, '').split(/\s+/);
    const cmd = (words[0] ?? '').toLowerCase();
    if (cmd === 'set') {
      conn.sendCommandComplete('SET');
      return;
    }
    if (cmd === 'basebackup') {
      if (words.length < 3 || words.length > 4) throw new InvalidInputError('usage: basebackup <tenant_id> <timeline_id> [<lsn>]');
      const tl = this.getTimeline(words[1]!, words[2]!);
      const lsn = words[3] === undefined ? undefined : parseLsn(words[3]);
      const out = conn.startCopyOut({ format: 'binary' });
      const res = await generateBasebackup({ timeline: tl, ...(lsn !== undefined ? { lsn } : {}), sink: tarSink((chunk) => out.write(chunk)), log: tl.log });
      out.done();
      conn.sendCommandComplete(`COPY ${res.bytes}`);
      return;
    }
    if (cmd === 'get_last_record_rlsn') {
      if (words.length !== 3) throw new InvalidInputError('usage: get_last_record_rlsn <tenant_id> <timeline_id>');
      const tl = this.getTimeline(words[1]!, words[2]!);
      conn.sendRowDescription([{ name: 'prev_lsn', typeOid: 25 }, { name: 'last_lsn', typeOid: 25 }]);
      conn.sendDataRow([tl.prevRecordLsn === null ? null : formatLsn(tl.prevRecordLsn), formatLsn(tl.lastRecordLsn)]);
      conn.sendCommandComplete('SELECT 1');
      return;
    }
    throw new InvalidInputError(`unknown page service command "${words[0] ?? ''}" (supported: basebackup, get_last_record_rlsn, set)`);
  }

  async shutdown(opts: { flush: boolean }): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const r of this.receivers.values()) await r.stop();
    this.receivers.clear();
    this.brokerAbort.abort();
    for (const m of this.managers.values()) await m.stop();
    this.managers.clear();
    this.broker?.close();
    await this.pageService?.close();
    await this.tenants.shutdown(opts);
  }
}

function parseWalSource(text: string, where: string): WalSource | 'safekeepers' {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new StrataError('config_invalid', `${where} is not valid JSON`, { path: where }, { cause: err });
  }
  const o = json as Record<string, unknown>;
  if (o['kind'] === 'safekeepers') {
    for (const k of Object.keys(o)) if (k !== 'version' && k !== 'kind') throw new StrataError('config_invalid', `${where}: unknown field "${k}"`, { path: where });
    if (o['version'] !== 1) throw new StrataError('config_invalid', `${where}: unsupported version ${String(o['version'])}`, { path: where });
    return 'safekeepers';
  }
  const allowed = new Set(['version', 'host', 'port', 'user', 'password', 'slotName', 'applicationName']);
  for (const k of Object.keys(o)) if (!allowed.has(k)) throw new StrataError('config_invalid', `${where}: unknown field "${k}"`, { path: where });
  if (o['version'] !== 1 || typeof o['host'] !== 'string' || typeof o['port'] !== 'number' || typeof o['user'] !== 'string' ||
    typeof o['slotName'] !== 'string' || typeof o['applicationName'] !== 'string' || (o['password'] !== undefined && typeof o['password'] !== 'string')) {
    throw new StrataError('config_invalid', `${where}: expected {version: 1, host, port, user, slotName, applicationName[, password]}`, { path: where });
  }
  return {
    host: o['host'], port: o['port'], user: o['user'], slotName: o['slotName'], applicationName: o['applicationName'],
    ...(typeof o['password'] === 'string' ? { password: o['password'] } : {}),
  };
}
