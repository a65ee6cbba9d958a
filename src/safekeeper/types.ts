/**
 * Shared shapes of the safekeeper: the persisted per-timeline state and the view of a timeline
 * that the walsender (serving WAL to pageservers and replication clients) needs.
 */
import type { Lsn } from '../postgres/lsn.ts';

/** One accepted term: WAL from startLsn on (until the next entry) was written by that term's compute. */
export interface TermEntry {
  term: bigint;
  startLsn: Lsn;
}

/** Where the current term's compute is and how to pull WAL from it. */
export interface ComputeSource {
  host: string;
  port: number;
  user: string;
  /** Physical slot on the compute that keeps WAL for this safekeeper. */
  slotName: string;
  /** application_name (matched by the compute's synchronous_standby_names). */
  applicationName: string;
}

/** Feedback a pageserver sends ('z' message): its progress on this timeline. */
export interface PageserverFeedback {
  /** Last WAL received/ingested. */
  writeLsn: Lsn;
  /** Durable on the pageserver (disk_consistent_lsn). */
  flushLsn: Lsn;
  /** Durable where it cannot be lost (remote_consistent_lsn; = flush until remote storage exists). */
  applyLsn: Lsn;
  /** Logical size of the timeline in bytes (0 when unknown). */
  currentTimelineSizeBytes: bigint;
  /** Pageserver clock, µs since 2000-01-01. */
  replyTimeUs: bigint;
}

/** Standard standby status update ('r') from a replication client that is not a pageserver. */
export interface StandbyReply {
  writeLsn: Lsn;
  flushLsn: Lsn;
  applyLsn: Lsn;
  replyTimeUs: bigint;
  replyRequested: boolean;
}

/**
 * What the walsender needs from a safekeeper timeline. Implemented by the safekeeper's timeline
 * object; the walsender never writes WAL and never serves past commitLsn.
 */
export interface WalSenderTimeline {
  readonly tenantId: string;
  readonly timelineId: string;
  readonly systemId: bigint;
  readonly walSegSizeBytes: number;
  /** Serve WAL only below this. Never moves backwards. */
  readonly commitLsn: Lsn;
  /** The oldest LSN still stored locally (requests below it fail like "segment already removed"). */
  readonly firstLsn: Lsn;
  /** Bytes [startLsn, startLsn + n) with n ≤ maxBytes and startLsn + n ≤ commitLsn; may be empty. */
  readWal(startLsn: Lsn, maxBytes: number): Promise<Buffer>;
  /** Resolves with the commit LSN once it is > lsn, or after timeoutMs with the current one; rejects when signal aborts. */
  waitForCommit(lsn: Lsn, timeoutMs: number, signal: AbortSignal): Promise<Lsn>;
  onPageserverFeedback(fb: PageserverFeedback): void;
  onStandbyReply(reply: StandbyReply): void;
}
