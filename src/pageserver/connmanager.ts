/**
 * Per-timeline WAL connection manager: which safekeeper the pageserver streams a timeline's WAL
 * from, and when to give up on it for another.
 *
 * Safekeepers publish a SafekeeperTimelineInfo per timeline to the broker about once a second.
 * The manager keeps the latest one per safekeeper (with its arrival time) as the candidates, holds
 * at most one WAL connection at a time, and re-decides on every candidate update, whenever a
 * connection ends, and on a timer (a silent connection produces no events of its own).
 *
 * The decision is a pure function (`decideNextConnection`) of the candidates, the current
 * connection's observed state, the per-safekeeper retry state, the clock and the timeline's
 * last_record_lsn, so every rule can be tested without I/O. Rules, in order (Neon's
 * `next_connection_candidate`):
 *  - candidates without an update for more than laggingWalTimeout are forgotten; applicable ones
 *    have commitLsn ≠ 0, a connection string, and no retry cooldown running; the best one has the
 *    highest commitLsn (ties: the lowest safekeeper id, so the choice is deterministic). While
 *    connected, the best candidate is chosen among the *other* safekeepers.
 *  1. no connection → connect to the best (NoExistingConnection); none → none-available.
 *  2. nothing at all received from the current one for more than walreceiverConnectTimeout (this
 *     also bounds a connection attempt that never completes) → switch (NoKeepAlives).
 *  3. still connecting → wait.
 *  4. another one's commitLsn is ahead of the current one's by at least maxLsnWalLag → switch
 *     (LaggingWal). The current one's commit LSN is the higher of the walEnd of the last message we
 *     processed and its own latest broker info (a deviation from Neon, which uses the walEnd only:
 *     when ingest is slower than the stream, the walEnd of the messages we get to is as old as the
 *     backlog, and Neon would switch away from a safekeeper that is not behind at all).
 *  5. (availability-zone preference: not implemented, Strata has no AZ setting.)
 *  6. another one has WAL the current one does not, and for more than laggingWalTimeout either the
 *     current one had WAL we did not receive without any arriving, or the current one's commit LSN
 *     stayed below what the other announced (the moment we first saw that is carried from decision
 *     to decision as `discoveredNewWal`) → switch (NoWalTimeout).
 * Second deviation from Neon: in rule 2, when no other safekeeper is applicable, the manager reconnects to
 * the same one (if it is still an applicable candidate) instead of keeping a silent connection
 * forever; with a single safekeeper that is the only way out of a hung session.
 *
 * Retry state (per safekeeper): whenever a connection is dropped (it failed, ended, or we switched
 * away), the safekeeper may be retried at attempt-start + backoff, and the backoff grows ×1.5 from
 * 100 ms up to 15 s. Measuring from the attempt's start means a long-lived connection that dies is
 * retried at once, while one that fails right away is retried later and later. A connection that
 * received WAL resets its safekeeper's backoff.
 *
 * The manager never streams itself: it takes a connection factory (the real one is
 * `safekeeperConnectionFactory` in walreceiver.ts; tests script their own) and candidate updates
 * via `push(info)` or an AsyncIterable. Evaluations are serialized: a switch closes the old
 * connection (which stops its ingest) before the new one is opened, so two connections never
 * ingest into the timeline at once.
 */
import type { SafekeeperTimelineInfo } from '../broker/types.ts';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { InvalidInputError } from '../util/errors.ts';
import { rootLogger, type Logger } from '../util/log.ts';

// ---------------------------------------------------------------------------------------------
// Settings and retry backoff

export interface ConnectionManagerSettings {
  /** No message at all from the current safekeeper for longer than this → switch. */
  walreceiverConnectTimeoutMs: number;
  /** Candidates without a broker update for longer are dropped; also the no-WAL-progress limit. */
  laggingWalTimeoutMs: number;
  /** Another safekeeper this many bytes ahead of the current one's commit LSN → switch. */
  maxLsnWalLagBytes: number;
}

/** Neon's (and tenantconfig.ts's) defaults. */
export const CONNECTION_MANAGER_DEFAULTS: Readonly<ConnectionManagerSettings> = Object.freeze({
  walreceiverConnectTimeoutMs: 10_000,
  laggingWalTimeoutMs: 10_000,
  maxLsnWalLagBytes: 10 * 1024 * 1024,
});

export const RETRY_MIN_BACKOFF_MS = 100;
export const RETRY_BACKOFF_MULTIPLIER = 1.5;
export const RETRY_MAX_BACKOFF_MS = 15_000;

export interface RetryState {
  /** The safekeeper is not applicable before this time (null: no cooldown). */
  nextRetryAtMs: number | null;
  /** The backoff the next drop will apply. */
  backoffMs: number;
}

/** Retry state after a connection to a safekeeper, started at attemptStartedAtMs, was dropped. */
export function retryAfterDrop(prev: RetryState | undefined, attemptStartedAtMs: number): RetryState {
  const backoffMs = prev?.backoffMs ?? RETRY_MIN_BACKOFF_MS;
  const grown = Math.min(RETRY_MAX_BACKOFF_MS, Math.max(RETRY_MIN_BACKOFF_MS, backoffMs * RETRY_BACKOFF_MULTIPLIER));
  return { nextRetryAtMs: attemptStartedAtMs + backoffMs, backoffMs: grown };
}

export function inCooldown(retry: RetryState | undefined, nowMs: number): boolean {
  return retry !== undefined && retry.nextRetryAtMs !== null && retry.nextRetryAtMs > nowMs;
}

// ---------------------------------------------------------------------------------------------
// The decision

export interface CandidateEntry {
  info: SafekeeperTimelineInfo;
  /** When this info arrived (manager clock). */
  receivedAtMs: number;
}

export interface Candidate {
  safekeeperId: bigint;
  connstr: string;
  commitLsn: Lsn;
  info: SafekeeperTimelineInfo;
}

/** First sighting of WAL on another safekeeper beyond the current one's commit LSN. */
export interface NewWalSighting {
  lsn: Lsn;
  discoveredAtMs: number;
}

/** What the manager knows about its current connection. */
export interface CurrentConnection {
  safekeeperId: bigint;
  /** When the connection attempt started. */
  startedAtMs: number;
  /** The session is established (streaming or about to). */
  isConnected: boolean;
  /** Last message of any kind (startedAtMs before the first). */
  lastMessageAtMs: number;
  /** walEnd of the last keepalive/XLogData: the safekeeper's commit LSN; null before any. */
  commitLsn: Lsn | null;
  /** End of the WAL received on this connection; null before any. */
  receivedLsn: Lsn | null;
  /** Last time receivedLsn advanced (startedAtMs before). */
  lastWalProgressAtMs: number;
  discoveredNewWal: NewWalSighting | null;
}

export interface DecisionInput {
  candidates: ReadonlyMap<bigint, CandidateEntry>;
  current: CurrentConnection | null;
  retries: ReadonlyMap<bigint, RetryState>;
  nowMs: number;
  /** The timeline's last_record_lsn (used when the connection has received nothing yet). */
  lastRecordLsn: Lsn;
  settings: ConnectionManagerSettings;
}

export type ConnectReason = { kind: 'NoExistingConnection' };

export type SwitchReason =
  | { kind: 'NoKeepAlives'; lastMessageAtMs: number; silentMs: number; thresholdMs: number }
  | { kind: 'LaggingWal'; currentCommitLsn: Lsn; newCommitLsn: Lsn; thresholdBytes: number }
  | { kind: 'NoWalTimeout'; currentLsn: Lsn; currentCommitLsn: Lsn; candidateCommitLsn: Lsn; waitingSinceMs: number; thresholdMs: number };

export type ConnectionReason = ConnectReason | SwitchReason;

export type ConnectionDecision =
  | { kind: 'keep'; discoveredNewWal: NewWalSighting | null }
  | { kind: 'connect'; candidate: Candidate; reason: ConnectReason }
  | { kind: 'switch'; candidate: Candidate; reason: SwitchReason }
  | { kind: 'none-available'; freshCandidates: number; inCooldown: number };

export function isStaleCandidate(entry: CandidateEntry, nowMs: number, laggingWalTimeoutMs: number): boolean {
  return nowMs - entry.receivedAtMs > laggingWalTimeoutMs;
}

/** Whether a fresh candidate may be connected to now (ignoring staleness). */
export function isApplicable(entry: CandidateEntry, retry: RetryState | undefined, nowMs: number): boolean {
  return entry.info.commitLsn !== 0n && entry.info.safekeeperConnstr.length > 0 && !inCooldown(retry, nowMs);
}

function toCandidate(entry: CandidateEntry): Candidate {
  const info = entry.info;
  return { safekeeperId: info.safekeeperId, connstr: info.safekeeperConnstr, commitLsn: info.commitLsn, info };
}

/** The applicable candidate with the highest commitLsn (ties: lowest id), optionally skipping one. */
export function selectBestCandidate(input: DecisionInput, exclude: bigint | null): Candidate | null {
  let best: CandidateEntry | null = null;
  for (const [id, entry] of input.candidates) {
    if (id === exclude) continue;
    if (isStaleCandidate(entry, input.nowMs, input.settings.laggingWalTimeoutMs)) continue;
    if (!isApplicable(entry, input.retries.get(id), input.nowMs)) continue;
    if (best === null || entry.info.commitLsn > best.info.commitLsn ||
      (entry.info.commitLsn === best.info.commitLsn && entry.info.safekeeperId < best.info.safekeeperId)) {
      best = entry;
    }
  }
  return best === null ? null : toCandidate(best);
}

/** Decides what the manager should do now. Pure: no I/O, no clock, no mutation of the input. */
export function decideNextConnection(input: DecisionInput): ConnectionDecision {
  const { current, nowMs, settings } = input;
  if (current === null) {
    const best = selectBestCandidate(input, null);
    if (best !== null) return { kind: 'connect', candidate: best, reason: { kind: 'NoExistingConnection' } };
    let fresh = 0;
    let cooling = 0;
    for (const [id, entry] of input.candidates) {
      if (isStaleCandidate(entry, nowMs, settings.laggingWalTimeoutMs)) continue;
      fresh++;
      if (inCooldown(input.retries.get(id), nowMs)) cooling++;
    }
    return { kind: 'none-available', freshCandidates: fresh, inCooldown: cooling };
  }

  const other = selectBestCandidate(input, current.safekeeperId);
  const keep: ConnectionDecision = { kind: 'keep', discoveredNewWal: current.discoveredNewWal };

  // Rule 2: silence (covers an attempt that never connects, too).
  const silentMs = nowMs - current.lastMessageAtMs;
  if (silentMs > settings.walreceiverConnectTimeoutMs) {
    const target = other ?? sameSafekeeperIfApplicable(input, current.safekeeperId);
    if (target !== null) {
      return {
        kind: 'switch', candidate: target,
        reason: { kind: 'NoKeepAlives', lastMessageAtMs: current.lastMessageAtMs, silentMs, thresholdMs: settings.walreceiverConnectTimeoutMs },
      };
    }
  }
  // Rule 3: give a connection attempt its chance (bounded by rule 2).
  if (!current.isConnected) return keep;
  if (other === null) return keep;

  // What the current safekeeper has: its last walEnd, or its own newer broker info. The walEnd we
  // see is as old as the backlog of messages we have not processed yet; while ingest is the
  // bottleneck it trails the broker by that much, which must not read as the safekeeper lagging.
  const own = input.candidates.get(current.safekeeperId);
  const ownCommitLsn = own !== undefined && !isStaleCandidate(own, nowMs, settings.laggingWalTimeoutMs) ? own.info.commitLsn : null;
  const knownCommitLsn = current.commitLsn === null ? ownCommitLsn
    : ownCommitLsn === null || current.commitLsn >= ownCommitLsn ? current.commitLsn : ownCommitLsn;

  // Rule 4: the current safekeeper is far behind another.
  if (knownCommitLsn !== null && other.commitLsn - knownCommitLsn >= BigInt(settings.maxLsnWalLagBytes)) {
    return {
      kind: 'switch', candidate: other,
      reason: { kind: 'LaggingWal', currentCommitLsn: knownCommitLsn, newCommitLsn: other.commitLsn, thresholdBytes: settings.maxLsnWalLagBytes },
    };
  }

  // Rule 6: no WAL progress while another safekeeper has WAL we do not.
  const currentLsn = current.receivedLsn ?? input.lastRecordLsn;
  const currentCommitLsn = knownCommitLsn ?? currentLsn;
  let discovered = current.discoveredNewWal !== null && current.discoveredNewWal.lsn > currentCommitLsn ? current.discoveredNewWal : null;
  if (discovered === null && other.commitLsn > currentCommitLsn) discovered = { lsn: other.commitLsn, discoveredAtMs: nowMs };
  // The current safekeeper has WAL it has not sent us: waiting since our last WAL. Otherwise we
  // wait for it to get what the other one has: since we first saw that.
  const waitingSinceMs = currentLsn < currentCommitLsn ? current.lastWalProgressAtMs : discovered?.discoveredAtMs ?? null;
  if (waitingSinceMs !== null && other.commitLsn > currentCommitLsn && nowMs - waitingSinceMs > settings.laggingWalTimeoutMs) {
    return {
      kind: 'switch', candidate: other,
      reason: {
        kind: 'NoWalTimeout', currentLsn, currentCommitLsn, candidateCommitLsn: other.commitLsn, waitingSinceMs,
        thresholdMs: settings.laggingWalTimeoutMs,
      },
    };
  }
  return { kind: 'keep', discoveredNewWal: discovered };
}

function sameSafekeeperIfApplicable(input: DecisionInput, id: bigint): Candidate | null {
  const entry = input.candidates.get(id);
  if (entry === undefined || isStaleCandidate(entry, input.nowMs, input.settings.laggingWalTimeoutMs)) return null;
  return isApplicable(entry, input.retries.get(id), input.nowMs) ? toCandidate(entry) : null;
}

/** One line for logs. */
export function describeReason(r: ConnectionReason): string {
  switch (r.kind) {
    case 'NoExistingConnection':
      return 'NoExistingConnection';
    case 'NoKeepAlives':
      return `NoKeepAlives (nothing received for ${r.silentMs} ms > ${r.thresholdMs} ms)`;
    case 'LaggingWal':
      return `LaggingWal (commit ${formatLsn(r.currentCommitLsn)} vs ${formatLsn(r.newCommitLsn)}, threshold ${r.thresholdBytes} bytes)`;
    case 'NoWalTimeout':
      return `NoWalTimeout (at ${formatLsn(r.currentLsn)}, current commit ${formatLsn(r.currentCommitLsn)}, candidate commit ${formatLsn(r.candidateCommitLsn)}, waiting > ${r.thresholdMs} ms)`;
  }
}

// ---------------------------------------------------------------------------------------------
// Connections, as the manager sees them

/** A connection's observable state; times on the manager's clock. */
export interface WalConnectionState {
  isConnected: boolean;
  lastMessageAtMs: number;
  commitLsn: Lsn | null;
  receivedLsn: Lsn | null;
  lastWalProgressAtMs: number;
}

export interface WalConnectionTarget {
  tenantId: string;
  timelineId: string;
  safekeeperId: bigint;
  connstr: string;
  info: SafekeeperTimelineInfo;
}

export interface WalConnectionEvents {
  /** Called once when the session is over: error = why it failed, null = it ended normally or was closed. */
  onEnd(error: Error | null): void;
}

/** One streaming session to one safekeeper. It starts when created and never reconnects by itself. */
export interface WalConnection {
  readonly state: WalConnectionState;
  /** Ends the session; resolves when nothing more will be ingested through it. Never throws. */
  close(): Promise<void>;
}

export type WalConnectionFactory = (target: WalConnectionTarget, events: WalConnectionEvents) => WalConnection;

// ---------------------------------------------------------------------------------------------
// The manager

export interface ConnectionManagerOptions extends Partial<ConnectionManagerSettings> {
  tenantId: string;
  timelineId: string;
  connect: WalConnectionFactory;
  /** The timeline's last_record_lsn. */
  lastRecordLsn: () => Lsn;
  /** Re-evaluation period (default 500 ms); 0 = no timer (tests call evaluate()). */
  evaluateIntervalMs?: number;
  /** Clock in ms (default Date.now); connections must report times on the same clock. */
  now?: () => number;
  log?: Logger;
  /** Candidate updates, e.g. a broker subscription; consumed from start() until stop(). */
  updates?: AsyncIterable<SafekeeperTimelineInfo>;
}

export interface CandidateStatus {
  safekeeperId: bigint;
  connstr: string;
  commitLsn: Lsn;
  ageMs: number;
  inCooldown: boolean;
}

export interface ConnectionManagerStatus {
  state: 'idle' | 'connecting' | 'streaming' | 'stopped';
  safekeeperId: bigint | null;
  connstr: string | null;
  /** Reason of the last connect or switch. */
  lastReason: ConnectionReason | null;
  lastReasonText: string | null;
  candidates: CandidateStatus[];
  /** Broker updates accepted for this timeline. */
  updatesReceived: number;
  connects: number;
  switches: number;
  /** Connections that ended by themselves (not closed by the manager). */
  connectionsEnded: number;
  lastError: string | null;
}

interface ActiveConnection {
  target: WalConnectionTarget;
  startedAtMs: number;
  conn: WalConnection | null;
  discoveredNewWal: NewWalSighting | null;
  ended: boolean;
}

/** At most this many safekeepers are remembered per timeline (a broker bug must not grow memory). */
const MAX_CANDIDATES = 256;
const MAX_EVALUATION_ROUNDS = 16;

export class ConnectionManager {
  readonly tenantId: string;
  readonly timelineId: string;
  readonly settings: Readonly<ConnectionManagerSettings>;
  private readonly connectFn: WalConnectionFactory;
  private readonly lastRecordLsn: () => Lsn;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly evaluateIntervalMs: number;
  private readonly updates: AsyncIterable<SafekeeperTimelineInfo> | null;
  private readonly candidates = new Map<bigint, CandidateEntry>();
  private readonly retries = new Map<bigint, RetryState>();
  private current: ActiveConnection | null = null;
  private timer: NodeJS.Timeout | null = null;
  private iterator: AsyncIterator<SafekeeperTimelineInfo> | null = null;
  private running: Promise<void> | null = null;
  private rerun = false;
  private started = false;
  private stopped = false;
  private stopping: Promise<void> | null = null;
  private lastNoneLogged = '';
  private counters = { updatesReceived: 0, connects: 0, switches: 0, connectionsEnded: 0 };
  private lastReason: ConnectionReason | null = null;
  private lastError: string | null = null;

  constructor(opts: ConnectionManagerOptions) {
    const settings: ConnectionManagerSettings = {
      walreceiverConnectTimeoutMs: opts.walreceiverConnectTimeoutMs ?? CONNECTION_MANAGER_DEFAULTS.walreceiverConnectTimeoutMs,
      laggingWalTimeoutMs: opts.laggingWalTimeoutMs ?? CONNECTION_MANAGER_DEFAULTS.laggingWalTimeoutMs,
      maxLsnWalLagBytes: opts.maxLsnWalLagBytes ?? CONNECTION_MANAGER_DEFAULTS.maxLsnWalLagBytes,
    };
    for (const [name, v] of Object.entries(settings)) {
      if (!Number.isSafeInteger(v) || v <= 0) throw new InvalidInputError(`connection manager: ${name} must be a positive integer, got ${v}`, { [name]: v });
    }
    const interval = opts.evaluateIntervalMs ?? 500;
    if (!Number.isSafeInteger(interval) || interval < 0) throw new InvalidInputError(`connection manager: evaluateIntervalMs must be a non-negative integer, got ${interval}`);
    this.settings = Object.freeze(settings);
    this.tenantId = opts.tenantId;
    this.timelineId = opts.timelineId;
    this.connectFn = opts.connect;
    this.lastRecordLsn = opts.lastRecordLsn;
    this.now = opts.now ?? Date.now;
    this.log = (opts.log ?? rootLogger).child({ tenant_id: opts.tenantId, timeline_id: opts.timelineId, component: 'connmanager' });
    this.evaluateIntervalMs = interval;
    this.updates = opts.updates ?? null;
  }

  /** Starts the timer and the update consumer, and makes a first decision. */
  start(): void {
    if (this.started || this.stopped) return;
    this.started = true;
    if (this.evaluateIntervalMs > 0) {
      this.timer = setInterval(() => this.schedule(), this.evaluateIntervalMs);
      this.timer.unref();
    }
    if (this.updates !== null) void this.consume(this.updates);
    this.schedule();
  }

  /** Records a safekeeper's latest info for this timeline and re-evaluates. Other timelines' infos are ignored. */
  push(info: SafekeeperTimelineInfo): void {
    if (this.stopped) return;
    if (info.tenantId !== this.tenantId || info.timelineId !== this.timelineId) {
      this.log.debug('ignoring safekeeper info for another timeline', { other_tenant_id: info.tenantId, other_timeline_id: info.timelineId });
      return;
    }
    if (!this.candidates.has(info.safekeeperId) && this.candidates.size >= MAX_CANDIDATES) {
      this.log.warn('too many safekeepers for one timeline; ignoring a new one', { safekeeper_id: info.safekeeperId, limit: MAX_CANDIDATES });
      return;
    }
    this.candidates.set(info.safekeeperId, { info, receivedAtMs: this.now() });
    this.counters.updatesReceived++;
    if (this.started) this.schedule();
  }

  private async consume(updates: AsyncIterable<SafekeeperTimelineInfo>): Promise<void> {
    const it = updates[Symbol.asyncIterator]();
    this.iterator = it;
    try {
      // Bounded by stop(): it asks the iterator to return and the loop checks `stopped`.
      while (!this.stopped) {
        const r = await it.next();
        if (r.done === true || this.stopped) break;
        this.push(r.value);
      }
    } catch (err) {
      if (!this.stopped) {
        this.lastError = `candidate updates failed: ${err instanceof Error ? err.message : String(err)}`;
        this.log.warn('safekeeper info updates failed; no more candidate updates', { reason: this.lastError });
      }
    }
  }

  private schedule(): void {
    this.evaluate().catch((err: unknown) => {
      this.lastError = err instanceof Error ? err.message : String(err);
      this.log.error('connection manager evaluation failed', { reason: this.lastError });
    });
  }

  /**
   * Decides and acts (connect/switch) now; resolves when done. Concurrent calls share one run, which
   * repeats once more if something changed meanwhile.
   */
  evaluate(): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (this.running !== null) {
      this.rerun = true;
      return this.running;
    }
    const run = (async (): Promise<void> => {
      try {
        for (let round = 0; round < MAX_EVALUATION_ROUNDS && !this.stopped; round++) {
          this.rerun = false;
          await this.evaluateOnce();
          if (!this.rerun) break;
        }
      } finally {
        this.running = null;
      }
    })();
    this.running = run;
    return run;
  }

  private async evaluateOnce(): Promise<void> {
    const nowMs = this.now();
    for (const [id, entry] of this.candidates) {
      if (isStaleCandidate(entry, nowMs, this.settings.laggingWalTimeoutMs)) {
        this.candidates.delete(id);
        this.log.info('safekeeper dropped from candidates: no broker update', { safekeeper_id: id, age_ms: nowMs - entry.receivedAtMs });
      }
    }
    const cur = this.current;
    let currentInput: CurrentConnection | null = null;
    if (cur !== null && cur.conn !== null) {
      const st = cur.conn.state;
      currentInput = {
        safekeeperId: cur.target.safekeeperId, startedAtMs: cur.startedAtMs, isConnected: st.isConnected,
        lastMessageAtMs: st.lastMessageAtMs, commitLsn: st.commitLsn, receivedLsn: st.receivedLsn,
        lastWalProgressAtMs: st.lastWalProgressAtMs, discoveredNewWal: cur.discoveredNewWal,
      };
    }
    const decision = decideNextConnection({
      candidates: this.candidates, current: currentInput, retries: this.retries, nowMs,
      lastRecordLsn: this.lastRecordLsn(), settings: this.settings,
    });
    switch (decision.kind) {
      case 'keep':
        if (cur !== null) cur.discoveredNewWal = decision.discoveredNewWal;
        return;
      case 'none-available': {
        const key = `${decision.freshCandidates}/${decision.inCooldown}`;
        if (key !== this.lastNoneLogged) {
          this.lastNoneLogged = key;
          this.log.info('no safekeeper to stream WAL from', { candidates: decision.freshCandidates, in_cooldown: decision.inCooldown });
        }
        return;
      }
      case 'connect':
        this.counters.connects++;
        this.open(decision.candidate, decision.reason);
        return;
      case 'switch':
        this.counters.switches++;
        this.log.info('switching safekeeper', {
          from_safekeeper_id: cur?.target.safekeeperId, to_safekeeper_id: decision.candidate.safekeeperId, reason: describeReason(decision.reason),
        });
        await this.closeCurrent();
        if (!this.stopped) this.open(decision.candidate, decision.reason);
        return;
    }
  }

  private open(candidate: Candidate, reason: ConnectionReason): void {
    this.lastNoneLogged = '';
    this.lastReason = reason;
    const target: WalConnectionTarget = {
      tenantId: this.tenantId, timelineId: this.timelineId, safekeeperId: candidate.safekeeperId, connstr: candidate.connstr, info: candidate.info,
    };
    const active: ActiveConnection = { target, startedAtMs: this.now(), conn: null, discoveredNewWal: null, ended: false };
    this.current = active;
    this.log.info('connecting to safekeeper', {
      safekeeper_id: candidate.safekeeperId, connstr: candidate.connstr, commit_lsn: formatLsn(candidate.commitLsn), reason: describeReason(reason),
    });
    let conn: WalConnection;
    try {
      conn = this.connectFn(target, { onEnd: (error) => this.onConnectionEnd(active, error) });
    } catch (err) {
      this.onConnectionEnd(active, err instanceof Error ? err : new Error(String(err)));
      return;
    }
    active.conn = conn;
    if (active.ended && this.current !== active) {
      // It ended inside the factory; onConnectionEnd already recorded it. Release what it holds.
      void conn.close();
    }
  }

  private onConnectionEnd(active: ActiveConnection, error: Error | null): void {
    if (active.ended) return;
    active.ended = true;
    if (this.current !== active) return; // closed by us: already accounted for
    this.current = null;
    this.counters.connectionsEnded++;
    this.recordDrop(active);
    const id = active.target.safekeeperId;
    if (error !== null) {
      this.lastError = `safekeeper ${id}: ${error.message}`;
      this.log.warn('WAL connection to safekeeper failed', { safekeeper_id: id, reason: error.message, retry_at_ms: this.retries.get(id)?.nextRetryAtMs ?? null });
    } else {
      this.log.info('WAL connection to safekeeper ended', { safekeeper_id: id });
    }
    this.schedule();
  }

  private recordDrop(active: ActiveConnection): void {
    const id = active.target.safekeeperId;
    const healthy = active.conn !== null && active.conn.state.receivedLsn !== null;
    this.retries.set(id, retryAfterDrop(healthy ? undefined : this.retries.get(id), active.startedAtMs));
  }

  private async closeCurrent(): Promise<void> {
    const active = this.current;
    if (active === null) return;
    this.current = null;
    this.recordDrop(active);
    if (active.conn !== null) await active.conn.close();
    active.ended = true;
  }

  /** Retry state per safekeeper (copies; for tests and diagnostics). */
  retryState(): Map<bigint, RetryState> {
    return new Map([...this.retries].map(([id, r]) => [id, { ...r }]));
  }

  get status(): ConnectionManagerStatus {
    const nowMs = this.now();
    const cur = this.current;
    const st = cur?.conn?.state ?? null;
    return {
      state: this.stopped ? 'stopped' : cur === null ? 'idle' : st?.isConnected === true ? 'streaming' : 'connecting',
      safekeeperId: cur?.target.safekeeperId ?? null,
      connstr: cur?.target.connstr ?? null,
      lastReason: this.lastReason,
      lastReasonText: this.lastReason === null ? null : describeReason(this.lastReason),
      candidates: [...this.candidates.values()].map((e) => ({
        safekeeperId: e.info.safekeeperId, connstr: e.info.safekeeperConnstr, commitLsn: e.info.commitLsn,
        ageMs: nowMs - e.receivedAtMs, inCooldown: inCooldown(this.retries.get(e.info.safekeeperId), nowMs),
      })),
      ...this.counters,
      lastError: this.lastError,
    };
  }

  /** Stops deciding and closes the current connection; resolves when it is closed. */
  stop(): Promise<void> {
    if (this.stopping === null) this.stopping = this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    const it = this.iterator;
    this.iterator = null;
    if (it?.return !== undefined) void Promise.resolve().then(() => it.return?.()).catch(() => undefined);
    await this.running?.catch(() => undefined);
    await this.closeCurrent();
  }
}
