/**
 * How a safekeeper timeline gets its WAL: from the compute of the current term (as one of its
 * synchronous standbys), or from a peer safekeeper when it lags behind the term's start.
 *
 * One WalAcquirer per timeline runs a loop:
 *   - no accepted term with a compute, or a newer term voted but not yet elected → wait;
 *   - our WAL ends before the epoch start (we were not the election's winner, or we crashed during
 *     recovery) → peer recovery: fetch [our end, donor's flush) over the donor's HTTP API;
 *   - otherwise pull from the compute: connect in replication mode with application_name = our
 *     standby name, check the compute belongs to our term (`SHOW strata.term`, set by the endpoint
 *     that started it: a compute of another term on a reused port must never feed us), make sure
 *     our slot exists, START_REPLICATION SLOT … PHYSICAL at our WAL end.
 *
 * Acknowledgement (the heart of durability): XLogData is appended; whenever no flush is running,
 * a flush (fsync) starts and, once done, a standby status update reports flush = the end of the
 * last complete record on disk. So a commit is reported only when its record is fsynced here, and
 * appends that arrive during an fsync are acknowledged together by the next one (group commit).
 * Positions are record ends, so the compute's slot never frees WAL a restarted safekeeper (which
 * resumes at its last complete record) would still need.
 *
 * Every failure ends the session; the loop backs off (per cause, capped) and re-evaluates.
 */
import { formatLsn, parseLsn, type Lsn } from '../postgres/lsn.ts';
import { ReplicationConnection, ReplicationError, type ReplicationStream } from '../postgres/replication.ts';
import { StrataError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { lastLogTerm } from './control.ts';
import type { SafekeeperTimeline } from './timeline.ts';

/** GUC the endpoint sets on every compute: the term it was started for. */
export const COMPUTE_TERM_SETTING = 'strata.term';
/** Bytes fetched per peer-recovery request. */
const RECOVERY_CHUNK_BYTES = 8 * 1024 * 1024;
/** Bound on the wait for a term change when there is nothing to do. */
const IDLE_WAIT_MS = 1_000;

export interface AcquirerOptions {
  timeline: SafekeeperTimeline;
  /** application_name and slot suffix: our standby name. */
  standbyName: string;
  log: Logger;
  minBackoffMs: number;
  maxBackoffMs: number;
  /** Status update interval while streaming (also what keeps wal_sender_timeout happy). */
  statusIntervalMs: number;
  /** Called with the size of every WAL chunk appended (from the compute or a peer): metrics. */
  onWalBytes?: (bytes: number) => void;
}

export interface AcquirerStatus {
  state: 'idle' | 'recovering' | 'connecting' | 'streaming' | 'backoff' | 'stopped';
  source: string | null;
  lastError: string | null;
  sessions: number;
  recoveredBytes: number;
  pulledBytes: number;
}

/** Connection refused/reset, or PostgreSQL starting up or shutting down. */
function isComputeUnavailable(message: string): boolean {
  return /ECONNREFUSED|ECONNRESET|EHOSTUNREACH|ETIMEDOUT|starting up|shutting down|connection lost|Connection terminated|timeout expired/i.test(message);
}

export class PullError extends StrataError {
  constructor(code: string, message: string, context: Record<string, string | number | bigint> = {}, cause?: unknown) {
    super(code, message, context, { cause });
    this.name = 'PullError';
  }
}

export class WalAcquirer {
  readonly status: AcquirerStatus = { state: 'idle', source: null, lastError: null, sessions: 0, recoveredBytes: 0, pulledBytes: 0 };
  private readonly tl: SafekeeperTimeline;
  private readonly opts: AcquirerOptions;
  private stopped = false;
  private loop: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  private conn: ReplicationConnection | null = null;
  private stream: ReplicationStream | null = null;
  private recoveryAbort: AbortController | null = null;
  /** Set when the compute no longer has the WAL we need: recover from a peer first. */
  private needPeerRecovery = false;

  constructor(opts: AcquirerOptions) {
    this.tl = opts.timeline;
    this.opts = opts;
  }

  start(): void {
    if (this.loop === null) this.loop = this.run();
  }

  /** The term or compute changed: drop the current session and re-evaluate. */
  poke(): void {
    void this.stream?.end().catch(() => undefined);
    void this.conn?.close().catch(() => undefined);
    this.recoveryAbort?.abort();
    this.wakeUp?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.poke();
    await this.loop;
    this.status.state = 'stopped';
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.wakeUp = null;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(t);
        this.wakeUp = null;
        resolve();
      };
    });
  }

  private async run(): Promise<void> {
    let backoffMs = this.opts.minBackoffMs;
    while (!this.stopped && !this.tl.closed) {
      const st = this.tl.state;
      const epoch = lastLogTerm(st);
      if (st.compute === null || epoch === 0n || st.term !== epoch) {
        this.status.state = 'idle';
        this.status.source = null;
        await this.sleep(IDLE_WAIT_MS);
        continue;
      }
      const before = this.tl.storage.flushRecordLsn;
      try {
        if (this.tl.storage.flushRecordLsn < this.tl.epochStartLsn || this.needPeerRecovery) {
          this.status.state = 'recovering';
          await this.recoverFromPeer(epoch);
          this.needPeerRecovery = false;
        } else {
          this.status.state = 'connecting';
          await this.pullFromCompute(epoch);
        }
      } catch (err) {
        if (this.stopped) break;
        const msg = err instanceof Error ? err.message : String(err);
        // A compute that is not running (stopped, crashed, still starting) is a normal state of a
        // timeline: say so once per outage, at info. Anything else is worth a warning each time it changes.
        const unavailable = isComputeUnavailable(msg);
        if (!unavailable) {
          if (msg !== this.status.lastError) this.opts.log.warn('WAL acquisition interrupted; retrying', { reason: msg, flush_lsn: formatLsn(this.tl.storage.flushRecordLsn), backoff_ms: backoffMs });
        } else if (this.status.lastError === null || !isComputeUnavailable(this.status.lastError)) {
          this.opts.log.info('compute not reachable; will keep trying', { reason: msg, flush_lsn: formatLsn(this.tl.storage.flushRecordLsn) });
        }
        this.status.lastError = msg;
        if (err instanceof ReplicationError && err.code === 'replication_wal_removed') this.needPeerRecovery = true;
      } finally {
        this.stream = null;
        await this.conn?.close().catch(() => undefined);
        this.conn = null;
      }
      if (this.stopped) break;
      if (this.tl.storage.flushRecordLsn > before) backoffMs = this.opts.minBackoffMs;
      this.status.state = 'backoff';
      await this.sleep(backoffMs);
      backoffMs = Math.min(this.opts.maxBackoffMs, Math.ceil(backoffMs * 1.5));
    }
    this.status.state = 'stopped';
  }

  // ---------------------------------------------------------------------------------------------
  // From the compute

  private async pullFromCompute(term: bigint): Promise<void> {
    const tl = this.tl;
    const src = tl.state.compute;
    if (src === null) return;
    this.status.source = `compute ${src.host}:${src.port}`;
    const conn = await ReplicationConnection.connect({
      host: src.host, port: src.port, user: src.user, applicationName: this.opts.standbyName, statusIntervalMs: this.opts.statusIntervalMs,
      connectTimeoutMs: 5_000,
    });
    this.conn = conn;
    if (this.stopped || tl.state.term !== term) return;
    const computeTerm = await conn.show(COMPUTE_TERM_SETTING).catch((err: unknown) => {
      throw new PullError('compute_term_unknown', `the compute at ${src.host}:${src.port} has no ${COMPUTE_TERM_SETTING} setting: it was not started for this timeline by Strata (${err instanceof Error ? err.message : String(err)})`);
    });
    if (computeTerm !== term.toString()) {
      throw new PullError('compute_term_mismatch', `the compute at ${src.host}:${src.port} runs term ${computeTerm}, this safekeeper is in term ${term}: not pulling from it`, { term });
    }
    const ident = await conn.identifySystem();
    if (ident.systemId !== tl.systemId) {
      throw new PullError('compute_system_mismatch', `the compute at ${src.host}:${src.port} has system id ${ident.systemId}, the timeline ${tl.systemId}`);
    }
    await conn.createPhysicalSlot(src.slotName, { reserveWal: true, ifNotExists: true });
    const startLsn = tl.storage.writeLsn;
    const stream = conn.startReplication({ slot: src.slotName, startLsn, timeline: 1 });
    this.stream = stream;
    this.status.state = 'streaming';
    this.status.sessions++;
    this.status.lastError = null;
    this.opts.log.info('pulling WAL from the compute', { compute: `${src.host}:${src.port}`, start_lsn: formatLsn(startLsn), term });
    stream.setPositions({ write: startLsn, flush: tl.storage.flushRecordLsn, apply: 0n });

    // Flusher: at most one fsync in flight; each completes with a status update.
    let flushing: Promise<void> | null = null;
    let flushError: unknown = null;
    const kick = (): void => {
      if (flushing !== null) return;
      flushing = (async () => {
        try {
          while (tl.storage.flushLsn < tl.storage.writeLsn && flushError === null) {
            const flushed = await tl.flush(term);
            if (stream.state === 'streaming') stream.sendStatusUpdate({ write: tl.storage.writeLsn, flush: flushed, apply: 0n });
          }
        } catch (err) {
          flushError = err;
          this.poke();
        } finally {
          flushing = null;
        }
      })();
    };
    try {
      for await (const msg of stream) {
        if (this.stopped) break;
        if (flushError !== null) throw flushError;
        if (msg.kind === 'keepalive') continue;
        if (msg.data.length === 0) continue;
        // The stream's buffer is reused by the driver: the storage copies it into the file.
        await tl.append(term, msg.dataStart, msg.data);
        this.status.pulledBytes += msg.data.length;
        this.opts.onWalBytes?.(msg.data.length);
        // Let the messages already received be appended first: one fsync then covers them all.
        setImmediate(kick);
      }
    } finally {
      if (flushing !== null) await flushing;
    }
    if (flushError !== null) throw flushError;
  }

  // ---------------------------------------------------------------------------------------------
  // From a peer

  /** Chooses a donor: a member in our epoch with more WAL than us (the most, preferring the elected donor). */
  private pickDonor(term: bigint): { id: bigint; httpConnstr: string; flushLsn: Lsn } | null {
    let best: { id: bigint; httpConnstr: string; flushLsn: Lsn } | null = null;
    for (const [id, p] of this.tl.peers) {
      if (p.lastLogTerm !== term || p.term !== term || p.httpConnstr === '') continue;
      if (p.flushLsn <= this.tl.storage.flushRecordLsn) continue;
      if (best === null || p.flushLsn > best.flushLsn) best = { id, httpConnstr: p.httpConnstr, flushLsn: p.flushLsn };
    }
    const d = this.tl.electedDonor;
    if (best === null && d !== null) best = { id: d.id, httpConnstr: d.httpConnstr, flushLsn: this.tl.epochStartLsn };
    return best;
  }

  private async recoverFromPeer(term: bigint): Promise<void> {
    const tl = this.tl;
    const donor = this.pickDonor(term);
    if (donor === null) {
      throw new PullError('no_donor', `WAL ends at ${formatLsn(tl.storage.flushRecordLsn)}, before the term's start ${formatLsn(tl.epochStartLsn)}, and no peer in term ${term} has more`, { term });
    }
    this.status.source = `safekeeper ${donor.id} (${donor.httpConnstr})`;
    this.opts.log.info('recovering WAL from a peer', { donor: donor.id.toString(), from_lsn: formatLsn(tl.storage.writeLsn), term });
    const abort = new AbortController();
    this.recoveryAbort = abort;
    try {
      // Bounded: each pass moves writeLsn forward or throws; the donor says when it has no more.
      for (let pass = 0; pass < 1_000_000; pass++) {
        const from = tl.storage.writeLsn;
        const url = `${donor.httpConnstr}/v1/tenant/${tl.tenantId}/timeline/${tl.timelineId}/wal?start_lsn=${formatLsn(from)}&max_bytes=${RECOVERY_CHUNK_BYTES}&term=${term}`;
        const res = await fetch(url, { signal: AbortSignal.any([abort.signal, AbortSignal.timeout(30_000)]) });
        if (!res.ok) {
          const body = await res.text().catch(() => '');
          throw new PullError('peer_recovery_failed', `peer ${donor.id} refused WAL from ${formatLsn(from)}: HTTP ${res.status} ${body.slice(0, 300)}`, { term });
        }
        const end = parseLsn(res.headers.get('x-strata-flush-lsn') ?? '0/0');
        const data = Buffer.from(await res.arrayBuffer());
        if (data.length > 0) {
          await tl.append(term, from, data);
          await tl.flush(term);
          this.status.recoveredBytes += data.length;
          this.opts.onWalBytes?.(data.length);
        }
        if (tl.storage.writeLsn >= end || data.length === 0) break;
      }
    } finally {
      this.recoveryAbort = null;
    }
    if (tl.storage.flushRecordLsn < tl.epochStartLsn) {
      throw new PullError('peer_recovery_incomplete', `after recovery from safekeeper ${donor.id} WAL ends at ${formatLsn(tl.storage.flushRecordLsn)}, before the term's start ${formatLsn(tl.epochStartLsn)}`, { term });
    }
    this.opts.log.info('peer recovery done', { donor: donor.id.toString(), flush_lsn: formatLsn(tl.storage.flushRecordLsn) });
  }
}
