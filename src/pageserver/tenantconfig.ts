/**
 * Per-tenant configuration.
 *
 * Two shapes of the same settings exist, and this module is the only place that converts between
 * them:
 *  - the internal `TenantConfig`: camelCase names with the unit last (`gcPeriodMs`,
 *    `checkpointDistanceBytes`), durations as whole milliseconds, sizes as whole bytes;
 *  - the external form, used by the HTTP API, the CLI and the per-tenant file: Neon's snake_case
 *    names and value types (sizes as integers in bytes, durations as humantime text such as "10 m",
 *    `eviction_policy` as `{kind: ...}` JSON), so Neon's clients and test bodies work unchanged.
 *
 * A tenant stores only the settings someone chose (`TenantConfigOverrides`, every field optional);
 * the effective configuration is those overrides merged over the pageserver-wide defaults, so a
 * change of defaults reaches every tenant that did not pin the field.
 *
 * Invariants:
 *  - Input is validated strictly and all at once. An unknown field, a value of the wrong type or
 *    out of range makes the whole input fail with an InvalidInputError naming each bad field (and,
 *    for unknown fields, listing the valid ones). Parsing builds a new object, so a rejected input
 *    never leaves anything partially applied.
 *  - `null` for a field in external input means "not set" (as in Neon, whose fields are all
 *    optional); the external form we write contains only fields that are set.
 *  - Whatever `tenantConfigToJson` produces, `parseTenantConfigOverrides` reads back to an equal
 *    value; `saveTenantConfig` checks exactly that before it writes the file.
 *  - The file `tenant-config.json` carries `format_version`; a file with a version or a field this
 *    build does not know is refused with an error naming the file, never silently half-read.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { InvalidInputError, StrataError, assert } from '../util/errors.ts';
import type { ErrorContext } from '../util/errors.ts';
import { formatDuration, parseDuration } from '../util/duration.ts';
import { writeFileDurable } from '../util/durable.ts';

// ------------------------------------------------------------------------------------- types

export type EvictionPolicy =
  | { readonly kind: 'NoEviction' }
  | { readonly kind: 'LayerAccessThreshold'; readonly periodMs: number; readonly thresholdMs: number };

/** How GetPage@LSN produces pages (Strata-specific): stored images only, TypeScript redo, or both compared. */
export const REDO_MODES = ['images', 'typescript', 'verify'] as const;
export type RedoMode = (typeof REDO_MODES)[number];

export interface TenantConfig {
  readonly checkpointDistanceBytes: number;
  readonly checkpointTimeoutMs: number;
  readonly compactionTargetSizeBytes: number;
  readonly compactionPeriodMs: number;
  readonly compactionThreshold: number;
  readonly gcHorizonBytes: number;
  readonly gcPeriodMs: number;
  readonly imageCreationThreshold: number;
  readonly pitrIntervalMs: number;
  readonly walreceiverConnectTimeoutMs: number;
  readonly laggingWalTimeoutMs: number;
  readonly maxLsnWalLagBytes: number;
  readonly traceReadRequests: boolean;
  readonly evictionPolicy: EvictionPolicy;
  readonly minResidentSizeOverrideBytes: number | null;
  readonly evictionsLowResidenceDurationMetricThresholdMs: number;
  readonly gcFeedback: boolean;
  readonly heatmapPeriodMs: number;
  readonly redoMode: RedoMode;
}

/** The settings a tenant chose; absent fields come from the defaults. */
export type TenantConfigOverrides = { readonly [K in keyof TenantConfig]?: TenantConfig[K] };

/** External (Neon-compatible) form, as found in API bodies and the tenant's config file. */
export interface TenantConfigJson {
  checkpoint_distance?: number;
  checkpoint_timeout?: string;
  compaction_target_size?: number;
  compaction_period?: string;
  compaction_threshold?: number;
  gc_horizon?: number;
  gc_period?: string;
  image_creation_threshold?: number;
  pitr_interval?: string;
  walreceiver_connect_timeout?: string;
  lagging_wal_timeout?: string;
  max_lsn_wal_lag?: number;
  trace_read_requests?: boolean;
  eviction_policy?: { kind: 'NoEviction' } | { kind: 'LayerAccessThreshold'; period: string; threshold: string };
  min_resident_size_override?: number;
  evictions_low_residence_duration_metric_threshold?: string;
  gc_feedback?: boolean;
  heatmap_period?: string;
  redo_mode?: RedoMode;
}

// ------------------------------------------------------------------------------------- defaults

const MIB = 1024 * 1024;
const SECOND_MS = 1000;
const MINUTE_MS = 60 * SECOND_MS;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;

/** Neon's TenantConf defaults (2024-01), plus Strata's redo mode. */
export const TENANT_CONFIG_DEFAULTS: TenantConfig = Object.freeze({
  checkpointDistanceBytes: 256 * MIB,
  checkpointTimeoutMs: 10 * MINUTE_MS,
  compactionTargetSizeBytes: 128 * MIB,
  compactionPeriodMs: 20 * SECOND_MS,
  compactionThreshold: 10,
  gcHorizonBytes: 64 * MIB,
  gcPeriodMs: HOUR_MS,
  imageCreationThreshold: 3,
  pitrIntervalMs: 7 * DAY_MS,
  walreceiverConnectTimeoutMs: 10 * SECOND_MS,
  laggingWalTimeoutMs: 10 * SECOND_MS,
  maxLsnWalLagBytes: 10 * MIB,
  traceReadRequests: false,
  evictionPolicy: Object.freeze({ kind: 'NoEviction' as const }),
  minResidentSizeOverrideBytes: null,
  evictionsLowResidenceDurationMetricThresholdMs: DAY_MS,
  gcFeedback: false,
  heatmapPeriodMs: 0,
  redoMode: 'images' as const,
});

// ------------------------------------------------------------------------------------- field table

/**
 * How a field's value is checked and converted. `min` is inclusive: 1 where zero has no sensible
 * meaning (a zero size target, a zero connect timeout), 0 where zero means "disabled" or "none".
 */
type FieldKind =
  | { readonly type: 'integer'; readonly min: number; readonly unit: 'bytes' | 'count' }
  | { readonly type: 'nullableInteger'; readonly min: number }
  | { readonly type: 'duration'; readonly minMs: number }
  | { readonly type: 'boolean' }
  | { readonly type: 'evictionPolicy' }
  | { readonly type: 'redoMode' };

interface FieldSpec {
  readonly key: keyof TenantConfig;
  readonly name: string;
  readonly kind: FieldKind;
}

const bytesAtLeast = (min: number): FieldKind => ({ type: 'integer', min, unit: 'bytes' });
const countAtLeast = (min: number): FieldKind => ({ type: 'integer', min, unit: 'count' });
const durationAtLeast = (minMs: number): FieldKind => ({ type: 'duration', minMs });

const FIELDS: readonly FieldSpec[] = [
  { key: 'checkpointDistanceBytes', name: 'checkpoint_distance', kind: bytesAtLeast(1) },
  { key: 'checkpointTimeoutMs', name: 'checkpoint_timeout', kind: durationAtLeast(1) },
  { key: 'compactionTargetSizeBytes', name: 'compaction_target_size', kind: bytesAtLeast(1) },
  { key: 'compactionPeriodMs', name: 'compaction_period', kind: durationAtLeast(0) },
  { key: 'compactionThreshold', name: 'compaction_threshold', kind: countAtLeast(1) },
  { key: 'gcHorizonBytes', name: 'gc_horizon', kind: bytesAtLeast(0) },
  { key: 'gcPeriodMs', name: 'gc_period', kind: durationAtLeast(0) },
  { key: 'imageCreationThreshold', name: 'image_creation_threshold', kind: countAtLeast(1) },
  { key: 'pitrIntervalMs', name: 'pitr_interval', kind: durationAtLeast(0) },
  { key: 'walreceiverConnectTimeoutMs', name: 'walreceiver_connect_timeout', kind: durationAtLeast(1) },
  { key: 'laggingWalTimeoutMs', name: 'lagging_wal_timeout', kind: durationAtLeast(1) },
  { key: 'maxLsnWalLagBytes', name: 'max_lsn_wal_lag', kind: bytesAtLeast(1) },
  { key: 'traceReadRequests', name: 'trace_read_requests', kind: { type: 'boolean' } },
  { key: 'evictionPolicy', name: 'eviction_policy', kind: { type: 'evictionPolicy' } },
  { key: 'minResidentSizeOverrideBytes', name: 'min_resident_size_override', kind: { type: 'nullableInteger', min: 0 } },
  { key: 'evictionsLowResidenceDurationMetricThresholdMs', name: 'evictions_low_residence_duration_metric_threshold', kind: durationAtLeast(0) },
  { key: 'gcFeedback', name: 'gc_feedback', kind: { type: 'boolean' } },
  { key: 'heatmapPeriodMs', name: 'heatmap_period', kind: durationAtLeast(0) },
  { key: 'redoMode', name: 'redo_mode', kind: { type: 'redoMode' } },
];

const FIELD_BY_NAME: ReadonlyMap<string, FieldSpec> = new Map(FIELDS.map((f) => [f.name, f]));
const FIELD_BY_KEY: ReadonlyMap<string, FieldSpec> = new Map(FIELDS.map((f) => [f.key, f]));

/** External names of every tenant config field, in documentation order. */
export const TENANT_CONFIG_FIELD_NAMES: readonly string[] = Object.freeze(FIELDS.map((f) => f.name));

// ------------------------------------------------------------------------------------- parsing

/** Bound on the keys of one input, so a hostile body cannot make an unbounded error message. */
const MAX_INPUT_FIELDS = 100;

interface Problem {
  readonly field: string;
  readonly message: string;
}

/** Thrown (internally) by value checkers; collected into one InvalidInputError per input. */
class FieldProblem extends Error {}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `"${value.length > 60 ? value.slice(0, 60) + '…' : value}" (text)`;
  if (typeof value === 'object') return 'an object';
  return `${String(value)} (${typeof value})`;
}

function checkInteger(value: unknown, min: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) {
    throw new FieldProblem(`expected a whole number of ${what} ≥ ${min}, got ${describe(value)}`);
  }
  if (!Number.isSafeInteger(value)) throw new FieldProblem(`${value} is too large (at most ${Number.MAX_SAFE_INTEGER})`);
  if (value < min) {
    throw new FieldProblem(min === 1 ? `must be at least 1, got ${value}` : `must not be negative, got ${value}`);
  }
  return value;
}

function checkDuration(value: unknown, minMs: number): number {
  if (typeof value !== 'string') {
    throw new FieldProblem(`expected a duration text such as "10 m" or "1 hr", got ${describe(value)}`);
  }
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch (err) {
    if (err instanceof InvalidInputError) throw new FieldProblem(err.message);
    throw err;
  }
  if (ms < minMs) throw new FieldProblem(`must be longer than zero, got "${value}"`);
  return ms;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkEvictionPolicy(value: unknown): EvictionPolicy {
  if (!isPlainObject(value)) {
    throw new FieldProblem(`expected {"kind": "NoEviction"} or {"kind": "LayerAccessThreshold", "period": "10m", "threshold": "1h"}, got ${describe(value)}`);
  }
  const kind = value['kind'];
  const allowKeys = (keys: readonly string[]): void => {
    const extra = Object.keys(value).filter((k) => !keys.includes(k));
    if (extra.length > 0) throw new FieldProblem(`unknown key(s) ${extra.map((k) => `"${k}"`).join(', ')} for kind ${String(kind)}; allowed: ${keys.join(', ')}`);
  };
  if (kind === 'NoEviction') {
    allowKeys(['kind']);
    return { kind: 'NoEviction' };
  }
  if (kind === 'LayerAccessThreshold') {
    allowKeys(['kind', 'period', 'threshold']);
    const sub = (key: 'period' | 'threshold'): number => {
      if (value[key] === undefined) throw new FieldProblem(`LayerAccessThreshold needs "${key}" (a duration such as "10m")`);
      try {
        return checkDuration(value[key], 1);
      } catch (err) {
        if (err instanceof FieldProblem) throw new FieldProblem(`${key}: ${err.message}`);
        throw err;
      }
    };
    const periodMs = sub('period');
    const thresholdMs = sub('threshold');
    return { kind: 'LayerAccessThreshold', periodMs, thresholdMs };
  }
  throw new FieldProblem(`unknown kind ${describe(kind)}; expected "NoEviction" or "LayerAccessThreshold"`);
}

function checkValue(kind: FieldKind, value: unknown): unknown {
  switch (kind.type) {
    case 'integer':
      return checkInteger(value, kind.min, kind.unit === 'bytes' ? 'bytes' : 'items');
    case 'nullableInteger':
      return checkInteger(value, kind.min, 'bytes');
    case 'duration':
      return checkDuration(value, kind.minMs);
    case 'boolean':
      if (typeof value !== 'boolean') throw new FieldProblem(`expected true or false, got ${describe(value)}`);
      return value;
    case 'evictionPolicy':
      return checkEvictionPolicy(value);
    case 'redoMode':
      if (typeof value !== 'string' || !(REDO_MODES as readonly string[]).includes(value)) {
        throw new FieldProblem(`expected one of ${REDO_MODES.map((m) => `"${m}"`).join(', ')}, got ${describe(value)}`);
      }
      return value;
  }
}

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
}

function unknownFieldMessage(name: string): string {
  let hint = '';
  const byKey = FIELD_BY_KEY.get(name) ?? FIELD_BY_NAME.get(snakeCase(name));
  if (byKey !== undefined) hint = ` (did you mean "${byKey.name}"?)`;
  return `unknown field${hint}; valid fields: ${TENANT_CONFIG_FIELD_NAMES.join(', ')}`;
}

function problemsError(problems: readonly Problem[], extra: ErrorContext = {}): InvalidInputError {
  const text = problems.map((p) => `"${p.field}": ${p.message}`).join('; ');
  const first = problems[0];
  return new InvalidInputError(`invalid tenant config: ${text}`, {
    ...extra,
    field: first?.field,
    fields: problems.map((p) => p.field).join(','),
  });
}

/**
 * Validates external-form settings (an API body or a file's `tenant_config` table) into overrides.
 * Throws one InvalidInputError naming every bad field; nothing is returned unless all are valid.
 */
export function parseTenantConfigOverrides(json: unknown): TenantConfigOverrides {
  if (!isPlainObject(json)) {
    throw new InvalidInputError(`invalid tenant config: expected a JSON object of settings, got ${describe(json)}`);
  }
  const names = Object.keys(json);
  if (names.length > MAX_INPUT_FIELDS) {
    throw new InvalidInputError(`invalid tenant config: ${names.length} fields given, there are only ${FIELDS.length}`, { fields: names.length });
  }
  const problems: Problem[] = [];
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(json)) {
    const spec = FIELD_BY_NAME.get(name);
    if (spec === undefined) {
      problems.push({ field: name, message: unknownFieldMessage(name) });
      continue;
    }
    if (value === null || value === undefined) continue; // "not set", as in Neon
    try {
      out[spec.key] = checkValue(spec.kind, value);
    } catch (err) {
      if (!(err instanceof FieldProblem)) throw err;
      problems.push({ field: name, message: err.message });
    }
  }
  if (problems.length > 0) throw problemsError(problems);
  return Object.freeze(out) as TenantConfigOverrides;
}

/** The effective configuration: every set override replaces the default. */
export function mergeTenantConfig(defaults: TenantConfig, overrides: TenantConfigOverrides): TenantConfig {
  const merged: Record<string, unknown> = {};
  for (const f of FIELDS) {
    const v = overrides[f.key];
    merged[f.key] = v !== undefined ? v : defaults[f.key];
  }
  return Object.freeze(merged) as unknown as TenantConfig;
}

function toExternal(kind: FieldKind, value: unknown): unknown {
  switch (kind.type) {
    case 'duration':
      return formatDuration(value as number);
    case 'evictionPolicy': {
      const p = value as EvictionPolicy;
      return p.kind === 'NoEviction'
        ? { kind: 'NoEviction' }
        : { kind: 'LayerAccessThreshold', period: formatDuration(p.periodMs), threshold: formatDuration(p.thresholdMs) };
    }
    default:
      return value;
  }
}

/** External form of the set overrides (only fields that are set), in documentation order. */
export function tenantConfigToJson(overrides: TenantConfigOverrides): TenantConfigJson {
  const out: Record<string, unknown> = {};
  for (const f of FIELDS) {
    const v = overrides[f.key];
    if (v === undefined || v === null) continue;
    out[f.name] = toExternal(f.kind, v);
  }
  return out as TenantConfigJson;
}

// ------------------------------------------------------------------------------------- key=value

const MAX_KEY_VALUE_SETTINGS = 1000;

function keyValueToExternal(kind: FieldKind, text: string, name: string): unknown {
  const trimmed = text.trim();
  switch (kind.type) {
    case 'integer':
    case 'nullableInteger':
      if (kind.type === 'nullableInteger' && (trimmed === 'null' || trimmed === 'none')) return null;
      return /^[0-9]+$/.test(trimmed) ? Number(trimmed) : trimmed;
    case 'duration':
    case 'redoMode':
      return trimmed;
    case 'boolean':
      return trimmed === 'true' ? true : trimmed === 'false' ? false : trimmed;
    case 'evictionPolicy':
      if (trimmed === 'NoEviction') return { kind: 'NoEviction' };
      if (trimmed.startsWith('{')) {
        try {
          return JSON.parse(trimmed) as unknown;
        } catch (err) {
          throw new InvalidInputError(`invalid tenant config: "${name}": value is not valid JSON (${(err as Error).message})`, { field: name });
        }
      }
      return trimmed;
  }
}

/**
 * Parses CLI-style `key=value` settings (`--config checkpoint_distance=1048576 --config "gc_period=1 hr"`).
 * Values are read per field type: integers as decimal digits, durations as humantime text, booleans
 * as true/false, eviction_policy as JSON (or the bare word NoEviction). Validation is the same as for
 * API bodies; a key given twice is an error rather than last-one-wins.
 */
export function parseKeyValueSettings(settings: readonly string[]): TenantConfigOverrides {
  if (settings.length > MAX_KEY_VALUE_SETTINGS) {
    throw new InvalidInputError(`too many tenant config settings (${settings.length}; at most ${MAX_KEY_VALUE_SETTINGS})`);
  }
  const external: Record<string, unknown> = {};
  for (const setting of settings) {
    const eq = setting.indexOf('=');
    if (eq <= 0) {
      throw new InvalidInputError(`invalid tenant config setting "${setting}": expected key=value, e.g. checkpoint_distance=1048576`, { setting });
    }
    const name = setting.slice(0, eq).trim();
    const text = setting.slice(eq + 1);
    if (Object.hasOwn(external, name)) {
      throw new InvalidInputError(`invalid tenant config: "${name}" is given more than once`, { field: name });
    }
    const spec = FIELD_BY_NAME.get(name);
    // Unknown names pass through so the parser reports them together with any other problems.
    external[name] = spec === undefined ? text : keyValueToExternal(spec.kind, text, name);
  }
  return parseTenantConfigOverrides(external);
}

// ------------------------------------------------------------------------------------- file

export const TENANT_CONFIG_FILE_NAME = 'tenant-config.json';
export const TENANT_CONFIG_FORMAT_VERSION = 1;
/** A config file is a few hundred bytes; anything much bigger is not ours. */
const MAX_TENANT_CONFIG_FILE_BYTES = 1024 * 1024;

export type TenantConfigFileProblem = 'missing' | 'too_large' | 'not_json' | 'bad_structure' | 'unsupported_version' | 'invalid_setting';

/** The tenant's config file could not be used; `problem` says why, `path` which file. */
export class TenantConfigFileError extends StrataError {
  readonly problem: TenantConfigFileProblem;
  readonly path: string;

  constructor(filePath: string, problem: TenantConfigFileProblem, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super('invalid_tenant_config_file', `tenant config file ${filePath}: ${message}`, { ...context, path: filePath, problem }, options);
    this.name = 'TenantConfigFileError';
    this.problem = problem;
    this.path = filePath;
  }
}

export function tenantConfigPath(tenantDir: string): string {
  return path.join(tenantDir, TENANT_CONFIG_FILE_NAME);
}

/** Writes the tenant's overrides to `<tenantDir>/tenant-config.json`, atomically and durably. */
export async function saveTenantConfig(tenantDir: string, overrides: TenantConfigOverrides): Promise<void> {
  const settings = tenantConfigToJson(overrides);
  // Pair assertion: what we write must read back as what we were given.
  // (Invalid values, e.g. a negative size built in code, are refused here by the parser.)
  const written = JSON.stringify(settings);
  const reread = tenantConfigToJson(parseTenantConfigOverrides(JSON.parse(written)));
  assert(JSON.stringify(reread) === written, 'tenant config does not survive its external form', { written, reread: JSON.stringify(reread) });
  const body = { format_version: TENANT_CONFIG_FORMAT_VERSION, tenant_config: settings };
  await writeFileDurable(tenantConfigPath(tenantDir), new TextEncoder().encode(JSON.stringify(body, null, 2) + '\n'));
}

/** Reads and validates `<tenantDir>/tenant-config.json`. Every failure is a TenantConfigFileError. */
export async function loadTenantConfig(tenantDir: string): Promise<TenantConfigOverrides> {
  const file = tenantConfigPath(tenantDir);
  let text: string;
  try {
    const st = await stat(file);
    if (st.size > MAX_TENANT_CONFIG_FILE_BYTES) {
      throw new TenantConfigFileError(file, 'too_large', `${st.size} bytes is larger than the ${MAX_TENANT_CONFIG_FILE_BYTES}-byte limit`);
    }
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof TenantConfigFileError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new TenantConfigFileError(file, 'missing', 'does not exist', {}, { cause: err });
    throw err;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new TenantConfigFileError(file, 'not_json', `not valid JSON (${(err as Error).message})`, {}, { cause: err });
  }
  if (!isPlainObject(doc)) throw new TenantConfigFileError(file, 'bad_structure', `expected a JSON object, got ${describe(doc)}`);
  const allowed = ['format_version', 'tenant_config'];
  const extra = Object.keys(doc).filter((k) => !allowed.includes(k));
  if (extra.length > 0) {
    throw new TenantConfigFileError(file, 'bad_structure', `unknown top-level field(s) ${extra.map((k) => `"${k}"`).join(', ')}; expected only ${allowed.join(', ')}`, { field: extra[0] });
  }
  const version = doc['format_version'];
  if (version !== TENANT_CONFIG_FORMAT_VERSION) {
    throw new TenantConfigFileError(
      file,
      'unsupported_version',
      `format_version ${describe(version)} is not supported (this build reads version ${TENANT_CONFIG_FORMAT_VERSION})`,
    );
  }
  if (!isPlainObject(doc['tenant_config'])) {
    throw new TenantConfigFileError(file, 'bad_structure', `"tenant_config" must be an object, got ${describe(doc['tenant_config'])}`);
  }
  try {
    return parseTenantConfigOverrides(doc['tenant_config']);
  } catch (err) {
    if (err instanceof InvalidInputError) throw new TenantConfigFileError(file, 'invalid_setting', err.message, err.context, { cause: err });
    throw err;
  }
}
