/**
 * The schemas of the pageserver's management API, in one place.
 *
 * One TypeBox schema per body, query, path and response drives three things: fastify's request
 * validation (strict: `additionalProperties: false` everywhere and no coercion, so an unknown field
 * or a "15" where 15 belongs is a 400 before any handler runs), the OpenAPI document served at
 * /v1/openapi.json (and committed as docs/openapi.yaml), and the TypeScript types of the handlers.
 * Field names and shapes follow Neon's pageserver API (`openapi_spec.yml`, `models.rs`) wherever
 * the concept is the same, so Neon's tools and habits carry over.
 *
 * LSNs travel as "X/X" text (hex/hex, as PostgreSQL prints them), ids as 32 lowercase hex chars.
 * The handlers parse them again after validation (the pattern bounds the text; the parser checks
 * the value) — the schema is the first line, not the only one.
 */
import Type, { type Static } from 'typebox';

export const LSN_PATTERN = '^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$';
export const ID_PATTERN = '^[0-9a-f]{32}$';

export const Lsn = Type.String({ pattern: LSN_PATTERN, description: 'a WAL position, "X/X" as PostgreSQL prints it', examples: ['0/16B5A50'] });
export const Id = Type.String({ pattern: ID_PATTERN, description: '32 lowercase hex characters' });
const Bytes = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });
const Duration = Type.String({ minLength: 1, maxLength: 64, description: 'a duration in humantime form: "10 s", "5 m", "1 hr", "7 days"' });

export const ErrorBody = Type.Object({ msg: Type.String() }, { $id: 'Error', additionalProperties: false, description: 'Every error: one line saying what went wrong and where' });

export const EvictionPolicy = Type.Union([
  Type.Object({ kind: Type.Literal('NoEviction') }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('LayerAccessThreshold'), period: Duration, threshold: Duration }, { additionalProperties: false }),
]);

/** Neon's TenantConfig fields (2024-01) plus Strata's redo_mode; every field optional. */
export const tenantConfigProperties = {
  checkpoint_distance: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'WAL bytes after which the open in-memory layer is frozen and written' })),
  checkpoint_timeout: Type.Optional(Duration),
  compaction_target_size: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })),
  compaction_period: Type.Optional(Duration),
  compaction_threshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  gc_horizon: Type.Optional(Bytes),
  gc_period: Type.Optional(Duration),
  image_creation_threshold: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
  pitr_interval: Type.Optional(Duration),
  walreceiver_connect_timeout: Type.Optional(Duration),
  lagging_wal_timeout: Type.Optional(Duration),
  max_lsn_wal_lag: Type.Optional(Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER })),
  trace_read_requests: Type.Optional(Type.Boolean()),
  eviction_policy: Type.Optional(EvictionPolicy),
  min_resident_size_override: Type.Optional(Type.Union([Bytes, Type.Null()])),
  evictions_low_residence_duration_metric_threshold: Type.Optional(Duration),
  gc_feedback: Type.Optional(Type.Boolean()),
  heatmap_period: Type.Optional(Duration),
  redo_mode: Type.Optional(Type.Union([Type.Literal('images'), Type.Literal('typescript'), Type.Literal('verify')], {
    description: 'how pages are rebuilt from WAL: from full-page images the compute writes (images), Strata\'s own redo (typescript), or both with comparison (verify)',
  })),
};

export const TenantConfig = Type.Object(tenantConfigProperties, { $id: 'TenantConfig', additionalProperties: false });

export const TenantCreateRequest = Type.Object({
  new_tenant_id: Type.Optional(Id),
  ...tenantConfigProperties,
}, { $id: 'TenantCreateRequest', additionalProperties: false, description: 'a new tenant: its id (generated when absent) and its config overrides' });

export const TenantConfigRequest = Type.Object({
  tenant_id: Id,
  ...tenantConfigProperties,
}, { $id: 'TenantConfigRequest', additionalProperties: false, description: 'replaces the tenant\'s overrides with these (fields left out return to the defaults)' });

export const TenantConfigResponse = Type.Object({
  tenant_specific_overrides: Type.Ref('TenantConfig'),
  effective_config: Type.Ref('TenantConfig'),
}, { $id: 'TenantConfigResponse', additionalProperties: false });

export const AttachmentStatus = Type.Union([
  Type.Object({ slug: Type.Union([Type.Literal('maybe'), Type.Literal('attached')]) }, { additionalProperties: false }),
  Type.Object({ slug: Type.Literal('failed'), data: Type.Object({ reason: Type.String() }, { additionalProperties: false }) }, { additionalProperties: false }),
]);

export const TenantInfo = Type.Object({
  id: Id,
  state: Type.String({ description: 'Loading, Attaching, Activating, Active, Stopping or Broken' }),
  attachment_status: AttachmentStatus,
  current_physical_size: Bytes,
  timelines: Type.Integer({ minimum: 0 }),
}, { $id: 'TenantInfo', additionalProperties: false });

export const WalSourceKind = Type.Union([Type.Literal('safekeepers'), Type.Literal('compute'), Type.Literal('none')]);

export const TimelineInfo = Type.Object({
  tenant_id: Id,
  timeline_id: Id,
  ancestor_timeline_id: Type.Union([Id, Type.Null()]),
  ancestor_lsn: Type.Union([Lsn, Type.Null()]),
  last_record_lsn: Lsn,
  prev_record_lsn: Type.Union([Lsn, Type.Null()]),
  latest_gc_cutoff_lsn: Lsn,
  disk_consistent_lsn: Lsn,
  remote_consistent_lsn: Type.String({ pattern: LSN_PATTERN, description: 'always 0/0: Strata has no remote storage yet' }),
  initdb_lsn: Lsn,
  current_physical_size: Bytes,
  pg_version: Type.Integer(),
  state: Type.String({ description: 'Loading, Active, Stopping or Broken' }),
  pg_system_identifier: Type.String({ pattern: '^[0-9]{1,20}$', description: 'the database system identifier of pg_control (decimal)' }),
  wal_seg_size: Type.Integer({ description: 'WAL segment size in bytes' }),
  wal_source: WalSourceKind,
}, { $id: 'TimelineInfo', additionalProperties: false });

export const TimelineCreateRequest = Type.Object({
  new_timeline_id: Type.Optional(Id),
  ancestor_timeline_id: Type.Optional(Id),
  ancestor_start_lsn: Type.Optional(Lsn),
  pg_version: Type.Optional(Type.Integer({ minimum: 15, maximum: 15, description: 'only PostgreSQL 15 is supported' })),
}, {
  $id: 'TimelineCreateRequest', additionalProperties: false,
  description: 'without ancestor_timeline_id: a new timeline from initdb (bootstrap); with it: a branch at ancestor_start_lsn (default: the ancestor\'s last record LSN)',
});

export const LsnByTimestampResponse = Type.Object({
  lsn: Lsn,
  kind: Type.Union([Type.Literal('present'), Type.Literal('future'), Type.Literal('past'), Type.Literal('nodata')]),
}, { $id: 'LsnByTimestampResponse', additionalProperties: false });

export const GcRequest = Type.Object({
  gc_horizon: Type.Optional(Bytes),
}, { $id: 'GcRequest', additionalProperties: false, description: 'gc_horizon overrides the tenant\'s gc_horizon (bytes of WAL kept behind the last record) for this run' });

export const GcResult = Type.Object({
  layers_total: Type.Integer(),
  layers_needed_by_cutoff: Type.Integer(),
  layers_needed_by_pitr: Type.Integer(),
  layers_needed_by_branches: Type.Integer(),
  layers_not_updated: Type.Integer(),
  layers_removed: Type.Integer({ description: 'always 0: Strata does not remove layer files yet' }),
  layers_removable: Type.Integer({ description: 'layers Neon\'s GC would remove now; Strata keeps them' }),
  elapsed: Type.Integer({ description: 'milliseconds' }),
  latest_gc_cutoff_lsn: Lsn,
  new_gc_cutoff_lsn: Lsn,
  previous_gc_cutoff_lsn: Lsn,
  cutoff_moved: Type.Boolean(),
  horizon_cutoff_lsn: Lsn,
  pitr_cutoff_lsn: Lsn,
  pitr_lookup: Type.Union([Type.Literal('present'), Type.Literal('future'), Type.Literal('past'), Type.Literal('nodata'), Type.Literal('disabled')]),
  retain_lsns: Type.Array(Lsn, { description: 'branch points of child timelines' }),
}, { $id: 'GcResult', additionalProperties: false });

const BlockCount = Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER });

export const RedoVerifyReport = Type.Object({
  redo_mode: Type.Union([Type.Literal('images'), Type.Literal('typescript'), Type.Literal('verify')], { description: 'the tenant\'s redo_mode now; blocks are compared only while it is verify' }),
  types: Type.Array(Type.Object({
    rmgr: Type.String({ description: 'resource manager, as pg_waldump names it' }),
    record_type: Type.String({ description: 'record type, as pg_waldump names it (e.g. INSERT+INIT)' }),
    verified: BlockCount,
    mismatched: BlockCount,
    unsupported: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'no TypeScript redo for the rmgr (or for this record)' }),
    failed: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'the TypeScript redo threw' }),
    no_base: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'no previous version of the block was readable' }),
  }, { additionalProperties: false }), { description: 'blocks with a consistency image, per record type, by result' }),
  mismatches: Type.Array(Type.Object({
    lsn: Lsn,
    rmgr: Type.String(),
    record_type: Type.String(),
    key: Type.String({ description: 'the storage key, described' }),
    rel: Type.String({ description: 'spcNode/dbNode/relNode' }),
    fork: Type.String(),
    blkno: Type.Integer({ minimum: 0 }),
    differing_bytes: Type.Integer({ minimum: 0, description: 'bytes that differ after masking (0 when the pages could not be masked: see reason)' }),
    first_diffs: Type.Array(Type.Object({
      offset: Type.Integer({ minimum: 0, maximum: 8191 }),
      ours: Type.Integer({ minimum: 0, maximum: 255, description: 'Strata\'s redo, masked' }),
      theirs: Type.Integer({ minimum: 0, maximum: 255, description: 'PostgreSQL\'s image, masked' }),
    }, { additionalProperties: false })),
    reason: Type.Union([Type.String(), Type.Null()]),
  }, { additionalProperties: false }), { description: 'the first mismatches of the timeline (since the pageserver started), in WAL order' }),
  mismatches_not_kept: Type.Integer({ minimum: 0, description: 'mismatches counted after the kept ones' }),
}, {
  $id: 'RedoVerifyReport', additionalProperties: false,
  description: 'redo_mode = verify: every block with a wal_consistency_checking image replayed with Strata\'s redo and compared with the image under PostgreSQL\'s masks (the image is stored either way)',
});

export const StatusResponse = Type.Object({ id: Type.Integer() }, { $id: 'Status', additionalProperties: false });

export const TenantParams = Type.Object({ tenant_id: Id }, { additionalProperties: false });
export const TimelineParams = Type.Object({ tenant_id: Id, timeline_id: Id }, { additionalProperties: false });
export const TimestampQuery = Type.Object({
  timestamp: Type.String({ minLength: 1, maxLength: 64, description: 'RFC 3339, e.g. 2026-11-25T14:02:00Z' }),
  version: Type.Optional(Type.String({ pattern: '^[0-9]{1,3}$' })),
}, { additionalProperties: false });
export const LsnQuery = Type.Object({ lsn: Type.String({ minLength: 1, maxLength: 40 }) }, { additionalProperties: false });
export const EmptyBody = Type.Object({}, { additionalProperties: false });

export type TenantConfigJsonBody = Static<typeof TenantConfig>;
export type TenantCreateBody = Static<typeof TenantCreateRequest>;
export type TenantConfigBody = Static<typeof TenantConfigRequest>;
export type TenantInfoJson = Static<typeof TenantInfo>;
export type TimelineInfoJson = Static<typeof TimelineInfo>;
export type TimelineCreateBody = Static<typeof TimelineCreateRequest>;
export type GcResultJson = Static<typeof GcResult>;
export type RedoVerifyReportJson = Static<typeof RedoVerifyReport>;

/** Schemas that get a name under components/schemas in the OpenAPI document. */
export const NAMED_SCHEMAS = [
  ErrorBody, TenantConfig, TenantCreateRequest, TenantConfigRequest, TenantConfigResponse, TenantInfo, TimelineInfo,
  TimelineCreateRequest, LsnByTimestampResponse, GcRequest, GcResult, RedoVerifyReport, StatusResponse,
] as const;
