/**
 * The safekeeper's HTTP API (src/safekeeper/http.ts), strictly, against an in-process Safekeeper
 * with no broker and no PostgreSQL.
 *
 * What is checked is the contract a client (election.ts, peers, operators) relies on: status codes,
 * JSON error bodies that name what was wrong, idempotent create, terms that only go up and survive a
 * restart, the election rules (history must end with the new term, stale terms refused), the peer
 * WAL endpoint's term check, delete, and a damaged control file refusing to start (without touching
 * the file). Expected values come from what the test sent, never from the code under test. Invalid
 * requests must also leave nothing behind on disk.
 *
 * Every safekeeper started here is shut down in teardown, also when an assertion fails.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { freePort } from '../../src/compute/postgresprocess.ts';
import { Safekeeper } from '../../src/safekeeper/safekeeper.ts';
import { Logger } from '../../src/util/log.ts';
import type { LogFields, LogLevel } from '../../src/util/log.ts';

const SEG = 16 * 1024 * 1024;
const SYSTEM_ID = '7412345678901234567';
const START_LSN = '0/16B3748';

const workdir = mkdtempSync(path.join(os.tmpdir(), 'strata-sk-api-'));
after(() => {
  if (process.env['STRATA_KEEP_TMP'] !== '1') rmSync(workdir, { recursive: true, force: true });
});

/** Keeps log lines in memory (quiet output); child loggers share the sink. */
class QuietLogger extends Logger {
  readonly lines: { level: LogLevel; message: string }[];

  constructor(lines: { level: LogLevel; message: string }[] = [], fields: LogFields = {}) {
    super(fields);
    this.lines = lines;
  }

  override child(fields: LogFields): Logger {
    return new QuietLogger(this.lines, { ...this.fields, ...fields });
  }

  override log(level: LogLevel, message: string): void {
    if (this.lines.length < 10_000) this.lines.push({ level, message });
  }
}

function randomId(): string {
  return randomBytes(16).toString('hex');
}

let dirCounter = 0;
function freshDataDir(): string {
  return path.join(workdir, `sk${++dirCounter}`);
}

/** Starts a safekeeper on `dataDir` (id 1, ports chosen by the OS); shut down in teardown. */
async function startSk(t: TestContext, dataDir: string): Promise<Safekeeper> {
  const sk = await Safekeeper.start({
    id: 1n, dataDir, listenPg: { host: '127.0.0.1', port: 0 }, listenHttp: { host: '127.0.0.1', port: 0 }, brokerEndpoint: null,
    log: new QuietLogger(),
  });
  t.after(() => sk.shutdown());
  return sk;
}

interface ApiResult {
  status: number;
  contentType: string;
  headers: Headers;
  text: string;
  json: unknown;
}

async function api(sk: Safekeeper, method: string, urlPath: string, body?: unknown): Promise<ApiResult> {
  const init: RequestInit = { method, signal: AbortSignal.timeout(10_000) };
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
    init.headers = { 'content-type': 'application/json' };
  }
  const res = await fetch(`http://127.0.0.1:${sk.httpPort}${urlPath}`, init);
  const text = await res.text();
  const contentType = res.headers.get('content-type') ?? '';
  let json: unknown = null;
  if (contentType.startsWith('application/json')) json = JSON.parse(text);
  return { status: res.status, contentType, headers: res.headers, text, json };
}

/** An error response: the status, a JSON {code, msg} body, and the msg matching `msg`. */
function assertError(r: ApiResult, status: number, msg: RegExp, what: string): void {
  assert.equal(r.status, status, `${what}: HTTP status (body: ${r.text})`);
  assert.match(r.contentType, /^application\/json/, `${what}: the error body is JSON`);
  const b = r.json as { code?: unknown; msg?: unknown };
  assert.equal(typeof b.code, 'string', `${what}: the error has a code (body: ${r.text})`);
  assert.ok((b.code as string).length > 0, `${what}: the error code is not empty`);
  assert.equal(typeof b.msg, 'string', `${what}: the error has a msg (body: ${r.text})`);
  assert.match(b.msg as string, msg, `${what}: the message says what is wrong`);
}

interface CreateBody {
  tenant_id: string;
  timeline_id: string;
  system_id: string;
  pg_version: number;
  wal_seg_size: number;
  start_lsn: string;
  members: { id: number; pg_connstr: string; http_connstr: string }[];
}

function createBody(over: Partial<Record<keyof CreateBody, unknown>> = {}): Record<string, unknown> {
  const base: CreateBody = {
    tenant_id: randomId(), timeline_id: randomId(), system_id: SYSTEM_ID, pg_version: 150018, wal_seg_size: SEG, start_lsn: START_LSN,
    members: [{ id: 1, pg_connstr: '127.0.0.1:1', http_connstr: 'http://127.0.0.1:2' }],
  };
  return { ...base, ...over };
}

/** The entries under the data directory other than safekeeper.id (what a create left behind). */
async function dataDirContents(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(dataDir)) {
    if (name === 'safekeeper.id') continue;
    out.push(name);
    const p = path.join(dataDir, name);
    if ((await stat(p)).isDirectory()) for (const sub of await readdir(p)) out.push(`${name}/${sub}`);
  }
  return out.sort();
}

function tlPath(tenant: string, timeline: string, suffix = ''): string {
  return `/v1/tenant/${tenant}/timeline/${timeline}${suffix}`;
}

// ---------------------------------------------------------------------------------------------

test('GET /v1/status, unknown routes are 404 JSON', async (t) => {
  const sk = await startSk(t, freshDataDir());
  const st = await api(sk, 'GET', '/v1/status');
  assert.equal(st.status, 200);
  assert.match(st.contentType, /^application\/json/);
  assert.deepEqual(st.json, { id: 1, timelines: 0, availability_zone: null });

  for (const [method, url] of [['GET', '/v1/nope'], ['GET', '/'], ['POST', '/v1/status'], ['PUT', '/v1/tenant/timeline'], ['GET', '/v2/status']] as const) {
    const r = await api(sk, method, url);
    assertError(r, 404, /./, `${method} ${url}`);
    assert.equal((r.json as { code: string }).code, 'not_found', `${method} ${url}: code`);
  }
  // A well-formed but unknown timeline is 404 too.
  const missing = await api(sk, 'GET', tlPath(randomId(), randomId()));
  assertError(missing, 404, /./, 'unknown timeline');
});

test('POST /v1/tenant/timeline: create 201, repeat 200, another system id 409; status fields', async (t) => {
  const dataDir = freshDataDir();
  const sk = await startSk(t, dataDir);
  const body = createBody();
  const tenant = body['tenant_id'] as string;
  const timeline = body['timeline_id'] as string;

  const c1 = await api(sk, 'POST', '/v1/tenant/timeline', body);
  assert.equal(c1.status, 201, c1.text);
  assert.equal((c1.json as { timeline_id: string }).timeline_id, timeline);
  const control = path.join(dataDir, tenant, timeline, 'safekeeper.control');
  assert.ok((await stat(control)).isFile(), 'the control file exists after create');

  // Repeat: 200, same timeline (a different start LSN is "where the pageserver is now": ignored).
  const c2 = await api(sk, 'POST', '/v1/tenant/timeline', { ...body, start_lsn: '0/2000028' });
  assert.equal(c2.status, 200, c2.text);
  assert.equal((c2.json as { timeline_start_lsn: string }).timeline_start_lsn, START_LSN, 'a repeated create keeps the original start');

  // Another system id for the same timeline: a different database, refused.
  const c3 = await api(sk, 'POST', '/v1/tenant/timeline', { ...body, system_id: '7412345678901234568' });
  assertError(c3, 409, /./, 'conflicting system id');
  // Another segment size likewise.
  const c4 = await api(sk, 'POST', '/v1/tenant/timeline', { ...body, wal_seg_size: 2 * SEG });
  assertError(c4, 409, /./, 'conflicting segment size');

  const st = await api(sk, 'GET', tlPath(tenant, timeline));
  assert.equal(st.status, 200, st.text);
  const s = st.json as Record<string, unknown>;
  assert.equal(s['tenant_id'], tenant);
  assert.equal(s['timeline_id'], timeline);
  assert.equal(s['system_id'], SYSTEM_ID, 'the system id is kept exactly (a u64 as decimal text)');
  assert.equal(s['pg_version'], 150018);
  assert.equal(s['wal_seg_size'], SEG);
  assert.deepEqual(s['acceptor_state'], { term: 0, epoch: 0, term_history: [] });
  for (const f of ['timeline_start_lsn', 'local_start_lsn', 'flush_lsn', 'write_lsn', 'first_lsn', 'commit_lsn']) {
    assert.equal(s[f], START_LSN, `${f} of a new timeline is its start LSN`);
  }
  assert.equal(s['remote_consistent_lsn'], '0/0');
  assert.equal(s['compute'], null);
  assert.deepEqual(s['members'], body['members']);
  assert.deepEqual(s['peers'], []);

  const all = await api(sk, 'GET', '/v1/status');
  assert.equal((all.json as { timelines: number }).timelines, 1);

  // Upper-case ids name the same timeline: a create with them must not make a second one.
  const upper = await api(sk, 'POST', '/v1/tenant/timeline', { ...body, tenant_id: tenant.toUpperCase() });
  assert.ok(upper.status === 200 || upper.status === 400, `upper-case ids: 200 (the same timeline) or 400, got ${upper.status} ${upper.text}`);
  assert.deepEqual(await dataDirContents(dataDir), [tenant, `${tenant}/${timeline}`].sort());
});

test('POST /v1/tenant/timeline: invalid bodies are 400 naming the problem, and nothing is created', async (t) => {
  const dataDir = freshDataDir();
  const sk = await startSk(t, dataDir);
  const cases: { what: string; body: unknown; msg: RegExp }[] = [
    { what: 'missing field', body: (() => { const b = createBody(); delete b['start_lsn']; return b; })(), msg: /start_lsn/ },
    { what: 'string for an integer (pg_version)', body: createBody({ pg_version: '150018' }), msg: /pg_version/ },
    { what: 'string for an integer (wal_seg_size)', body: createBody({ wal_seg_size: String(SEG) }), msg: /wal_seg_size/ },
    { what: 'fraction for an integer', body: createBody({ pg_version: 150018.5 }), msg: /pg_version/ },
    { what: 'integer for an LSN', body: createBody({ start_lsn: 23803720 }), msg: /start_lsn/ },
    { what: 'bad LSN text', body: createBody({ start_lsn: '0/ZZ' }), msg: /start_lsn/ },
    { what: 'LSN without a slash', body: createBody({ start_lsn: '16B3748' }), msg: /start_lsn/ },
    { what: 'LSN half too long', body: createBody({ start_lsn: '123456789/0' }), msg: /start_lsn/ },
    { what: 'bad tenant id', body: createBody({ tenant_id: 'not-a-tenant' }), msg: /tenant_id/ },
    { what: 'short timeline id', body: createBody({ timeline_id: 'abcd' }), msg: /timeline_id/ },
    { what: 'integer system id', body: createBody({ system_id: 7412345678 }), msg: /system_id/ },
    { what: 'non-numeric system id', body: createBody({ system_id: '12ab' }), msg: /system_id/ },
    { what: 'pg_version of another major', body: createBody({ pg_version: 140000 }), msg: /pg_version/ },
    { what: 'wal_seg_size not a power of two', body: createBody({ wal_seg_size: 3 * 1024 * 1024 }), msg: /wal_seg_size.*power of two|power of two.*wal_seg_size/ },
    { what: 'wal_seg_size too small', body: createBody({ wal_seg_size: 4096 }), msg: /wal_seg_size/ },
    { what: 'members not an array', body: createBody({ members: {} }), msg: /members/ },
    { what: 'member id as a string', body: createBody({ members: [{ id: '1', pg_connstr: 'a:1', http_connstr: 'http://a:2' }] }), msg: /id/ },
    { what: 'members without this safekeeper', body: createBody({ members: [{ id: 2, pg_connstr: 'a:1', http_connstr: 'http://a:2' }] }), msg: /member/ },
    { what: 'body not an object', body: [1, 2], msg: /./ },
    { what: 'body not JSON', body: '{"tenant_id":', msg: /./ },
  ];
  const failures: string[] = [];
  for (const c of cases) {
    const r = await api(sk, 'POST', '/v1/tenant/timeline', c.body);
    try {
      assertError(r, 400, c.msg, c.what);
    } catch (err) {
      failures.push(`${(err as Error).message.split('\n')[0]} — got ${r.status} ${r.text}`);
    }
  }
  assert.deepEqual(failures, [], 'every invalid create is a 400 whose message names the problem');
  assert.deepEqual(await dataDirContents(dataDir), [], 'nothing was created on disk');
  assert.equal((((await api(sk, 'GET', '/v1/status')).json) as { timelines: number }).timelines, 0);
});

test('POST /v1/tenant/timeline: an unaligned start LSN is a 400 and leaves nothing on disk', async (t) => {
  // WAL records start at 8-byte aligned positions, and the control file refuses anything else.
  const dataDir = freshDataDir();
  const sk = await startSk(t, dataDir);
  const r = await api(sk, 'POST', '/v1/tenant/timeline', createBody({ start_lsn: '0/16B3749' }));
  const left = await dataDirContents(dataDir);
  const problems: string[] = [];
  try {
    assertError(r, 400, /start_lsn|0\/16B3749/, 'unaligned start LSN');
  } catch (err) {
    problems.push(`${(err as Error).message.split('\n')[0]}`);
  }
  if (left.length > 0) problems.push(`left on disk: ${left.join(', ')}`);
  assert.deepEqual(problems, [], 'an unaligned start LSN is refused as invalid input, leaving nothing behind');
});

test('unknown fields are 400 with a message naming the field', async (t) => {
  // http.ts promises "unknown fields ... are 400 with a message naming the field".
  const dataDir = freshDataDir();
  const sk = await startSk(t, dataDir);
  const body = createBody();
  const tenant = body['tenant_id'] as string;
  const timeline = body['timeline_id'] as string;
  const failures: string[] = [];
  const check = async (what: string, r: Promise<ApiResult>, field: string): Promise<void> => {
    const res = await r;
    try {
      assertError(res, 400, new RegExp(field), what);
    } catch (err) {
      failures.push(`${(err as Error).message.split('\n')[0]} — got ${res.status} ${res.text}`);
    }
  };
  await check('create: unknown top-level field', api(sk, 'POST', '/v1/tenant/timeline', { ...createBody(), bogus_field: 1 }), 'bogus_field');
  await check('create: unknown member field', api(sk, 'POST', '/v1/tenant/timeline',
    createBody({ members: [{ id: 1, pg_connstr: 'a:1', http_connstr: 'http://a:2', zone: 'x' }] })), 'zone');
  assert.deepEqual(await dataDirContents(dataDir), [], 'nothing was created on disk');
  assert.equal((await api(sk, 'POST', '/v1/tenant/timeline', body)).status, 201);
  await check('vote: unknown field', api(sk, 'POST', tlPath(tenant, timeline, '/vote'), { term: 4, extra_field: true }), 'extra_field');
  await check('elected: unknown field', api(sk, 'POST', tlPath(tenant, timeline, '/elected'), {
    term: 5, start_lsn: START_LSN, term_history: [{ term: 5, start_lsn: START_LSN }], donor: null, bogus_key: 1,
    compute: { host: '127.0.0.1', port: 1, user: 'postgres', slot_name: 'sk_1', application_name: 'sk_1' },
  }), 'bogus_key');
  await check('wal: unknown query parameter', api(sk, 'GET', `${tlPath(tenant, timeline, '/wal')}?start_lsn=${START_LSN}&term=5&bogus_param=1`), 'bogus_param');
  assert.deepEqual(failures, [], 'every unknown field is named in the 400 message');
  const st = (await api(sk, 'GET', tlPath(tenant, timeline))).json as { acceptor_state: { term: number } };
  assert.equal(st.acceptor_state.term, 0, 'a refused vote changed nothing');
});

test('bad ids in the path are 400', async (t) => {
  const sk = await startSk(t, freshDataDir());
  for (const [method, url, body] of [
    ['GET', tlPath('xyz', randomId()), undefined],
    ['GET', tlPath(randomId(), randomId().slice(1)), undefined],
    ['DELETE', tlPath('g'.repeat(32), randomId()), undefined],
    ['POST', tlPath('xyz', randomId(), '/vote'), { term: 1 }],
  ] as const) {
    const r = await api(sk, method, url, body);
    assertError(r, 400, /tenant_id|timeline_id/, `${method} ${url}`);
  }
});

test('vote: only a higher term is granted, and it survives a restart', async (t) => {
  const dataDir = freshDataDir();
  let sk = await startSk(t, dataDir);
  const body = createBody();
  const tenant = body['tenant_id'] as string;
  const timeline = body['timeline_id'] as string;
  assert.equal((await api(sk, 'POST', '/v1/tenant/timeline', body)).status, 201);
  const vote = (term: unknown) => api(sk, 'POST', tlPath(tenant, timeline, '/vote'), { term });

  const v1 = await vote(3);
  assert.equal(v1.status, 200, v1.text);
  assert.deepEqual(v1.json, { term: 3, vote_given: true, flush_lsn: START_LSN, last_log_term: 0, term_history: [], timeline_start_lsn: START_LSN });

  const same = await vote(3);
  assert.equal(same.status, 200);
  assert.equal((same.json as { vote_given: boolean }).vote_given, false, 'the same term is not granted twice');
  assert.equal((same.json as { term: number }).term, 3);
  const lower = await vote(2);
  assert.equal(lower.status, 200);
  assert.equal((lower.json as { vote_given: boolean }).vote_given, false, 'a lower term is refused');
  assert.equal((lower.json as { term: number }).term, 3, 'the answer carries our (higher) term');

  // Invalid vote bodies.
  assertError(await vote('4'), 400, /term/, 'term as a string');
  assertError(await vote(-1), 400, /term/, 'negative term');
  assertError(await vote(1.5), 400, /term/, 'fractional term');
  assertError(await vote(2 ** 60), 400, /term/, 'term beyond 2^53');
  assertError(await api(sk, 'POST', tlPath(randomId(), randomId(), '/vote'), { term: 4 }), 404, /./, 'vote on an unknown timeline');

  const v5 = await vote(5);
  assert.equal((v5.json as { vote_given: boolean }).vote_given, true);

  // Restart: the term survives.
  await sk.shutdown();
  sk = await startSk(t, dataDir);
  const st = await api(sk, 'GET', tlPath(tenant, timeline));
  assert.equal(st.status, 200, st.text);
  assert.equal((st.json as { acceptor_state: { term: number } }).acceptor_state.term, 5, 'the voted term was persisted');
  const again = await vote(5);
  assert.equal((again.json as { vote_given: boolean }).vote_given, false, 'after a restart the same term is still not granted again');
  const v4 = await vote(4);
  assert.equal((v4.json as { vote_given: boolean }).vote_given, false);
  assert.equal((v4.json as { term: number }).term, 5);
});

test('elected: history must end with (term, start); stale terms 409; the peer WAL endpoint checks the term', async (t) => {
  const dataDir = freshDataDir();
  const sk = await startSk(t, dataDir);
  const body = createBody();
  const tenant = body['tenant_id'] as string;
  const timeline = body['timeline_id'] as string;
  assert.equal((await api(sk, 'POST', '/v1/tenant/timeline', body)).status, 201);
  assert.equal(((await api(sk, 'POST', tlPath(tenant, timeline, '/vote'), { term: 5 })).json as { vote_given: boolean }).vote_given, true);
  // A compute address where nothing listens: the safekeeper's puller just retries.
  const compute = { host: '127.0.0.1', port: await freePort(), user: 'postgres', slot_name: 'sk_1', application_name: 'sk_1' };
  const elected = (b: Record<string, unknown>) => api(sk, 'POST', tlPath(tenant, timeline, '/elected'), { compute, donor: null, ...b });

  assertError(await elected({ term: 5, start_lsn: START_LSN, term_history: [] }), 400, /history/, 'empty history');
  assertError(await elected({ term: 5, start_lsn: START_LSN, term_history: [{ term: 4, start_lsn: START_LSN }] }), 400, /history/, 'history ends in another term');
  assertError(await elected({ term: 5, start_lsn: START_LSN, term_history: [{ term: 5, start_lsn: '0/16B3750' }] }), 400, /history/, 'history ends at another LSN');
  assertError(await elected({ term: 5, start_lsn: START_LSN, term_history: [{ term: 5, start_lsn: START_LSN }, { term: 4, start_lsn: START_LSN }] }),
    400, /history|ascending/, 'history not ascending');
  assertError(await elected({ term: 5, start_lsn: 5, term_history: [{ term: 5, start_lsn: START_LSN }] }), 400, /start_lsn/, 'integer for an LSN');
  assertError(await api(sk, 'POST', tlPath(tenant, timeline, '/elected'),
    { term: 5, start_lsn: START_LSN, term_history: [{ term: 5, start_lsn: START_LSN }], compute: { ...compute, slot_name: 'Bad Slot' }, donor: null }),
  400, /slot_name/, 'bad slot name');
  // A term older than the one voted for.
  assertError(await elected({ term: 3, start_lsn: START_LSN, term_history: [{ term: 3, start_lsn: START_LSN }] }), 409, /./, 'stale term');
  let st = (await api(sk, 'GET', tlPath(tenant, timeline))).json as { acceptor_state: { term: number; epoch: number; term_history: unknown[] }; compute: unknown };
  assert.deepEqual(st.acceptor_state, { term: 5, epoch: 0, term_history: [] }, 'refused elections changed nothing');
  assert.equal(st.compute, null);

  // The valid election.
  const ok = await elected({ term: 5, start_lsn: START_LSN, term_history: [{ term: 5, start_lsn: START_LSN }] });
  assert.equal(ok.status, 200, ok.text);
  assert.deepEqual(ok.json, { term: 5, flush_lsn: START_LSN });
  st = (await api(sk, 'GET', tlPath(tenant, timeline))).json as typeof st;
  assert.deepEqual(st.acceptor_state, { term: 5, epoch: 5, term_history: [{ term: 5, start_lsn: START_LSN }] });
  assert.deepEqual(st.compute, compute);

  // Peer WAL: only in the accepted term.
  const wal = (q: string) => api(sk, 'GET', `${tlPath(tenant, timeline, '/wal')}?${q}`);
  const good = await wal(`start_lsn=${START_LSN}&term=5`);
  assert.equal(good.status, 200, good.text);
  assert.equal(good.text.length, 0, 'no WAL yet');
  assert.equal(good.headers.get('x-strata-flush-lsn'), START_LSN);
  assertError(await wal(`start_lsn=${START_LSN}&term=4`), 409, /term/, 'older term');
  assertError(await wal(`start_lsn=${START_LSN}&term=6`), 409, /term/, 'newer term');
  assertError(await wal(`start_lsn=0/ZZ&term=5`), 400, /start_lsn/, 'bad LSN in the query');
  assertError(await wal(`start_lsn=${START_LSN}`), 400, /term/, 'missing term');

  // A later vote makes the accepted term stale for the WAL endpoint too.
  assert.equal(((await api(sk, 'POST', tlPath(tenant, timeline, '/vote'), { term: 6 })).json as { vote_given: boolean }).vote_given, true);
  assertError(await wal(`start_lsn=${START_LSN}&term=5`), 409, /term/, 'term 5 after voting for 6');
});

test('DELETE: removes the directory once, then reports it did not exist', async (t) => {
  const dataDir = freshDataDir();
  const sk = await startSk(t, dataDir);
  const body = createBody();
  const tenant = body['tenant_id'] as string;
  const timeline = body['timeline_id'] as string;
  assert.equal((await api(sk, 'POST', '/v1/tenant/timeline', body)).status, 201);
  const dir = path.join(dataDir, tenant, timeline);
  assert.ok((await stat(dir)).isDirectory());

  const d1 = await api(sk, 'DELETE', tlPath(tenant, timeline));
  assert.equal(d1.status, 200, d1.text);
  assert.deepEqual(d1.json, { dir_existed: true, was_active: false });
  await assert.rejects(stat(dir), { code: 'ENOENT' }, 'the timeline directory is gone');
  assert.ok(!(await dataDirContents(dataDir)).some((e) => e.includes(timeline)), 'nothing of the timeline is left');
  assertError(await api(sk, 'GET', tlPath(tenant, timeline)), 404, /./, 'status after delete');

  const d2 = await api(sk, 'DELETE', tlPath(tenant, timeline));
  assert.equal(d2.status, 200, d2.text);
  assert.deepEqual(d2.json, { dir_existed: false, was_active: false });
  assert.equal((((await api(sk, 'GET', '/v1/status')).json) as { timelines: number }).timelines, 0);
  // The same ids can be created again afterwards.
  assert.equal((await api(sk, 'POST', '/v1/tenant/timeline', body)).status, 201);
});

test('a corrupted control file makes Safekeeper.start fail naming the file, and leaves it untouched', async (t) => {
  const dataDir = freshDataDir();
  const sk = await startSk(t, dataDir);
  const body = createBody();
  const tenant = body['tenant_id'] as string;
  const timeline = body['timeline_id'] as string;
  assert.equal((await api(sk, 'POST', '/v1/tenant/timeline', body)).status, 201);
  await sk.shutdown();

  const control = path.join(dataDir, tenant, timeline, 'safekeeper.control');
  const bytes = await readFile(control);
  // Flip one bit in the middle of the JSON body (not the envelope), so only the checksum can tell.
  const damaged = Buffer.from(bytes);
  const at = Math.floor(bytes.length / 2);
  damaged[at] = damaged[at]! ^ 0x01;
  await writeFile(control, damaged);

  let started: Safekeeper | null = null;
  t.after(() => started?.shutdown());
  await assert.rejects(
    (async () => {
      started = await Safekeeper.start({
        id: 1n, dataDir, listenPg: { host: '127.0.0.1', port: 0 }, listenHttp: { host: '127.0.0.1', port: 0 }, brokerEndpoint: null, log: new QuietLogger(),
      });
    })(),
    (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.ok(err.message.includes(control), `the error names the file: ${err.message}`);
      return true;
    },
  );
  assert.ok((await readFile(control)).equals(damaged), 'the damaged control file was left as it was');
  const entries = (await readdir(path.join(dataDir, tenant, timeline))).sort();
  assert.deepEqual(entries, ['safekeeper.control'], 'nothing was added or removed in the timeline directory');
});
