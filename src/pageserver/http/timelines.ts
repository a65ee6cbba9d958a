/**
 * Timeline routes of the management API.
 *
 *   GET    /v1/tenant/{t}/timeline                  → [TimelineInfo]
 *   POST   /v1/tenant/{t}/timeline                  bootstrap (no ancestor) or branch → 201 TimelineInfo;
 *                                                   406 start LSN below the ancestor's GC cutoff;
 *                                                   409 the id exists with other parameters (the same
 *                                                   parameters again → 200 with the existing timeline)
 *   GET    /v1/tenant/{t}/timeline/{tl}             → TimelineInfo
 *   DELETE /v1/tenant/{t}/timeline/{tl}             → 202 (complete); 412 while it has child branches
 *   GET    …/get_lsn_by_timestamp?timestamp=RFC3339 → {lsn, kind: present|future|past|nodata}
 *   GET    …/get_timestamp_of_lsn?lsn=X/X           → "RFC 3339" of the newest commit at or before it
 *   PUT    …/do_gc      {gc_horizon?}               → GcResult (moves the GC cutoff; see gc.ts)
 *   PUT    …/checkpoint                             freeze + flush everything ingested
 *   PUT    …/compact                                checkpoint, then image layers where deltas pile up
 *   GET    …/redo_verify                            → RedoVerifyReport (redo_mode = verify: our redo vs
 *                                                   PostgreSQL's consistency images, per record type)
 *
 * With a storage broker configured, every timeline created here takes its WAL from the
 * safekeepers (the pageserver subscribes for it at once, and after restarts).
 *
 * Why checks happen before any change: a request that is refused must leave stored state exactly
 * as it was, so every precondition (ids, LSN text and alignment, children, GC cutoff) is checked
 * before the first write, and the write itself is one atomic step of the tenant.
 */
import type { FastifyInstance } from 'fastify';
import { formatLsn, parseLsn, type Lsn } from '../../postgres/lsn.ts';
import { parseControlFile } from '../../postgres/pgcontrol.ts';
import { InvalidInputError, StrataError } from '../../util/errors.ts';
import { parseId } from '../../util/ids.ts';
import type { Logger } from '../../util/log.ts';
import { Mutex } from '../../util/mutex.ts';
import { resultCount } from '../../redo/ingestverify.ts';
import { DatadirView } from '../datadir/view.ts';
import { bootstrapTimeline } from '../import/bootstrap.ts';
import type { Pageserver } from '../pageserver.ts';
import { StorageOperation } from '../metrics.ts';
import { checkpoint } from '../timeline/flush.ts';
import { compactTimeline } from '../timeline/compact.ts';
import { gcResultToJson, gcTimeline } from '../timeline/gc.ts';
import { findLsnForTimestamp, formatTimestampUs, getTimestampOfLsn, parseRfc3339ToTimestampUs } from '../timeline/lsntime.ts';
import type { Timeline } from '../timeline/timeline.ts';
import { ConflictError, type Tenant } from '../tenant.ts';
import {
  LsnQuery, TenantParams, TimelineParams, TimestampQuery, type RedoVerifyReportJson, type TimelineCreateBody, type TimelineInfoJson,
} from './schemas.ts';
import { sendError, type ErrorResponses } from './server.ts';
import { timelinePhysicalSize } from './tenants.ts';

/** pg_control facts of a timeline never change (branches inherit them), so they are read once. */
const controlFacts = new WeakMap<Timeline, { systemId: string; walSegSize: number }>();

function pgControlFacts(tl: Timeline): { systemId: string; walSegSize: number } {
  let facts = controlFacts.get(tl);
  if (facts === undefined) {
    const control = parseControlFile(new DatadirView(tl, tl.lastRecordLsn).controlFile());
    facts = { systemId: control.systemIdentifier.toString(), walSegSize: control.xlogSegSize };
    controlFacts.set(tl, facts);
  }
  return facts;
}

export function timelineInfo(ps: Pageserver, tl: Timeline): TimelineInfoJson {
  const facts = pgControlFacts(tl);
  return {
    tenant_id: tl.tenantId,
    timeline_id: tl.timelineId,
    ancestor_timeline_id: tl.ancestor?.timelineId ?? null,
    ancestor_lsn: tl.ancestor === null ? null : formatLsn(tl.ancestorLsn),
    last_record_lsn: formatLsn(tl.lastRecordLsn),
    prev_record_lsn: tl.prevRecordLsn === null ? null : formatLsn(tl.prevRecordLsn),
    latest_gc_cutoff_lsn: formatLsn(tl.latestGcCutoffLsn),
    disk_consistent_lsn: formatLsn(tl.diskConsistentLsn),
    remote_consistent_lsn: '0/0',
    initdb_lsn: formatLsn(tl.initdbLsn),
    current_physical_size: timelinePhysicalSize(tl.layers.historicLayers()),
    pg_version: tl.pgVersion,
    state: tl.state,
    pg_system_identifier: facts.systemId,
    wal_seg_size: facts.walSegSize,
    wal_source: ps.walSourceKind(tl.tenantId, tl.timelineId),
  };
}

/** The timeline's verify-mode tally (src/redo/ingestverify.ts) as the API reports it. */
export function redoVerifyReport(tl: Timeline): RedoVerifyReportJson {
  const tally = tl.resources.metrics.redoVerify;
  return {
    redo_mode: tl.resources.config().redoMode,
    types: tally.types().map((t) => ({
      rmgr: t.rmgr, record_type: t.recordType,
      verified: resultCount(t, 'verified'), mismatched: resultCount(t, 'mismatched'), unsupported: resultCount(t, 'unsupported'),
      failed: resultCount(t, 'failed'), no_base: resultCount(t, 'no_base'),
    })),
    mismatches: tally.mismatches.map((m) => ({
      lsn: m.lsn, rmgr: m.rmgr, record_type: m.recordType, key: m.key, rel: m.rel, fork: m.fork, blkno: m.blkno,
      differing_bytes: m.differingBytes, first_diffs: m.firstDiffs.map((d) => ({ offset: d.offset, ours: d.ours, theirs: d.theirs })), reason: m.reason,
    })),
    mismatches_not_kept: tally.mismatchesNotKept,
  };
}

function lsnParam(text: string, field: string): Lsn {
  try {
    return parseLsn(text);
  } catch {
    throw new InvalidInputError(`${field}: "${text}" is not an LSN (expected X/X, hex)`, { field });
  }
}

export function registerTimelineRoutes(app: FastifyInstance, ctx: { pageserver: Pageserver; log: Logger; errors: ErrorResponses; pgBinDir?: string }): void {
  const { pageserver: ps, log, errors } = ctx;
  const tags = ['timeline'];
  /** Maintenance (gc, checkpoint, compact) runs one at a time per timeline. */
  const maintenance = new Map<string, Mutex>();
  const maintenanceLock = (tl: Timeline): Mutex => {
    let m = maintenance.get(tl.cacheId);
    if (m === undefined) maintenance.set(tl.cacheId, m = new Mutex());
    return m;
  };
  const tenantOf = (params: unknown): Tenant => ps.tenants.getTenant(parseId((params as { tenant_id: string }).tenant_id, 'tenant'));
  const timelineOf = (params: unknown): { tenant: Tenant; tl: Timeline } => {
    const tenant = tenantOf(params);
    return { tenant, tl: tenant.getTimeline(parseId((params as { timeline_id: string }).timeline_id, 'timeline')) };
  };

  app.get('/v1/tenant/:tenant_id/timeline', {
    schema: { summary: 'List a tenant\'s timelines', tags, params: TenantParams, response: { 200: { type: 'array', items: { $ref: 'TimelineInfo#' } }, ...errors } },
  }, async (req, reply) => {
    try {
      return reply.send(tenantOf(req.params).listTimelines().map((tl) => timelineInfo(ps, tl)));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.post('/v1/tenant/:tenant_id/timeline', {
    schema: {
      summary: 'Create a timeline: bootstrap from initdb, or branch an existing one at an LSN', tags, params: TenantParams,
      body: { $ref: 'TimelineCreateRequest#' },
      response: { 200: { $ref: 'TimelineInfo#' }, 201: { $ref: 'TimelineInfo#' }, ...errors, 406: { $ref: 'Error#' }, 409: { $ref: 'Error#' } },
    },
  }, async (req, reply) => {
    const body = req.body as TimelineCreateBody;
    try {
      const tenant = tenantOf(req.params);
      const newId = body.new_timeline_id === undefined ? undefined : parseId(body.new_timeline_id, 'timeline');
      const ancestorId = body.ancestor_timeline_id === undefined ? undefined : parseId(body.ancestor_timeline_id, 'timeline');
      if (ancestorId === undefined && body.ancestor_start_lsn !== undefined) {
        throw new InvalidInputError('ancestor_start_lsn needs ancestor_timeline_id');
      }
      const startLsn = body.ancestor_start_lsn === undefined ? undefined : lsnParam(body.ancestor_start_lsn, 'ancestor_start_lsn');
      if (newId !== undefined) {
        const existing = tenant.listTimelines().find((t) => t.timelineId === newId);
        if (existing !== undefined) {
          const sameAncestor = (existing.ancestor?.timelineId ?? undefined) === ancestorId;
          const sameLsn = startLsn === undefined || ((startLsn + 7n) & ~7n) === existing.ancestorLsn;
          if (sameAncestor && sameLsn) return reply.code(200).send(timelineInfo(ps, existing));
          throw new ConflictError(`timeline ${newId} already exists with other parameters (ancestor ${existing.ancestor?.timelineId ?? 'none'}${existing.ancestor !== null ? ` at ${formatLsn(existing.ancestorLsn)}` : ''})`,
            { tenant: tenant.tenantId, timeline: newId });
        }
      }
      let tl: Timeline;
      if (ancestorId === undefined) {
        tl = await bootstrapTimeline(tenant, { ...(newId !== undefined ? { timelineId: newId } : {}), ...(ctx.pgBinDir !== undefined ? { pgBinDir: ctx.pgBinDir } : {}) });
      } else {
        tl = await tenant.branchTimeline({ ancestorTimelineId: ancestorId, ...(newId !== undefined ? { timelineId: newId } : {}), ...(startLsn !== undefined ? { ancestorStartLsn: startLsn } : {}) });
      }
      if (ps.hasBroker) await ps.attachSafekeepers(tl.tenantId, tl.timelineId);
      return reply.code(201).send(timelineInfo(ps, tl));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id/timeline/:timeline_id', {
    schema: { summary: 'Timeline status', tags, params: TimelineParams, response: { 200: { $ref: 'TimelineInfo#' }, ...errors } },
  }, async (req, reply) => {
    try {
      return reply.send(timelineInfo(ps, timelineOf(req.params).tl));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.delete('/v1/tenant/:tenant_id/timeline/:timeline_id', {
    schema: {
      summary: 'Delete a timeline', description: 'Refused with 412 while the timeline has child branches. Complete when the 202 arrives.',
      tags, params: TimelineParams, response: { 202: { type: 'object', additionalProperties: false, properties: {} }, ...errors, 412: { $ref: 'Error#' } },
    },
  }, async (req, reply) => {
    try {
      const { tenant, tl } = timelineOf(req.params);
      const children = tenant.listTimelines().filter((t) => t.ancestor === tl);
      if (children.length > 0) {
        throw new StrataError('has_children', `timeline ${tl.timelineId} has child branches (${children.map((c) => c.timelineId).join(', ')}); delete them first`, tl.context());
      }
      await ps.detachWalSource(tl.tenantId, tl.timelineId);
      await tenant.deleteTimeline(tl.timelineId);
      return reply.code(202).send({});
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id/timeline/:timeline_id/get_lsn_by_timestamp', {
    schema: {
      summary: 'The LSN of a moment: the newest position whose data has every commit before the timestamp',
      description: 'kind: present (the timestamp lies between commits of the timeline), future (after the last commit: lsn is the last record), '
        + 'past (before the first commit still in range: lsn is the lowest readable position), nodata (no commit timestamps in range).',
      tags, params: TimelineParams, querystring: TimestampQuery, response: { 200: { $ref: 'LsnByTimestampResponse#' }, ...errors },
    },
  }, async (req, reply) => {
    try {
      const { tl } = timelineOf(req.params);
      const tsUs = parseRfc3339ToTimestampUs((req.query as { timestamp: string }).timestamp);
      const res = await findLsnForTimestamp(tl, tsUs);
      return reply.send({ lsn: formatLsn(res.lsn), kind: res.kind });
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id/timeline/:timeline_id/get_timestamp_of_lsn', {
    schema: {
      summary: 'Commit time of the newest transaction committed at or before an LSN', tags, params: TimelineParams, querystring: LsnQuery,
      response: { 200: { type: 'string', description: 'RFC 3339 with microseconds, UTC' }, ...errors },
    },
  }, async (req, reply) => {
    try {
      const { tl } = timelineOf(req.params);
      const lsn = lsnParam((req.query as { lsn: string }).lsn, 'lsn');
      const ts = await getTimestampOfLsn(tl, lsn);
      if (ts === null) return reply.code(404).send({ msg: `no commit timestamp at or before ${formatLsn(lsn)} on timeline ${tl.timelineId}` });
      return reply.type('application/json').send(JSON.stringify(formatTimestampUs(ts)));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.put('/v1/tenant/:tenant_id/timeline/:timeline_id/do_gc', {
    schema: {
      summary: 'Run garbage collection on a timeline now',
      description: 'Moves the GC cutoff forward following gc_horizon and pitr_interval (branches and reads below it are refused afterwards). '
        + 'Strata does not remove layer files yet: layers_removed is 0.',
      tags, params: TimelineParams, body: { $ref: 'GcRequest#' }, response: { 200: { $ref: 'GcResult#' }, ...errors },
    },
  }, async (req, reply) => {
    try {
      const { tenant, tl } = timelineOf(req.params);
      const body = (req.body ?? {}) as { gc_horizon?: number };
      const res = await maintenanceLock(tl).run(() => tl.resources.metrics.timeStorageOp(StorageOperation.gc, () => gcTimeline(tenant, tl, {
        ...(body.gc_horizon !== undefined ? { gcHorizonBytes: BigInt(body.gc_horizon) } : {}), now: new Date(),
      })));
      return reply.send(gcResultToJson(res));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id/timeline/:timeline_id/redo_verify', {
    schema: {
      summary: 'Verify mode report: Strata\'s redo compared with PostgreSQL\'s consistency images',
      description: 'With the tenant\'s redo_mode = verify, ingest replays every block that carries a wal_consistency_checking image with Strata\'s '
        + 'TypeScript redo on the previous version and compares both under PostgreSQL\'s masks; the image is stored as the page either way. '
        + 'Counts since the pageserver started, per record type; the first mismatches with where they happened.',
      tags, params: TimelineParams, response: { 200: { $ref: 'RedoVerifyReport#' }, ...errors },
    },
  }, async (req, reply) => {
    try {
      return reply.send(redoVerifyReport(timelineOf(req.params).tl));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.put('/v1/tenant/:tenant_id/timeline/:timeline_id/checkpoint', {
    schema: {
      summary: 'Freeze and flush everything ingested into layer files', tags, params: TimelineParams,
      response: { 200: { type: 'object', additionalProperties: false, required: ['disk_consistent_lsn'], properties: { disk_consistent_lsn: { type: 'string' } } }, ...errors },
    },
  }, async (req, reply) => {
    try {
      const { tl } = timelineOf(req.params);
      await maintenanceLock(tl).run(() => checkpoint(tl));
      return reply.send({ disk_consistent_lsn: formatLsn(tl.diskConsistentLsn) });
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.put('/v1/tenant/:tenant_id/timeline/:timeline_id/compact', {
    schema: {
      summary: 'Checkpoint, then write an image layer where delta layers pile up',
      description: 'Strata\'s compaction today: a full image layer at disk_consistent_lsn when at least image_creation_threshold delta layers lie above the newest one. L0→L1 compaction does not exist yet.',
      tags, params: TimelineParams,
      response: { 200: { type: 'object', additionalProperties: false, required: ['image_layers_created', 'disk_consistent_lsn'], properties: { image_layers_created: { type: 'integer' }, disk_consistent_lsn: { type: 'string' } } }, ...errors },
    },
  }, async (req, reply) => {
    try {
      const { tenant, tl } = timelineOf(req.params);
      const res = await maintenanceLock(tl).run(() => tl.resources.metrics.timeStorageOp(StorageOperation.compact,
        () => compactTimeline(tl, { imageCreationThreshold: tenant.config.imageCreationThreshold })));
      return reply.send({ image_layers_created: res.imageLayersCreated, disk_consistent_lsn: formatLsn(tl.diskConsistentLsn) });
    } catch (err) {
      return sendError(reply, err, log);
    }
  });
}
