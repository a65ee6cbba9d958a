/**
 * Tests of Strata's libpq-protocol server (src/postgres/pgwire) with real clients: the psql 15 binary
 * (libpq), the `pg` npm client, pg-copy-streams' CopyBoth duplex, and raw sockets for what real clients
 * never send (malformed packets, pipelined copy data, cancel requests, a reader that stops reading).
 *
 * Expected values come from the test's own data (seeded random bytes, fixed rows), from PostgreSQL's
 * documented behaviour (SQLSTATEs, libpq messages), or from the client's view; never from the server code.
 * Every server is closed and every child process killed in teardown, also when a test fails.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import * as copyStreams from 'pg-copy-streams';
import type { Duplex } from 'node:stream';
import { startPgWireServer, AuthenticationFailedError, decodePasswordMessage } from '../../src/postgres/pgwire/server.ts';
import type { PgWireServer, PgWireServerOptions, QueryContext } from '../../src/postgres/pgwire/server.ts';
import { AuthRequest, PgType } from '../../src/postgres/pgwire/codec.ts';
import { StrataError } from '../../src/util/errors.ts';
import { Logger } from '../../src/util/log.ts';
import type { LogFields, LogLevel } from '../../src/util/log.ts';
import { rng, randomBytes } from '../unit/test-compressors.ts';

const PSQL = path.join(process.env['STRATA_PG_BIN'] ?? '/usr/lib/postgresql/15/bin', 'psql');
const HOST = '127.0.0.1';
const CHILD_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Helpers

interface LogLine {
  level: LogLevel;
  message: string;
  fields: LogFields;
}

/** A Logger that records lines instead of printing them (child loggers share the sink). */
class CapturingLogger extends Logger {
  readonly sink: LogLine[];

  constructor(sink: LogLine[] = [], fields: LogFields = {}) {
    super(fields);
    this.sink = sink;
  }

  override child(fields: LogFields): Logger {
    return new CapturingLogger(this.sink, { ...this.fields, ...fields });
  }

  override log(level: LogLevel, message: string, fields: LogFields): void {
    if (this.sink.length < 10_000) this.sink.push({ level, message, fields: { ...this.fields, ...fields } });
  }
}

const children = new Set<ChildProcess>();

/** Starts a server on a kernel-chosen port; closes it (and kills leftover children) in teardown. */
async function serve(t: TestContext, onQuery: PgWireServerOptions['onQuery'], opts: Partial<PgWireServerOptions> = {}): Promise<{ server: PgWireServer; logs: LogLine[] }> {
  const logger = new CapturingLogger();
  const server = await startPgWireServer({ host: HOST, port: 0, onQuery, logger, ...opts });
  t.after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await server.close();
  });
  assert.ok(server.port > 0, 'the server reports the port the kernel chose');
  return { server, logs: logger.sink };
}

interface PsqlResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs psql with a clean environment; stdout goes to `stdoutFile` when given (as in `psql ... > file`). */
function psql(args: readonly string[], opts: { env?: Record<string, string>; stdoutFile?: string } = {}): Promise<PsqlResult> {
  return new Promise((resolve, reject) => {
    const env: Record<string, string> = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: os.tmpdir(), ...opts.env };
    let outFd: number | null = null;
    if (opts.stdoutFile !== undefined) outFd = fs.openSync(opts.stdoutFile, 'w');
    const child = spawn(PSQL, ['-X', ...args], { env, stdio: ['ignore', outFd ?? 'pipe', 'pipe'] });
    if (outFd !== null) fs.closeSync(outFd);
    children.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.once('error', (e) => { clearTimeout(timer); children.delete(child); reject(e); });
    child.once('close', (code) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') });
    });
  });
}

function psqlConn(port: number, extra = ''): string {
  return `host=${HOST} port=${port} user=tester dbname=testdb ${extra}`.trim();
}

async function pgClient(t: TestContext, port: number, extra: pg.ClientConfig = {}): Promise<pg.Client> {
  const client = new pg.Client({ host: HOST, port, user: 'tester', database: 'testdb', ...extra });
  client.on('error', () => undefined);
  t.after(() => client.end().catch(() => undefined));
  await client.connect();
  return client;
}

function startupPacket(params: Record<string, string>, version = 3 << 16): Buffer {
  const parts: Buffer[] = [];
  for (const [k, v] of Object.entries(params)) parts.push(Buffer.from(`${k}\0${v}\0`, 'utf8'));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(version, 4);
  return Buffer.concat([head, body]);
}

function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(4 + body.length, 1);
  return Buffer.concat([head, body]);
}

function cstr(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8');
}

interface BackendMsg {
  type: string;
  body: Buffer;
}

/** Splits bytes from the server into messages (a trailing partial message is ignored). */
function parseBackend(buf: Buffer): BackendMsg[] {
  const msgs: BackendMsg[] = [];
  let off = 0;
  while (off + 5 <= buf.length && msgs.length < 100_000) {
    const len = buf.readInt32BE(off + 1);
    if (off + 1 + len > buf.length) break;
    msgs.push({ type: String.fromCharCode(buf[off]!), body: buf.subarray(off + 5, off + 1 + len) });
    off += 1 + len;
  }
  return msgs;
}

/** Fields of an ErrorResponse/NoticeResponse body by field code. */
function errorFields(body: Buffer): Record<string, string> {
  const f: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const code = String.fromCharCode(body[off]!);
    const end = body.indexOf(0, off + 1);
    f[code] = body.toString('utf8', off + 1, end);
    off = end + 1;
  }
  return f;
}

/** A raw TCP client: collects everything the server sends until it closes (or the timeout). */
class RawClient {
  readonly socket: net.Socket;
  readonly received: Buffer[] = [];
  readonly closed: Promise<void>;
  #waiters: (() => void)[] = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (b: Buffer) => {
      this.received.push(b);
      for (const w of this.#waiters.splice(0)) w();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => {
      for (const w of this.#waiters.splice(0)) w();
      resolve();
    }));
  }

  static connect(t: TestContext, port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: HOST, port });
      t.after(() => { s.destroy(); });
      s.once('connect', () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  bytes(): Buffer {
    return Buffer.concat(this.received);
  }

  messages(): BackendMsg[] {
    return parseBackend(this.bytes());
  }

  /** Waits until `pred(messages)` holds or the socket closes / time runs out. */
  async waitFor(pred: (msgs: BackendMsg[]) => boolean, timeoutMs = 10_000): Promise<BackendMsg[]> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < 100_000; i++) {
      const msgs = this.messages();
      if (pred(msgs)) return msgs;
      if (this.socket.destroyed || Date.now() > deadline) return msgs;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return this.messages();
  }

  async waitClosed(timeoutMs = 10_000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([this.closed.then(() => true), new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); })]);
    clearTimeout(timer);
    return r;
  }
}

/** Connects raw, sends a startup packet, waits for ReadyForQuery. */
async function rawSession(t: TestContext, port: number): Promise<RawClient> {
  const c = await RawClient.connect(t, port);
  c.socket.write(startupPacket({ user: 'raw', database: 'rawdb' }));
  const msgs = await c.waitFor((m) => m.some((x) => x.type === 'Z'));
  assert.ok(msgs.some((x) => x.type === 'Z'), 'raw session reached ReadyForQuery');
  c.received.length = 0;
  return c;
}

class TestFailure extends StrataError {
  readonly sqlState: string;

  constructor(message: string, sqlState: string) {
    super('test_failure', message, { block: 7 });
    this.sqlState = sqlState;
  }
}

const ROWS: (string | null)[][] = [['alpha', '1'], [null, '22'], ['päivää, "quoted"|pipe', '-3']];

/** The handler used by most tests. */
async function handler(query: string, c: QueryContext): Promise<void> {
  const q = query.trim();
  if (q === 'rows') {
    c.sendRowDescription([{ name: 'name', typeOid: PgType.text }, { name: 'n', typeOid: PgType.int4 }]);
    for (const r of ROWS) c.sendDataRow(r);
    c.sendCommandComplete(`SELECT ${ROWS.length}`);
    return;
  }
  if (q === 'whoami') {
    c.sendRowDescription([{ name: 'user', typeOid: PgType.text }, { name: 'database', typeOid: PgType.text }, { name: 'app', typeOid: PgType.text }, { name: 'addr', typeOid: PgType.text }]);
    c.sendDataRow([c.params['user'] ?? null, c.params['database'] ?? null, c.params['application_name'] ?? null, c.remoteAddress]);
    return; // the server completes the result set
  }
  if (q === 'fail_state') throw new TestFailure('relation block is unreadable', '22P02');
  if (q === 'fail_plain') throw new Error('plain failure');
  if (q === 'nothing') return;
  if (q === 'echo') {
    const copy = c.startCopyBoth();
    let n = 0;
    for await (const payload of copy) {
      n++;
      await copy.write(Buffer.concat([Buffer.from('echo:'), payload]));
    }
    copy.end();
    c.sendCommandComplete(`ECHO ${n}`);
    return;
  }
  if (q === 'wait_cancel') {
    await new Promise<void>((resolve, reject) => {
      if (c.signal.aborted) reject(c.signal.reason);
      c.signal.addEventListener('abort', () => reject(c.signal.reason), { once: true });
      setTimeout(resolve, 20_000).unref();
    });
    return;
  }
  throw new Error(`unknown test command: ${q}`);
}

// ---------------------------------------------------------------------------------------------
// psql

test('psql: a query returning rows (psql -At -c)', async (t) => {
  const { server } = await serve(t, handler);
  const r = await psql(['-At', '-d', psqlConn(server.port), '-c', 'rows']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.toString('utf8'), ROWS.map((row) => row.map((v) => v ?? '').join('|')).join('\n') + '\n');

  const who = await psql(['-At', '-d', psqlConn(server.port, 'application_name=pgwire_test'), '-c', 'whoami']);
  assert.equal(who.code, 0, who.stderr);
  assert.equal(who.stdout.toString('utf8'), `tester|testdb|pgwire_test|${HOST}\n`);
});

test('psql: a handler error is an ERROR with SQLSTATE, message and the Strata code in DETAIL; exit code 1', async (t) => {
  const { server } = await serve(t, handler);
  const r = await psql(['-At', '-v', 'VERBOSITY=verbose', '-d', psqlConn(server.port), '-c', 'fail_state']);
  assert.equal(r.code, 1, 'psql exits with 1 when the server reports an error');
  assert.match(r.stderr, /ERROR:\s+22P02: relation block is unreadable/);
  assert.match(r.stderr, /DETAIL:\s+Strata error code: test_failure \(block=7\)/);

  const plain = await psql(['-At', '-v', 'VERBOSITY=verbose', '-d', psqlConn(server.port), '-c', 'fail_plain']);
  assert.equal(plain.code, 1);
  assert.match(plain.stderr, /ERROR:\s+XX000: plain failure/);

  // A handler that sends nothing still gives the client a complete response.
  const nothing = await psql(['-d', psqlConn(server.port), '-c', 'nothing']);
  assert.equal(nothing.code, 0, nothing.stderr);
  assert.equal(nothing.stdout.toString(), 'OK\n');
});

test('psql: CopyOut of a few MB of binary data arrives byte-exact on stdout for a non-COPY command', async (t) => {
  const rand = rng(4242);
  const data = Buffer.from(randomBytes(rand, 5 * 1024 * 1024 + 123));
  // Chunk sizes from 1 byte to 300 KB, so both the inline (copied) and the direct write paths are used.
  const cuts: number[] = [];
  for (let off = 0; off < data.length;) {
    const size = Math.min(data.length - off, 1 + Math.floor(rand() * (rand() < 0.5 ? 4096 : 300_000)));
    cuts.push(size);
    off += size;
  }
  const { server } = await serve(t, async (query, c) => {
    if (query !== 'dump') throw new Error('unexpected');
    const w = c.startCopyOut();
    let off = 0;
    for (const size of cuts) {
      await w.write(data.subarray(off, off + size));
      off += size;
    }
    w.done();
    c.sendCommandComplete(`COPY ${cuts.length}`);
  });
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'strata-pgwire-'));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  const out = path.join(dir, 'out');
  const r = await psql(['-h', HOST, '-p', String(server.port), '-U', 'x', '-d', 'y', '-c', 'dump'], { stdoutFile: out });
  assert.equal(r.code, 0, r.stderr);
  const got = await fsp.readFile(out);
  assert.equal(got.length, data.length);
  assert.ok(got.equals(data), 'the file psql wrote equals the bytes sent');
});

test('psql: sslmode=prefer falls back to plain (server answers N); sslmode=require is refused', async (t) => {
  const { server } = await serve(t, handler);
  const ok = await psql(['-At', '-d', psqlConn(server.port, 'sslmode=prefer'), '-c', 'rows']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stdout.toString('utf8').split('\n')[0], 'alpha|1');
  const req = await psql(['-At', '-d', psqlConn(server.port, 'sslmode=require'), '-c', 'rows']);
  assert.equal(req.code, 2);
  assert.match(req.stderr, /server does not support SSL, but SSL was required/);
});

test('a custom authenticator (cleartext password) through the exchange; psql with right and wrong passwords', async (t) => {
  const { server } = await serve(t, handler, {
    authenticate: async (ex) => {
      ex.sendRequest(AuthRequest.CleartextPassword);
      const password = decodePasswordMessage(await ex.readResponse());
      if (ex.user !== 'tester' || password !== 's3cret') throw new AuthenticationFailedError(ex.user);
    },
  });
  const ok = await psql(['-At', '-d', psqlConn(server.port), '-c', 'rows'], { env: { PGPASSWORD: 's3cret' } });
  assert.equal(ok.code, 0, ok.stderr);
  const bad = await psql(['-At', '-d', psqlConn(server.port), '-c', 'rows'], { env: { PGPASSWORD: 'wrong' } });
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /password authentication failed for user "tester"/);
});

// ---------------------------------------------------------------------------------------------
// pg npm client

test('pg client: simple queries, typed rows, errors keep the connection usable, extended protocol refused', async (t) => {
  const { server } = await serve(t, handler);
  const client = await pgClient(t, server.port, { application_name: 'pg_npm' });
  assert.equal(client.getTypeParser(PgType.int4)('5'), 5, 'int4 parser sanity');

  const res = await client.query('rows');
  assert.equal(res.command, 'SELECT');
  assert.equal(res.rowCount, ROWS.length);
  assert.deepEqual(res.fields.map((f) => [f.name, f.dataTypeID]), [['name', PgType.text], ['n', PgType.int4]]);
  assert.deepEqual(res.rows, ROWS.map(([name, n]) => ({ name, n: Number(n) })));

  await assert.rejects(client.query('fail_state'), (err: pg.DatabaseError) => {
    assert.equal(err.code, '22P02');
    assert.equal(err.severity, 'ERROR');
    assert.match(err.detail ?? '', /Strata error code: test_failure/);
    return true;
  });
  // Extended protocol (a parameterised query): ErrorResponse, then Sync → ReadyForQuery.
  await assert.rejects(client.query('rows where x = $1', [1]), /extended query protocol is not supported/);
  const again = await client.query('whoami');
  assert.deepEqual(again.rows, [{ user: 'tester', database: 'testdb', app: 'pg_npm', addr: HOST }]);
  assert.equal(again.command, 'SELECT');
  assert.equal(again.rowCount, 1);
  // Empty query → EmptyQueryResponse.
  const empty = await client.query('   ');
  assert.equal(empty.command, null);
});

test('CopyBoth echo round trip with pg-copy-streams both(), then the connection runs another query', async (t) => {
  const { server } = await serve(t, handler);
  const client = await pgClient(t, server.port);
  const both = (copyStreams as unknown as { both: (sql: string, o: object) => Duplex }).both;
  const duplex = both('echo', { alignOnCopyDataFrame: true });
  client.query(duplex as unknown as pg.Submittable);
  const rand = rng(99);
  const payloads = [Buffer.from('one'), Buffer.alloc(0), Buffer.from(randomBytes(rand, 20_000)), Buffer.from(randomBytes(rand, 3 * 1024 * 1024))];
  const received: Buffer[] = [];
  duplex.on('data', (b: Buffer) => received.push(b));
  const finished = new Promise<void>((resolve, reject) => {
    duplex.once('finish', resolve);
    duplex.once('error', reject);
  });
  for (const p of payloads) duplex.write(p);
  // Wait for every echo before ending our side (CopyDone), so the order of events is deterministic.
  const want = payloads.reduce((n, p) => n + p.length + 5, 0);
  for (let i = 0; i < 500 && received.reduce((n, b) => n + b.length, 0) < want; i++) await new Promise((r) => setTimeout(r, 20));
  duplex.end();
  await finished;
  // alignOnCopyDataFrame: one chunk per CopyData message (every echo is at least "echo:").
  const expected = payloads.map((p) => Buffer.concat([Buffer.from('echo:'), p]));
  assert.equal(received.length, expected.length);
  for (let i = 0; i < expected.length; i++) assert.ok(received[i]!.equals(expected[i]!), `echo ${i} matches`);
  const res = await client.query('rows');
  assert.equal(res.rowCount, ROWS.length);
});

test('raw socket: CopyData pipelined right behind the Query reaches the CopyBoth handler in order', async (t) => {
  const { server } = await serve(t, handler);
  const c = await rawSession(t, server.port);
  c.socket.write(Buffer.concat([
    message('Q', cstr('echo')),
    message('d', Buffer.from('a')),
    message('H'), // Flush is allowed (and ignored) during COPY
    message('d', Buffer.from('bc')),
    message('c'),
  ]));
  const msgs = await c.waitFor((m) => m.some((x) => x.type === 'Z'));
  assert.deepEqual(msgs.map((m) => m.type), ['W', 'd', 'd', 'c', 'C', 'Z']);
  assert.equal(msgs[1]!.body.toString(), 'echo:a');
  assert.equal(msgs[2]!.body.toString(), 'echo:bc');
  assert.equal(msgs[4]!.body.toString(), 'ECHO 2\0');

  // CopyFail during CopyBoth: the handler sees an error with SQLSTATE 57014; the session continues.
  c.received.length = 0;
  c.socket.write(Buffer.concat([message('Q', cstr('echo')), message('f', cstr('client gave up'))]));
  const failed = await c.waitFor((m) => m.some((x) => x.type === 'Z'));
  assert.deepEqual(failed.map((m) => m.type), ['W', 'E', 'Z']);
  const f = errorFields(failed[1]!.body);
  assert.equal(f['C'], '57014');
  assert.match(f['M'] ?? '', /COPY from stdin failed: client gave up/);
  c.socket.write(message('X'));
  assert.equal(await c.waitClosed(), true, 'Terminate closes the connection');
});

test('CopyOut honours socket backpressure: a client that stops reading stalls the producer', async (t) => {
  const chunk = Buffer.alloc(1024 * 1024, 0x5a);
  const totalChunks = 64;
  let sent = 0;
  let finishedWriting = false;
  const { server } = await serve(t, async (_q, c) => {
    const w = c.startCopyOut();
    for (let i = 0; i < totalChunks; i++) {
      await w.write(chunk);
      sent += chunk.length;
    }
    w.done();
    finishedWriting = true;
  });
  const c = await rawSession(t, server.port);
  c.socket.pause();
  c.socket.write(message('Q', cstr('dump')));
  // Let the producer run until it can no longer write.
  let last = -1;
  for (let i = 0; i < 100 && sent !== last; i++) {
    last = sent;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(finishedWriting, false, 'the handler must not finish while the client reads nothing');
  assert.ok(sent < 32 * 1024 * 1024, `producer stalled after ${sent} bytes (kernel buffers + one chunk), not ${totalChunks} MiB`);
  // Now read everything: it must all arrive.
  let bytes = 0;
  let tail = Buffer.alloc(0);
  c.socket.removeAllListeners('data');
  const done = new Promise<void>((resolve) => {
    c.socket.on('data', (b: Buffer) => {
      bytes += b.length;
      tail = Buffer.concat([tail, b]).subarray(-64);
      if (tail.includes(Buffer.from('Z\0\0\0\x05I'))) resolve();
    });
  });
  c.socket.resume();
  await done;
  assert.equal(finishedWriting, true);
  assert.equal(sent, totalChunks * chunk.length);
  // H (CopyOutResponse) + 64 × (5 + 1 MiB) + c + C("COPY 64") + Z
  assert.equal(bytes, (1 + 4 + 3) + totalChunks * (5 + chunk.length) + 5 + (5 + 'COPY 64\0'.length) + 6);
});

// ---------------------------------------------------------------------------------------------
// Robustness

test('malformed packets are logged and close only that connection; the server keeps serving', async (t) => {
  const { server, logs } = await serve(t, handler, { maxQueryBytes: 1024 * 1024 });
  const startup = startupPacket({ user: 'raw' });
  const len = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };
  const cases: { name: string; bytes: Buffer; fatal?: string }[] = [
    { name: 'startup length too small', bytes: Buffer.concat([len(3), Buffer.alloc(8)]) },
    { name: 'startup length too large', bytes: Buffer.concat([len(100_000), Buffer.alloc(100)]) },
    { name: 'protocol 2.0', bytes: startupPacket({ user: 'raw' }, 2 << 16), fatal: '0A000' },
    { name: 'startup without terminator', bytes: (() => { const b = startupPacket({ user: 'raw' }); return Buffer.concat([len(b.length - 1), b.subarray(4, b.length - 1)]); })(), fatal: '08P01' },
    { name: 'startup without user', bytes: startupPacket({ database: 'x' }), fatal: '28000' },
    { name: 'typed message length 2', bytes: Buffer.concat([startup, Buffer.from([0x51]), len(2)]), fatal: '08P01' },
    { name: 'unknown message type', bytes: Buffer.concat([startup, message('z', Buffer.from('?'))]), fatal: '08P01' },
    { name: 'query without NUL', bytes: Buffer.concat([startup, message('Q', Buffer.from('rows'))]), fatal: '08P01' },
    { name: 'oversized query', bytes: Buffer.concat([startup, Buffer.from([0x51]), len(2 * 1024 * 1024)]), fatal: '54000' },
    { name: 'password message outside authentication', bytes: Buffer.concat([startup, message('p', cstr('pw'))]), fatal: '08P01' },
    { name: 'random garbage', bytes: Buffer.from(randomBytes(rng(7), 4096)) },
    { name: 'half a startup packet', bytes: startup.subarray(0, 6) },
  ];
  for (const cs of cases) {
    const c = await RawClient.connect(t, server.port);
    c.socket.write(cs.bytes);
    if (cs.name === 'half a startup packet') c.socket.end(); // the client goes away mid-packet
    assert.equal(await c.waitClosed(), true, `${cs.name}: the server closes the connection`);
    if (cs.fatal !== undefined) {
      const errors = c.messages().filter((m) => m.type === 'E').map((m) => errorFields(m.body));
      assert.equal(errors.length, 1, `${cs.name}: one ErrorResponse before closing`);
      assert.equal(errors[0]!['S'], 'FATAL', cs.name);
      assert.equal(errors[0]!['C'], cs.fatal, cs.name);
    }
  }
  assert.ok(logs.filter((l) => l.level === 'warn' && /malformed input/.test(l.message)).length >= 6, 'protocol violations are logged');
  // Invalid UTF-8 in a query is an ordinary ERROR (22021), not a protocol violation.
  const s = await rawSession(t, server.port);
  s.socket.write(message('Q', Buffer.from([0x72, 0xff, 0xfe, 0x00])));
  const m = await s.waitFor((x) => x.some((y) => y.type === 'Z'));
  assert.deepEqual(m.map((x) => x.type), ['E', 'Z']);
  assert.equal(errorFields(m[0]!.body)['C'], '22021');
  // The server still answers real clients.
  const r = await psql(['-At', '-d', psqlConn(server.port), '-c', 'rows']);
  assert.equal(r.code, 0, r.stderr);
  s.socket.destroy();
  for (let i = 0; i < 100 && server.connectionCount > 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.equal(server.connectionCount, 0, 'no connection is left open');
});

test('limits: max connections (53300), startup timeout, idle-session timeout (57P05)', async (t) => {
  const { server } = await serve(t, handler, { maxConnections: 2, startupTimeoutMs: 300, idleTimeoutMs: 800 });
  const a = await pgClient(t, server.port);
  const b = await pgClient(t, server.port);
  const third = new pg.Client({ host: HOST, port: server.port, user: 'tester', database: 'testdb' });
  third.on('error', () => undefined);
  await assert.rejects(third.connect(), (err: pg.DatabaseError) => {
    assert.equal(err.code, '53300');
    assert.match(err.message, /too many clients/);
    return true;
  });
  await third.end().catch(() => undefined);
  // Both sessions still work.
  assert.equal((await a.query('rows')).rowCount, ROWS.length);
  assert.equal((await b.query('rows')).rowCount, ROWS.length);

  // A socket that never sends a startup packet is closed after startupTimeoutMs.
  const silent = await RawClient.connect(t, server.port);
  const t0 = Date.now();
  assert.equal(await silent.waitClosed(5_000), true, 'silent socket closed');
  assert.ok(Date.now() - t0 >= 250, 'not before the startup timeout');

  // Idle sessions are closed with FATAL 57P05 (first free the two session slots).
  await a.end();
  await b.end();
  for (let i = 0; i < 100 && server.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(server.connectionCount, 0);
  const idle = await rawSession(t, server.port);
  assert.equal(await idle.waitClosed(5_000), true, 'idle session closed');
  const errs = idle.messages().filter((m) => m.type === 'E').map((m) => errorFields(m.body));
  assert.equal(errs[0]?.['C'], '57P05');
  assert.equal(errs[0]?.['S'], 'FATAL');
});

test('CancelRequest with the BackendKeyData of a session aborts its running query (57014)', async (t) => {
  const { server } = await serve(t, handler);
  const client = await pgClient(t, server.port);
  const keys = client as unknown as { processID: number; secretKey: number };
  assert.ok(Number.isInteger(keys.processID) && keys.processID > 0);
  const running = client.query('wait_cancel');
  await new Promise((r) => setTimeout(r, 100));
  // A wrong key is ignored.
  const wrong = await RawClient.connect(t, server.port);
  const cancel = (key: number): Buffer => { const b = Buffer.alloc(16); b.writeInt32BE(16, 0); b.writeInt32BE((1234 << 16) | 5678, 4); b.writeInt32BE(keys.processID, 8); b.writeInt32BE(key, 12); return b; };
  wrong.socket.write(cancel(keys.secretKey ^ 1));
  assert.equal(await wrong.waitClosed(), true, 'a cancel connection is closed after the request');
  const raced = await Promise.race([running.then(() => 'finished', () => 'failed'), new Promise((r) => setTimeout(() => r('running'), 300))]);
  assert.equal(raced, 'running', 'a cancel with the wrong key does nothing');
  const right = await RawClient.connect(t, server.port);
  right.socket.write(cancel(keys.secretKey));
  await assert.rejects(running, (err: pg.DatabaseError) => {
    assert.equal(err.code, '57014');
    return true;
  });
  assert.equal((await client.query('rows')).rowCount, ROWS.length, 'the session survives the cancel');
});

test('close() stops listening, closes open sessions and aborts running handlers', async (t) => {
  let aborted: unknown = null;
  const { server } = await serve(t, async (q, c) => {
    if (q === 'block') {
      await new Promise<void>((resolve) => c.signal.addEventListener('abort', () => { aborted = c.signal.reason; resolve(); }, { once: true }));
      return;
    }
    return handler(q, c);
  });
  const port = server.port;
  const idleClient = await pgClient(t, port);
  const busyClient = await pgClient(t, port);
  const ended = new Promise<void>((resolve) => idleClient.once('end', () => resolve()));
  const busy = busyClient.query('block').then(() => null, (e: unknown) => e);
  await new Promise((r) => setTimeout(r, 100));
  await server.close();
  await ended;
  assert.ok((await busy) instanceof Error, 'the running query fails when the server closes');
  assert.ok(aborted instanceof StrataError && aborted.code === 'pgwire_connection_closed', 'the running handler saw its signal abort');
  assert.equal(server.connectionCount, 0);
  const probe = await new Promise<string>((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => { s.destroy(); resolve('connected'); });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  assert.equal(probe, 'ECONNREFUSED');
});
