/**
 * The safekeeper process in one object: its timelines, the walsender (replication protocol, serving
 * committed WAL), the HTTP API, and the broker link.
 *
 * Data directory:
 *   <data_dir>/safekeeper.id                      our node id (refuses to start with another id)
 *   <data_dir>/<tenant_id>/<timeline_id>/safekeeper.control
 *   <data_dir>/<tenant_id>/<timeline_id>/000000010000000000000001[.partial] …
 *
 * Broker: every timeline's SafekeeperTimelineInfo is published about once a second, and sooner
 * (throttled to one per `changePublishMs`) when its flush/commit/term moved, because peers compute
 * the commit LSN from each other's flush positions and a stale commit LSN delays pageservers. We
 * subscribe to all timelines to learn our peers' positions; a peer that shows a newer accepted term
 * than ours means we missed an election while down: we adopt it from that peer (its history and
 * compute), which truncates our divergent tail and catches up from the peer.
 *
 * Periodic work per timeline: persist moved positions (1 s), delete WAL segments no one needs
 * (below both the pageserver's durable LSN and every peer's flush).
 */
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Gauge, Counter, Registry } from 'prom-client';
import { BrokerClient } from '../broker/client.ts';
import type { SafekeeperTimelineInfo } from '../broker/types.ts';
import { formatLsn } from '../postgres/lsn.ts';
import { writeFileDurable } from '../util/durable.ts';
import { StrataError } from '../util/errors.ts';
import { isCanonicalId, parseId } from '../util/ids.ts';
import { rootLogger, type Logger } from '../util/log.ts';
import { CONTROL_FILE_NAME } from './control.ts';
import { historyFromJson, startHttpApi } from './http.ts';
import { standbyNameFor } from './membership.ts';
import { WalAcquirer } from './puller.ts';
import { SafekeeperTimeline, SafekeeperTimelineError, type TimelineCreateParams } from './timeline.ts';
import { startWalSender, type WalSenderServer } from './walsender.ts';
import type { FastifyInstance } from 'fastify';

export interface SafekeeperOptions {
  id: bigint;
  dataDir: string;
  listenPg: { host: string; port: number };
  listenHttp: { host: string; port: number };
  /** host:port of the storage broker; null = no broker (single safekeeper, no peers). */
  brokerEndpoint: string | null;
  availabilityZone?: string;
  log?: Logger;
  /** Heartbeat publish interval (default 1000 ms). */
  publishIntervalMs?: number;
  /** Minimum gap between change-driven publishes of one timeline (default 20 ms). */
  changePublishMs?: number;
  /** Reconnect backoff towards computes and donors (default 100 ms … 5 s). */
  pullBackoffMs?: { min: number; max: number };
  /** Walsender keepalive interval (default 1000 ms). */
  keepaliveIntervalMs?: number;
  /** How often old WAL is removed (default 10 s). */
  walRemovalIntervalMs?: number;
}

export const SAFEKEEPER_ID_FILE = 'safekeeper.id';


export class SafekeeperMetrics {
  readonly registry = new Registry();
  readonly contentType: string;
  readonly pulledBytes = new Counter({ name: 'safekeeper_wal_received_bytes_total', help: 'WAL bytes received from computes and peers', registers: [this.registry] });
  readonly electionsAccepted = new Counter({ name: 'safekeeper_elections_accepted_total', help: 'Elections (new terms) accepted', registers: [this.registry] });

  constructor(sk: Safekeeper) {
    this.contentType = this.registry.contentType;
    const lsnGauge = (name: string, help: string, pick: (tl: SafekeeperTimeline) => bigint): void => {
      new Gauge({
        name, help, labelNames: ['tenant_id', 'timeline_id'] as const, registers: [this.registry],
        collect() {
          this.reset();
          for (const tl of sk.timelines()) this.set({ tenant_id: tl.tenantId, timeline_id: tl.timelineId }, Number(pick(tl)));
        },
      });
    };
    lsnGauge('safekeeper_flush_lsn', 'End of the last complete WAL record fsynced', (tl) => tl.storage.flushRecordLsn);
    lsnGauge('safekeeper_commit_lsn', 'Quorum-flushed position served to pageservers', (tl) => tl.commitLsn);
    lsnGauge('safekeeper_remote_consistent_lsn', 'The pageserver durable LSN from its feedback', (tl) => tl.state.remoteConsistentLsn);
    lsnGauge('safekeeper_term', 'Highest term voted for', (tl) => tl.state.term);
    new Gauge({
      name: 'safekeeper_timelines', help: 'Timelines on this safekeeper', registers: [this.registry],
      collect() { this.set(sk.timelineCount()); },
    });
    new Gauge({
      name: 'safekeeper_walsender_streams', help: 'Active replication streams (pageservers and replicas)', registers: [this.registry],
      collect() { this.set(sk.walSenderStreams()); },
    });
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}

export class Safekeeper {
  readonly id: bigint;
  readonly dataDir: string;
  readonly availabilityZone: string | undefined;
  readonly log: Logger;
  readonly metrics: SafekeeperMetrics;
  private readonly opts: SafekeeperOptions;
  private readonly tls = new Map<string, SafekeeperTimeline>();
  private readonly acquirers = new Map<string, WalAcquirer>();
  private walsender: WalSenderServer | null = null;
  private http: FastifyInstance | null = null;
  private httpPortValue = 0;
  private broker: BrokerClient | null = null;
  private publisher: { publish(info: SafekeeperTimelineInfo): void; close(): void } | null = null;
  private readonly brokerAbort = new AbortController();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly lastPublishMs = new Map<string, number>();
  private readonly publishPending = new Set<string>();
  private readonly adopting = new Set<string>();
  private closed = false;

  private constructor(opts: SafekeeperOptions) {
    this.opts = opts;
    this.id = opts.id;
    this.dataDir = opts.dataDir;
    this.availabilityZone = opts.availabilityZone;
    this.log = (opts.log ?? rootLogger).child({ safekeeper_id: opts.id.toString() });
    this.metrics = new SafekeeperMetrics(this);
  }

  static async start(opts: SafekeeperOptions): Promise<Safekeeper> {
    const sk = new Safekeeper(opts);
    try {
      await sk.init();
    } catch (err) {
      await sk.shutdown();
      throw err;
    }
    return sk;
  }

  get pgPort(): number {
    return this.walsender?.port ?? 0;
  }

  get httpPort(): number {
    return this.httpPortValue;
  }

  get pgConnstr(): string {
    return `${this.opts.listenPg.host}:${this.pgPort}`;
  }

  get httpConnstr(): string {
    return `http://${this.opts.listenHttp.host}:${this.httpPort}`;
  }

  timelines(): SafekeeperTimeline[] {
    return [...this.tls.values()];
  }

  timelineCount(): number {
    return this.tls.size;
  }

  walSenderStreams(): number {
    return this.walsender?.activeStreams ?? 0;
  }

  acquirer(tenantId: string, timelineId: string): WalAcquirer | null {
    return this.acquirers.get(`${tenantId}/${timelineId}`) ?? null;
  }

  getTimeline(tenantId: string, timelineId: string): SafekeeperTimeline {
    const tl = this.tls.get(`${tenantId}/${timelineId}`);
    if (tl === undefined) {
      throw new SafekeeperTimelineError('timeline_not_found', `safekeeper ${this.id} has no timeline ${tenantId}/${timelineId}`, 404,
        { tenant: tenantId, timeline: timelineId });
    }
    return tl;
  }

  private async init(): Promise<void> {
    await mkdir(this.dataDir, { recursive: true });
    await this.checkId();
    await this.loadTimelines();
    this.walsender = await startWalSender({
      host: this.opts.listenPg.host, port: this.opts.listenPg.port, log: this.log,
      lookup: (t, tl) => this.getTimeline(t, tl),
      ...(this.opts.keepaliveIntervalMs !== undefined ? { keepaliveIntervalMs: this.opts.keepaliveIntervalMs } : {}),
    });
    const http = await startHttpApi(this, { host: this.opts.listenHttp.host, port: this.opts.listenHttp.port, log: this.log });
    this.http = http.app;
    this.httpPortValue = http.port;
    for (const tl of this.tls.values()) this.startAcquirer(tl);
    if (this.opts.brokerEndpoint !== null) this.startBroker(this.opts.brokerEndpoint);
    const publishEvery = this.opts.publishIntervalMs ?? 1_000;
    this.timers.push(setInterval(() => this.publishAll(), publishEvery));
    this.timers.push(setInterval(() => {
      for (const tl of this.tls.values()) {
        void tl.persistIfChanged().catch((err: unknown) => tl.log.warn('could not persist the control file', { error: String(err) }));
      }
    }, 1_000));
    this.timers.push(setInterval(() => {
      for (const tl of this.tls.values()) {
        void tl.removeOldWal().catch((err: unknown) => tl.log.warn('WAL removal failed', { error: String(err) }));
      }
    }, this.opts.walRemovalIntervalMs ?? 10_000));
    for (const t of this.timers) t.unref();
    this.log.info('safekeeper started', {
      pg: this.pgConnstr, http: this.httpConnstr, broker: this.opts.brokerEndpoint ?? 'none', timelines: this.tls.size,
    });
  }

  private async checkId(): Promise<void> {
    const file = path.join(this.dataDir, SAFEKEEPER_ID_FILE);
    const text = await readFile(file, 'utf8').catch(() => null);
    if (text === null) {
      await writeFileDurable(file, Buffer.from(`${this.id}\n`));
      return;
    }
    if (text.trim() !== this.id.toString()) {
      throw new StrataError('safekeeper_id_mismatch', `${this.dataDir} belongs to safekeeper ${text.trim()}, not ${this.id}`, { dir: this.dataDir });
    }
  }

  private async loadTimelines(): Promise<void> {
    for (const tenant of await readdir(this.dataDir)) {
      if (!isCanonicalId(tenant)) continue;
      const tdir = path.join(this.dataDir, tenant);
      if (!(await stat(tdir)).isDirectory()) continue;
      for (const timeline of await readdir(tdir)) {
        if (!isCanonicalId(timeline)) continue;
        const dir = path.join(tdir, timeline);
        const hasControl = await stat(path.join(dir, CONTROL_FILE_NAME)).then(() => true, () => false);
        if (!hasControl) {
          this.log.warn('timeline directory without a control file ignored (an interrupted create?)', { dir });
          continue;
        }
        const tl = await SafekeeperTimeline.open({ dir, safekeeperId: this.id, log: this.log });
        this.register(tl);
      }
    }
  }

  private register(tl: SafekeeperTimeline): void {
    const key = `${tl.tenantId}/${tl.timelineId}`;
    this.tls.set(key, tl);
    tl.setHooks({
      onChange: () => this.schedulePublish(key),
      onTermChange: () => {
        this.acquirers.get(key)?.poke();
        this.schedulePublish(key);
      },
    });
  }

  private startAcquirer(tl: SafekeeperTimeline): void {
    const key = `${tl.tenantId}/${tl.timelineId}`;
    const backoff = this.opts.pullBackoffMs ?? { min: 100, max: 5_000 };
    const a = new WalAcquirer({
      timeline: tl, standbyName: standbyNameFor(this.id), log: tl.log, minBackoffMs: backoff.min, maxBackoffMs: backoff.max,
      statusIntervalMs: 1_000, onWalBytes: (n) => this.metrics.pulledBytes.inc(n),
    });
    this.acquirers.set(key, a);
    a.start();
  }

  async createTimeline(p: TimelineCreateParams): Promise<{ created: boolean; timeline: SafekeeperTimeline }> {
    if (this.closed) throw new SafekeeperTimelineError('shutting_down', 'the safekeeper is shutting down', 503);
    const key = `${p.tenantId}/${p.timelineId}`;
    const existing = this.tls.get(key);
    if (existing !== undefined) {
      const s = existing.state;
      // The start LSN of a repeated create may differ (it is "where the pageserver is now"); the
      // timeline keeps its own. Another system or segment size is a different database: refuse.
      if (s.systemId !== p.systemId || s.walSegSizeBytes !== p.walSegSizeBytes) {
        throw new SafekeeperTimelineError('timeline_exists', `timeline ${key} exists with other parameters (system id ${s.systemId}, WAL segment size ${s.walSegSizeBytes})`, 409);
      }
      return { created: false, timeline: existing };
    }
    if (p.members.length > 0 && !p.members.some((m) => m.id === this.id)) {
      throw new SafekeeperTimelineError('not_a_member', `safekeeper ${this.id} is not among the timeline's members`, 400);
    }
    if (p.members.length > 1 && this.opts.brokerEndpoint === null) {
      this.log.warn('a timeline with several safekeepers needs the storage broker: without it this safekeeper cannot see its peers, so its commit LSN will not advance', { tenant_id: p.tenantId, timeline_id: p.timelineId });
    }
    const dir = path.join(this.dataDir, p.tenantId, p.timelineId);
    let tl: SafekeeperTimeline;
    try {
      tl = await SafekeeperTimeline.create({ dir, safekeeperId: this.id, params: p, log: this.log });
    } catch (err) {
      // Leave nothing half-made behind: a directory without a control file is ignored at start,
      // but a retry should find a clean slate.
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
    this.register(tl);
    this.startAcquirer(tl);
    tl.log.info('timeline created', { start_lsn: formatLsn(p.startLsn), members: p.members.map((m) => m.id.toString()).join(',') });
    this.schedulePublish(key);
    return { created: true, timeline: tl };
  }

  async deleteTimeline(tenantId: string, timelineId: string): Promise<{ dir_existed: boolean; was_active: boolean }> {
    const key = `${parseId(tenantId, 'tenant')}/${parseId(timelineId, 'timeline')}`;
    const tl = this.tls.get(key);
    if (tl === undefined) return { dir_existed: false, was_active: false };
    const a = this.acquirers.get(key);
    const wasActive = a !== undefined && a.status.state === 'streaming';
    this.tls.delete(key);
    this.acquirers.delete(key);
    await a?.stop();
    await tl.destroy();
    tl.log.info('timeline deleted');
    return { dir_existed: true, was_active: wasActive };
  }

  // ---------------------------------------------------------------------------------------------
  // Broker

  private startBroker(endpoint: string): void {
    const broker = new BrokerClient({ endpoint, log: this.log });
    this.broker = broker;
    this.publisher = broker.publisher();
    void (async () => {
      try {
        for await (const info of broker.subscribe('all', { signal: this.brokerAbort.signal })) {
          this.onBrokerInfo(info);
        }
      } catch (err) {
        if (!this.closed) this.log.warn('broker subscription ended', { error: String(err) });
      }
    })();
  }

  private onBrokerInfo(info: SafekeeperTimelineInfo): void {
    if (info.safekeeperId === this.id) return;
    const key = `${info.tenantId}/${info.timelineId}`;
    const tl = this.tls.get(key);
    if (tl === undefined) return;
    tl.onPeerInfo(info, Date.now());
    // A peer accepted a newer term than ours: we missed an election (we were down). Adopt it.
    if (info.lastLogTerm > tl.epochTerm && info.term === info.lastLogTerm && info.term >= tl.state.term && !this.adopting.has(key)) {
      this.adopting.add(key);
      void this.adoptTerm(tl, info).catch((err: unknown) => {
        tl.log.warn('could not adopt a newer term from a peer', { peer: info.safekeeperId.toString(), error: err instanceof Error ? err.message : String(err) });
      }).finally(() => this.adopting.delete(key));
    }
  }

  private async adoptTerm(tl: SafekeeperTimeline, info: SafekeeperTimelineInfo): Promise<void> {
    const res = await fetch(`${info.httpConnstr}/v1/tenant/${tl.tenantId}/timeline/${tl.timelineId}`, { signal: AbortSignal.timeout(10_000) });
    if (!res.ok) throw new StrataError('peer_status_failed', `peer ${info.safekeeperId} status: HTTP ${res.status}`);
    const st = await res.json() as {
      acceptor_state: { term: number; epoch: number; term_history: { term: number; start_lsn: string }[] };
      compute: { host: string; port: number; user: string; slot_name: string; application_name: string } | null;
    };
    const history = historyFromJson(st.acceptor_state.term_history);
    const last = history[history.length - 1];
    if (st.compute === null || last === undefined || BigInt(st.acceptor_state.term) !== last.term) return;
    if (last.term <= tl.epochTerm) return;
    tl.log.info('adopting a newer term from a peer', { peer: info.safekeeperId.toString(), term: last.term, start_lsn: formatLsn(last.startLsn) });
    await tl.vote(last.term);
    await tl.elected({
      term: last.term, startLsn: last.startLsn, termHistory: history,
      compute: { host: st.compute.host, port: st.compute.port, user: st.compute.user, slotName: standbyNameFor(this.id), applicationName: standbyNameFor(this.id) },
      donor: { id: info.safekeeperId, httpConnstr: info.httpConnstr },
    });
    this.metrics.electionsAccepted.inc();
  }

  private infoOf(tl: SafekeeperTimeline): SafekeeperTimelineInfo {
    return tl.info({
      safekeeperConnstr: this.pgConnstr, httpConnstr: this.httpConnstr,
      ...(this.availabilityZone !== undefined ? { availabilityZone: this.availabilityZone } : {}),
    });
  }

  private publishAll(): void {
    if (this.publisher === null || this.closed) return;
    const now = Date.now();
    for (const [key, tl] of this.tls) {
      this.publisher.publish(this.infoOf(tl));
      this.lastPublishMs.set(key, now);
    }
  }

  private schedulePublish(key: string): void {
    if (this.publisher === null || this.closed || this.publishPending.has(key)) return;
    const gap = this.opts.changePublishMs ?? 20;
    const wait = Math.max(0, (this.lastPublishMs.get(key) ?? 0) + gap - Date.now());
    this.publishPending.add(key);
    const t = setTimeout(() => {
      this.publishPending.delete(key);
      const tl = this.tls.get(key);
      if (tl === undefined || this.publisher === null || this.closed) return;
      this.publisher.publish(this.infoOf(tl));
      this.lastPublishMs.set(key, Date.now());
    }, wait);
    t.unref();
  }

  // ---------------------------------------------------------------------------------------------

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.brokerAbort.abort();
    this.publisher?.close();
    this.broker?.close();
    await Promise.all([...this.acquirers.values()].map((a) => a.stop()));
    await this.walsender?.close();
    await this.http?.close();
    await Promise.all([...this.tls.values()].map((tl) => tl.close().catch((err: unknown) => tl.log.warn('close failed', { error: String(err) }))));
    this.log.info('safekeeper stopped');
  }
}
