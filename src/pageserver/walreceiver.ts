/**
 * WAL receiver: streams one timeline's WAL from a PostgreSQL walsender (a compute now; a
 * safekeeper after issue 5) and ingests it record by record.
 *
 * Connection loop: connect in physical replication mode, make sure the slot exists (so the
 * server keeps WAL we have not made durable), START_REPLICATION from last_record_lsn, feed every
 * XLogData chunk to a WalStreamDecoder and every record to WalIngest. On any failure: log,
 * back off (doubling, capped) and reconnect from last_record_lsn — which after a pageserver
 * restart is disk_consistent_lsn, so nothing is skipped: the slot kept that WAL because we only
 * ever reported durable positions as flushed.
 *
 * Feedback (standby status update): write = end of the WAL bytes received, flush =
 * disk_consistent_lsn (what survives our crash), apply = last_record_lsn (ingested, readable).
 * A walsender shutting down waits until our flush reaches its end of WAL; so when a shutdown
 * checkpoint is ingested the timeline is flushed at once and the new flush position reported.
 *
 * Gaps are impossible by construction: the decoder starts exactly at last_record_lsn (checking
 * xl_prev when prev_record_lsn is known), rejects any XLogData that does not continue exactly
 * where the previous one ended, and ingest refuses a record that does not advance the timeline.
 * Damaged WAL stops ingestion with an error (and a retry), never a skipped record.
 */
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { RM_XLOG_ID } from '../postgres/rmgr.ts';
import { XLOG_CHECKPOINT_SHUTDOWN } from '../postgres/records/xlog.ts';
import { ReplicationConnection, type ReplicationStream } from '../postgres/replication.ts';
import { WalStreamDecoder, type WalEnd } from '../postgres/walstream.ts';
import type { DecodedRecord } from '../postgres/xlogrecord.ts';
import { StrataError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
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

export class WalReceiver {
  readonly timeline: Timeline;
  readonly source: WalSource;
  private readonly log: Logger;
  private readonly ingest: WalIngest;
  private readonly minBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly statusIntervalMs: number;
  private stopped = false;
  private conn: ReplicationConnection | null = null;
  private stream: ReplicationStream | null = null;
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
    await this.stream?.end().catch(() => undefined);
    await this.conn?.close().catch(() => undefined);
    await this.loop;
    this.status.state = 'stopped';
  }

  private async run(): Promise<void> {
    let backoffMs = this.minBackoffMs;
    while (!this.stopped) {
      const tl = this.timeline;
      if (tl.state === 'Broken' || tl.state === 'Stopping') {
        this.log.warn('timeline not active; WAL receiver stops', { state: tl.state });
        break;
      }
      const before = tl.lastRecordLsn;
      try {
        this.status.state = 'connecting';
        await this.session();
      } catch (err) {
        if (this.stopped) break;
        const msg = err instanceof Error ? err.message : String(err);
        this.status.lastError = msg;
        if (tl.lastRecordLsn === this.shutdownEndLsn) {
          this.log.info('WAL source shut down after its shutdown checkpoint; will reconnect when it is back', { last_record_lsn: formatLsn(tl.lastRecordLsn) });
        } else {
          this.log.warn('WAL streaming interrupted; will reconnect', { reason: msg, last_record_lsn: formatLsn(tl.lastRecordLsn), backoff_ms: backoffMs });
        }
      } finally {
        this.stream = null;
        await this.conn?.close().catch(() => undefined);
        this.conn = null;
      }
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

  private positions(received: Lsn): { write: Lsn; flush: Lsn; apply: Lsn } {
    const tl = this.timeline;
    // flush must be what a restart resumes from: the disk_consistent_lsn whose metadata write
    // has completed (tl.diskConsistent), not the in-memory field, which moves just before that
    // write. The source frees WAL (the slot's restart_lsn) up to what we report here.
    return { write: received, flush: tl.diskConsistent.lsn, apply: tl.lastRecordLsn };
  }

  private async session(): Promise<void> {
    const tl = this.timeline;
    const src = this.source;
    const conn = await ReplicationConnection.connect({
      host: src.host, port: src.port, user: src.user, ...(src.password !== undefined ? { password: src.password } : {}),
      applicationName: src.applicationName, statusIntervalMs: this.statusIntervalMs,
    });
    this.conn = conn;
    if (this.stopped) return;
    const ident = await conn.identifySystem();
    await conn.createPhysicalSlot(src.slotName, { reserveWal: true, ifNotExists: true });
    const startLsn = tl.lastRecordLsn;
    if (ident.xlogPos < startLsn) {
      throw new WalReceiverError(`source ${src.host}:${src.port} has WAL only up to ${formatLsn(ident.xlogPos)}, but the timeline is already at ${formatLsn(startLsn)}: it is not this timeline's compute`,
        { lsn: formatLsn(startLsn) });
    }
    const decoder = new WalStreamDecoder({
      startLsn, systemId: ident.systemId, ...(tl.prevRecordLsn !== null ? { prevLsn: tl.prevRecordLsn } : {}),
    });
    const stream = conn.startReplication({ slot: src.slotName, startLsn, timeline: ident.timeline });
    this.stream = stream;
    this.status.state = 'streaming';
    this.log.info('streaming WAL', { start_lsn: formatLsn(startLsn), server_flush_lsn: formatLsn(ident.xlogPos) });
    let expected = startLsn;
    stream.setPositions(this.positions(expected));
    for await (const msg of stream) {
      if (this.stopped) break;
      if (msg.kind === 'keepalive') {
        stream.setPositions(this.positions(expected));
        continue;
      }
      if (msg.dataStart !== expected) {
        throw new WalReceiverError(`XLogData starts at ${formatLsn(msg.dataStart)}, expected ${formatLsn(expected)}: a gap or overlap in the stream`,
          { lsn: formatLsn(expected) });
      }
      // The message buffer is handed to the decoder, which may keep views into it: copy it.
      decoder.push(Buffer.from(msg.data));
      expected += BigInt(msg.data.length);
      this.status.receivedLsn = expected;
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
      if (batch.length > 0) await this.ingest.prepareImages(batch);
      for (const rec of batch) {
        this.ingest.ingest(rec);
        this.status.records++;
        this.status.walBytes += rec.totLen;
        if (rec.rmid === RM_XLOG_ID && (rec.info & 0xf0) === XLOG_CHECKPOINT_SHUTDOWN) {
          sawShutdown = true;
          this.shutdownEndLsn = rec.endLsn;
        }
      }
      if (end !== null) {
        throw new WalReceiverError(`WAL from ${src.host}:${src.port} cannot be decoded at ${formatLsn(end.lsn)}: ${end.reason}`,
          { lsn: formatLsn(end.lsn), code: end.code });
      }
      if (sawShutdown) {
        // The compute is shutting down and waits until we report everything flushed.
        await checkpoint(tl);
        stream.sendStatusUpdate({ ...this.positions(expected), replyRequested: false });
      } else {
        await checkpointIfNeeded(tl);
      }
      stream.setPositions(this.positions(expected));
    }
  }
}
