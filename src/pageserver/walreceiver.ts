/**
 * WAL receiver: streams one timeline's WAL from a walsender and ingests it record by record.
 *
 * Two sources, one session logic (`WalReceiverSession`: connect, IDENTIFY_SYSTEM,
 * START_REPLICATION from last_record_lsn, feed every XLogData chunk to a WalStreamDecoder and
 * every record to WalIngest, report progress):
 *  - a compute (vanilla PostgreSQL) through a physical slot: `WalReceiver` wraps sessions in its own
 *    reconnect loop (back off, doubling and capped, and resume from last_record_lsn — which after a
 *    pageserver restart is disk_consistent_lsn, so nothing is skipped: the slot kept that WAL
 *    because we only ever reported durable positions as flushed). Feedback is the standard 'r'
 *    standby status update: write = end of the WAL received, flush = disk_consistent_lsn (what
 *    survives our crash), apply = last_record_lsn. A walsender shutting down waits until our flush
 *    reaches its end of WAL; so when a shutdown checkpoint is ingested the timeline is flushed at
 *    once and the new flush position reported.
 *  - a safekeeper: `SafekeeperWalConnection` runs exactly one session (no slot; the startup
 *    `options` name the tenant and timeline) and never reconnects: the connection manager
 *    (connmanager.ts) decides what to connect to next. It exposes what the manager decides on
 *    (connected?, last message time, walEnd = the safekeeper's commit LSN, received LSN, last WAL
 *    progress) and reports the session's end. Feedback is the pageserver's 'z' message: write =
 *    received, flush = apply = disk_consistent_lsn (durable here; there is no remote storage yet,
 *    and the safekeeper may delete WAL below apply), sent after each XLogData, on every keepalive
 *    and on a timer; the stream's automatic 'r' updates are off.
 *
 * Gaps are impossible by construction: the decoder starts exactly at last_record_lsn (checking
 * xl_prev when prev_record_lsn is known), rejects any XLogData that does not continue exactly
 * where the previous one ended, and ingest refuses a record that does not advance the timeline.
 * Damaged WAL ends the session with an error, never a skipped record. Only one session may ingest
 * into a timeline at a time: callers stop one (awaiting it) before starting the next.
 */
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { RM_XLOG_ID } from '../postgres/rmgr.ts';
import { XLOG_CHECKPOINT_SHUTDOWN } from '../postgres/records/xlog.ts';
import { ReplicationConnection, pgTimestampNowUs, type ReplicationStream } from '../postgres/replication.ts';
import { WalStreamDecoder, type WalEnd } from '../postgres/walstream.ts';
import type { DecodedRecord } from '../postgres/xlogrecord.ts';
import { encodePageserverFeedback } from '../safekeeper/feedback.ts';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import type { WalConnection, WalConnectionEvents, WalConnectionFactory, WalConnectionState, WalConnectionTarget } from './connmanager.ts';
import { checkpoint, checkpointIfNeeded } from './timeline/flush.ts';
import type { Timeline } from './timeline/timeline.ts';
import { WalIngest } from './walingest/walingest.ts';

export interface WalSource {
  host: string;
  port: number;
  user: string;
  password?: string;
  /** Physical replication slot on the source; created if missing. */
  slotName: string;
  applicationName: string;
}

/** A safekeeper's replication service, for one timeline. */
export interface SafekeeperSource {
  host: string;
  port: number;
  user: string;
  password?: string;
  applicationName: string;
  tenantId: string;
  timelineId: string;
}

export interface WalReceiverOptions {
  timeline: Timeline;
  source: WalSource;
  log: Logger;
  /** First reconnect delay; doubles up to maxBackoffMs. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  statusIntervalMs?: number;
}

export interface WalReceiverStatus {
  state: 'connecting' | 'streaming' | 'backoff' | 'stopped';
  connectedTo: string;
  lastError: string | null;
  reconnects: number;
  receivedLsn: Lsn;
  records: number;
  walBytes: number;
}

export class WalReceiverError extends StrataError {
  constructor(message: string, context: Record<string, string | number>) {
    super('walreceiver_failed', message, context);
    this.name = 'WalReceiverError';
  }
}

/** Counters a session adds to (shared across the sessions of one receiver). */
export interface SessionCounters {
  receivedLsn: Lsn;
  records: number;
  walBytes: number;
}

type SessionTarget = { kind: 'compute'; source: WalSource } | { kind: 'safekeeper'; source: SafekeeperSource };

interface SessionOptions {
  timeline: Timeline;
  ingest: WalIngest;
  target: SessionTarget;
  log: Logger;
  counters: SessionCounters;
  statusIntervalMs: number;
  connectTimeoutMs?: number;
  now: () => number;
  /** Called once START_REPLICATION has been sent. */
  onStreaming?: () => void;
}

/** Startup `options` that select a timeline on a safekeeper. */
export function safekeeperStartupOptions(tenantId: string, timelineId: string): string {
  for (const [what, id] of [['tenant', tenantId], ['timeline', timelineId]] as const) {
    if (!/^[0-9a-f]{32}$/.test(id)) throw new InvalidInputError(`invalid ${what} id "${id}" for a safekeeper connection`);
  }
  return `-c tenant_id=${tenantId} -c timeline_id=${timelineId}`;
}

/**
 * One replication session: from connect to the end of the stream. run() resolves when the stream
 * ends normally or stop() was called, and rejects with the reason otherwise. Never reconnects.
 */
export class WalReceiverSession {
  private readonly opts: SessionOptions;
  private readonly log: Logger;
  private stopped = false;
  private conn: ReplicationConnection | null = null;
  private stream: ReplicationStream | null = null;
  private feedbackTimer: NodeJS.Timeout | null = null;
  /** End LSN of the last shutdown checkpoint ingested (-1 = none). */
  shutdownEndLsn: Lsn = -1n;
  readonly state: WalConnectionState;

  constructor(opts: SessionOptions) {
    this.opts = opts;
    const src = opts.target.source;
    this.log = opts.log.child({ wal_source: `${src.host}:${src.port}` });
    const t = opts.now();
    this.state = { isConnected: false, lastMessageAtMs: t, commitLsn: null, receivedLsn: null, lastWalProgressAtMs: t };
  }

  get where(): string {
    return `${this.opts.target.source.host}:${this.opts.target.source.port}`;
  }

  /** Ends the stream and closes the connection; run() then settles. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.stream?.end().catch(() => undefined);
    await this.conn?.close().catch(() => undefined);
  }

  async run(): Promise<void> {
    try {
      await this.stream_();
    } finally {
      if (this.feedbackTimer !== null) clearInterval(this.feedbackTimer);
      this.feedbackTimer = null;
      this.stream = null;
      await this.conn?.close().catch(() => undefined);
      this.conn = null;
    }
  }

  private positions(received: Lsn): { write: Lsn; flush: Lsn; apply: Lsn } {
    const tl = this.opts.timeline;
    // flush must be what a restart resumes from: the disk_consistent_lsn whose metadata write
    // has completed (tl.diskConsistent), not the in-memory field, which moves just before that
    // write. The source frees WAL (the slot's restart_lsn, a safekeeper's horizon) up to it.
    return { write: received, flush: tl.diskConsistent.lsn, apply: tl.lastRecordLsn };
  }

  /** Tells the source how far we are. `urgent`: a compute waits for it (shutdown checkpoint). */
  private report(stream: ReplicationStream, received: Lsn, urgent: boolean): void {
    const p = this.positions(received);
    if (this.opts.target.kind === 'compute') {
      if (urgent) stream.sendStatusUpdate({ ...p, replyRequested: false });
      else stream.setPositions(p);
      return;
    }
    if (stream.state !== 'streaming') return;
    try {
      stream.sendCopyData(encodePageserverFeedback({
        writeLsn: p.write, flushLsn: p.flush, applyLsn: p.flush, currentTimelineSizeBytes: 0n, replyTimeUs: pgTimestampNowUs(),
      }));
    } catch (err) {
      // The stream ended between the check and the write; the session is ending anyway.
      this.log.debug('could not send pageserver feedback', { reason: err instanceof Error ? err.message : String(err) });
    }
  }

  private async connect(): Promise<ReplicationConnection> {
    const { target } = this.opts;
    const src = target.source;
    return ReplicationConnection.connect({
      host: src.host, port: src.port, user: src.user, ...(src.password !== undefined ? { password: src.password } : {}),
      applicationName: src.applicationName, statusIntervalMs: this.opts.statusIntervalMs,
      ...(this.opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: this.opts.connectTimeoutMs } : {}),
      ...(target.kind === 'safekeeper' ? { options: safekeeperStartupOptions(target.source.tenantId, target.source.timelineId) } : {}),
    });
  }

  private async stream_(): Promise<void> {
    const { timeline: tl, target, counters, now } = this.opts;
    if (tl.state === 'Broken' || tl.state === 'Stopping') {
      throw new WalReceiverError(`timeline ${tl.timelineId} is ${tl.state}; not streaming WAL into it`, { state: tl.state });
    }
    const conn = await this.connect();
    this.conn = conn;
    if (this.stopped) return;
    const ident = await conn.identifySystem();
    if (this.stopped) return;
    this.state.isConnected = true;
    this.state.lastMessageAtMs = now();
    const startLsn = tl.lastRecordLsn;
    let stream: ReplicationStream;
    if (target.kind === 'compute') {
      await conn.createPhysicalSlot(target.source.slotName, { reserveWal: true, ifNotExists: true });
      if (ident.xlogPos < startLsn) {
        throw new WalReceiverError(`source ${this.where} has WAL only up to ${formatLsn(ident.xlogPos)}, but the timeline is already at ${formatLsn(startLsn)}: it is not this timeline's compute`,
          { lsn: formatLsn(startLsn) });
      }
      stream = conn.startReplication({ slot: target.source.slotName, startLsn, timeline: ident.timeline });
    } else {
      // A safekeeper behind us is not an error: it serves what it has once it has it.
      stream = conn.startReplication({ startLsn, autoStatusUpdates: false });
    }
    const decoder = new WalStreamDecoder({
      startLsn, ...(ident.systemId !== 0n ? { systemId: ident.systemId } : {}), ...(tl.prevRecordLsn !== null ? { prevLsn: tl.prevRecordLsn } : {}),
    });
    this.stream = stream;
    this.opts.onStreaming?.();
    this.log.info('streaming WAL', { start_lsn: formatLsn(startLsn), server_flush_lsn: formatLsn(ident.xlogPos), mode: target.kind });
    let expected = startLsn;
    this.report(stream, expected, false);
    if (target.kind === 'safekeeper') {
      this.feedbackTimer = setInterval(() => this.report(stream, expected, false), this.opts.statusIntervalMs);
      this.feedbackTimer.unref();
    }
    for await (const msg of stream) {
      if (this.stopped) break;
      this.state.lastMessageAtMs = now();
      this.state.commitLsn = msg.walEnd;
      if (msg.kind === 'keepalive') {
        this.report(stream, expected, false);
        continue;
      }
      if (msg.dataStart !== expected) {
        throw new WalReceiverError(`XLogData starts at ${formatLsn(msg.dataStart)}, expected ${formatLsn(expected)}: a gap or overlap in the stream`,
          { lsn: formatLsn(expected) });
      }
      // The message buffer is handed to the decoder, which may keep views into it: copy it.
      decoder.push(Buffer.from(msg.data));
      expected += BigInt(msg.data.length);
      counters.receivedLsn = expected;
      if (msg.data.length > 0) {
        this.state.receivedLsn = expected;
        this.state.lastWalProgressAtMs = now();
      }
      const sawShutdown = await this.ingestDecoded(decoder);
      if (sawShutdown) {
        // A compute shutting down waits until we report everything flushed.
        await checkpoint(tl);
        this.report(stream, expected, true);
      } else {
        await checkpointIfNeeded(tl);
        this.report(stream, expected, false);
      }
    }
  }

  /** Ingests every complete record the decoder has; true when one was a shutdown checkpoint. */
  private async ingestDecoded(decoder: WalStreamDecoder): Promise<boolean> {
    const { ingest, counters } = this.opts;
    let sawShutdown = false;
    // Decode the message's records, restore their compressed images concurrently, then apply
    // them one by one (bounded: one XLogData message is at most 128 KiB of WAL).
    const batch: DecodedRecord[] = [];
    let end: WalEnd | null = null;
    for (let item = decoder.next(); item !== null; item = decoder.next()) {
      if (item.kind === 'end') {
        end = item;
        break;
      }
      batch.push(item.record);
    }
    if (batch.length > 0) await ingest.prepareImages(batch);
    for (const rec of batch) {
      ingest.ingest(rec);
      counters.records++;
      counters.walBytes += rec.totLen;
      if (rec.rmid === RM_XLOG_ID && (rec.info & 0xf0) === XLOG_CHECKPOINT_SHUTDOWN) {
        sawShutdown = true;
        this.shutdownEndLsn = rec.endLsn;
      }
    }
    if (end !== null) {
      throw new WalReceiverError(`WAL from ${this.where} cannot be decoded at ${formatLsn(end.lsn)}: ${end.reason}`,
        { lsn: formatLsn(end.lsn), code: end.code });
    }
    return sawShutdown;
  }
}

// ---------------------------------------------------------------------------------------------
// From a compute: sessions in a reconnect loop.

export class WalReceiver {
  readonly timeline: Timeline;
  readonly source: WalSource;
  private readonly log: Logger;
  private readonly ingest: WalIngest;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly statusIntervalMs: number;
  private stopped = false;
  private session: WalReceiverSession | null = null;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  /** End LSN of the last shutdown checkpoint ingested: a disconnect right after it is expected. */
  private shutdownEndLsn: Lsn = -1n;
  readonly status: WalReceiverStatus;

  constructor(opts: WalReceiverOptions) {
    this.timeline = opts.timeline;
    this.source = opts.source;
    this.log = opts.log.child({ wal_source: `${opts.source.host}:${opts.source.port}` });
    this.ingest = new WalIngest(opts.timeline);
    this.minBackoffMs = opts.minBackoffMs ?? 100;
    this.maxBackoffMs = opts.maxBackoffMs ?? 5_000;
    this.statusIntervalMs = opts.statusIntervalMs ?? 1_000;
    this.status = {
      state: 'connecting', connectedTo: `${opts.source.host}:${opts.source.port}`, lastError: null, reconnects: 0,
      receivedLsn: opts.timeline.lastRecordLsn, records: 0, walBytes: 0,
    };
  }

  start(): void {
    if (this.loop !== null) return;
    this.loop = this.run();
  }

  /** Stops streaming; resolves when the connection is closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    await this.session?.stop();
    await this.loop;
    this.status.state = 'stopped';
  }

  private async run(): Promise<void> {
    let backoffMs = this.minBackoffMs;
    // Bounded by stop() and by the timeline leaving the Active state.
    while (!this.stopped) {
      const tl = this.timeline;
      if (tl.state === 'Broken' || tl.state === 'Stopping') {
        this.log.warn('timeline not active; WAL receiver stops', { state: tl.state });
        break;
      }
      const before = tl.lastRecordLsn;
      const session = new WalReceiverSession({
        timeline: tl, ingest: this.ingest, target: { kind: 'compute', source: this.source }, log: this.log,
        counters: this.status, statusIntervalMs: this.statusIntervalMs, now: Date.now,
        onStreaming: () => { this.status.state = 'streaming'; },
      });
      this.session = session;
      try {
        this.status.state = 'connecting';
        await session.run();
      } catch (err) {
        if (this.stopped) break;
        const msg = err instanceof Error ? err.message : String(err);
        this.status.lastError = msg;
        if (session.shutdownEndLsn >= 0n) this.shutdownEndLsn = session.shutdownEndLsn;
        if (tl.lastRecordLsn === this.shutdownEndLsn) {
          this.log.info('WAL source shut down after its shutdown checkpoint; will reconnect when it is back', { last_record_lsn: formatLsn(tl.lastRecordLsn) });
        } else {
          this.log.warn('WAL streaming interrupted; will reconnect', { reason: msg, last_record_lsn: formatLsn(tl.lastRecordLsn), backoff_ms: backoffMs });
        }
      } finally {
        this.session = null;
      }
      if (session.shutdownEndLsn >= 0n) this.shutdownEndLsn = session.shutdownEndLsn;
      if (this.stopped) break;
      if (tl.lastRecordLsn > before) backoffMs = this.minBackoffMs; // progress: retry soon
      this.status.state = 'backoff';
      this.status.reconnects++;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, backoffMs);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = null;
      backoffMs = Math.min(this.maxBackoffMs, backoffMs * 2);
    }
    this.status.state = 'stopped';
  }
}

// ---------------------------------------------------------------------------------------------
// From a safekeeper: one session, driven by the connection manager.

export interface SafekeeperConnectionOptions {
  timeline: Timeline;
  log: Logger;
  /** Shared by the timeline's successive connections (the manager keeps one at a time). */
  ingest?: WalIngest;
  user?: string;
  password?: string;
  applicationName?: string;
  /** Feedback ('z') period, default 1000 ms. */
  statusIntervalMs?: number;
  connectTimeoutMs?: number;
  /** Clock for the state times; must be the manager's. Default Date.now. */
  now?: () => number;
}

/** "host:port", "host" (port 5432) or "[v6addr]:port". */
export function parseSafekeeperConnstr(connstr: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s/]+))(?::(\d{1,5}))?$/.exec(connstr.trim());
  const port = m?.[3] === undefined ? 5432 : Number(m[3]);
  const host = m?.[1] ?? m?.[2];
  if (m === null || host === undefined || port < 1 || port > 65535) {
    throw new InvalidInputError(`invalid safekeeper connection string "${connstr.slice(0, 200)}": expected host[:port]`, { connstr: connstr.slice(0, 200) });
  }
  return { host, port };
}

export class SafekeeperWalConnection implements WalConnection {
  readonly target: WalConnectionTarget;
  readonly counters: SessionCounters;
  private readonly session: WalReceiverSession;
  private readonly done: Promise<void>;

  constructor(target: WalConnectionTarget, events: WalConnectionEvents, opts: SafekeeperConnectionOptions) {
    this.target = target;
    const tl = opts.timeline;
    if (target.tenantId !== tl.tenantId || target.timelineId !== tl.timelineId) {
      throw new InvalidInputError(`safekeeper connection for ${target.tenantId}/${target.timelineId} given timeline ${tl.tenantId}/${tl.timelineId}`);
    }
    const { host, port } = parseSafekeeperConnstr(target.connstr);
    this.counters = { receivedLsn: tl.lastRecordLsn, records: 0, walBytes: 0 };
    this.session = new WalReceiverSession({
      timeline: tl, ingest: opts.ingest ?? new WalIngest(tl),
      target: {
        kind: 'safekeeper',
        source: {
          host, port, user: opts.user ?? 'pageserver', applicationName: opts.applicationName ?? 'pageserver',
          tenantId: target.tenantId, timelineId: target.timelineId, ...(opts.password !== undefined ? { password: opts.password } : {}),
        },
      },
      log: opts.log.child({ safekeeper_id: target.safekeeperId }), counters: this.counters,
      statusIntervalMs: opts.statusIntervalMs ?? 1_000, now: opts.now ?? Date.now,
      ...(opts.connectTimeoutMs !== undefined ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
    });
    this.done = this.session.run().then(
      () => events.onEnd(null),
      (err: unknown) => events.onEnd(err instanceof Error ? err : new Error(String(err))),
    );
  }

  get state(): WalConnectionState {
    return this.session.state;
  }

  async close(): Promise<void> {
    await this.session.stop();
    await this.done;
  }
}

/** The connection manager's factory for real safekeeper connections of one timeline. */
export function safekeeperConnectionFactory(opts: SafekeeperConnectionOptions): WalConnectionFactory {
  const ingest = opts.ingest ?? new WalIngest(opts.timeline);
  return (target, events) => new SafekeeperWalConnection(target, events, { ...opts, ingest });
}
