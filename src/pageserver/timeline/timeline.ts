/**
 * A timeline: one branch of a database's history, readable at any LSN it has.
 *
 * State it owns:
 * - `lastRecordLsn` / `prevRecordLsn`: the end and start of the last WAL record ingested. They
 *   advance record by record; readers waiting for an LSN are released as they pass it.
 * - `diskConsistentLsn`: everything at or below it is in layer files and survives a restart. It
 *   only moves when a frozen layer's file is durable, and the metadata file records it.
 * - the layer map (open, frozen and on-disk layers) and, for a branch, the ancestor timeline and
 *   the LSN it branched at. Reads of LSNs at or below the branch point fall through to the
 *   ancestor, so a branch is metadata only.
 * - `latestGcCutoffLsn`: reads and branches below it are refused (only moves forward).
 *
 * Write path (one writer, the WAL ingest of issue 4, or tests): `put(key, lsn, value)` for every
 * value a record produces, at the record's end LSN, then `finishRecord(endLsn, startLsn)`. Then
 * `checkpointIfNeeded()` freezes the open layer when it has `checkpoint_distance` of WAL (or
 * `checkpoint_timeout` passed) and applies back-pressure while frozen layers wait for the flush.
 *
 * Read path (`getPage` / `reconstruct`): see read.ts.
 */
import type { Lsn } from '../../postgres/lsn.ts';
import { formatLsn } from '../../postgres/lsn.ts';
import { AssertionFailedError, StrataError, assert, type ErrorContext } from '../../util/errors.ts';
import type { Logger } from '../../util/log.ts';
import { describeKey, type Key } from '../../storage/key.ts';
import { InMemoryLayer } from '../../storage/inmemorylayer.ts';
import { LayerMap } from '../../storage/layermap.ts';
import type { Value } from '../../storage/value.ts';
import { saveMetadata, type TimelineMetadata } from '../metadata.ts';
import { LsnWaiter } from './lsnwaiter.ts';
import { createTimelineStateMachine, type TimelineStateKind, type TimelineStateMachine } from '../states.ts';
import type { TimelineResources } from './resources.ts';


/** The timeline cannot serve the request in its current state. */
export class TimelineStateError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('timeline_not_active', message, context);
    this.name = 'TimelineStateError';
  }
}

/** A read or branch below the GC cutoff: that history is gone. */
export class LsnBelowGcCutoffError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('lsn_below_gc_cutoff', message, context);
    this.name = 'LsnBelowGcCutoffError';
  }
}

/**
 * A frozen layer and the prev_record_lsn of the timeline when it was frozen (its last record is
 * the layer's end LSN − 1; prev_record_lsn is what the metadata needs besides).
 */
export interface FrozenLayerInfo {
  layer: InMemoryLayer;
  prevRecordLsn: Lsn | null;
}

export interface TimelineInit {
  tenantId: string;
  timelineId: string;
  dir: string;
  metadata: TimelineMetadata;
  ancestor: Timeline | null;
  resources: TimelineResources;
  log: Logger;
}

/** Most readers waiting on one timeline at a time. */
const MAX_LSN_WAITERS = 10_000;
/** Frozen layers allowed to wait for the flush before ingest is made to wait. */
export const MAX_FROZEN_LAYERS = 2;

export class Timeline {
  readonly tenantId: string;
  readonly timelineId: string;
  /** Identity in shared caches: timeline ids are unique only within a tenant. */
  readonly cacheId: string;
  readonly dir: string;
  readonly ancestor: Timeline | null;
  readonly ancestorLsn: Lsn;
  readonly initdbLsn: Lsn;
  readonly pgVersion: number;
  readonly resources: TimelineResources;
  readonly log: Logger;
  readonly layers = new LayerMap();

  /** Loading → Active → Stopping, or Broken from any of them (states.ts). */
  readonly states: TimelineStateMachine;

  diskConsistentLsn: Lsn;
  latestGcCutoffLsn: Lsn;
  prevRecordLsn: Lsn | null;
  /** prev_record_lsn as of disk_consistent_lsn (what the metadata file records). */
  diskConsistentPrevLsn: Lsn | null;
  /** Released as ingestion passes LSNs (wait_lsn). */
  readonly lastRecord: LsnWaiter;
  /** Released as disk_consistent_lsn passes LSNs. */
  readonly diskConsistent: LsnWaiter;

  /** Where the next open layer starts. */
  nextOpenLayerAt: Lsn;
  /** Frozen layers with their freeze-time positions; index-aligned with layers.frozen. */
  readonly frozenInfo: FrozenLayerInfo[] = [];
  lastFreezeAtLsn: Lsn;
  lastFreezeAtMs: number;
  /** Set while the flush loop runs; see flush.ts. */
  flushTask: Promise<void> | null = null;
  /** Serialises metadata writes. */
  metadataChain: Promise<void> = Promise.resolve();

  constructor(init: TimelineInit) {
    const md = init.metadata;
    this.states = createTimelineStateMachine(init.timelineId);
    this.tenantId = init.tenantId;
    this.timelineId = init.timelineId;
    this.cacheId = `${init.tenantId}/${init.timelineId}`;
    this.dir = init.dir;
    this.ancestor = init.ancestor;
    this.ancestorLsn = md.ancestorLsn;
    this.initdbLsn = md.initdbLsn;
    this.pgVersion = md.pgVersion;
    this.resources = init.resources;
    this.log = init.log;
    this.diskConsistentLsn = md.diskConsistentLsn;
    this.latestGcCutoffLsn = md.latestGcCutoffLsn;
    this.prevRecordLsn = md.prevRecordLsn;
    this.diskConsistentPrevLsn = md.prevRecordLsn;
    const ctx = { tenant: init.tenantId, timeline: init.timelineId };
    this.lastRecord = new LsnWaiter({ initialLsn: md.diskConsistentLsn, maxWaiters: MAX_LSN_WAITERS, context: ctx });
    this.diskConsistent = new LsnWaiter({ initialLsn: md.diskConsistentLsn, maxWaiters: MAX_LSN_WAITERS, context: ctx });
    this.nextOpenLayerAt = md.diskConsistentLsn + 1n;
    this.lastFreezeAtLsn = md.diskConsistentLsn;
    this.lastFreezeAtMs = Date.now();
    if (init.ancestor !== null) {
      assert(md.ancestorTimelineId === init.ancestor.timelineId, 'ancestor does not match the metadata', { ...ctx, ancestor: md.ancestorTimelineId ?? '' });
    } else {
      assert(md.ancestorTimelineId === null, 'timeline has an ancestor in its metadata but none was given', ctx);
    }
  }

  get state(): TimelineStateKind {
    return this.states.current.kind;
  }

  get brokenReason(): string | null {
    const st = this.states.current;
    return st.kind === 'Broken' ? st.reason : null;
  }

  get lastRecordLsn(): Lsn {
    return this.lastRecord.lsn;
  }

  context(extra: ErrorContext = {}): ErrorContext {
    return { tenant: this.tenantId, timeline: this.timelineId, ...extra };
  }

  metadata(): TimelineMetadata {
    return {
      diskConsistentLsn: this.diskConsistentLsn,
      prevRecordLsn: this.diskConsistentPrevLsn,
      ancestorTimelineId: this.ancestor?.timelineId ?? null,
      ancestorLsn: this.ancestorLsn,
      latestGcCutoffLsn: this.latestGcCutoffLsn,
      initdbLsn: this.initdbLsn,
      pgVersion: this.pgVersion,
    };
  }

  activate(): void {
    this.states.transition({ kind: 'Active' });
  }

  /** Marks the timeline broken: it serves nothing more. Waiters get the reason. */
  setBroken(reason: string): void {
    if (this.state === 'Broken') return;
    this.states.transition({ kind: 'Broken', reason });
    this.log.error('timeline broken', { reason });
    const err = new TimelineStateError(`timeline ${this.timelineId} is broken: ${reason}`, this.context({ reason }));
    this.lastRecord.close(err);
    this.diskConsistent.close(err);
  }

  /** Stops serving (shutdown or delete). A Broken timeline stays Broken. */
  setStopping(): void {
    if (this.state === 'Loading' || this.state === 'Active') this.states.transition({ kind: 'Stopping' });
  }

  checkReadable(): void {
    if (this.state !== 'Active') {
      throw new TimelineStateError(
        `timeline ${this.timelineId} is ${this.state}${this.brokenReason !== null ? ` (${this.brokenReason})` : ''}, not Active`,
        this.context({ state: this.state }));
    }
  }

  /** Refuses LSNs whose history GC may have removed. */
  checkLsnInScope(lsn: Lsn): void {
    if (lsn < this.latestGcCutoffLsn) {
      throw new LsnBelowGcCutoffError(
        `LSN ${formatLsn(lsn)} is below the GC cutoff ${formatLsn(this.latestGcCutoffLsn)} of timeline ${this.timelineId}: that history was garbage collected`,
        this.context({ lsn: formatLsn(lsn), gcCutoffLsn: formatLsn(this.latestGcCutoffLsn) }));
    }
  }

  /** Waits until ingestion has passed `lsn` (wait_lsn). */
  waitLsn(lsn: Lsn, timeoutMs: number): Promise<void> {
    return this.lastRecord.wait(lsn, timeoutMs);
  }

  // ---------------------------------------------------------------------------------------------
  // Write path.

  /** Stores `value` for `key` at `lsn` (the end LSN of the record being ingested). */
  put(key: Key, lsn: Lsn, value: Value): void {
    this.checkWritable();
    if (lsn <= this.lastRecordLsn) {
      throw new StrataError('lsn_not_increasing',
        `write of ${describeKey(key)} at ${formatLsn(lsn)} is not after the last record ${formatLsn(this.lastRecordLsn)}`,
        this.context({ key: describeKey(key), lsn: formatLsn(lsn), lastRecordLsn: formatLsn(this.lastRecordLsn) }));
    }
    let open = this.layers.open;
    if (open === null) {
      open = new InMemoryLayer({ tenantId: this.tenantId, timelineId: this.timelineId, startLsn: this.nextOpenLayerAt });
      this.layers.open = open;
    }
    open.put(key, lsn, value);
  }

  /** Marks the record [startLsn, endLsn) as ingested: last_record_lsn = endLsn, prev = startLsn. */
  finishRecord(endLsn: Lsn, startLsn: Lsn | null): void {
    this.checkWritable();
    if (endLsn <= this.lastRecordLsn || (endLsn & 7n) !== 0n) {
      throw new StrataError('lsn_not_increasing',
        `record end ${formatLsn(endLsn)} must be 8-byte aligned and after the last record ${formatLsn(this.lastRecordLsn)}`,
        this.context({ lsn: formatLsn(endLsn), lastRecordLsn: formatLsn(this.lastRecordLsn) }));
    }
    const open = this.layers.open;
    if (open !== null && open.lastWrittenLsn > endLsn) {
      // Every value of this record is at endLsn; nothing may be newer than the record.
      throw new AssertionFailedError('a value was written beyond the end of its record', this.context({ lsn: formatLsn(endLsn) }));
    }
    this.prevRecordLsn = startLsn;
    this.lastRecord.advance(endLsn);
  }

  private checkWritable(): void {
    if (this.state !== 'Active' && this.state !== 'Loading') {
      throw new TimelineStateError(`timeline ${this.timelineId} is ${this.state}; it accepts no writes`, this.context({ state: this.state }));
    }
  }

  /** Moves the GC cutoff forward (never back) and persists it. */
  async advanceGcCutoff(lsn: Lsn): Promise<void> {
    if (lsn <= this.latestGcCutoffLsn) return;
    assert(lsn <= this.lastRecordLsn, 'GC cutoff beyond the last record', this.context({ lsn: formatLsn(lsn) }));
    this.latestGcCutoffLsn = lsn;
    await this.saveMetadata();
  }

  /** Persists the current metadata (serialised with every other metadata write). */
  saveMetadata(): Promise<void> {
    const next = this.metadataChain.then(() => saveMetadata(this.dir, this.metadata()));
    this.metadataChain = next.catch(() => undefined);
    return next;
  }
}
