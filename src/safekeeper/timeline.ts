/**
 * One timeline on one safekeeper: its persisted state (control.ts), its WAL (walstorage.ts), its
 * view of its peers, and the rules that keep a quorum of safekeepers consistent.
 *
 * Terms. Every compute start on a timeline opens a new term (election.ts drives it, playing the
 * role Neon's walproposer plays inside the compute). A safekeeper:
 *  - votes for a term only if it is higher than any it voted for, and persists that before it
 *    answers; from then on it refuses WAL of older terms (its puller of the old compute stops);
 *  - on "elected" (term T, start LSN S, the winner's term history + (T, S)) finds the highest point
 *    where its WAL agrees with the winner's history, truncates its own WAL there (a divergent tail
 *    of an old term is uncommitted by construction, see below), persists the new history, fetches
 *    what it lacks up to S from a peer that has it, and then pulls the new compute's WAL from S.
 *
 * Commit LSN. The compute acknowledges a commit once `ANY k` safekeepers reported the commit
 * record's end as flushed (k = a majority). We compute the same thing: the k-th highest
 * flushRecordLsn among members that accepted the current term (their last history entry is the
 * same term), using peers' published positions (broker) and our own. It never moves back. A
 * new election takes the most advanced WAL of a quorum of voters; any LSN flushed by a quorum in
 * the latest term is on at least one voter, so nothing committed is ever truncated. We serve
 * pageservers and replication clients only below min(commitLsn, own flushRecordLsn).
 *
 * Crash safety, in the order operations happen:
 *  - WAL is fsynced before any position covering it is reported (puller.ts) or persisted;
 *  - control.flushLsn is a record boundary that is durable; recovery (WalStorage.open) scans forward
 *    from it, so it may lag, never lead;
 *  - truncation lowers control.flushLsn first (old history kept: the tail is still legitimate WAL
 *    of the old term if we crash now), then cuts the files, then persists the new history;
 *  - a vote is persisted before the answer leaves.
 */
import { mkdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import type { SafekeeperTimelineInfo } from '../broker/types.ts';
import { formatLsn, type Lsn } from '../postgres/lsn.ts';
import { StrataError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';
import { Mutex } from '../util/mutex.ts';
import { lastLogTerm, readControlFile, writeControlFile, type SafekeeperControlState, type SafekeeperMember } from './control.ts';
import { quorumFor } from './membership.ts';
import type { ComputeSource, PageserverFeedback, StandbyReply, TermEntry, WalSenderTimeline } from './types.ts';
import { WalStorage } from './walstorage.ts';

/** One safekeeper of the timeline's set, as persisted in the control file. */
export type MemberInfo = SafekeeperMember;

export interface PeerState {
  term: bigint;
  lastLogTerm: bigint;
  flushLsn: Lsn;
  commitLsn: Lsn;
  httpConnstr: string;
  receivedAtMs: number;
}

export interface VoteResponse {
  term: bigint;
  voteGiven: boolean;
  flushLsn: Lsn;
  lastLogTerm: bigint;
  termHistory: TermEntry[];
  timelineStartLsn: Lsn;
}

export interface ElectedMessage {
  term: bigint;
  startLsn: Lsn;
  /** The winner's history up to startLsn, plus (term, startLsn) as the last entry. */
  termHistory: TermEntry[];
  compute: ComputeSource;
  /** A safekeeper that has the WAL up to startLsn (the winner), for peer recovery. */
  donor: { id: bigint; httpConnstr: string } | null;
}

export interface TimelineCreateParams {
  tenantId: string;
  timelineId: string;
  systemId: bigint;
  pgVersion: number;
  walSegSizeBytes: number;
  startLsn: Lsn;
  members: MemberInfo[];
}

export class SafekeeperTimelineError extends StrataError {
  readonly httpStatus: number;

  constructor(code: string, message: string, httpStatus: number, context: Record<string, string | number | bigint> = {}) {
    super(code, message, context);
    this.name = 'SafekeeperTimelineError';
    this.httpStatus = httpStatus;
  }
}

/** How often the in-memory positions are persisted to the control file when they moved. */
const PERSIST_INTERVAL_MS = 1_000;
/** Upper bound of commit waiters (walsender streams) per timeline. */
const MAX_COMMIT_WAITERS = 1_000;

interface CommitWaiter {
  lsn: Lsn;
  resolve: (lsn: Lsn) => void;
  timer: NodeJS.Timeout;
  onAbort: () => void;
  signal: AbortSignal;
}

/** Hooks the owner (Safekeeper) gives a timeline. */
export interface TimelineHooks {
  /** Called when something worth publishing changed (flush/commit/term); the owner throttles. */
  onChange(): void;
  /** Called when the timeline needs its puller (re)started or stopped (term/compute changed). */
  onTermChange(): void;
}

export class SafekeeperTimeline implements WalSenderTimeline {
  readonly tenantId: string;
  readonly timelineId: string;
  readonly dir: string;
  readonly safekeeperId: bigint;
  readonly log: Logger;
  /** Serialises every operation on the WAL files and the control file. */
  readonly mutex = new Mutex();
  state: SafekeeperControlState;
  storage: WalStorage;
  readonly peers = new Map<bigint, PeerState>();
  private commit: Lsn;
  private readonly waiters: CommitWaiter[] = [];
  private lastPersistMs = 0;
  private persistedSnapshot = '';
  private hooks: TimelineHooks = { onChange: () => undefined, onTermChange: () => undefined };
  closed = false;
  /** Standby replies seen (informational, for status and metrics). */
  lastStandbyReply: StandbyReply | null = null;
  lastPageserverFeedback: PageserverFeedback | null = null;
  /** The donor named by the last election we accepted (in memory; after a restart peers are used). */
  electedDonor: { id: bigint; httpConnstr: string } | null = null;

  private constructor(dir: string, safekeeperId: bigint, state: SafekeeperControlState, storage: WalStorage, log: Logger) {
    this.dir = dir;
    this.safekeeperId = safekeeperId;
    this.state = state;
    this.storage = storage;
    this.tenantId = state.tenantId;
    this.timelineId = state.timelineId;
    this.log = log;
    this.commit = state.commitLsn;
    this.persistedSnapshot = snapshotOf(state);
  }

  setHooks(hooks: TimelineHooks): void {
    this.hooks = hooks;
  }

  static async create(opts: { dir: string; safekeeperId: bigint; params: TimelineCreateParams; log: Logger }): Promise<SafekeeperTimeline> {
    const p = opts.params;
    await mkdir(opts.dir, { recursive: true });
    const state: SafekeeperControlState = {
      formatVersion: 1,
      tenantId: p.tenantId, timelineId: p.timelineId, systemId: p.systemId, pgVersion: p.pgVersion, walSegSizeBytes: p.walSegSizeBytes,
      term: 0n, termHistory: [], timelineStartLsn: p.startLsn, localStartLsn: p.startLsn, flushLsn: p.startLsn,
      commitLsn: p.startLsn, backupLsn: p.startLsn, remoteConsistentLsn: 0n, peerHorizonLsn: p.startLsn, compute: null,
      members: p.members,
    };
    await writeControlFile(opts.dir, state);
    return SafekeeperTimeline.open({ dir: opts.dir, safekeeperId: opts.safekeeperId, log: opts.log });
  }

  static async open(opts: { dir: string; safekeeperId: bigint; log: Logger }): Promise<SafekeeperTimeline> {
    const state = await readControlFile(opts.dir);
    const log = opts.log.child({ tenant_id: state.tenantId, timeline_id: state.timelineId });
    const storage = await WalStorage.open({
      dir: opts.dir, segmentSizeBytes: state.walSegSizeBytes, systemId: state.systemId, localStartLsn: state.localStartLsn,
      recoverFromLsn: state.flushLsn, log,
    });
    const tl = new SafekeeperTimeline(opts.dir, opts.safekeeperId, state, storage, log);
    log.info('safekeeper timeline loaded', {
      term: state.term, last_log_term: lastLogTerm(state), flush_lsn: formatLsn(storage.flushRecordLsn), commit_lsn: formatLsn(state.commitLsn),
    });
    return tl;
  }

  // ---------------------------------------------------------------------------------------------
  // WalSenderTimeline

  get systemId(): bigint {
    return this.state.systemId;
  }

  get walSegSizeBytes(): number {
    return this.state.walSegSizeBytes;
  }

  /** What may be served: committed and on our disk. */
  get commitLsn(): Lsn {
    const flushed = this.storage.flushRecordLsn;
    return this.commit < flushed ? this.commit : flushed;
  }

  /** The quorum commit position as computed (may be ahead of our own flush while we catch up). */
  get quorumCommitLsn(): Lsn {
    return this.commit;
  }

  get firstLsn(): Lsn {
    return this.storage.firstLsn;
  }

  get epochTerm(): bigint {
    return lastLogTerm(this.state);
  }

  /** Start LSN of the current epoch (the last history entry), or the timeline start. */
  get epochStartLsn(): Lsn {
    const last = this.state.termHistory[this.state.termHistory.length - 1];
    return last === undefined ? this.state.localStartLsn : last.startLsn;
  }

  async readWal(startLsn: Lsn, maxBytes: number): Promise<Buffer> {
    const end = this.commitLsn;
    if (startLsn >= end) return Buffer.alloc(0);
    const n = Number(end - startLsn < BigInt(maxBytes) ? end - startLsn : BigInt(maxBytes));
    return this.storage.read(startLsn, n);
  }

  waitForCommit(lsn: Lsn, timeoutMs: number, signal: AbortSignal): Promise<Lsn> {
    const now = this.commitLsn;
    if (now > lsn || this.closed) return Promise.resolve(now);
    if (signal.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    if (this.waiters.length >= MAX_COMMIT_WAITERS) {
      return Promise.reject(new SafekeeperTimelineError('too_many_waiters', `more than ${MAX_COMMIT_WAITERS} streams wait on timeline ${this.timelineId}`, 503));
    }
    return new Promise<Lsn>((resolve, reject) => {
      const w: CommitWaiter = {
        lsn, signal,
        resolve: (v) => {
          this.removeWaiter(w);
          resolve(v);
        },
        timer: setTimeout(() => w.resolve(this.commitLsn), timeoutMs),
        onAbort: () => {
          this.removeWaiter(w);
          reject(signal.reason ?? new Error('aborted'));
        },
      };
      signal.addEventListener('abort', w.onAbort, { once: true });
      this.waiters.push(w);
    });
  }

  private removeWaiter(w: CommitWaiter): void {
    clearTimeout(w.timer);
    w.signal.removeEventListener('abort', w.onAbort);
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }

  private releaseWaiters(): void {
    const now = this.commitLsn;
    for (const w of [...this.waiters]) if (now > w.lsn || this.closed) w.resolve(now);
  }

  onPageserverFeedback(fb: PageserverFeedback): void {
    this.lastPageserverFeedback = fb;
    // remote_consistent_lsn: what the pageserver can never lose. Only forward, and never past our
    // own WAL (a confused client must not make us delete WAL we still need to serve).
    const durable = fb.applyLsn < fb.flushLsn ? fb.applyLsn : fb.flushLsn;
    if (durable > this.state.remoteConsistentLsn && durable <= this.storage.flushRecordLsn) {
      this.state.remoteConsistentLsn = durable;
      this.hooks.onChange();
    }
  }

  onStandbyReply(reply: StandbyReply): void {
    this.lastStandbyReply = reply;
  }

  // ---------------------------------------------------------------------------------------------
  // Terms

  /** A vote request for `term` (persisted before the answer). */
  async vote(term: bigint): Promise<VoteResponse> {
    return this.mutex.run(async () => {
      let voteGiven = false;
      if (term > this.state.term) {
        this.state.term = term;
        await this.persistNow();
        voteGiven = true;
        this.log.info('voted', { term });
        this.hooks.onTermChange();
      }
      return {
        term: this.state.term, voteGiven, flushLsn: this.storage.flushRecordLsn, lastLogTerm: lastLogTerm(this.state),
        termHistory: this.state.termHistory.map((e) => ({ ...e })), timelineStartLsn: this.state.timelineStartLsn,
      };
    });
  }

  /**
   * The election result: adopt the winner's history, cut a divergent tail, remember the compute.
   * Returns the LSN our WAL ends at afterwards (peer recovery must bring it to msg.startLsn).
   */
  async elected(msg: ElectedMessage): Promise<Lsn> {
    validateHistory(msg.termHistory, this.timelineId);
    const last = msg.termHistory[msg.termHistory.length - 1];
    if (last === undefined || last.term !== msg.term || last.startLsn !== msg.startLsn) {
      throw new SafekeeperTimelineError('invalid_election', `the term history must end with (${msg.term}, ${formatLsn(msg.startLsn)})`, 400);
    }
    return this.mutex.run(async () => {
      if (msg.term < this.state.term) {
        throw new SafekeeperTimelineError('term_superseded', `term ${msg.term} is older than term ${this.state.term} this safekeeper voted for`, 409,
          { term: msg.term, current_term: this.state.term });
      }
      if (msg.term === lastLogTerm(this.state)) {
        // Already accepted (a retry): only the compute location may be refreshed.
        this.state.compute = msg.compute;
        await this.persistNow();
        this.hooks.onTermChange();
        return this.storage.flushRecordLsn;
      }
      if (msg.startLsn < this.state.localStartLsn) {
        throw new SafekeeperTimelineError('invalid_election', `start LSN ${formatLsn(msg.startLsn)} is before this timeline's WAL start ${formatLsn(this.state.localStartLsn)}`, 400);
      }
      const common = highestCommonPoint(this.state.termHistory, msg.termHistory.slice(0, -1), this.storage.writeLsn, this.state.localStartLsn);
      const cut = common < msg.startLsn ? common : msg.startLsn;
      if (cut < this.storage.writeLsn) {
        this.log.warn('truncating WAL that diverges from the new term', {
          term: msg.term, from_lsn: formatLsn(cut), to_lsn: formatLsn(this.storage.writeLsn),
        });
        // Lower the durable flush hint first (with the old history, the tail is still valid WAL
        // of the old term if we crash before the cut), then cut.
        if (this.state.flushLsn > cut) {
          this.state.flushLsn = cut;
          await this.persistNow();
        }
        await this.storage.truncate(cut);
      }
      this.state.term = msg.term;
      this.state.termHistory = msg.termHistory.map((e) => ({ ...e }));
      this.state.compute = msg.compute;
      this.state.flushLsn = this.storage.flushRecordLsn;
      this.electedDonor = msg.donor;
      await this.persistNow();
      this.log.info('accepted new term', {
        term: msg.term, start_lsn: formatLsn(msg.startLsn), flush_lsn: formatLsn(this.storage.flushRecordLsn),
        compute: `${msg.compute.host}:${msg.compute.port}`,
      });
      this.recomputeCommit();
      this.hooks.onTermChange();
      return this.storage.flushRecordLsn;
    });
  }

  // ---------------------------------------------------------------------------------------------
  // WAL in (puller and peer recovery). Callers hold no lock; these take the mutex.

  /** Appends WAL received for `term`. Refused if the term is no longer current. */
  async append(term: bigint, startLsn: Lsn, data: Buffer): Promise<void> {
    await this.mutex.run(async () => {
      this.checkWritableTerm(term);
      await this.storage.write(startLsn, data);
    });
  }

  /** fsyncs what was appended; returns the flushed record end. */
  async flush(term: bigint): Promise<Lsn> {
    return this.mutex.run(async () => {
      this.checkWritableTerm(term);
      if (this.storage.flushLsn < this.storage.writeLsn) await this.storage.flush();
      const flushed = this.storage.flushRecordLsn;
      const now = Date.now();
      // The flush hint must be durable WAL; persisting it bounds how far recovery has to scan.
      if (flushed > this.state.flushLsn && now - this.lastPersistMs >= PERSIST_INTERVAL_MS) {
        this.state.flushLsn = flushed;
        await this.persistNow();
      }
      this.recomputeCommit();
      this.hooks.onChange();
      return flushed;
    });
  }

  private checkWritableTerm(term: bigint): void {
    if (this.closed) throw new SafekeeperTimelineError('timeline_closed', `timeline ${this.timelineId} is shutting down`, 503);
    if (term !== this.state.term || term !== lastLogTerm(this.state)) {
      throw new SafekeeperTimelineError('term_superseded',
        `WAL of term ${term} refused: this safekeeper is in term ${this.state.term} (accepted ${lastLogTerm(this.state)})`, 409,
        { term, current_term: this.state.term });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Peers and the commit LSN

  quorumSize(): number {
    return quorumFor(this.state.members.length);
  }

  isMember(id: bigint): boolean {
    return this.state.members.some((m) => m.id === id);
  }

  onPeerInfo(info: SafekeeperTimelineInfo, nowMs: number): void {
    if (info.safekeeperId === this.safekeeperId || !this.isMember(info.safekeeperId)) return;
    // The pageserver streams from one safekeeper; the others learn its durable LSN from the peers'
    // publications, so every safekeeper can delete the WAL the pageserver no longer needs. Capped
    // at our own WAL: it only ever refers to committed WAL, which we have or will get.
    const remote = info.remoteConsistentLsn < this.storage.flushRecordLsn ? info.remoteConsistentLsn : this.storage.flushRecordLsn;
    if (remote > this.state.remoteConsistentLsn) this.state.remoteConsistentLsn = remote;
    this.peers.set(info.safekeeperId, {
      term: info.term, lastLogTerm: info.lastLogTerm, flushLsn: info.flushLsn, commitLsn: info.commitLsn,
      httpConnstr: info.httpConnstr, receivedAtMs: nowMs,
    });
    this.recomputeCommit();
  }

  /** k-th highest flush among members that accepted our current epoch; never moves back. */
  recomputeCommit(): void {
    const epoch = lastLogTerm(this.state);
    if (epoch === 0n) return;
    const flushes: Lsn[] = [this.storage.flushRecordLsn];
    for (const [id, p] of this.peers) {
      if (this.isMember(id) && p.lastLogTerm === epoch) flushes.push(p.flushLsn);
    }
    const k = this.quorumSize();
    if (flushes.length < k) return;
    flushes.sort((a, b) => (a > b ? -1 : a < b ? 1 : 0));
    const quorum = flushes[k - 1]!;
    if (quorum > this.commit) {
      this.commit = quorum;
      this.state.commitLsn = quorum;
      this.releaseWaiters();
      this.hooks.onChange();
    }
  }

  /** Min flush LSN over all members (WAL below it is not needed for peer recovery); 0 if unknown. */
  peerHorizon(): Lsn {
    let min = this.storage.flushRecordLsn;
    for (const m of this.state.members) {
      if (m.id === this.safekeeperId) continue;
      const p = this.peers.get(m.id);
      if (p === undefined) return 0n;
      if (p.flushLsn < min) min = p.flushLsn;
    }
    return min;
  }

  /** Deletes segments below what both the pageserver and every peer no longer need. */
  async removeOldWal(): Promise<number> {
    return this.mutex.run(async () => {
      const horizon = this.peerHorizon();
      this.state.peerHorizonLsn = horizon > this.state.peerHorizonLsn ? horizon : this.state.peerHorizonLsn;
      let limit = this.state.remoteConsistentLsn < horizon ? this.state.remoteConsistentLsn : horizon;
      if (this.commit < limit) limit = this.commit;
      // Recovery after a crash scans from the persisted flush hint: keep the segment holding it.
      if (this.state.flushLsn < limit) limit = this.state.flushLsn;
      if (limit <= this.storage.firstLsn) return 0;
      const removed = await this.storage.removeSegmentsBelow(limit);
      if (removed > 0) this.log.info('removed old WAL segments', { count: removed, horizon_lsn: formatLsn(limit) });
      return removed;
    });
  }

  // ---------------------------------------------------------------------------------------------
  // Status and persistence

  info(opts: { safekeeperConnstr: string; httpConnstr: string; availabilityZone?: string }): SafekeeperTimelineInfo {
    return {
      tenantId: this.tenantId, timelineId: this.timelineId, safekeeperId: this.safekeeperId,
      term: this.state.term, lastLogTerm: lastLogTerm(this.state), flushLsn: this.storage.flushRecordLsn,
      commitLsn: this.commitLsn, backupLsn: this.state.backupLsn, remoteConsistentLsn: this.state.remoteConsistentLsn,
      peerHorizonLsn: this.state.peerHorizonLsn, localStartLsn: this.state.localStartLsn,
      safekeeperConnstr: opts.safekeeperConnstr, httpConnstr: opts.httpConnstr,
      ...(opts.availabilityZone !== undefined ? { availabilityZone: opts.availabilityZone } : {}),
    };
  }

  /** Persists positions that moved, at most once per PERSIST_INTERVAL_MS (called by a timer). */
  async persistIfChanged(): Promise<void> {
    await this.mutex.run(async () => {
      if (this.closed) return;
      const flushed = this.storage.flushRecordLsn;
      if (flushed > this.state.flushLsn && this.storage.flushLsn >= flushed) this.state.flushLsn = flushed;
      if (snapshotOf(this.state) !== this.persistedSnapshot) await this.persistNow();
    });
  }

  /** Caller holds the mutex. */
  private async persistNow(): Promise<void> {
    await writeControlFile(this.dir, this.state);
    this.persistedSnapshot = snapshotOf(this.state);
    this.lastPersistMs = Date.now();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.mutex.run(async () => {
      this.closed = true;
      this.releaseWaiters();
      const flushed = this.storage.flushRecordLsn;
      if (flushed > this.state.flushLsn && this.storage.flushLsn >= flushed) this.state.flushLsn = flushed;
      if (snapshotOf(this.state) !== this.persistedSnapshot) await this.persistNow().catch((err: unknown) => {
        this.log.warn('could not persist the control file at close', { error: err instanceof Error ? err.message : String(err) });
      });
      await this.storage.close();
    });
  }

  /** Closes and removes the timeline's directory. */
  async destroy(): Promise<void> {
    await this.close();
    await rm(this.dir, { recursive: true, force: true });
    // The tenant directory goes too when this was its last timeline.
    await rmdir(path.dirname(this.dir)).catch(() => undefined);
  }
}

function snapshotOf(s: SafekeeperControlState): string {
  return JSON.stringify(s, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
}

export function validateHistory(h: readonly TermEntry[], timelineId: string): void {
  for (let i = 1; i < h.length; i++) {
    const a = h[i - 1]!;
    const b = h[i]!;
    if (!(b.term > a.term) || b.startLsn < a.startLsn) {
      throw new SafekeeperTimelineError('invalid_term_history', `term history of timeline ${timelineId} is not ascending at entry ${i}: (${a.term}, ${formatLsn(a.startLsn)}) then (${b.term}, ${formatLsn(b.startLsn)})`, 400);
    }
  }
}

/**
 * The highest LSN up to which our WAL (history `mine`, ending at `walEnd`) is the same WAL as
 * the winner's (history `theirs`): entries agree while they have the same term and start; the
 * last agreeing entry runs until the earlier of the two next starts (or our WAL end).
 */
export function highestCommonPoint(mine: readonly TermEntry[], theirs: readonly TermEntry[], walEnd: Lsn, localStartLsn: Lsn): Lsn {
  let i = 0;
  while (i < mine.length && i < theirs.length && mine[i]!.term === theirs[i]!.term && mine[i]!.startLsn === theirs[i]!.startLsn) i++;
  if (i === 0) {
    // No common term: only WAL written before any term (none is) can be shared.
    return localStartLsn < walEnd ? localStartLsn : walEnd;
  }
  let end = walEnd;
  const nextMine = mine[i];
  const nextTheirs = theirs[i];
  if (nextMine !== undefined && nextMine.startLsn < end) end = nextMine.startLsn;
  if (nextTheirs !== undefined && nextTheirs.startLsn < end) end = nextTheirs.startLsn;
  return end;
}
