/**
 * The one message the storage broker carries, in Strata's own shape.
 *
 * Safekeepers publish a SafekeeperTimelineInfo for each active timeline about once a second;
 * pageservers (and peer safekeepers) subscribe to the timelines they care about. The wire form is
 * Neon's `broker.proto` (ids as 16 raw bytes, LSNs and terms as uint64); this module is the
 * TypeScript side of it: ids as canonical 32-char lowercase hex (util/ids.ts), LSNs and terms as
 * bigint. Conversion lives in broker/proto.ts, so nothing else sees protobuf shapes.
 */
import type { Lsn } from '../postgres/lsn.ts';

export interface TenantTimelineId {
  tenantId: string;
  timelineId: string;
}

export interface SafekeeperTimelineInfo extends TenantTimelineId {
  safekeeperId: bigint;
  /** The highest term this safekeeper has voted for. */
  term: bigint;
  /** The term of the last entry of its term history (the term its WAL tail was written in). */
  lastLogTerm: bigint;
  /** End of the last complete WAL record it has fsynced. */
  flushLsn: Lsn;
  /** The position a quorum of safekeepers has flushed in the current term: what it serves up to. */
  commitLsn: Lsn;
  /** WAL offloaded to object storage up to here (0 until offload exists). */
  backupLsn: Lsn;
  /** The pageserver's durable LSN, from its feedback. */
  remoteConsistentLsn: Lsn;
  /** Min flush LSN among peers it knows of: WAL below it is not needed for peer recovery. */
  peerHorizonLsn: Lsn;
  /** The first LSN this safekeeper holds WAL from. */
  localStartLsn: Lsn;
  /** host:port of its replication (libpq) service. */
  safekeeperConnstr: string;
  /** http://host:port of its HTTP API. */
  httpConnstr: string;
  availabilityZone?: string;
}
