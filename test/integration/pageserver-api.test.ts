/**
 * The pageserver management API over real HTTP, with real PostgreSQL (initdb for bootstrap, a
 * compute for commit timestamps): every path's success, and its refusals — 400 for unknown fields,
 * wrong types, bad ids, bad LSNs and bad timestamps; 404, 409, 406, 412 — each followed by a check
 * that nothing stored changed (the pageserver's work directory, file by file, and what the API
 * reports). Also: the served OpenAPI document equals docs/openapi.yaml, and `strata pageserver`
 * as a process (ready line, /v1/status, /metrics, SIGTERM → exit 0).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import SwaggerParser from '@apidevtools/swagger-parser';
import { parse as parseYaml } from 'yaml';
import { Endpoint } from '../../src/compute/endpoint.ts';
import { Pageserver } from '../../src/pageserver/pageserver.ts';
import { startPageserverHttp, type PageserverHttp } from '../../src/pageserver/http/server.ts';
import { formatLsn, parseLsn } from '../../src/postgres/lsn.ts';
import { psqlValue } from '../support/endpoint-target.ts';

const ROOT = path.resolve(import.meta.dirname, '..', '..');

/** Every file under dir with its size and content hash: "stored state" for the no-change checks. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string, depth: number): void => {
    assert.ok(depth < 20, 'directory tree too deep');
    for (const name of readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) {
        out.set(path.relative(dir, p) + '/', 'dir');
        walk(p, depth + 1);
      } else {
        out.set(path.relative(dir, p), `${st.size}:${createHash('sha256').update(readFileSync(p)).digest('hex')}`);
      }
    }
  };
  walk(dir, 0);
  return out;
}

describe('pageserver management API', { timeout: 600_000 }, () => {
  const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-api-'));
  chmodSync(workdir, 0o755);
  const psDir = path.join(workdir, 'pageserver');
  let ps: Pageserver;
  let api: PageserverHttp;
  let base = '';
  const endpoints: Endpoint[] = [];

  const call = async (method: string, url: string, body?: unknown): Promise<{ status: number; json: unknown; text: string }> => {
    const res = await fetch(base + url, {
      method,
      ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch { /* not JSON (metrics) */ }
    return { status: res.status, json, text };
  };

  /** Asserts a refusal: the status, a {msg} naming `mentions`, and no change on disk or in listings. */
  const refused = async (method: string, url: string, body: unknown, status: number, mentions: RegExp): Promise<void> => {
    await settle();
    const before = snapshot(psDir);
    const tenantsBefore = (await call('GET', '/v1/tenant')).text;
    const r = await call(method, url, body);
    assert.equal(r.status, status, `${method} ${url} ${JSON.stringify(body)}: expected ${status}, got ${r.status} ${r.text}`);
    const msg = (r.json as { msg?: unknown }).msg;
    assert.equal(typeof msg, 'string', `error body is {msg}: ${r.text}`);
    assert.match(msg as string, mentions, `${method} ${url}: message`);
    assert.deepEqual(Object.keys(r.json as object), ['msg'], 'error body has only msg');
    assert.deepEqual(snapshot(psDir), before, `${method} ${url}: stored state changed after a refused request`);
    assert.equal((await call('GET', '/v1/tenant')).text, tenantsBefore, 'tenant listing changed');
  };

  /** Lets background flushes finish so the snapshots compare a quiet directory. */
  const settle = async (): Promise<void> => {
    for (const t of ps.tenants.listTenants()) for (const tl of t.listTimelines()) await tl.flushTask?.catch(() => undefined);
  };

  before(async () => {
    ps = await Pageserver.start({
      workdir: psDir, pageCacheBytes: 16 << 20, blockCacheBytes: 16 << 20, waitLsnTimeoutMs: 20_000,
      listenPg: { host: '127.0.0.1', port: 0 }, walReceiverBackoffMs: { min: 50, max: 1000 },
    });
    api = await startPageserverHttp({ pageserver: ps, nodeId: 42, host: '127.0.0.1', port: 0, log: ps.log });
    base = `http://127.0.0.1:${api.port}`;
  });

  after(async () => {
    for (const ep of endpoints) await ep.kill().catch(() => undefined);
    await api?.close().catch(() => undefined);
    await ps?.shutdown({ flush: false }).catch(() => undefined);
    rmSync(workdir, { recursive: true, force: true });
  });

  test('status, unknown routes', async () => {
    assert.deepEqual((await call('GET', '/v1/status')).json, { id: 42 });
    const r = await call('GET', '/v1/nope');
    assert.equal(r.status, 404);
    assert.match((r.json as { msg: string }).msg, /no route GET \/v1\/nope/);
  });

  let tenantId = '';

  test('tenants: create, refusals, get, list, config', async () => {
    const fixedId = 'aa'.repeat(16);
    // Refusals first, while the directory is empty.
    await refused('POST', '/v1/tenant', { new_tenant_id: fixedId, bogus: 1 }, 400, /unknown field "bogus"/);
    await refused('POST', '/v1/tenant', { new_tenant_id: fixedId, checkpoint_distance: '15' }, 400, /checkpoint_distance/);
    await refused('POST', '/v1/tenant', { new_tenant_id: 'AA'.repeat(16) }, 400, /new_tenant_id/);
    await refused('POST', '/v1/tenant', { new_tenant_id: fixedId, gc_period: 'soon' }, 400, /gc_period/);
    await refused('POST', '/v1/tenant', '{"new_tenant_id": ', 400, /./);
    assert.deepEqual((await call('GET', '/v1/tenant')).json, []);

    const created = await call('POST', '/v1/tenant', { new_tenant_id: fixedId, checkpoint_distance: 4 << 20, gc_period: '0 s' });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.json, fixedId);
    tenantId = fixedId;
    await refused('POST', '/v1/tenant', { new_tenant_id: fixedId }, 409, /already exists/);

    const generated = await call('POST', '/v1/tenant', {});
    assert.equal(generated.status, 201);
    assert.match(generated.json as string, /^[0-9a-f]{32}$/);

    const info = await call('GET', `/v1/tenant/${fixedId}`);
    assert.equal(info.status, 200);
    const ti = info.json as { id: string; state: string; attachment_status: { slug: string }; timelines: number };
    assert.equal(ti.id, fixedId);
    assert.equal(ti.state, 'Active');
    assert.deepEqual(ti.attachment_status, { slug: 'attached' });
    assert.equal(ti.timelines, 0);
    const list = (await call('GET', '/v1/tenant')).json as { id: string }[];
    assert.deepEqual(list.map((t) => t.id).sort(), [fixedId, generated.json as string].sort());
    await refused('GET', `/v1/tenant/${'bb'.repeat(16)}`, undefined, 404, /not found/);
    await refused('GET', '/v1/tenant/xyz', undefined, 400, /tenant_id/);

    const conf = (await call('GET', `/v1/tenant/${fixedId}/config`)).json as { tenant_specific_overrides: Record<string, unknown>; effective_config: Record<string, unknown> };
    assert.deepEqual(conf.tenant_specific_overrides, { checkpoint_distance: 4 << 20, gc_period: '0s' }, 'durations come back in canonical form');
    assert.equal(conf.effective_config['checkpoint_distance'], 4 << 20);
    assert.equal(conf.effective_config['gc_horizon'], 64 << 20, 'defaults fill the effective config');

    await refused('PUT', '/v1/tenant/config', { tenant_id: fixedId, checkpoint_distance: 1 << 20, typo_key: 1 }, 400, /unknown field "typo_key"/);
    await refused('PUT', '/v1/tenant/config', { tenant_id: fixedId, checkpoint_distance: 0 }, 400, /checkpoint_distance/);
    await refused('PUT', '/v1/tenant/config', { tenant_id: fixedId, pitr_interval: 'a week' }, 400, /pitr_interval/);
    await refused('PUT', '/v1/tenant/config', { tenant_id: 'cc'.repeat(16), checkpoint_distance: 1 << 20 }, 404, /not found/);
    await refused('PUT', '/v1/tenant/config', { checkpoint_distance: 1 << 20 }, 400, /tenant_id/);
    const put = await call('PUT', '/v1/tenant/config', { tenant_id: fixedId, checkpoint_distance: 2 << 20, pitr_interval: '1 hr', redo_mode: 'images' });
    assert.equal(put.status, 200, put.text);
    const conf2 = (await call('GET', `/v1/tenant/${fixedId}/config`)).json as { tenant_specific_overrides: Record<string, unknown> };
    assert.deepEqual(conf2.tenant_specific_overrides, { checkpoint_distance: 2 << 20, pitr_interval: '1h', redo_mode: 'images' });
    assert.equal(ps.tenants.getTenant(fixedId).config.checkpointDistanceBytes, 2 << 20, 'applied live');

    // Delete the generated one: 202, then 404, and its directory is gone.
    const gen = generated.json as string;
    assert.equal((await call('DELETE', `/v1/tenant/${gen}`)).status, 202);
    assert.equal((await call('GET', `/v1/tenant/${gen}`)).status, 404);
    assert.ok(![...snapshot(psDir).keys()].some((k) => k.includes(gen)), 'the deleted tenant left no files');
    await refused('DELETE', `/v1/tenant/${gen}`, undefined, 404, /not found/);
  });

  let mainId = '';
  let branchId = '';

  test('timelines: bootstrap, idempotent create, branch, refusals', async () => {
    mainId = '11'.repeat(16);
    const tl = `/v1/tenant/${tenantId}/timeline`;
    await refused('POST', tl, { new_timeline_id: mainId, extra: true }, 400, /unknown field "extra"/);
    await refused('POST', tl, { new_timeline_id: mainId, pg_version: 14 }, 400, /pg_version/);
    await refused('POST', tl, { new_timeline_id: mainId, ancestor_start_lsn: '0/100' }, 400, /ancestor_timeline_id/);
    await refused('POST', `/v1/tenant/${'dd'.repeat(16)}/timeline`, { new_timeline_id: mainId }, 404, /not found/);

    const created = await call('POST', tl, { new_timeline_id: mainId, pg_version: 15 });
    assert.equal(created.status, 201, created.text);
    const info = created.json as Record<string, unknown>;
    assert.equal(info['timeline_id'], mainId);
    assert.equal(info['ancestor_timeline_id'], null);
    assert.equal(info['pg_version'], 15);
    assert.equal(info['state'], 'Active');
    assert.equal(info['wal_seg_size'], 16 << 20);
    assert.match(info['pg_system_identifier'] as string, /^[1-9][0-9]+$/);
    assert.ok(parseLsn(info['last_record_lsn'] as string) > 0n);
    assert.equal(info['wal_source'], 'none', 'no broker: nothing streams yet');

    const again = await call('POST', tl, { new_timeline_id: mainId });
    assert.equal(again.status, 200, 'the same parameters again: the existing timeline');
    assert.equal((again.json as { timeline_id: string }).timeline_id, mainId);
    await refused('POST', tl, { new_timeline_id: mainId, ancestor_timeline_id: 'ee'.repeat(16) }, 409, /already exists with other parameters/);

    const last = parseLsn(info['last_record_lsn'] as string);
    await refused('POST', tl, { ancestor_timeline_id: mainId, ancestor_start_lsn: 'zz/1' }, 400, /ancestor_start_lsn/);
    await refused('POST', tl, { ancestor_timeline_id: mainId, ancestor_start_lsn: 12 }, 400, /ancestor_start_lsn/);
    await refused('POST', tl, { ancestor_timeline_id: 'ee'.repeat(16) }, 404, /not found/);

    branchId = '22'.repeat(16);
    const br = await call('POST', tl, { new_timeline_id: branchId, ancestor_timeline_id: mainId, ancestor_start_lsn: formatLsn(last) });
    assert.equal(br.status, 201, br.text);
    const bi = br.json as Record<string, unknown>;
    assert.equal(bi['ancestor_timeline_id'], mainId);
    assert.equal(bi['ancestor_lsn'], formatLsn(last));
    assert.equal(bi['pg_system_identifier'], info['pg_system_identifier'], 'a branch has its parent\'s system id');
    const same = await call('POST', tl, { new_timeline_id: branchId, ancestor_timeline_id: mainId, ancestor_start_lsn: formatLsn(last) });
    assert.equal(same.status, 200);
    await refused('POST', tl, { new_timeline_id: branchId, ancestor_timeline_id: mainId, ancestor_start_lsn: formatLsn(last - 8n) }, 409, /other parameters/);

    const list = (await call('GET', tl)).json as { timeline_id: string }[];
    assert.deepEqual(list.map((t) => t.timeline_id).sort(), [mainId, branchId].sort());
    assert.equal((await call('GET', `${tl}/${mainId}`)).status, 200);
    await refused('GET', `${tl}/${'ff'.repeat(16)}`, undefined, 404, /not found/);
    await refused('GET', `${tl}/nothex`, undefined, 400, /timeline_id/);
    await refused('DELETE', `${tl}/${mainId}`, undefined, 412, /child branches/);
  });

  test('time travel: get_lsn_by_timestamp and get_timestamp_of_lsn from commit timestamps', async () => {
    const tlUrl = `/v1/tenant/${tenantId}/timeline/${mainId}`;
    await refused('GET', `${tlUrl}/get_lsn_by_timestamp?timestamp=yesterday`, undefined, 400, /RFC 3339/);
    await refused('GET', `${tlUrl}/get_lsn_by_timestamp`, undefined, 400, /timestamp/);
    await refused('GET', `${tlUrl}/get_lsn_by_timestamp?timestamp=2026-13-01T00:00:00Z`, undefined, 400, /timestamp/);
    await refused('GET', `${tlUrl}/get_timestamp_of_lsn?lsn=0/1/2`, undefined, 400, /lsn/);
    await refused('GET', `${tlUrl}/get_lsn_by_timestamp?timestamp=2026-01-01T00:00:00Z&junk=1`, undefined, 400, /junk/);

    // A compute on a new branch writes commits at known times.
    const writerId = '33'.repeat(16);
    assert.equal((await call('POST', `/v1/tenant/${tenantId}/timeline`, { new_timeline_id: writerId, ancestor_timeline_id: mainId })).status, 201);
    const ep = await Endpoint.start({ pageserver: ps, tenantId, timelineId: writerId, dir: path.join(workdir, 'ep1'), settings: { fsync: false } });
    endpoints.push(ep);
    await psqlValue(ep.port, 'CREATE TABLE t (x int)');
    await psqlValue(ep.port, 'INSERT INTO t VALUES (1)');
    await new Promise((r) => setTimeout(r, 300));
    const between = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 300));
    await psqlValue(ep.port, 'INSERT INTO t VALUES (2)');
    const endLsn = parseLsn(await psqlValue(ep.port, 'SELECT pg_current_wal_insert_lsn()'));
    await ps.getTimeline(tenantId, writerId).waitLsn(endLsn, 30_000);

    const wUrl = `/v1/tenant/${tenantId}/timeline/${writerId}`;
    const present = await call('GET', `${wUrl}/get_lsn_by_timestamp?timestamp=${encodeURIComponent(between)}`);
    assert.equal(present.status, 200, present.text);
    const p = present.json as { lsn: string; kind: string };
    assert.equal(p.kind, 'present');
    const future = (await call('GET', `${wUrl}/get_lsn_by_timestamp?timestamp=2999-01-01T00:00:00Z`)).json as { kind: string };
    assert.equal(future.kind, 'future');
    const past = (await call('GET', `${wUrl}/get_lsn_by_timestamp?timestamp=2001-01-01T00:00:00Z`)).json as { kind: string };
    assert.ok(past.kind === 'past' || past.kind === 'nodata', `a time before every commit: ${past.kind}`);

    const ts = await call('GET', `${wUrl}/get_timestamp_of_lsn?lsn=${formatLsn(endLsn)}`);
    assert.equal(ts.status, 200, ts.text);
    const commitTime = Date.parse(ts.json as string);
    assert.ok(commitTime > Date.parse(between) && commitTime <= Date.now(), `the newest commit (${String(ts.json)}) is after ${between}`);
    const atBranch = await call('GET', `${wUrl}/get_timestamp_of_lsn?lsn=${formatLsn(parseLsn(p.lsn))}`);
    assert.equal(atBranch.status, 200);
    assert.ok(Date.parse(atBranch.json as string) < Date.parse(between), `at the found LSN the newest commit (${String(atBranch.json)}) is before ${between}`);
    await ep.stop();
  });

  test('maintenance: checkpoint, compact, do_gc, and 406 below the GC cutoff', async () => {
    const tlUrl = `/v1/tenant/${tenantId}/timeline/${mainId}`;
    const cp = await call('PUT', `${tlUrl}/checkpoint`);
    assert.equal(cp.status, 200, cp.text);
    const info = (await call('GET', tlUrl)).json as { disk_consistent_lsn: string; last_record_lsn: string; latest_gc_cutoff_lsn: string };
    assert.equal(info.disk_consistent_lsn, info.last_record_lsn, 'after a checkpoint everything is on disk');
    const cmp = await call('PUT', `${tlUrl}/compact`);
    assert.equal(cmp.status, 200, cmp.text);
    assert.equal(typeof (cmp.json as { image_layers_created: number }).image_layers_created, 'number');

    await refused('PUT', `${tlUrl}/do_gc`, { gc_horizon: -1 }, 400, /gc_horizon/);
    await refused('PUT', `${tlUrl}/do_gc`, { gc_horizont: 0 }, 400, /unknown field "gc_horizont"/);
    await refused('PUT', `/v1/tenant/${tenantId}/timeline/${'ab'.repeat(16)}/do_gc`, {}, 404, /not found/);
    // With a PITR window, a timeline without commit timestamps keeps its cutoff (Neon's rule); without one, gc_horizon decides.
    const kept = await call('PUT', `${tlUrl}/do_gc`, { gc_horizon: 0 });
    assert.equal(kept.status, 200, kept.text);
    assert.equal((kept.json as { cutoff_moved: boolean; pitr_lookup: string }).cutoff_moved, false, 'pitr_interval 1h and no commit timestamps: nothing moves');
    assert.equal((await call('PUT', '/v1/tenant/config', { tenant_id: tenantId, pitr_interval: '0s' })).status, 200);
    const gc = await call('PUT', `${tlUrl}/do_gc`, { gc_horizon: 0 });
    assert.equal(gc.status, 200, gc.text);
    const cutoff = parseLsn((gc.json as { latest_gc_cutoff_lsn: string }).latest_gc_cutoff_lsn);
    assert.ok(cutoff > parseLsn(info.latest_gc_cutoff_lsn), 'the cutoff moved forward');
    assert.equal(formatLsn(cutoff), ((await call('GET', tlUrl)).json as { latest_gc_cutoff_lsn: string }).latest_gc_cutoff_lsn);

    await refused('POST', `/v1/tenant/${tenantId}/timeline`, { ancestor_timeline_id: mainId, ancestor_start_lsn: formatLsn(cutoff - 8n) }, 406, /below the GC cutoff/);
    const atCutoff = await call('POST', `/v1/tenant/${tenantId}/timeline`, { ancestor_timeline_id: mainId, ancestor_start_lsn: formatLsn(cutoff) });
    assert.equal(atCutoff.status, 201, 'a branch at the cutoff itself is allowed');
    await call('DELETE', `/v1/tenant/${tenantId}/timeline/${(atCutoff.json as { timeline_id: string }).timeline_id}`);
  });

  test('timeline delete: children first, then the parent; 404 afterwards', async () => {
    const tl = `/v1/tenant/${tenantId}/timeline`;
    for (const child of ps.tenants.getTenant(tenantId).listTimelines().filter((t) => t.ancestor !== null)) {
      assert.equal((await call('DELETE', `${tl}/${child.timelineId}`)).status, 202);
    }
    assert.equal((await call('DELETE', `${tl}/${mainId}`)).status, 202);
    await refused('DELETE', `${tl}/${mainId}`, undefined, 404, /not found/);
    assert.deepEqual((await call('GET', tl)).json, []);
    assert.ok(![...snapshot(psDir).keys()].some((k) => k.includes(mainId)), 'no files of the deleted timeline remain');
  });

  test('metrics and the OpenAPI document', async () => {
    const m = await call('GET', '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.text, /^# HELP pageserver_/m);
    const served = (await call('GET', '/v1/openapi.json')).json as Record<string, unknown>;
    const committedText = readFileSync(path.join(ROOT, 'docs', 'openapi.yaml'), 'utf8');
    const committed = parseYaml(committedText) as Record<string, unknown>;
    assert.deepEqual(served, committed, 'docs/openapi.yaml differs from the served document: run `npm run openapi` and commit the result');
    const paths = Object.keys(served['paths'] as object);
    for (const p of ['/v1/status', '/v1/tenant', '/v1/tenant/{tenant_id}', '/v1/tenant/config', '/v1/tenant/{tenant_id}/config', '/v1/tenant/{tenant_id}/timeline',
      '/v1/tenant/{tenant_id}/timeline/{timeline_id}', '/v1/tenant/{tenant_id}/timeline/{timeline_id}/get_lsn_by_timestamp',
      '/v1/tenant/{tenant_id}/timeline/{timeline_id}/get_timestamp_of_lsn', '/v1/tenant/{tenant_id}/timeline/{timeline_id}/do_gc']) {
      assert.ok(paths.includes(p), `the document has ${p}`);
    }
    await SwaggerParser.validate(structuredClone(committed) as never);
  });
});

describe('strata pageserver (the process)', { timeout: 120_000 }, () => {
  test('prints where it listens, answers /v1/status and /metrics, exits 0 on SIGTERM', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'strata-psproc-'));
    const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'strata.js'), 'pageserver', '--id', '7', '--workdir', dir,
      '--listen-http', '127.0.0.1:0', '--listen-pg', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, STRATA_LOG: 'warn' } });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      let out = '';
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ready line in 30 s: ${out}`)), 30_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /HTTP on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
          if (m !== null) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        });
        child.once('exit', () => reject(new Error(`exited early: ${out}`)));
      });
      assert.deepEqual(await (await fetch(`${url}/v1/status`)).json(), { id: 7 });
      assert.match(await (await fetch(`${url}/metrics`)).text(), /pageserver_tenant_states_count/);
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
