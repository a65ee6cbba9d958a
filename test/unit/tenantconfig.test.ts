import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { InvalidInputError } from '../../src/util/errors.ts';
import { formatDuration, parseDuration } from '../../src/util/duration.ts';
import { generateId, idFromBytes, idToBytes, parseId } from '../../src/util/ids.ts';
import {
  TENANT_CONFIG_DEFAULTS,
  TENANT_CONFIG_FIELD_NAMES,
  TenantConfigFileError,
  loadTenantConfig,
  mergeTenantConfig,
  parseKeyValueSettings,
  parseTenantConfigOverrides,
  saveTenantConfig,
  tenantConfigToJson,
} from '../../src/pageserver/tenantconfig.ts';
import type { TenantConfigOverrides } from '../../src/pageserver/tenantconfig.ts';
import { rng } from './test-compressors.ts';

const S = 1000;
const MIN = 60 * S;
const H = 60 * MIN;
const D = 24 * H;

// ------------------------------------------------------------------------------- durations

test('durations: the spellings Neon uses parse to milliseconds', () => {
  const cases: Array<[string, number]> = [
    ['10 m', 10 * MIN],
    ['10m', 10 * MIN],
    ['1 hr', H],
    ['1h', H],
    ['7 days', 7 * D],
    ['10 seconds', 10 * S],
    ['20 s', 20 * S],
    ['500ms', 500],
    ['1h 30m', 90 * MIN],
    ['1h30m', 90 * MIN],
    ['0s', 0],
    ['24 hour', D],
    ['  10m  ', 10 * MIN],
    ['2 weeks', 14 * D],
    ['1 min 5 sec', 65 * S],
    ['3000us', 3],
    ['1000000ns', 1],
    ['1M', 2_630_016 * S],
    ['1y', 31_557_600 * S],
    [`${Number.MAX_SAFE_INTEGER}ms`, Number.MAX_SAFE_INTEGER],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

test('durations: canonical formatting', () => {
  const cases: Array<[number, string]> = [
    [10 * MIN, '10m'],
    [H, '1h'],
    [7 * D, '7d'],
    [20 * S, '20s'],
    [90 * MIN, '1h 30m'],
    [0, '0s'],
    [500, '500ms'],
    [D + H + MIN + S + 1, '1d 1h 1m 1s 1ms'],
    [3 * D + 5 * S, '3d 5s'],
  ];
  for (const [ms, text] of cases) assert.equal(formatDuration(ms), text, String(ms));
});

test('durations: format → parse round-trips', () => {
  const rand = rng(7);
  const values = [0, 1, 999, 1000, 59_999, 60_000, D - 1, Number.MAX_SAFE_INTEGER];
  for (let i = 0; i < 2000; i++) values.push(Math.floor(rand() * (i % 2 === 0 ? 10 * D : Number.MAX_SAFE_INTEGER)));
  for (const ms of values) assert.equal(parseDuration(formatDuration(ms)), ms, String(ms));
});

test('durations: malformed text is an InvalidInputError quoting the text', () => {
  const bad = [
    '',
    '   ',
    '-1s',
    '+1s',
    '10',
    '1.5h',
    '10 parsecs',
    '10mx',
    'm',
    's10',
    '1h,30m',
    '1ns',
    '1500us',
    '99999999999999999999d',
    `${Number.MAX_SAFE_INTEGER + 1}ms`,
  ];
  for (const text of bad) {
    assert.throws(
      () => parseDuration(text),
      (e: unknown) => e instanceof InvalidInputError && e.message.includes(`"${text}"`),
      JSON.stringify(text),
    );
  }
  // Over-long text is refused without echoing all of it.
  const long = '1s '.repeat(100);
  assert.throws(() => parseDuration(long), (e: unknown) => e instanceof InvalidInputError && /longer than/.test(e.message) && e.message.length < 300);
  for (const ms of [-1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1]) {
    assert.throws(() => formatDuration(ms), InvalidInputError, String(ms));
  }
});

// ------------------------------------------------------------------------------- ids

test('ids: generated ids are 32 lower-case hex digits and distinct', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 200; i++) {
    const id = generateId();
    assert.match(id, /^[0-9a-f]{32}$/);
    seen.add(id);
  }
  assert.equal(seen.size, 200);
});

test('ids: parseId accepts either case, returns lower case, rejects anything else', () => {
  assert.equal(parseId('0123456789ABCDEFabcdef0123456789', 'tenant'), '0123456789abcdefabcdef0123456789');
  assert.equal(parseId('ffffffffffffffffffffffffffffffff', 'timeline'), 'ffffffffffffffffffffffffffffffff');
  const bad = ['', 'abc', '0123456789abcdef0123456789abcde', '0123456789abcdef0123456789abcdef0', 'g123456789abcdef0123456789abcdef', '0x23456789abcdef0123456789abcdef', ' 123456789abcdef0123456789abcdef'];
  for (const text of bad) {
    assert.throws(() => parseId(text, 'timeline'), (e: unknown) => e instanceof InvalidInputError && /timeline id/.test(e.message), text);
    assert.throws(() => parseId(text, 'tenant'), (e: unknown) => e instanceof InvalidInputError && /tenant id/.test(e.message), text);
  }
});

test('ids: bytes round-trip', () => {
  const bytes = Uint8Array.from({ length: 16 }, (_, i) => i * 17);
  assert.equal(idFromBytes(bytes), '00112233445566778899aabbccddeeff');
  assert.deepEqual(idToBytes('00112233445566778899aabbccddeeff'), bytes);
  for (let i = 0; i < 50; i++) {
    const id = generateId();
    assert.equal(idFromBytes(idToBytes(id)), id);
  }
  assert.throws(() => idFromBytes(new Uint8Array(15)), InvalidInputError);
  assert.throws(() => idFromBytes(new Uint8Array(17)), InvalidInputError);
  assert.throws(() => idToBytes('00112233445566778899AABBCCDDEEFF'), InvalidInputError, 'canonical (lower-case) ids only');
});

// ------------------------------------------------------------------------------- defaults

test('defaults are Neon’s TenantConf defaults (2024-01) plus redo_mode=images', () => {
  assert.deepEqual(TENANT_CONFIG_DEFAULTS, {
    checkpointDistanceBytes: 268435456,
    checkpointTimeoutMs: 600000,
    compactionTargetSizeBytes: 134217728,
    compactionPeriodMs: 20000,
    compactionThreshold: 10,
    gcHorizonBytes: 67108864,
    gcPeriodMs: 3600000,
    imageCreationThreshold: 3,
    pitrIntervalMs: 604800000,
    walreceiverConnectTimeoutMs: 10000,
    laggingWalTimeoutMs: 10000,
    maxLsnWalLagBytes: 10485760,
    traceReadRequests: false,
    evictionPolicy: { kind: 'NoEviction' },
    minResidentSizeOverrideBytes: null,
    evictionsLowResidenceDurationMetricThresholdMs: 86400000,
    gcFeedback: false,
    heatmapPeriodMs: 0,
    redoMode: 'images',
  });
});

test('Neon’s default values written in Neon’s external form merge to the same configuration', () => {
  const neonDefaults = {
    checkpoint_distance: 268435456,
    checkpoint_timeout: '10 m',
    compaction_target_size: 134217728,
    compaction_period: '20 s',
    compaction_threshold: 10,
    gc_horizon: 67108864,
    gc_period: '1 hr',
    image_creation_threshold: 3,
    pitr_interval: '7 days',
    walreceiver_connect_timeout: '10 seconds',
    lagging_wal_timeout: '10 seconds',
    max_lsn_wal_lag: 10485760,
    trace_read_requests: false,
    eviction_policy: { kind: 'NoEviction' },
    min_resident_size_override: null,
    evictions_low_residence_duration_metric_threshold: '24 hour',
    gc_feedback: false,
    heatmap_period: '0s',
    redo_mode: 'images',
  };
  const overrides = parseTenantConfigOverrides(neonDefaults);
  // Start from deliberately different defaults so every field must come from the overrides.
  const other = mergeTenantConfig(TENANT_CONFIG_DEFAULTS, {
    checkpointDistanceBytes: 1,
    checkpointTimeoutMs: 1,
    compactionTargetSizeBytes: 1,
    compactionPeriodMs: 1,
    compactionThreshold: 1,
    gcHorizonBytes: 1,
    gcPeriodMs: 1,
    imageCreationThreshold: 1,
    pitrIntervalMs: 1,
    walreceiverConnectTimeoutMs: 1,
    laggingWalTimeoutMs: 1,
    maxLsnWalLagBytes: 1,
    traceReadRequests: true,
    evictionPolicy: { kind: 'LayerAccessThreshold', periodMs: 1, thresholdMs: 1 },
    evictionsLowResidenceDurationMetricThresholdMs: 1,
    gcFeedback: true,
    heatmapPeriodMs: 1,
    redoMode: 'verify',
  });
  const merged = mergeTenantConfig(other, overrides);
  // min_resident_size_override: null means "not set", so it keeps the base value (null here too).
  assert.deepEqual(merged, TENANT_CONFIG_DEFAULTS);
  assert.equal(TENANT_CONFIG_FIELD_NAMES.length, Object.keys(neonDefaults).length);
  assert.deepEqual([...TENANT_CONFIG_FIELD_NAMES].sort(), Object.keys(neonDefaults).sort());
});

test('overrides merge over the defaults; defaults are not changed', () => {
  const overrides = parseTenantConfigOverrides({
    checkpoint_distance: 1048576,
    gc_period: '30 s',
    eviction_policy: { kind: 'LayerAccessThreshold', period: '10m', threshold: '1h' },
    min_resident_size_override: 0,
    redo_mode: 'verify',
    gc_horizon: null,
  });
  assert.deepEqual(overrides, {
    checkpointDistanceBytes: 1048576,
    gcPeriodMs: 30000,
    evictionPolicy: { kind: 'LayerAccessThreshold', periodMs: 600000, thresholdMs: 3600000 },
    minResidentSizeOverrideBytes: 0,
    redoMode: 'verify',
  });
  const merged = mergeTenantConfig(TENANT_CONFIG_DEFAULTS, overrides);
  assert.equal(merged.checkpointDistanceBytes, 1048576);
  assert.equal(merged.gcPeriodMs, 30000);
  assert.equal(merged.minResidentSizeOverrideBytes, 0);
  assert.equal(merged.redoMode, 'verify');
  assert.equal(merged.gcHorizonBytes, 67108864, 'null means not set');
  assert.equal(merged.compactionPeriodMs, 20000);
  assert.equal(TENANT_CONFIG_DEFAULTS.checkpointDistanceBytes, 268435456);
  assert.deepEqual(mergeTenantConfig(TENANT_CONFIG_DEFAULTS, {}), TENANT_CONFIG_DEFAULTS);
});

// ------------------------------------------------------------------------------- strictness

test('an unknown field rejects the whole input, names the field and lists the valid ones', () => {
  const input = { checkpoint_distance: 1048576, no_such_field: 1, gc_period: '1h' };
  const before = JSON.stringify(input);
  assert.throws(
    () => parseTenantConfigOverrides(input),
    (e: unknown) =>
      e instanceof InvalidInputError &&
      e.message.includes('"no_such_field"') &&
      e.message.includes('valid fields') &&
      e.message.includes('checkpoint_distance') &&
      e.message.includes('heatmap_period') &&
      e.context['field'] === 'no_such_field',
  );
  assert.equal(JSON.stringify(input), before, 'input not modified');
  // camelCase (internal) names are refused too, with a hint.
  assert.throws(() => parseTenantConfigOverrides({ checkpointDistance: 5 }), /did you mean "checkpoint_distance"/);
  assert.throws(() => parseTenantConfigOverrides({ gcPeriodMs: 5 }), /did you mean "gc_period"/);
});

test('a rejected update leaves the current configuration untouched', () => {
  let current: TenantConfigOverrides = parseTenantConfigOverrides({ gc_period: '2h' });
  const apply = (json: unknown): void => {
    current = parseTenantConfigOverrides(json);
  };
  assert.throws(() => apply({ gc_period: '5m', checkpoint_distance: 1, bogus: true }), InvalidInputError);
  assert.throws(() => apply({ gc_period: '5m', checkpoint_distance: -1 }), InvalidInputError);
  assert.deepEqual(current, { gcPeriodMs: 2 * H });
});

test('wrong types and out-of-range values name the field', () => {
  const cases: Array<[string, unknown]> = [
    ['checkpoint_distance', '1MiB'],
    ['checkpoint_distance', -1],
    ['checkpoint_distance', 0],
    ['checkpoint_distance', 1.5],
    ['checkpoint_distance', 2 ** 53],
    ['checkpoint_distance', true],
    ['checkpoint_timeout', 600],
    ['checkpoint_timeout', '0s'],
    ['checkpoint_timeout', '-1s'],
    ['checkpoint_timeout', '10 fortnights'],
    ['compaction_target_size', 0],
    ['compaction_threshold', 0],
    ['image_creation_threshold', 0],
    ['gc_horizon', -5],
    ['gc_period', 3600],
    ['walreceiver_connect_timeout', '0ms'],
    ['lagging_wal_timeout', '0s'],
    ['max_lsn_wal_lag', 0],
    ['trace_read_requests', 'true'],
    ['trace_read_requests', 1],
    ['eviction_policy', 'NoEviction'],
    ['eviction_policy', { kind: 'Foo' }],
    ['eviction_policy', { kind: 'LayerAccessThreshold', period: '10m' }],
    ['eviction_policy', { kind: 'LayerAccessThreshold', period: '10m', threshold: '0s' }],
    ['eviction_policy', { kind: 'LayerAccessThreshold', period: '10m', threshold: '1h', extra: 1 }],
    ['eviction_policy', { kind: 'NoEviction', period: '10m' }],
    ['min_resident_size_override', -1],
    ['min_resident_size_override', '1'],
    ['evictions_low_residence_duration_metric_threshold', 5],
    ['gc_feedback', 'no'],
    ['heatmap_period', {}],
    ['redo_mode', 'fast'],
    ['redo_mode', 1],
  ];
  for (const [field, value] of cases) {
    assert.throws(
      () => parseTenantConfigOverrides({ [field]: value }),
      (e: unknown) => e instanceof InvalidInputError && e.message.includes(`"${field}"`) && e.context['field'] === field,
      `${field}=${JSON.stringify(value)}`,
    );
  }
  // Zero is valid where it means "disabled" or "none".
  const zeros = parseTenantConfigOverrides({ compaction_period: '0s', gc_period: '0s', gc_horizon: 0, pitr_interval: '0s', heatmap_period: '0s', min_resident_size_override: 0 });
  assert.deepEqual(zeros, { compactionPeriodMs: 0, gcPeriodMs: 0, gcHorizonBytes: 0, pitrIntervalMs: 0, heatmapPeriodMs: 0, minResidentSizeOverrideBytes: 0 });
});

test('every problem in one input is reported together', () => {
  assert.throws(
    () => parseTenantConfigOverrides({ checkpoint_distance: 'x', gc_period: 5, nope: 1 }),
    (e: unknown) => e instanceof InvalidInputError && e.context['fields'] === 'checkpoint_distance,gc_period,nope',
  );
});

test('saving refuses overrides that are not valid settings; eviction policy key order does not matter', async () => {
  await withTempDir(async (dir) => {
    await assert.rejects(saveTenantConfig(dir, { checkpointDistanceBytes: -1 }), InvalidInputError);
    await assert.rejects(saveTenantConfig(dir, { gcPeriodMs: 1.5 }), InvalidInputError);
    assert.deepEqual(await readdir(dir), [], 'nothing written');
    await saveTenantConfig(dir, { evictionPolicy: { thresholdMs: H, periodMs: MIN, kind: 'LayerAccessThreshold' } });
    assert.deepEqual(await loadTenantConfig(dir), { evictionPolicy: { kind: 'LayerAccessThreshold', periodMs: MIN, thresholdMs: H } });
  });
});

test('an input with absurdly many fields is refused up front', () => {
  const many = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`f${i}`, i]));
  assert.throws(() => parseTenantConfigOverrides(many), (e: unknown) => e instanceof InvalidInputError && e.message.length < 200);
});

test('non-object inputs are refused', () => {
  for (const v of [null, undefined, [], 'checkpoint_distance=1', 5]) {
    assert.throws(() => parseTenantConfigOverrides(v), InvalidInputError, JSON.stringify(v));
  }
});

// ------------------------------------------------------------------------------- external form

test('external form: only set fields, Neon names and value types, and it parses back', () => {
  const overrides: TenantConfigOverrides = {
    checkpointDistanceBytes: 1048576,
    checkpointTimeoutMs: 90 * MIN,
    evictionPolicy: { kind: 'LayerAccessThreshold', periodMs: 10 * MIN, thresholdMs: D },
    traceReadRequests: true,
    minResidentSizeOverrideBytes: 8192,
    pitrIntervalMs: 0,
    redoMode: 'typescript',
  };
  const json = tenantConfigToJson(overrides);
  assert.deepEqual(json, {
    checkpoint_distance: 1048576,
    checkpoint_timeout: '1h 30m',
    pitr_interval: '0s',
    trace_read_requests: true,
    eviction_policy: { kind: 'LayerAccessThreshold', period: '10m', threshold: '1d' },
    min_resident_size_override: 8192,
    redo_mode: 'typescript',
  });
  assert.deepEqual(parseTenantConfigOverrides(JSON.parse(JSON.stringify(json))), overrides);
  assert.deepEqual(tenantConfigToJson({}), {});
});

// ------------------------------------------------------------------------------- key=value

test('key=value settings are parsed per field type', () => {
  const got = parseKeyValueSettings([
    'checkpoint_distance=1048576',
    'gc_period=1 hr',
    'trace_read_requests=true',
    'gc_feedback=false',
    'eviction_policy={"kind":"LayerAccessThreshold","period":"20 m","threshold":"2 h"}',
    'min_resident_size_override=4096',
    'redo_mode=typescript',
    ' compaction_threshold = 4 ',
  ]);
  assert.deepEqual(got, {
    checkpointDistanceBytes: 1048576,
    gcPeriodMs: H,
    traceReadRequests: true,
    gcFeedback: false,
    evictionPolicy: { kind: 'LayerAccessThreshold', periodMs: 20 * MIN, thresholdMs: 2 * H },
    minResidentSizeOverrideBytes: 4096,
    redoMode: 'typescript',
    compactionThreshold: 4,
  });
  assert.deepEqual(parseKeyValueSettings(['eviction_policy=NoEviction']), { evictionPolicy: { kind: 'NoEviction' } });
  assert.deepEqual(parseKeyValueSettings([]), {});
});

test('bad key=value settings are refused with the key named', () => {
  const cases: Array<[string[], RegExp]> = [
    [['checkpoint_distance'], /key=value/],
    [['=5'], /key=value/],
    [['checkpoint_distance=abc'], /"checkpoint_distance"/],
    [['checkpoint_distance=1.5'], /"checkpoint_distance"/],
    [['checkpoint_distance=-3'], /"checkpoint_distance"/],
    [['gc_period=soon'], /"gc_period"/],
    [['trace_read_requests=yes'], /"trace_read_requests"/],
    [['eviction_policy={bad json'], /"eviction_policy"/],
    [['unknown_knob=1'], /"unknown_knob".*valid fields/],
    [['gc_period=1h', 'gc_period=2h'], /"gc_period" is given more than once/],
  ];
  for (const [settings, re] of cases) {
    assert.throws(() => parseKeyValueSettings(settings), (e: unknown) => e instanceof InvalidInputError && re.test(e.message), settings.join(' '));
  }
});

// ------------------------------------------------------------------------------- file

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-tenantconfig-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('save/load round trip; the file is versioned JSON and no temp file is left', async () => {
  await withTempDir(async (dir) => {
    const overrides = parseTenantConfigOverrides({ checkpoint_distance: 1048576, gc_period: '1 hr', eviction_policy: { kind: 'NoEviction' }, redo_mode: 'verify' });
    await saveTenantConfig(dir, overrides);
    assert.deepEqual(await readdir(dir), ['tenant-config.json']);
    const onDisk = JSON.parse(await readFile(path.join(dir, 'tenant-config.json'), 'utf8')) as unknown;
    assert.deepEqual(onDisk, {
      format_version: 1,
      tenant_config: { checkpoint_distance: 1048576, gc_period: '1h', eviction_policy: { kind: 'NoEviction' }, redo_mode: 'verify' },
    });
    assert.deepEqual(await loadTenantConfig(dir), overrides);
    // Overwrite with an empty set of overrides.
    await saveTenantConfig(dir, {});
    assert.deepEqual(await loadTenantConfig(dir), {});
    assert.deepEqual(await readdir(dir), ['tenant-config.json']);
  });
});

test('loading refuses unknown fields, unknown versions and malformed files, naming the file', async () => {
  await withTempDir(async (dir) => {
    const file = path.join(dir, 'tenant-config.json');
    const cases: Array<[string, string, RegExp]> = [
      [JSON.stringify({ format_version: 1, tenant_config: { checkpoint_distance: 1, surprise: 2 } }), 'invalid_setting', /"surprise"/],
      [JSON.stringify({ format_version: 1, tenant_config: { gc_period: 5 } }), 'invalid_setting', /"gc_period"/],
      [JSON.stringify({ format_version: 1, tenant_config: {}, extra: true }), 'bad_structure', /"extra"/],
      [JSON.stringify({ format_version: 2, tenant_config: {} }), 'unsupported_version', /format_version 2/],
      [JSON.stringify({ tenant_config: {} }), 'unsupported_version', /format_version/],
      [JSON.stringify({ format_version: '1', tenant_config: {} }), 'unsupported_version', /format_version/],
      [JSON.stringify({ format_version: 1 }), 'bad_structure', /tenant_config/],
      [JSON.stringify([1]), 'bad_structure', /object/],
      ['{"format_version": 1, ', 'not_json', /JSON/],
    ];
    for (const [text, problem, re] of cases) {
      await writeFile(file, text);
      await assert.rejects(
        loadTenantConfig(dir),
        (e: unknown) => e instanceof TenantConfigFileError && e.problem === problem && e.message.includes(file) && re.test(e.message),
        text,
      );
    }
    await rm(file);
    await assert.rejects(loadTenantConfig(dir), (e: unknown) => e instanceof TenantConfigFileError && e.problem === 'missing' && e.message.includes(file));
  });
});

test('docs/tenant-config.md documents every field', async () => {
  const doc = await readFile(new URL('../../docs/tenant-config.md', import.meta.url), 'utf8');
  for (const name of TENANT_CONFIG_FIELD_NAMES) assert.ok(doc.includes(`\`${name}\``), name);
});
