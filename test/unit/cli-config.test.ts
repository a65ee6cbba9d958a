/**
 * The control plane's state file (.strata/config.json) and endpoint.json: defaults (Neon's ports),
 * strict parsing (unknown / missing fields, versions, duplicate ports, ids), durable save + load,
 * the lock around read-modify-write, remote storage and name validation.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  ConfigError, NotInitializedError, buildConfig, checkName, configPath, initState, loadConfig, mutateConfig, parseConfig,
  parseRemoteStorage, serializeConfig, type StrataConfig,
} from '../../src/control/config.ts';
import { parseEndpointFile } from '../../src/control/endpoints.ts';
import { InvalidInputError, StrataError } from '../../src/util/errors.ts';

const T1 = '0123456789abcdef0123456789abcdef';
const TL1 = 'fedcba9876543210fedcba9876543210';
const TL2 = '00000000000000000000000000000002';

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'strata-cli-config-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function sample(): StrataConfig {
  return {
    version: 1,
    pg_bin: '/usr/lib/postgresql/15/bin',
    remote_storage: { kind: 's3', bucket: 'my-bucket', prefix: 'strata/dev' },
    broker: { listen: '127.0.0.1:50051', listen_http: '127.0.0.1:50052' },
    pageserver: { id: 1, listen_http: '127.0.0.1:9898', listen_pg: '127.0.0.1:64000' },
    safekeepers: [{ id: 1, listen_pg: '127.0.0.1:5454', listen_http: '127.0.0.1:7676' }],
    default_tenant: T1,
    branches: { [T1]: { main: TL1, before: TL2 } },
  };
}

function expectConfigError(text: string, why: RegExp): void {
  assert.throws(() => parseConfig(text), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.match(err.message, why);
    return true;
  });
}

test('defaults are Neon\'s ports: pageserver 9898/64000, safekeeper i 5454+i-1 / 7676+i-1, broker 50051', async () => {
  const c = await buildConfig({ safekeepers: 3, remoteStorage: null, pgBin: '/pg/bin', freePorts: false });
  assert.equal(c.version, 1);
  assert.deepEqual(c.pageserver, { id: 1, listen_http: '127.0.0.1:9898', listen_pg: '127.0.0.1:64000' });
  assert.equal(c.broker.listen, '127.0.0.1:50051');
  assert.deepEqual(c.safekeepers, [
    { id: 1, listen_pg: '127.0.0.1:5454', listen_http: '127.0.0.1:7676' },
    { id: 2, listen_pg: '127.0.0.1:5455', listen_http: '127.0.0.1:7677' },
    { id: 3, listen_pg: '127.0.0.1:5456', listen_http: '127.0.0.1:7678' },
  ]);
  assert.equal(c.default_tenant, null);
  assert.deepEqual(c.branches, {});
  const one = await buildConfig({ safekeepers: 1, remoteStorage: null, pgBin: '/pg/bin', freePorts: false });
  assert.equal(one.safekeepers.length, 1);
});

test('--free-ports gives distinct ports for every service', async () => {
  const c = await buildConfig({ safekeepers: 3, remoteStorage: null, pgBin: '/pg/bin', freePorts: true });
  const ports = [c.broker.listen, c.broker.listen_http, c.pageserver.listen_http, c.pageserver.listen_pg,
    ...c.safekeepers.flatMap((s) => [s.listen_pg, s.listen_http])].map((a) => Number(a.split(':')[1]));
  assert.equal(ports.length, 10);
  assert.equal(new Set(ports).size, 10);
  for (const p of ports) assert.ok(p > 0 && p < 65536);
});

test('the number of safekeepers must be at least 1', async () => {
  for (const n of [0, -1, 1.5, 16]) {
    await assert.rejects(buildConfig({ safekeepers: n, remoteStorage: null, pgBin: '/pg/bin', freePorts: false }), InvalidInputError);
  }
});

test('a config survives serialize → parse unchanged', () => {
  const c = sample();
  assert.deepEqual(parseConfig(serializeConfig(c)), c);
  const local = { ...sample(), remote_storage: { kind: 'local' as const, path: '/srv/layers' }, default_tenant: null };
  assert.deepEqual(parseConfig(serializeConfig(local)), local);
});

test('strict parsing: unknown, missing and mistyped fields, versions, ports, ids, names', () => {
  const mod = (f: (o: Record<string, any>) => void): string => {
    const o = JSON.parse(serializeConfig(sample())) as Record<string, any>;
    f(o);
    return JSON.stringify(o);
  };
  expectConfigError('{', /not valid JSON/);
  expectConfigError('[]', /expected an object/);
  expectConfigError(mod((o) => { o['extra'] = 1; }), /unknown field "extra"/);
  expectConfigError(mod((o) => { o['broker']['tls'] = true; }), /broker: unknown field "tls"/);
  expectConfigError(mod((o) => { o['safekeepers'][0]['az'] = 'x'; }), /safekeepers\[0\]: unknown field "az"/);
  expectConfigError(mod((o) => { delete o['pageserver']; }), /missing field "pageserver"/);
  expectConfigError(mod((o) => { delete o['pageserver']['listen_pg']; }), /missing field "listen_pg"/);
  expectConfigError(mod((o) => { o['version'] = 2; }), /unsupported version 2/);
  expectConfigError(mod((o) => { o['pg_bin'] = 'relative/bin'; }), /pg_bin: expected an absolute path/);
  expectConfigError(mod((o) => { o['pageserver']['listen_http'] = '127.0.0.1:0'; }), /port in 1\.\.65535/);
  expectConfigError(mod((o) => { o['pageserver']['listen_http'] = 'localhost'; }), /expected host:port/);
  expectConfigError(mod((o) => { o['pageserver']['listen_pg'] = '127.0.0.1:9898'; }), /port 9898 is also used by pageserver\.listen_http/);
  expectConfigError(mod((o) => { o['safekeepers'][0]['listen_pg'] = '127.0.0.1:50051'; }), /port 50051 is also used by broker\.listen/);
  expectConfigError(mod((o) => { o['safekeepers'] = []; }), /1\.\.15 safekeepers/);
  expectConfigError(mod((o) => { o['safekeepers'][0]['id'] = 2; }), /expected 1/);
  expectConfigError(mod((o) => { o['pageserver']['id'] = '1'; }), /pageserver\.id: expected an integer/);
  expectConfigError(mod((o) => { o['default_tenant'] = 'ABC'; }), /default_tenant: expected a 32-digit/);
  expectConfigError(mod((o) => { o['default_tenant'] = T1.toUpperCase(); }), /default_tenant/);
  expectConfigError(mod((o) => { o['branches'] = { nothex: {} }; }), /branches key "nothex"/);
  expectConfigError(mod((o) => { o['branches'][T1]['bad name'] = TL1; }), /invalid branch name "bad name"/);
  expectConfigError(mod((o) => { o['branches'][T1]['x'] = 'nope'; }), /branches\..*\.x: expected a 32-digit/);
  expectConfigError(mod((o) => { o['branches'][T1]['again'] = TL1; }), /has two names/);
  expectConfigError(mod((o) => { o['remote_storage'] = { kind: 'gcs', bucket: 'b' }; }), /"local" or "s3"/);
  expectConfigError(mod((o) => { o['remote_storage'] = { kind: 'local', path: 'rel' }; }), /absolute path/);
  expectConfigError(mod((o) => { o['remote_storage']['region'] = 'x'; }), /unknown field "region"/);
});

test('init writes the file durably and refuses a second init; load reads it back; no state is a clear error', async () => {
  await withTempDir(async (dir) => {
    const stateDir = path.join(dir, 'state');
    await assert.rejects(loadConfig(stateDir), (err: unknown) => err instanceof NotInitializedError && /strata init/.test(err.message));
    const c = sample();
    await initState(stateDir, c);
    assert.equal((await stat(stateDir)).mode & 0o777, 0o755);
    assert.deepEqual(await loadConfig(stateDir), c);
    assert.deepEqual(JSON.parse(await readFile(configPath(stateDir), 'utf8')), c);
    await assert.rejects(initState(stateDir, c), (err: unknown) => err instanceof StrataError && /already exists/.test(err.message));
    // A damaged file is an error naming the file and the field.
    await writeFile(configPath(stateDir), serializeConfig(c).replace('"branches"', '"branchez"'));
    await assert.rejects(loadConfig(stateDir), (err: unknown) => err instanceof ConfigError && err.message.includes(configPath(stateDir)) && /unknown field "branchez"/.test(err.message));
  });
});

test('mutateConfig serialises concurrent read-modify-write (no update is lost) and takes over a dead owner\'s lock', async () => {
  await withTempDir(async (dir) => {
    await initState(dir, { ...sample(), branches: { [T1]: {} } });
    const ids = Array.from({ length: 12 }, (_, i) => i.toString(16).padStart(32, '0'));
    await Promise.all(ids.map((id, i) => mutateConfig(dir, async (c) => {
      const m = c.branches[T1]!;
      await new Promise((r) => setTimeout(r, 2)); // yield between the read and the write
      m[`b${i}`] = id;
    })));
    const c = await loadConfig(dir);
    assert.equal(Object.keys(c.branches[T1]!).length, 12);
    // A lock left by a process that is gone (pid 2^22+1 is above the default pid_max) is taken over.
    await writeFile(path.join(dir, 'config.lock'), `${2 ** 22 + 1}\n`);
    await mutateConfig(dir, (cc) => { cc.default_tenant = null; });
    assert.equal((await loadConfig(dir)).default_tenant, null);
    // A failing mutation saves nothing.
    await assert.rejects(mutateConfig(dir, (cc) => { cc.default_tenant = T1; throw new Error('no'); }), /no/);
    assert.equal((await loadConfig(dir)).default_tenant, null);
    // An invalid result is never written.
    await assert.rejects(mutateConfig(dir, (cc) => { cc.default_tenant = 'x'; }), ConfigError);
    assert.equal((await loadConfig(dir)).default_tenant, null);
  });
});

test('remote storage: s3://bucket[/prefix] or a directory (created), anything else refused', async () => {
  assert.deepEqual(await parseRemoteStorage('s3://my-bucket/strata/dev/'), { kind: 's3', bucket: 'my-bucket', prefix: 'strata/dev' });
  assert.deepEqual(await parseRemoteStorage('s3://my.bucket'), { kind: 's3', bucket: 'my.bucket', prefix: '' });
  for (const bad of ['s3://', 's3://My_Bucket/x', 's3://ab', 'gs://bucket', 'http://x/y', '']) {
    await assert.rejects(parseRemoteStorage(bad), InvalidInputError, bad);
  }
  await withTempDir(async (dir) => {
    const rs = await parseRemoteStorage('layers/remote', dir);
    assert.deepEqual(rs, { kind: 'local', path: path.join(dir, 'layers', 'remote') });
    assert.ok((await stat(path.join(dir, 'layers', 'remote'))).isDirectory());
    await writeFile(path.join(dir, 'file'), 'x');
    await assert.rejects(parseRemoteStorage(path.join(dir, 'file')), /not a directory/);
  });
});

test('branch and endpoint names', () => {
  for (const ok of ['main', 'before', 'feature-1', 'v1.2_x', 'A'.repeat(63)]) assert.equal(checkName(ok, 'branch'), ok);
  for (const bad of ['', '-x', '.hidden', 'a b', 'a/b', '..', 'A'.repeat(64), 'é']) assert.throws(() => checkName(bad, 'endpoint'), InvalidInputError, bad);
});

test('endpoint.json is parsed strictly too', () => {
  const good = { version: 1, name: 'main', tenant_id: T1, timeline_id: TL1, port: 55432, start_lsn: '0/1500780', term: '3' };
  assert.deepEqual(parseEndpointFile(JSON.stringify(good), 'e.json'), good);
  assert.deepEqual(parseEndpointFile(JSON.stringify({ ...good, start_lsn: null, term: null }), 'e.json').start_lsn, null);
  for (const [bad, why] of [
    [{ ...good, extra: 1 }, /unknown field "extra"/],
    [{ ...good, version: 2 }, /unsupported version/],
    [{ ...good, port: 0 }, /invalid port/],
    [{ ...good, start_lsn: 'zz' }, /invalid start_lsn/],
    [{ ...good, tenant_id: 'x' }, /invalid tenant_id/],
    [{ ...good, term: 3 }, /invalid term/],
  ] as Array<[unknown, RegExp]>) {
    assert.throws(() => parseEndpointFile(JSON.stringify(bad), 'e.json'), why);
  }
  const { term: _t, ...missing } = good;
  assert.throws(() => parseEndpointFile(JSON.stringify(missing), 'e.json'), /missing field "term"/);
});
