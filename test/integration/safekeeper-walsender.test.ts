/**
 * The safekeeper walsender (src/safekeeper/walsender.ts) against real PostgreSQL 15 clients.
 *
 * The WAL served comes from a real PostgreSQL 15 primary: a test timeline reads the bytes from
 * segment files (a snapshot of the primary's completed segments, or the live pg_wal), and its commit
 * LSN is moved by the test. Oracles are the primary's own files and behaviour, never the walsender:
 *  - pg_receivewal (with --synchronous, and with --slot resuming an existing directory) writes
 *    segment files that must equal the primary's byte for byte; its .partial must hold exactly the
 *    bytes below the commit LSN (the rest zero padding), and its status replies never claim more;
 *  - a vanilla PostgreSQL 15 hot standby built with pg_basebackup -X none streams everything it needs
 *    from us (it cannot become consistent otherwise) and shows rows inserted on the primary afterwards;
 *  - a raw protocol client checks message-level facts: contiguous XLogData of at most maxMessageBytes,
 *    walEnd = commit LSN, nothing past the commit LSN, keepalives while waiting, 'z' feedback values,
 *    errors for malformed client messages, and the end-of-streaming sequence;
 *  - result columns (names, type OIDs) and values are compared with the real primary's walsender;
 *  - error cases run through psql.
 * Every server and process is stopped in teardown, also when a test fails.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { formatLsn, parseLsn } from '../../src/postgres/lsn.ts';
import type { Lsn } from '../../src/postgres/lsn.ts';
import { decodeReplicationMessage, encodeStatusUpdate, pgTimestampNowUs } from '../../src/postgres/replication.ts';
import { parseWalSegmentFileName, walSegmentFileName } from '../../src/postgres/walformat.ts';
import { PostgresProcess } from '../../src/compute/postgresprocess.ts';
import { encodePageserverFeedback } from '../../src/safekeeper/feedback.ts';
import type { PageserverFeedback, StandbyReply, WalSenderTimeline } from '../../src/safekeeper/types.ts';
import { startWalSender } from '../../src/safekeeper/walsender.ts';
import type { WalSenderServer } from '../../src/safekeeper/walsender.ts';
import { StrataError } from '../../src/util/errors.ts';
import { Logger } from '../../src/util/log.ts';
import type { LogFields, LogLevel } from '../../src/util/log.ts';
import { getFreePort, postgresOsUser, startPostgres } from '../harness/postgres.ts';
import type { PostgresHandle } from '../harness/postgres.ts';

const BIN = process.env['STRATA_PG_BIN'] ?? '/usr/lib/postgresql/15/bin';
const HOST = '127.0.0.1';
const KEEPALIVE_MS = 100;
/** Deliberately not a power of two, so message boundaries fall at odd places. */
const MAX_MESSAGE_BYTES = 100_003;
const WAIT_MS = 20_000;
const CHILD_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Helpers

function randomId(): string {
  return randomBytes(16).toString('hex');
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; i < 1_000_000; i++) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) break;
    await sleep(25);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A Logger that keeps lines (quiet test output; child loggers share the sink). */
class CapturingLogger extends Logger {
  readonly sink: { level: LogLevel; message: string; fields: LogFields }[];

  constructor(sink: { level: LogLevel; message: string; fields: LogFields }[] = [], fields: LogFields = {}) {
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

/** A timeline whose WAL is read from segment files in `dir`, with a commit LSN the test moves. */
class FileWalTimeline implements WalSenderTimeline {
  readonly tenantId = randomId();
  readonly timelineId = randomId();
  readonly systemId: bigint;
  readonly walSegSizeBytes: number;
  readonly firstLsn: Lsn;
  readonly replies: StandbyReply[] = [];
  readonly feedbacks: PageserverFeedback[] = [];
  readonly #dir: string;
  #commit: Lsn;
  readonly #waiters = new Set<() => void>();

  constructor(o: { dir: string; systemId: bigint; segSize: number; firstLsn: Lsn; commitLsn: Lsn }) {
    this.#dir = o.dir;
    this.systemId = o.systemId;
    this.walSegSizeBytes = o.segSize;
    this.firstLsn = o.firstLsn;
    this.#commit = o.commitLsn;
  }

  get commitLsn(): Lsn {
    return this.#commit;
  }

  get options(): string {
    return `-c tenant_id=${this.tenantId} -c timeline_id=${this.timelineId}`;
  }

  setCommit(lsn: Lsn): void {
    assert.ok(lsn >= this.#commit, 'the commit LSN never moves back');
    this.#commit = lsn;
    for (const w of [...this.#waiters]) w();
  }

  /**
   * Deliberately does NOT cut at the commit LSN (the real timeline does): the files hold more WAL, so a
   * walsender that asked past the commit LSN would deliver it and the tests would see it.
   */
  async readWal(startLsn: Lsn, maxBytes: number): Promise<Buffer> {
    if (maxBytes <= 0) return Buffer.alloc(0);
    const seg = BigInt(this.walSegSizeBytes);
    const off = startLsn % seg;
    let n = BigInt(maxBytes);
    if (seg - off < n) n = seg - off;
    const file = path.join(this.#dir, walSegmentFileName(1, startLsn / seg, this.walSegSizeBytes));
    const fh = await fsp.open(file, 'r');
    try {
      const buf = Buffer.alloc(Number(n));
      const { bytesRead } = await fh.read(buf, 0, buf.length, Number(off));
      if (bytesRead !== buf.length) throw new Error(`short read of ${file} at ${off}: ${bytesRead} of ${buf.length}`);
      return buf;
    } finally {
      await fh.close();
    }
  }

  waitForCommit(lsn: Lsn, timeoutMs: number, signal: AbortSignal): Promise<Lsn> {
    if (this.#commit > lsn) return Promise.resolve(this.#commit);
    if (signal.aborted) return Promise.reject(signal.reason as Error);
    return new Promise<Lsn>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#waiters.delete(wake);
        signal.removeEventListener('abort', onAbort);
      };
      const wake = (): void => {
        if (this.#commit > lsn) {
          done();
          resolve(this.#commit);
        }
      };
      const onAbort = (): void => {
        done();
        reject(signal.reason as Error);
      };
      const timer = setTimeout(() => {
        done();
        resolve(this.#commit);
      }, timeoutMs);
      this.#waiters.add(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  onPageserverFeedback(fb: PageserverFeedback): void {
    if (this.feedbacks.length < 10_000) this.feedbacks.push(fb);
  }

  onStandbyReply(reply: StandbyReply): void {
    if (this.replies.length < 100_000) this.replies.push(reply);
  }
}

/** One walsender per test, serving the given timelines; closed in teardown. */
async function walsender(t: TestContext, timelines: FileWalTimeline[], extra: { maxMessageBytes?: number } = {}): Promise<WalSenderServer> {
  const byKey = new Map(timelines.map((tl) => [`${tl.tenantId}/${tl.timelineId}`, tl]));
  const server = await startWalSender({
    host: HOST,
    port: 0,
    lookup: (tenantId, timelineId) => {
      const tl = byKey.get(`${tenantId}/${timelineId}`);
      if (tl === undefined) throw new StrataError('timeline_not_found', `timeline ${tenantId}/${timelineId} is not on this safekeeper`, { tenantId, timelineId });
      return tl;
    },
    keepaliveIntervalMs: KEEPALIVE_MS,
    maxMessageBytes: extra.maxMessageBytes ?? MAX_MESSAGE_BYTES,
    log: new CapturingLogger(),
  });
  t.after(() => server.close());
  return server;
}

/** Environment for client binaries: no PG* variables from the outside. */
function clientEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PG') && v !== undefined) env[k] = v;
  return env;
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

interface Child {
  proc: ChildProcess;
  done: Promise<ChildResult>;
}

const children = new Set<ChildProcess>();

function startChild(binary: string, args: string[]): Child {
  const proc = spawn(path.join(BIN, binary), args, { env: clientEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (c: Buffer) => { if (stdout.length < 1_000_000) stdout += c.toString(); });
  proc.stderr!.on('data', (c: Buffer) => { if (stderr.length < 1_000_000) stderr += c.toString(); });
  const timer = setTimeout(() => proc.kill('SIGKILL'), CHILD_TIMEOUT_MS);
  const done = new Promise<ChildResult>((resolve) => {
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(proc);
      resolve({ code, signal, stdout, stderr });
    });
    proc.once('error', (err) => {
      clearTimeout(timer);
      children.delete(proc);
      resolve({ code: null, signal: null, stdout, stderr: stderr + String(err) });
    });
  });
  return { proc, done };
}

function conninfo(port: number, tl: { options: string } | null, extra = ''): string {
  return `host=${HOST} port=${port} user=postgres${tl === null ? '' : ` options='${tl.options}'`}${extra === '' ? '' : ' ' + extra}`;
}

/** psql -X -A -t (unaligned) with VERBOSITY=verbose so errors show their SQLSTATE. */
function psql(conn: string, command: string, opts: { tuplesOnly?: boolean } = {}): Promise<ChildResult> {
  return startChild('psql', [conn, '-X', '-A', ...(opts.tuplesOnly === false ? [] : ['-t']), '-v', 'VERBOSITY=verbose', '-c', command]).done;
}

async function segmentBytes(dir: string, segNo: bigint, segSize: number): Promise<Buffer> {
  return fsp.readFile(path.join(dir, walSegmentFileName(1, segNo, segSize)));
}

function firstDifference(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

// ---------------------------------------------------------------------------------------------
// A raw libpq-protocol client: for message-level assertions no library exposes.

interface BackendMessage {
  type: string;
  body: Buffer;
}

interface ColumnInfo {
  name: string;
  typeOid: number;
}

interface QueryResultRaw {
  columns: ColumnInfo[];
  rows: (string | null)[][];
  tag: string | null;
  error: Record<string, string> | null;
}

function cstrings(parts: string[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p + '\0', 'utf8')));
}

function parseErrorFields(body: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  for (let i = 0; i < 64 && off < body.length && body[off] !== 0; i++) {
    const code = String.fromCharCode(body[off]!);
    const end = body.indexOf(0, off + 1);
    out[code] = body.toString('utf8', off + 1, end);
    off = end + 1;
  }
  return out;
}

class RawClient {
  readonly #socket: net.Socket;
  #buf: Buffer = Buffer.alloc(0);
  readonly #queue: BackendMessage[] = [];
  #wake: (() => void) | null = null;
  #closed = false;
  readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    this.closedPromise = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      this.#buf = this.#buf.length === 0 ? chunk : Buffer.concat([this.#buf, chunk]);
      while (this.#buf.length >= 5) {
        const len = this.#buf.readInt32BE(1);
        if (this.#buf.length < 1 + len) break;
        this.#queue.push({ type: String.fromCharCode(this.#buf[0]!), body: Buffer.from(this.#buf.subarray(5, 1 + len)) });
        this.#buf = this.#buf.subarray(1 + len);
      }
      this.#notify();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.#closed = true;
      this.#notify();
    });
  }

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /** Connects and completes startup; resolves with the client, or the startup ErrorResponse fields. */
  static async connect(port: number, params: Record<string, string>): Promise<RawClient> {
    const socket = net.connect(port, HOST);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
    const c = new RawClient(socket);
    rawClients.add(c);
    const body = Buffer.concat([Buffer.from([0, 3, 0, 0]), cstrings(Object.entries(params).flat()), Buffer.from([0])]);
    const head = Buffer.alloc(4);
    head.writeInt32BE(body.length + 4);
    socket.write(Buffer.concat([head, body]));
    for (let i = 0; i < 100; i++) {
      const m = await c.next();
      if (m.type === 'E') throw Object.assign(new Error(`startup failed: ${parseErrorFields(m.body)['M']}`), { fields: parseErrorFields(m.body) });
      if (m.type === 'Z') return c;
    }
    throw new Error('no ReadyForQuery after startup');
  }

  /** The next message; throws on timeout or when the connection closed with nothing queued. */
  async next(timeoutMs = WAIT_MS): Promise<BackendMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.#queue.shift();
      if (m !== undefined) return m;
      if (this.#closed) throw new Error('connection closed');
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${timeoutMs} ms`);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  get closed(): boolean {
    return this.#closed;
  }

  send(type: string, body: Buffer): void {
    const head = Buffer.alloc(5);
    head[0] = type.charCodeAt(0);
    head.writeInt32BE(body.length + 4, 1);
    this.#socket.write(Buffer.concat([head, body]));
  }

  query(sql: string): void {
    this.send('Q', cstrings([sql]));
  }

  copyData(payload: Buffer): void {
    this.send('d', payload);
  }

  /** Runs a simple query that returns rows or an error; reads through ReadyForQuery. */
  async simpleQuery(sql: string): Promise<QueryResultRaw> {
    this.query(sql);
    const res: QueryResultRaw = { columns: [], rows: [], tag: null, error: null };
    for (let i = 0; i < 10_000; i++) {
      const m = await this.next();
      if (m.type === 'T') {
        const n = m.body.readInt16BE(0);
        let off = 2;
        for (let k = 0; k < n; k++) {
          const end = m.body.indexOf(0, off);
          const name = m.body.toString('utf8', off, end);
          off = end + 1;
          const typeOid = m.body.readInt32BE(off + 6);
          off += 18;
          res.columns.push({ name, typeOid });
        }
      } else if (m.type === 'D') {
        const n = m.body.readInt16BE(0);
        let off = 2;
        const row: (string | null)[] = [];
        for (let k = 0; k < n; k++) {
          const len = m.body.readInt32BE(off);
          off += 4;
          if (len < 0) {
            row.push(null);
          } else {
            row.push(m.body.toString('utf8', off, off + len));
            off += len;
          }
        }
        res.rows.push(row);
      } else if (m.type === 'C') {
        res.tag = m.body.toString('utf8', 0, m.body.length - 1);
      } else if (m.type === 'E') {
        res.error = parseErrorFields(m.body);
      } else if (m.type === 'Z') {
        return res;
      }
    }
    throw new Error('simpleQuery: no ReadyForQuery');
  }

  terminate(): void {
    if (this.#closed) return;
    this.send('X', Buffer.alloc(0));
    this.#socket.end();
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

const rawClients = new Set<RawClient>();

/** Collects a raw client's replication stream, checking contiguity and the per-message limit. */
class StreamCollector {
  readonly client: RawClient;
  readonly startLsn: Lsn;
  upTo: Lsn;
  readonly chunks: Buffer[] = [];
  readonly walEnds: Lsn[] = [];
  readonly keepalives: { walEnd: Lsn; replyRequested: boolean }[] = [];
  xlogMessages = 0;
  maxMessageBytes = 0;
  /** Set when the server ended the copy: the messages that followed our CopyDone. */
  ending: BackendMessage[] = [];

  constructor(client: RawClient, startLsn: Lsn) {
    this.client = client;
    this.startLsn = startLsn;
    this.upTo = startLsn;
  }

  /** Handles one backend message of the stream; returns false for anything that is not CopyData. */
  handle(m: BackendMessage): boolean {
    if (m.type !== 'd') return false;
    const msg = decodeReplicationMessage(m.body);
    if (msg.kind === 'xlogData') {
      assert.equal(formatLsn(msg.dataStart), formatLsn(this.upTo), 'XLogData is contiguous');
      assert.ok(msg.data.length > 0, 'no empty XLogData');
      assert.ok(msg.dataStart + BigInt(msg.data.length) <= msg.walEnd, 'XLogData never ends past its walEnd');
      this.xlogMessages++;
      this.maxMessageBytes = Math.max(this.maxMessageBytes, msg.data.length);
      this.chunks.push(Buffer.from(msg.data));
      this.walEnds.push(msg.walEnd);
      this.upTo += BigInt(msg.data.length);
    } else {
      this.keepalives.push({ walEnd: msg.walEnd, replyRequested: msg.replyRequested });
    }
    return true;
  }

  async readUntil(target: Lsn): Promise<void> {
    for (let i = 0; i < 1_000_000 && this.upTo < target; i++) {
      const m = await this.client.next();
      if (!this.handle(m)) throw new Error(`unexpected message '${m.type}' while streaming: ${m.type === 'E' ? parseErrorFields(m.body)['M'] : ''}`);
    }
  }

  /** Reads everything that arrives within ms; returns the messages that were not CopyData. */
  async drainFor(ms: number): Promise<BackendMessage[]> {
    const deadline = Date.now() + ms;
    const other: BackendMessage[] = [];
    for (let i = 0; i < 1_000_000; i++) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let m: BackendMessage;
      try {
        m = await this.client.next(left);
      } catch {
        break;
      }
      if (!this.handle(m)) other.push(m);
    }
    return other;
  }

  data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

async function startStream(port: number, tl: FileWalTimeline, startLsn: Lsn, command?: string): Promise<StreamCollector> {
  const c = await RawClient.connect(port, { user: 'postgres', database: 'postgres', replication: 'true', options: tl.options, application_name: 'raw' });
  c.query(command ?? `START_REPLICATION PHYSICAL ${formatLsn(startLsn)}`);
  const first = await c.next();
  if (first.type !== 'W') throw new Error(`expected CopyBothResponse, got '${first.type}' ${first.type === 'E' ? parseErrorFields(first.body)['M'] : ''}`);
  return new StreamCollector(c, startLsn);
}

// ---------------------------------------------------------------------------------------------
// The primary and a snapshot of its completed segments, shared by the tests.

let primary: PostgresHandle | null = null;
let snapshotDir = '';
let segSize = 0;
/** Completed segments in the snapshot: [firstSeg, endSeg). */
let firstSeg = 0n;
let endSeg = 0n;
const tmpDirs: string[] = [];

async function tmpDir(prefix: string, forPostgres = false): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  tmpDirs.push(dir);
  const user = postgresOsUser();
  if (forPostgres && user !== null) {
    await fsp.chmod(dir, 0o755);
    await fsp.chown(dir, user.uid, user.gid);
  }
  return dir;
}

function snapshotTimeline(commitLsn: Lsn, firstLsn?: Lsn): FileWalTimeline {
  assert.ok(primary !== null);
  return new FileWalTimeline({ dir: snapshotDir, systemId: primary.systemIdentifier, segSize, firstLsn: firstLsn ?? firstSeg * BigInt(segSize), commitLsn });
}

function segStart(segNo: bigint): Lsn {
  return segNo * BigInt(segSize);
}

before(async () => {
  const pgh = await startPostgres({ conf: { wal_sender_timeout: '10s' } });
  primary = pgh;
  segSize = pgh.walSegmentSizeBytes;
  // Several completed segments full of real WAL: pgbench init fills ~3, then batches with switches.
  await pgh.run('pgbench', ['-i', '-q', '-s', '4', 'postgres'], { timeoutMs: 60_000 });
  await pgh.query('CREATE TABLE filler (id int, v text)');
  for (let i = 0; i < 3; i++) {
    await pgh.switchWal();
    await pgh.query(`INSERT INTO filler SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 8000) g`);
  }
  // The switch record's segment is complete (padded to its end) once pg_switch_wal() returns.
  const switchEnd = await pgh.switchWal();
  endSeg = (switchEnd - 1n) / BigInt(segSize) + 1n;
  snapshotDir = await tmpDir('strata-walsender-snap-');
  const copied = await pgh.copyWal(snapshotDir, { throughLsn: segStart(endSeg) - 1n });
  const segs = copied.map((p) => parseWalSegmentFileName(path.basename(p), segSize)!.segNo);
  firstSeg = segs[0]!;
  for (let i = 0; i < segs.length; i++) assert.equal(segs[i], firstSeg + BigInt(i), 'snapshot segments are contiguous');
  assert.equal(segs[segs.length - 1], endSeg - 1n, 'snapshot ends with the last completed segment');
  assert.ok(endSeg - firstSeg >= 5n, `at least 5 completed segments (got ${endSeg - firstSeg})`);
});

after(async () => {
  for (const c of rawClients) c.destroy();
  for (const p of children) p.kill('SIGKILL');
  try {
    if (primary !== null) {
      await primary.stop();
      await primary.cleanup();
    }
  } finally {
    for (const d of tmpDirs) await fsp.rm(d, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Tests

test('pg_receivewal: --synchronous stops exactly at the commit LSN and continues when it moves; --slot resumes; files equal pg_wal', async (t) => {
  const S = firstSeg + 1n;
  const c1 = segStart(S) + 5_000_003n;
  const c2 = segStart(S + 2n) + 1_234_567n;
  const tl = snapshotTimeline(c1);
  const server = await walsender(t, [tl]);
  const out = await tmpDir('strata-walsender-recv-');
  t.after(() => { for (const p of children) p.kill('SIGKILL'); });
  const src = async (seg: bigint): Promise<Buffer> => segmentBytes(snapshotDir, seg, segSize);
  // Over-delivery must be visible: the source has non-zero WAL right after both commit points.
  for (const c of [c1, c2]) {
    const b = await src(c / BigInt(segSize));
    const off = Number(c % BigInt(segSize));
    assert.ok(b.subarray(off, off + 8192).some((x) => x !== 0), `source WAL after ${formatLsn(c)} is not all zeros`);
  }

  // 1. --synchronous, no slot: starts at the segment of IDENTIFY_SYSTEM's xlogpos (= commit LSN).
  const bytesBefore = server.stats.walBytesSent;
  const recv = startChild('pg_receivewal', ['-d', conninfo(server.port, tl), '-D', out, '--no-loop', '--synchronous', '-v']);
  await waitFor('pg_receivewal to report flush at the first commit LSN', () => tl.replies.some((r) => r.flushLsn === c1) ? true : undefined);
  await sleep(6 * KEEPALIVE_MS);
  assert.equal(server.stats.walBytesSent - bytesBefore, Number(c1 - segStart(S)), 'exactly the WAL below the commit LSN was sent');
  assert.ok(tl.replies.every((r) => r.writeLsn <= c1 && r.flushLsn <= c1), 'the client never received more than the commit LSN');
  const partialName = `${walSegmentFileName(1, S, segSize)}.partial`;
  const partial1 = await fsp.readFile(path.join(out, partialName));
  assert.equal(partial1.length, segSize, 'pg_receivewal pads .partial to a full segment');
  const k1 = Number(c1 - segStart(S));
  assert.ok(partial1.subarray(0, k1).equals((await src(S)).subarray(0, k1)), '.partial holds the WAL below the commit LSN');
  assert.ok(partial1.subarray(k1).equals(Buffer.alloc(segSize - k1)), '.partial holds nothing at or past the commit LSN');
  assert.equal(server.activeStreams, 1);

  tl.setCommit(c2);
  await waitFor('pg_receivewal to report flush at the second commit LSN', () => tl.replies.some((r) => r.flushLsn === c2) ? true : undefined);
  await sleep(3 * KEEPALIVE_MS);
  recv.proc.kill('SIGINT');
  const r1 = await recv.done;
  assert.equal(r1.code, 0, `pg_receivewal stops cleanly on SIGINT:\n${r1.stderr}`);
  assert.match(r1.stderr, new RegExp(`starting log streaming at ${formatLsn(segStart(S)).replace('/', '\\/')} \\(timeline 1\\)`));
  assert.ok(tl.replies.every((r) => r.writeLsn <= c2), 'never past the second commit LSN');
  const files1 = (await fsp.readdir(out)).sort();
  assert.deepEqual(files1, [walSegmentFileName(1, S, segSize), walSegmentFileName(1, S + 1n, segSize), `${walSegmentFileName(1, S + 2n, segSize)}.partial`]);
  for (const seg of [S, S + 1n]) {
    const got = await fsp.readFile(path.join(out, walSegmentFileName(1, seg, segSize)));
    const diff = firstDifference(got, await src(seg));
    assert.equal(diff, -1, `segment ${walSegmentFileName(1, seg, segSize)} differs at offset ${diff}`);
  }
  const partial2 = await fsp.readFile(path.join(out, `${walSegmentFileName(1, S + 2n, segSize)}.partial`));
  const k2 = Number(c2 - segStart(S + 2n));
  assert.ok(partial2.subarray(0, k2).equals((await src(S + 2n)).subarray(0, k2)));
  assert.ok(partial2.subarray(k2).equals(Buffer.alloc(segSize - k2)));
  await waitFor('the stream to end on the server', () => server.activeStreams === 0 ? true : undefined);

  // 2. --slot with an empty directory: PG 15's pg_receivewal asks READ_REPLICATION_SLOT for the start;
  //    we keep no slots and answer as PostgreSQL does for an unknown slot, so it refuses to start.
  const empty = await tmpDir('strata-walsender-recv-empty-');
  const r2 = await startChild('pg_receivewal', ['-d', conninfo(server.port, tl), '-D', empty, '--no-loop', '--slot', 'strata_slot']).done;
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr, /replication slot "strata_slot" does not exist/);

  // 3. --slot resuming the directory of run 1 (START_REPLICATION SLOT "strata_slot" ...): it restarts
  //    the .partial segment and, with the commit LSN at the end of the snapshot, completes every segment.
  const end = segStart(endSeg);
  tl.setCommit(end);
  const recv3 = startChild('pg_receivewal', ['-d', conninfo(server.port, tl), '-D', out, '--no-loop', '--slot', 'strata_slot', '-v', '-s', '1']);
  await waitFor('pg_receivewal (slot) to report having written everything', () => tl.replies.some((r) => r.writeLsn === end) ? true : undefined);
  recv3.proc.kill('SIGINT');
  const r3 = await recv3.done;
  assert.equal(r3.code, 0, `pg_receivewal --slot stops cleanly:\n${r3.stderr}`);
  assert.match(r3.stderr, new RegExp(`starting log streaming at ${formatLsn(segStart(S + 2n)).replace('/', '\\/')} \\(timeline 1\\)`));
  const files3 = (await fsp.readdir(out)).sort();
  const expected: string[] = [];
  for (let seg = S; seg < endSeg; seg++) expected.push(walSegmentFileName(1, seg, segSize));
  assert.deepEqual(files3, expected, 'every segment complete, no .partial left');
  for (let seg = S; seg < endSeg; seg++) {
    const got = await fsp.readFile(path.join(out, walSegmentFileName(1, seg, segSize)));
    const diff = firstDifference(got, await src(seg));
    assert.equal(diff, -1, `segment ${walSegmentFileName(1, seg, segSize)} differs at offset ${diff}`);
  }
  assert.ok(server.stats.standbyReplies > 0);
  await waitFor('no streams left', () => server.activeStreams === 0 ? true : undefined);
});

test('raw client: limits, walEnd, never past commit, waits ahead of commit, keepalives, \'z\' feedback, malformed messages, clean end', async (t) => {
  const base = segStart(firstSeg + 1n);
  const start = base + 12_345n; // not page aligned: the first message starts exactly there
  const c1 = base + 1_000_001n;
  const tl = snapshotTimeline(c1);
  const server = await walsender(t, [tl]);
  const src = Buffer.concat([await segmentBytes(snapshotDir, firstSeg + 1n, segSize), await segmentBytes(snapshotDir, firstSeg + 2n, segSize)]);
  const expect = (from: Lsn, to: Lsn): Buffer => src.subarray(Number(from - base), Number(to - base));

  const a = await startStream(server.port, tl, start);
  await a.readUntil(c1);
  const idle = await a.drainFor(5 * KEEPALIVE_MS);
  assert.deepEqual(idle.map((m) => m.type), [], 'only CopyData while waiting');
  assert.equal(formatLsn(a.upTo), formatLsn(c1), 'received exactly up to the commit LSN');
  assert.ok(a.keepalives.length >= 3, `keepalives every ${KEEPALIVE_MS} ms while caught up (got ${a.keepalives.length})`);
  assert.ok(a.keepalives.every((k) => k.walEnd === c1), 'keepalive walEnd = commit LSN');
  assert.ok(a.keepalives.some((k) => k.replyRequested), 'a silent client is asked for a reply');
  assert.ok(a.walEnds.every((w) => w === c1), 'XLogData walEnd = commit LSN');
  assert.ok(a.maxMessageBytes <= MAX_MESSAGE_BYTES && a.xlogMessages >= Math.ceil(Number(c1 - start) / MAX_MESSAGE_BYTES), 'messages of at most maxMessageBytes');
  assert.ok(a.data().equals(expect(start, c1)), 'streamed bytes equal pg_wal');

  // A second client asks for a start ahead of the commit LSN: it waits (keepalives only) until the commit passes it.
  const aheadStart = c1 + 40_000n;
  const b = await startStream(server.port, tl, aheadStart, `start_replication slot "Any_Slot" physical ${formatLsn(aheadStart).toLowerCase()} timeline 1 (term='7');`);
  const bIdle = await b.drainFor(4 * KEEPALIVE_MS);
  assert.deepEqual(bIdle.map((m) => m.type), []);
  assert.equal(b.xlogMessages, 0, 'nothing is sent below the requested start');
  assert.ok(b.keepalives.length >= 2 && b.keepalives.every((k) => k.walEnd === c1));

  // 'z' feedback with exact values, and an 'r' with replyRequested (answered by a keepalive).
  const fb: PageserverFeedback = { writeLsn: c1 - 10n, flushLsn: c1 - 1000n, applyLsn: base + 7n, currentTimelineSizeBytes: 123_456_789_012n, replyTimeUs: pgTimestampNowUs() };
  a.client.copyData(encodePageserverFeedback(fb));
  await waitFor('the feedback to reach the timeline', () => tl.feedbacks.length > 0 ? true : undefined);
  assert.deepEqual(tl.feedbacks[0], fb);
  const kaBefore = a.keepalives.length;
  const replyTime = pgTimestampNowUs();
  a.client.copyData(encodeStatusUpdate({ write: c1, flush: c1 - 5n, apply: c1 - 9n }, replyTime, true));
  await waitFor('the standby reply to reach the timeline', () => tl.replies.length > 0 ? true : undefined);
  assert.deepEqual(tl.replies[0], { writeLsn: c1, flushLsn: c1 - 5n, applyLsn: c1 - 9n, replyTimeUs: replyTime, replyRequested: true });
  await a.drainFor(KEEPALIVE_MS / 2);
  assert.ok(a.keepalives.length > kaBefore, 'a reply with replyRequested is answered');

  // Raise the commit LSN: both streams continue, b starts exactly at its requested LSN.
  const c2 = base + BigInt(segSize) + 777_777n; // crosses into the next segment
  tl.setCommit(c2);
  await a.readUntil(c2);
  await b.readUntil(c2);
  await a.drainFor(3 * KEEPALIVE_MS);
  assert.equal(formatLsn(a.upTo), formatLsn(c2));
  assert.equal(formatLsn(b.upTo), formatLsn(c2));
  assert.ok(a.data().equals(expect(start, c2)));
  assert.ok(b.data().equals(expect(aheadStart, c2)));
  assert.equal(server.activeStreams, 2);

  // Malformed 'z' on b: ErrorResponse 08P01, ReadyForQuery; then the client closes and the server is fine.
  b.client.copyData(Buffer.from([0x7a, 1, 0x41]));
  const bErr = await b.drainFor(1_000);
  const errMsg = bErr.find((m) => m.type === 'E');
  assert.ok(errMsg !== undefined, 'malformed feedback is answered with an error');
  const fields = parseErrorFields(errMsg.body);
  assert.equal(fields['C'], '08P01');
  assert.match(fields['M'] ?? '', /malformed pageserver feedback/);
  assert.equal(bErr[bErr.length - 1]?.type, 'Z', 'the session is back to ReadyForQuery');
  b.client.terminate();
  await b.client.closedPromise;
  await waitFor('b\'s stream to end', () => server.activeStreams === 1 ? true : undefined);

  // Unknown message type on a third stream: 08P01 too.
  const c = await startStream(server.port, tl, c2);
  c.client.copyData(Buffer.from('q'));
  const cErr = (await c.drainFor(1_000)).find((m) => m.type === 'E');
  assert.equal(cErr === undefined ? undefined : parseErrorFields(cErr.body)['C'], '08P01');
  c.client.destroy();

  // a still streams, and ends cleanly: CopyDone -> CopyDone, CommandComplete START_STREAMING, ReadyForQuery.
  const c3 = c2 + 50_000n;
  tl.setCommit(c3);
  await a.readUntil(c3);
  a.client.send('c', Buffer.alloc(0));
  const ending = await a.drainFor(1_000);
  assert.deepEqual(ending.map((m) => m.type), ['c', 'C', 'Z']);
  assert.equal(ending[1]!.body.toString('utf8', 0, ending[1]!.body.length - 1), 'START_STREAMING');
  assert.ok(a.data().equals(expect(start, c3)));
  // The session is usable afterwards.
  const id = await a.client.simpleQuery('IDENTIFY_SYSTEM');
  assert.equal(id.rows[0]?.[2], formatLsn(c3));
  await waitFor('no streams left', () => server.activeStreams === 0 ? true : undefined);

  // Closing the socket mid-stream stops the stream promptly.
  const d = await startStream(server.port, tl, start);
  await d.readUntil(start + 1n);
  assert.equal(server.activeStreams, 1);
  d.client.destroy();
  await waitFor('the stream of a closed connection to stop', () => server.activeStreams === 0 ? true : undefined, 2_000);
  a.client.terminate();
  await waitFor('all connections closed', () => server.connections === 0 ? true : undefined, 5_000);
  assert.equal(server.stats.pageserverFeedbacks, 1);
  assert.ok(server.stats.streamErrors >= 2);
});

test('result sets match PostgreSQL 15\'s walsender: IDENTIFY_SYSTEM, SHOW, READ_REPLICATION_SLOT', async (t) => {
  assert.ok(primary !== null);
  const commit = segStart(firstSeg + 2n) + 99n;
  const tl = snapshotTimeline(commit);
  const server = await walsender(t, [tl]);
  const ours = await RawClient.connect(server.port, { user: 'postgres', database: 'postgres', replication: 'true', options: tl.options });
  const theirs = await RawClient.connect(primary.port, { user: 'postgres', database: 'postgres', replication: 'true' });
  t.after(() => { ours.destroy(); theirs.destroy(); });
  for (const cmd of ['IDENTIFY_SYSTEM', 'SHOW wal_segment_size', 'SHOW data_directory_mode', 'READ_REPLICATION_SLOT no_such_slot', 'SHOW server_version', 'SHOW no_such_setting']) {
    const a = await ours.simpleQuery(cmd);
    const b = await theirs.simpleQuery(cmd);
    assert.deepEqual(a.columns, b.columns, `${cmd}: same column names and type OIDs`);
    assert.equal(a.tag, b.tag, `${cmd}: same command tag`);
    assert.equal(a.error?.['C'], b.error?.['C'], `${cmd}: same SQLSTATE`);
    assert.equal(a.rows.length, b.rows.length, `${cmd}: same number of rows`);
    if (cmd === 'IDENTIFY_SYSTEM') {
      assert.equal(a.rows[0]?.[0], b.rows[0]?.[0], 'same system identifier');
      assert.equal(a.rows[0]?.[0], primary.systemIdentifier.toString());
      assert.equal(a.rows[0]?.[1], b.rows[0]?.[1], 'timeline 1 on both');
      assert.equal(a.rows[0]?.[2], formatLsn(commit), 'xlogpos = commit LSN');
      assert.equal(a.rows[0]?.[3], null);
      assert.equal(b.rows[0]?.[3], null);
    } else if (cmd !== 'SHOW server_version' && cmd !== 'SHOW no_such_setting') {
      assert.deepEqual(a.rows, b.rows, `${cmd}: same values`);
    }
  }
  ours.terminate();
  theirs.terminate();
});

test('a vanilla PostgreSQL 15 hot standby streams from the walsender', async (t) => {
  assert.ok(primary !== null);
  const pgh = primary;
  // The live primary's WAL: read from its pg_wal as it grows; commit = its flush LSN, polled.
  const walNames = (await fsp.readdir(pgh.walDir)).map((n) => parseWalSegmentFileName(n, segSize)).filter((p) => p !== null && !p.partial);
  const oldest = walNames.reduce((m, p) => (p!.segNo < m ? p!.segNo : m), 1n << 62n);
  const tl = new FileWalTimeline({ dir: pgh.walDir, systemId: pgh.systemIdentifier, segSize, firstLsn: segStart(oldest), commitLsn: await pgh.currentLsn('flush') });
  let polling = true;
  const poller = (async () => {
    for (let i = 0; polling && i < 1_000_000; i++) {
      try {
        const f = await pgh.currentLsn('flush');
        if (f > tl.commitLsn) tl.setCommit(f);
      } catch {
        // the primary is stopping
      }
      await sleep(50);
    }
  })();
  const server = await walsender(t, [tl]);
  const dir = await tmpDir('strata-walsender-standby-', true);
  const dataDir = path.join(dir, 'data');
  let standby: PostgresProcess | null = null;
  t.after(async () => {
    try {
      await standby?.stop('fast', 15_000);
    } finally {
      polling = false;
      await poller;
    }
  });

  await pgh.query('CREATE TABLE IF NOT EXISTS before_backup (id int)');
  await pgh.run('pg_basebackup', ['-h', HOST, '-p', String(pgh.port), '-U', 'postgres', '-D', dataDir, '-X', 'none', '-c', 'fast', '--no-sync'], { asPostgresUser: true, timeoutMs: 60_000 });
  const port = await getFreePort();
  const conn = `host=${HOST} port=${server.port} user=postgres application_name=strata_standby options=''-c tenant_id=${tl.tenantId} -c timeline_id=${tl.timelineId}''`;
  const conf = [
    '', '# standby of the walsender test',
    `port = ${port}`,
    `unix_socket_directories = '${dir}'`,
    `primary_conninfo = '${conn}'`,
    'hot_standby = on',
    'hot_standby_feedback = on',
    "wal_receiver_status_interval = '1s'",
    "wal_retrieve_retry_interval = '500ms'",
    '',
  ].join('\n');
  await fsp.appendFile(path.join(dataDir, 'postgresql.auto.conf'), conf);
  await fsp.writeFile(path.join(dataDir, 'standby.signal'), '');
  const user = postgresOsUser();
  if (user !== null) {
    for (const f of ['postgresql.auto.conf', 'standby.signal']) await fsp.chown(path.join(dataDir, f), user.uid, user.gid);
  }
  // -X none: the standby has no WAL at all and can only become consistent (and accept connections) by streaming from us.
  standby = await PostgresProcess.start({ dataDir, port, logFile: path.join(dir, 'standby.log'), readyTimeoutMs: 40_000 });

  const sq = (sql: string): Promise<ChildResult> => startChild('psql', ['-h', HOST, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-X', '-A', '-t', '-c', sql]).done;
  const rcv = await waitFor('the standby\'s walreceiver to stream from us', async () => {
    const r = await sq('SELECT status, sender_port FROM pg_stat_wal_receiver');
    return r.stdout.trim() === `streaming|${server.port}` ? r.stdout.trim() : undefined;
  });
  assert.equal(rcv, `streaming|${server.port}`);

  await pgh.query('CREATE TABLE hs_check (id int PRIMARY KEY, note text)');
  await pgh.query("INSERT INTO hs_check SELECT g, 'row ' || g FROM generate_series(1, 5000) g");
  const target = await pgh.currentLsn('flush');
  const seen = await waitFor('the rows on the standby', async () => {
    const r = await sq("SELECT count(*), sum(id), max(note COLLATE \"C\") FROM hs_check");
    return r.code === 0 && r.stdout.trim() === '5000|12502500|row 999' ? r.stdout.trim() : undefined;
  });
  assert.equal(seen, '5000|12502500|row 999');
  const replay = await sq('SELECT pg_last_wal_replay_lsn()');
  assert.ok(parseLsn(replay.stdout.trim()) >= target, 'the standby replayed past the insert');
  await waitFor('the standby to report applying past the insert', () => tl.replies.some((r) => r.applyLsn >= target) ? true : undefined);
  await waitFor('hot standby feedback (\'h\') to be accepted', () => server.stats.hotStandbyFeedbacks > 0 ? true : undefined);
  assert.ok(tl.replies.every((r) => r.writeLsn <= tl.commitLsn), 'the standby never had WAL past the commit LSN');
  assert.equal(server.activeStreams, 1);
  assert.equal(server.stats.streamErrors, 0);
  const log = await fsp.readFile(path.join(dir, 'standby.log'), 'utf8');
  assert.match(log, /started streaming WAL from primary at \S+ on timeline 1/);
});

test('errors through psql are clear, and the server keeps serving', async (t) => {
  const S = firstSeg + 1n;
  const tl = snapshotTimeline(segStart(S) + 1000n, segStart(S));
  const server = await walsender(t, [tl]);
  const repl = conninfo(server.port, tl, 'replication=true');
  const check = async (what: string, conn: string, cmd: string, re: RegExp, code: number): Promise<void> => {
    const r = await psql(conn, cmd);
    assert.equal(r.code, code, `${what}: psql exit code (stderr: ${r.stderr})`);
    assert.match(r.stderr, re, what);
  };

  await check('unknown timeline', conninfo(server.port, { options: `-c tenant_id=${randomId()} -c timeline_id=${randomId()}` }, 'replication=true'),
    'IDENTIFY_SYSTEM', /ERROR: {2}42704: timeline [0-9a-f]{32}\/[0-9a-f]{32} is not on this safekeeper/, 1);
  await check('missing tenant_id', conninfo(server.port, { options: `-c timeline_id=${tl.timelineId}` }, 'replication=true'),
    'IDENTIFY_SYSTEM', /FATAL: {2}missing tenant_id: .*options='-c tenant_id=/, 2);
  await check('no options at all', conninfo(server.port, null, 'replication=true'), 'IDENTIFY_SYSTEM', /FATAL: {2}missing tenant_id and timeline_id/, 2);
  await check('malformed timeline_id', conninfo(server.port, { options: `-c tenant_id=${tl.tenantId} -c timeline_id=xyz` }, 'replication=true'),
    'IDENTIFY_SYSTEM', /FATAL: {2}invalid timeline_id "xyz"/, 2);
  await check('logical replication', conninfo(server.port, tl, 'replication=database dbname=postgres'), 'IDENTIFY_SYSTEM', /FATAL: {2}logical replication/, 2);
  // psql prints connection-time errors without their SQLSTATE; a raw client sees it.
  await assert.rejects(RawClient.connect(server.port, { user: 'postgres', replication: 'true', options: `-c timeline_id=${tl.timelineId}` }),
    (err: Error & { fields?: Record<string, string> }) => err.fields?.['S'] === 'FATAL' && err.fields['C'] === '22023');
  await check('start below firstLsn', repl, `START_REPLICATION PHYSICAL ${formatLsn(segStart(S) - 8n)}`,
    new RegExp(`ERROR: {2}58P01: requested WAL segment ${walSegmentFileName(1, S - 1n, segSize)} has already been removed`), 1);
  await check('TIMELINE 2', repl, `START_REPLICATION PHYSICAL ${formatLsn(segStart(S))} TIMELINE 2`, /ERROR: {2}22023: requested timeline 2 is not in this server's history/, 1);
  await check('bad LSN text', repl, 'START_REPLICATION PHYSICAL 0/ZZ', /ERROR: {2}42601: invalid start LSN "0\/ZZ"/, 1);
  await check('LSN part too long', repl, 'START_REPLICATION 123456789/0', /ERROR: {2}42601: invalid start LSN "123456789\/0"/, 1);
  await check('unknown command', repl, 'FROBNICATE 1', /ERROR: {2}42601: syntax error: unknown replication command "FROBNICATE"/, 1);
  await check('trailing garbage', repl, 'IDENTIFY_SYSTEM now', /ERROR: {2}42601: syntax error at "now"/, 1);
  await check('unknown setting', repl, 'SHOW shared_buffers', /ERROR: {2}42704: unrecognized configuration parameter "shared_buffers"/, 1);
  await check('TIMELINE_HISTORY', repl, 'TIMELINE_HISTORY 2', /ERROR: {2}58P01: could not open timeline history file for timeline 2/, 1);
  await check('slot creation', repl, 'CREATE_REPLICATION_SLOT s PHYSICAL', /ERROR: {2}0A000: CREATE_REPLICATION_SLOT is not supported/, 1);
  await check('streaming without replication=true', conninfo(server.port, tl), `START_REPLICATION ${formatLsn(segStart(S))}`, /ERROR: {2}0A000: START_REPLICATION needs a replication connection/, 1);

  // Neon's option forms, a trailing semicolon and lower-case keywords all work; the server still serves.
  for (const options of [`-c timeline_id=${tl.timelineId} tenant_id=${tl.tenantId}`, `--tenant_id=${tl.tenantId} --timeline-id=${tl.timelineId.toUpperCase()}`]) {
    const ok = await psql(`host=${HOST} port=${server.port} user=postgres replication=true options='${options}'`, 'identify_system;');
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout.trim(), `${primary!.systemIdentifier}|1|${formatLsn(tl.commitLsn)}|`);
  }
  const show = await psql(repl, 'SHOW wal_segment_size', { tuplesOnly: false });
  assert.equal(show.code, 0, show.stderr);
  assert.deepEqual(show.stdout.trim().split('\n'), ['wal_segment_size', `${segSize / (1024 * 1024)}MB`, '(1 row)']);
  await waitFor('all connections closed', () => server.connections === 0 ? true : undefined, 5_000);
});
