/**
 * A tenant: one customer database cluster's history — a tree of timelines — and its config.
 *
 * Directory (`<workdir>/tenants/<tenant_id>/`):
 *   tenant-config.json            per-tenant overrides of the pageserver defaults
 *   timelines/<timeline_id>/      metadata + layer files of one timeline
 *
 * Creating a tenant or a timeline builds its directory under a temporary name (`…​.___temp`),
 * fsyncs it, and renames it into place: after a crash it either exists whole or not at all
 * (leftover temporary directories are removed on load). Deleting a timeline first renames its
 * directory to `….___delete`, so a crash mid-delete never leaves a half-deleted timeline that
 * looks alive.
 *
 * Branching (`branchTimeline`) is metadata only: the new timeline records its ancestor and the
 * LSN it starts at; reads at or below that LSN fall through to the ancestor. The start LSN must
 * be reachable on the ancestor: not above its last record (the call waits for it, with a
 * timeout) and not below its GC cutoff (that history may be gone).
 * Timelines load in ancestor order, since a branch needs its ancestor object to read through.
 */
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Lsn } from '../postgres/lsn.ts';
import { formatLsn } from '../postgres/lsn.ts';
import { StrataError, InvalidInputError, assert, type ErrorContext } from '../util/errors.ts';
import { TEMP_SUFFIX, fsyncDir, pathExists, writeFileDurable } from '../util/durable.ts';
import { generateId, parseId, tryParseId } from '../util/ids.ts';
import type { Logger } from '../util/log.ts';
import { loadMetadata, saveMetadata, type TimelineMetadata } from './metadata.ts';
import { createTenantStateMachine, type TenantStateKind, type TenantStateMachine } from './states.ts';
import { loadTenantConfig, mergeTenantConfig, saveTenantConfig, type TenantConfig, type TenantConfigOverrides } from './tenantconfig.ts';
import { checkpoint, freezeOpenLayer, shouldFreeze } from './timeline/flush.ts';
import { BackgroundLoopKind, StorageOperation, type PageserverMetrics } from './metrics.ts';
import { loadTimelineLayers } from './timeline/load.ts';
import { LsnBelowGcCutoffError, Timeline } from './timeline/timeline.ts';
import type { TimelineResources } from './timeline/resources.ts';

const DELETE_SUFFIX = '.___delete';
/** Period of the per-tenant check for checkpoint_timeout. */
const BACKGROUND_TICK_MS = 1000;

export class NotFoundError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('not_found', message, context);
    this.name = 'NotFoundError';
  }
}

export class ConflictError extends StrataError {
  constructor(message: string, context: ErrorContext) {
    super('conflict', message, context);
    this.name = 'ConflictError';
  }
}

/** What a tenant gets from the pageserver: caches and the redo engine, shared by all tenants. */
export interface SharedResources {
  redo: TimelineResources['redo'];
  pageCache: TimelineResources['pageCache'];
  blockCache: TimelineResources['blockCache'];
  fdCache: TimelineResources['fdCache'];
  waitLsnTimeoutMs: number;
  defaults: TenantConfig;
  /** The pageserver's metrics; each timeline gets its own TimelineMetrics from it. */
  metrics: PageserverMetrics;
}

export interface CreateTimelineOptions {
  timelineId?: string;
  pgVersion: number;
  /** Where the timeline's history begins: values may be written at LSNs above it. */
  startLsn?: Lsn;
  /** LSN of the initdb import (recorded in metadata; default startLsn). */
  initdbLsn?: Lsn;
  /**
   * Fills the new timeline (bootstrap, import) before anyone can see it. The timeline is Active
   * for the populate step but not listed; its directory carries an `uninit` mark until populate
   * and a full flush succeed, so a crash part-way leaves nothing that looks like a timeline (the
   * mark makes load delete it). If populate fails the directory is removed.
   */
  populate?: (timeline: Timeline) => Promise<void>;
}

/** Marks a timeline directory whose creation has not finished (see CreateTimelineOptions.populate). */
export const UNINIT_MARK = 'uninit';

export interface BranchOptions {
  timelineId?: string;
  ancestorTimelineId: string;
  /** Default: the ancestor's last record LSN. Aligned up to 8 bytes. */
  ancestorStartLsn?: Lsn;
  /** How long to wait for the ancestor to reach the start LSN. */
  timeoutMs?: number;
}

export class Tenant {
  readonly tenantId: string;
  readonly dir: string;
  /** Loading → Activating → Active → Stopping, or Broken (states.ts). */
  readonly states: TenantStateMachine;
  private overrides: TenantConfigOverrides;
  private conf: TenantConfig;
  private readonly shared: SharedResources;
  readonly log: Logger;
  private readonly timelines = new Map<string, Timeline>();

  private constructor(opts: { tenantId: string; dir: string; overrides: TenantConfigOverrides; shared: SharedResources; log: Logger }) {
    this.tenantId = opts.tenantId;
    this.dir = opts.dir;
    this.overrides = opts.overrides;
    this.shared = opts.shared;
    this.conf = mergeTenantConfig(opts.shared.defaults, opts.overrides);
    this.states = createTenantStateMachine(opts.tenantId, { kind: 'Loading' });
    this.log = opts.log.child({ tenant_id: opts.tenantId });
  }

  get state(): TenantStateKind {
    return this.states.current.kind;
  }

  get brokenReason(): string | null {
    const st = this.states.current;
    return st.kind === 'Broken' ? st.reason : null;
  }

  private activateSelf(): void {
    this.states.transition({ kind: 'Activating', from: 'Loading' });
    for (const tl of this.timelines.values()) if (tl.state === 'Loading') tl.activate();
    this.states.transition({ kind: 'Active' });
    this.startBackgroundTick();
  }

  private tickTimer: NodeJS.Timeout | null = null;

  /**
   * checkpoint_timeout must fire on idle timelines too (so their WAL can be released), not only
   * when ingest calls checkpointIfNeeded: once a second, freeze every timeline that is due.
   */
  private startBackgroundTick(): void {
    this.tickTimer = setInterval(() => {
      const started = performance.now();
      const now = Date.now();
      for (const tl of this.timelines.values()) {
        if (tl.state === 'Active' && shouldFreeze(tl, now)) freezeOpenLayer(tl);
      }
      const elapsedMs = performance.now() - started;
      if (this.shared.metrics.backgroundLoopIteration(BackgroundLoopKind.ingestHouseKeeping, BACKGROUND_TICK_MS, elapsedMs)) {
        this.log.warn('task iteration took longer than the configured period', { task: BackgroundLoopKind.ingestHouseKeeping, elapsed_ms: Math.round(elapsedMs), period_ms: BACKGROUND_TICK_MS });
      }
    }, BACKGROUND_TICK_MS);
    this.tickTimer.unref();
  }

  get config(): TenantConfig {
    return this.conf;
  }

  get configOverrides(): TenantConfigOverrides {
    return this.overrides;
  }

  private context(extra: ErrorContext = {}): ErrorContext {
    return { tenant: this.tenantId, ...extra };
  }

  /** Creates the tenant's directory (atomically) and returns the active tenant. */
  static async create(opts: { tenantsDir: string; tenantId: string; overrides: TenantConfigOverrides; shared: SharedResources; log: Logger }): Promise<Tenant> {
    const dir = path.join(opts.tenantsDir, opts.tenantId);
    const tmp = dir + TEMP_SUFFIX;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(path.join(tmp, 'timelines'), { recursive: true });
    await saveTenantConfig(tmp, opts.overrides);
    await fsyncDir(path.join(tmp, 'timelines'));
    await fsyncDir(tmp);
    await rename(tmp, dir);
    await fsyncDir(opts.tenantsDir);
    const tenant = new Tenant({ ...opts, dir });
    tenant.activateSelf();
    tenant.log.info('tenant created');
    return tenant;
  }

  /** Loads a tenant directory: config, then every timeline (ancestors first). */
  static async load(opts: { tenantsDir: string; tenantId: string; shared: SharedResources; log: Logger }): Promise<Tenant> {
    const dir = path.join(opts.tenantsDir, opts.tenantId);
    const overrides = await loadTenantConfig(dir);
    const tenant = new Tenant({ ...opts, dir, overrides });
    try {
      await tenant.loadTimelines();
      tenant.activateSelf();
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      if (tenant.state !== 'Broken') tenant.states.transition({ kind: 'Broken', reason });
      tenant.log.error('tenant failed to load', { reason });
    }
    return tenant;
  }

  private async loadTimelines(): Promise<void> {
    const timelinesDir = path.join(this.dir, 'timelines');
    const entries = await readdir(timelinesDir);
    const metas = new Map<string, TimelineMetadata>();
    for (const name of entries) {
      if (name.endsWith(TEMP_SUFFIX) || name.endsWith(DELETE_SUFFIX)) {
        await rm(path.join(timelinesDir, name), { recursive: true, force: true });
        this.log.info('removed leftover of an interrupted timeline create/delete', { dir: name });
        continue;
      }
      const id = tryParseId(name);
      if (id === null) {
        this.log.warn('unknown entry in the timelines directory left alone', { name });
        continue;
      }
      if (await pathExists(path.join(timelinesDir, name, UNINIT_MARK))) {
        await rm(path.join(timelinesDir, name), { recursive: true, force: true });
        await fsyncDir(timelinesDir);
        this.log.warn('removed a timeline whose creation did not finish', { timeline_id: id });
        continue;
      }
      metas.set(id, await loadMetadata(path.join(timelinesDir, name)));
    }
    // Ancestors first: repeatedly load timelines whose ancestor is loaded (bounded by the count).
    for (let round = 0; round <= metas.size && this.timelines.size < metas.size; round++) {
      for (const [id, md] of metas) {
        if (this.timelines.has(id)) continue;
        if (md.ancestorTimelineId !== null && !this.timelines.has(md.ancestorTimelineId)) {
          if (!metas.has(md.ancestorTimelineId)) {
            throw new StrataError('ancestor_missing', `timeline ${id} branches from ${md.ancestorTimelineId}, which does not exist`, this.context({ timeline: id }));
          }
          continue;
        }
        const tl = this.newTimeline(id, md);
        const report = await tl.resources.metrics.timeStorageOp(StorageOperation.loadLayerMap, () => loadTimelineLayers(tl)).catch((err: unknown) => {
          tl.setBroken(err instanceof Error ? err.message : String(err));
          return null;
        });
        this.timelines.set(id, tl);
        if (report !== null) {
          tl.log.info('timeline loaded', { layers: report.layersLoaded, disk_consistent_lsn: formatLsn(tl.diskConsistentLsn) });
        }
      }
    }
    assert(this.timelines.size === metas.size, 'timeline ancestry has a cycle', this.context());
  }

  private newTimeline(timelineId: string, md: TimelineMetadata): Timeline {
    const ancestor = md.ancestorTimelineId === null ? null : this.timelines.get(md.ancestorTimelineId) ?? null;
    const resources: TimelineResources = {
      redo: this.shared.redo,
      pageCache: this.shared.pageCache,
      blockCache: this.shared.blockCache,
      fdCache: this.shared.fdCache,
      waitLsnTimeoutMs: this.shared.waitLsnTimeoutMs,
      config: () => this.conf,
      metrics: this.shared.metrics.forTimeline(this.tenantId, timelineId),
    };
    return new Timeline({
      tenantId: this.tenantId,
      timelineId,
      dir: path.join(this.dir, 'timelines', timelineId),
      metadata: md,
      ancestor,
      resources,
      log: this.log.child({ timeline_id: timelineId }),
    });
  }

  checkActive(): void {
    if (this.state !== 'Active') {
      throw new StrataError('tenant_not_active', `tenant ${this.tenantId} is ${this.state}${this.brokenReason !== null ? ` (${this.brokenReason})` : ''}`, this.context({ state: this.state }));
    }
  }

  getTimeline(timelineId: string): Timeline {
    const tl = this.timelines.get(timelineId);
    if (tl === undefined) throw new NotFoundError(`timeline ${timelineId} not found in tenant ${this.tenantId}`, this.context({ timeline: timelineId }));
    return tl;
  }

  listTimelines(): Timeline[] {
    return Array.from(this.timelines.values());
  }

  /** Writes a new timeline directory atomically (temp dir → rename) and returns its metadata. */
  private async writeTimelineDir(timelineId: string, md: TimelineMetadata, uninit = false): Promise<void> {
    const timelinesDir = path.join(this.dir, 'timelines');
    const final = path.join(timelinesDir, timelineId);
    const tmp = final + TEMP_SUFFIX;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp);
    if (uninit) await writeFileDurable(path.join(tmp, UNINIT_MARK), Buffer.from('timeline creation in progress\n'));
    await saveMetadata(tmp, md);
    await rename(tmp, final);
    await fsyncDir(timelinesDir);
  }

  private readonly creating = new Set<string>();

  private claimTimelineId(requested: string | undefined): string {
    const id = requested === undefined ? generateId() : parseId(requested, 'timeline');
    if (this.timelines.has(id) || this.creating.has(id)) throw new ConflictError(`timeline ${id} already exists in tenant ${this.tenantId}`, this.context({ timeline: id }));
    return id;
  }

  /** A new timeline with no ancestor; `populate` (bootstrap or import) fills it before it is listed. */
  async createTimeline(opts: CreateTimelineOptions): Promise<Timeline> {
    this.checkActive();
    const id = this.claimTimelineId(opts.timelineId);
    const startLsn = opts.startLsn ?? 0n;
    if ((startLsn & 7n) !== 0n) throw new InvalidInputError(`start LSN ${formatLsn(startLsn)} is not 8-byte aligned`, this.context());
    const md: TimelineMetadata = {
      diskConsistentLsn: startLsn, prevRecordLsn: null, ancestorTimelineId: null, ancestorLsn: 0n,
      latestGcCutoffLsn: opts.initdbLsn ?? startLsn, initdbLsn: opts.initdbLsn ?? startLsn, pgVersion: opts.pgVersion,
    };
    this.creating.add(id);
    try {
      const populate = opts.populate;
      await this.writeTimelineDir(id, md, populate !== undefined);
      const tl = this.newTimeline(id, md);
      tl.activate();
      if (populate !== undefined) {
        const dir = path.join(this.dir, 'timelines', id);
        try {
          await populate(tl);
          await checkpoint(tl);
          await rm(path.join(dir, UNINIT_MARK));
          await fsyncDir(dir);
        } catch (err) {
          tl.setStopping();
          await tl.flushTask?.catch(() => undefined);
          closeTimelineLayers(tl);
          this.shared.pageCache.dropTimeline(tl.cacheId);
          await rm(dir, { recursive: true, force: true });
          await fsyncDir(path.join(this.dir, 'timelines')).catch(() => undefined);
          throw err;
        }
      }
      this.timelines.set(id, tl);
      tl.log.info('timeline created', { start_lsn: formatLsn(startLsn), last_record_lsn: formatLsn(tl.lastRecordLsn) });
      return tl;
    } finally {
      this.creating.delete(id);
    }
  }

  /** A branch of `ancestorTimelineId` at `ancestorStartLsn` (metadata only). */
  async branchTimeline(opts: BranchOptions): Promise<Timeline> {
    this.checkActive();
    const ancestor = this.getTimeline(opts.ancestorTimelineId);
    ancestor.checkReadable();
    const id = this.claimTimelineId(opts.timelineId);
    let lsn = opts.ancestorStartLsn ?? ancestor.lastRecordLsn;
    lsn = (lsn + 7n) & ~7n;
    if (lsn < ancestor.latestGcCutoffLsn) {
      throw new LsnBelowGcCutoffError(
        `invalid branch start LSN ${formatLsn(lsn)}: it is below the GC cutoff ${formatLsn(ancestor.latestGcCutoffLsn)} of timeline ${ancestor.timelineId}`,
        this.context({ timeline: ancestor.timelineId, lsn: formatLsn(lsn), gcCutoffLsn: formatLsn(ancestor.latestGcCutoffLsn) }));
    }
    if (lsn > ancestor.lastRecordLsn) await ancestor.waitLsn(lsn, opts.timeoutMs ?? this.shared.waitLsnTimeoutMs);
    // GC may have moved the cutoff while we waited. (GC removes no layers yet; once it does, branch
    // creation and GC must also exclude each other across the metadata write below.)
    if (lsn < ancestor.latestGcCutoffLsn) {
      throw new LsnBelowGcCutoffError(
        `invalid branch start LSN ${formatLsn(lsn)}: it is below the GC cutoff ${formatLsn(ancestor.latestGcCutoffLsn)} of timeline ${ancestor.timelineId}`,
        this.context({ timeline: ancestor.timelineId, lsn: formatLsn(lsn), gcCutoffLsn: formatLsn(ancestor.latestGcCutoffLsn) }));
    }
    if (this.timelines.has(id)) throw new ConflictError(`timeline ${id} already exists in tenant ${this.tenantId}`, this.context({ timeline: id }));
    const md: TimelineMetadata = {
      diskConsistentLsn: lsn,
      prevRecordLsn: lsn === ancestor.lastRecordLsn ? ancestor.prevRecordLsn : null,
      ancestorTimelineId: ancestor.timelineId,
      ancestorLsn: lsn,
      latestGcCutoffLsn: ancestor.latestGcCutoffLsn,
      initdbLsn: ancestor.initdbLsn,
      pgVersion: ancestor.pgVersion,
    };
    await this.writeTimelineDir(id, md);
    const tl = this.newTimeline(id, md);
    tl.activate();
    this.timelines.set(id, tl);
    tl.log.info('timeline branched', { ancestor_timeline_id: ancestor.timelineId, ancestor_lsn: formatLsn(lsn) });
    return tl;
  }

  /** Deletes a timeline with no children: directory renamed aside, then removed. */
  async deleteTimeline(timelineId: string): Promise<void> {
    this.checkActive();
    const tl = this.getTimeline(timelineId);
    const children = this.listTimelines().filter((t) => t.ancestor === tl);
    if (children.length > 0) {
      throw new ConflictError(`timeline ${timelineId} has child branches (${children.map((c) => c.timelineId).join(', ')}); delete them first`, this.context({ timeline: timelineId }));
    }
    tl.setStopping();
    await tl.flushTask?.catch(() => undefined);
    this.timelines.delete(timelineId);
    this.shared.pageCache.dropTimeline(tl.cacheId);
    closeTimelineLayers(tl);
    const timelinesDir = path.join(this.dir, 'timelines');
    const aside = path.join(timelinesDir, timelineId + DELETE_SUFFIX);
    await rename(path.join(timelinesDir, timelineId), aside);
    await fsyncDir(timelinesDir);
    await rm(aside, { recursive: true, force: true });
    await fsyncDir(timelinesDir);
    this.log.info('timeline deleted', { timeline_id: timelineId });
  }

  /** Replaces the tenant's overrides (validated by the caller's parser) and persists them. */
  async setConfig(overrides: TenantConfigOverrides): Promise<void> {
    const merged = mergeTenantConfig(this.shared.defaults, overrides);
    await saveTenantConfig(this.dir, overrides);
    this.overrides = overrides;
    this.conf = merged;
  }

  /**
   * Stops the tenant. With `flush`, everything ingested is frozen and written first, so a restart
   * resumes exactly where ingestion stopped; without it, a restart replays from disk_consistent_lsn.
   */
  async shutdown(opts: { flush: boolean }): Promise<void> {
    if (this.state === 'Stopping') return;
    const wasActive = this.state === 'Active';
    if (wasActive) this.states.transition({ kind: 'Stopping' });
    if (this.tickTimer !== null) clearInterval(this.tickTimer);
    this.tickTimer = null;
    for (const tl of this.timelines.values()) {
      if (opts.flush && wasActive && tl.state === 'Active') {
        await checkpoint(tl).catch((err: unknown) => tl.log.error('flush at shutdown failed', { reason: err instanceof Error ? err.message : String(err) }));
      }
      // Without flush, unflushed values are dropped: they are replayed from WAL after a restart.
      await tl.flushTask?.catch(() => undefined);
      tl.setStopping();
      closeTimelineLayers(tl);
    }
  }
}

function closeTimelineLayers(tl: Timeline): void {
  for (const layer of tl.layers.historicLayers()) layer.close();
  const err = new StrataError('timeline_stopped', `timeline ${tl.timelineId} is shutting down`, { tenant: tl.tenantId, timeline: tl.timelineId });
  tl.lastRecord.close(err);
  tl.diskConsistent.close(err);
}
