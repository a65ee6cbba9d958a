/**
 * A small libpq-protocol (v3) server: the front door through which PostgreSQL tools and computes talk
 * to Strata (page service `pagestream`, `basebackup` as a CopyOut tar, later the safekeeper walsender).
 *
 * What it does: accepts TCP connections, answers SSLRequest/GSSENCRequest with 'N' (no encryption),
 * honours CancelRequest, reads the StartupMessage, authenticates through a pluggable Authenticator
 * (trust by default; the exchange object can send any AuthenticationXXX request and read the client's
 * 'p' answers, which is all cleartext, MD5 and SCRAM need), sends the usual ParameterStatus messages,
 * BackendKeyData and ReadyForQuery, then runs the simple query protocol: each Query string goes to the
 * caller's async handler with a per-query QueryContext that can send result sets, CopyOut and CopyBoth.
 *
 * Structure and invariants:
 *  - One Connection per socket. Socket bytes go through MessageFramer (codec.ts) synchronously in the
 *    'data' handler. Messages are routed immediately: while a CopyBoth is open and the client has not
 *    finished its side, CopyData/CopyDone/CopyFail go to the copy's queue (the handler is waiting for
 *    them); everything else goes to the inbox, which a single async loop per connection consumes in
 *    order. So at most one query handler runs per connection at a time, as in PostgreSQL.
 *  - Input flow control: bytes sitting in the inbox and copy queue are counted; above
 *    `maxBufferedInputBytes` the socket is paused and resumed when the consumer has caught up, so a
 *    client streaming CopyData faster than the handler reads cannot make us buffer without bound.
 *  - Output: small messages are accumulated in a BackendWriter and flushed at ReadyForQuery, at copy
 *    writes, and whenever 8 KiB have piled up. Copy writers wait for 'drain' when the socket's buffer
 *    is full (socket backpressure), so a slow client slows the producer instead of growing memory.
 *  - A handler that throws gets an ErrorResponse (SQLSTATE from `err.sqlState`, else XX000; a
 *    StrataError's code in the DETAIL) followed by ReadyForQuery; the connection stays usable.
 *  - Malformed input (bad lengths, unknown message types, oversized messages, bad startup packet)
 *    is logged, answered with a FATAL ErrorResponse when possible, and closes that connection only;
 *    nothing a client sends can throw out of a socket event handler.
 *  - The server keeps the per-query protocol valid even for sloppy handlers: an open result set or
 *    copy is completed when the handler returns, and a handler that sent nothing gets CommandComplete
 *    "OK", so clients never see ReadyForQuery without a result.
 *  - close() stops listening, destroys every connection (aborting running handlers through their
 *    AbortSignal) and waits (bounded) for the per-connection loops to finish.
 */
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { StrataError } from '../../util/errors.ts';
import type { ErrorContext } from '../../util/errors.ts';
import { rootLogger } from '../../util/log.ts';
import type { Logger } from '../../util/log.ts';
import {
  AuthRequest, BackendWriter, decodeCopyFail, decodeQuery, decodeStartupPacket, decodeUtf8, FrontendMessage,
  MessageFramer, messageTypeName, ProtocolError, UNTYPED,
} from './codec.ts';
import type { ColumnDescription, ErrorFields, StartupPacket } from './codec.ts';

export type { ColumnDescription } from './codec.ts';

// ---------------------------------------------------------------------------------------------
// Public types

export type StartupParams = Readonly<Record<string, string>>;

/** What a query handler can do with the client. One object per query; unusable once the handler returned. */
export interface QueryContext {
  /** Startup parameters (user, database, application_name, options, replication, ...). */
  readonly params: StartupParams;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** The BackendKeyData process id of this connection. */
  readonly processId: number;
  /** Aborted when the connection closes or the client cancels the query (reason: a StrataError). */
  readonly signal: AbortSignal;
  sendRowDescription(columns: readonly ColumnDescription[]): void;
  sendDataRow(values: readonly (string | null)[]): void;
  sendCommandComplete(tag: string): void;
  sendNotice(message: string): void;
  /** Resolves once the socket's send buffer has room again (rejects if the connection closes). */
  waitForDrain(): Promise<void>;
  startCopyOut(opts?: CopyOutOptions): CopyOutWriter;
  startCopyBoth(): CopyBothStream;
}

export type QueryHandler = (query: string, conn: QueryContext) => Promise<void>;

export interface CopyOutOptions {
  /** Overall COPY format announced in CopyOutResponse. Default 'binary'. */
  format?: 'text' | 'binary';
  /** Per-column formats (0 text, 1 binary); default none (a byte stream, like pg_basebackup's). */
  columnFormats?: readonly (0 | 1)[];
}

export interface CopyOutWriter {
  /** Sends one CopyData message; resolves when the socket can take more (backpressure). */
  write(chunk: Uint8Array): Promise<void>;
  /** Sends CopyDone. The handler may then send CommandComplete (otherwise "COPY n" is sent for it). */
  done(): void;
  readonly messagesSent: number;
  readonly bytesSent: number;
}

export interface CopyBothStream extends AsyncIterable<Buffer> {
  /** The next CopyData payload from the client; null once the client sent CopyDone. Throws on CopyFail or close. */
  next(): Promise<Buffer | null>;
  /** Sends one CopyData message; resolves when the socket can take more. */
  write(payload: Uint8Array): Promise<void>;
  /** Sends CopyDone (our side is finished). Idempotent. */
  end(): void;
  /** True once the client sent CopyDone. */
  readonly clientDone: boolean;
}

/** One step of authentication, seen by an Authenticator. */
export interface AuthExchange {
  readonly params: StartupParams;
  readonly user: string;
  readonly database: string;
  readonly remoteAddress: string;
  /** Sends an 'R' message (AuthRequest code plus payload) and flushes it. */
  sendRequest(code: number, data?: Uint8Array): void;
  /** Sends AuthenticationSASL with the offered mechanisms. */
  sendSaslMechanisms(mechanisms: readonly string[]): void;
  /** The body of the client's next 'p' message (PasswordMessage, SASLInitialResponse, SASLResponse). */
  readResponse(): Promise<Buffer>;
}

/** Resolves to accept the client (the server then sends AuthenticationOk); throws to reject it. */
export type Authenticator = (exchange: AuthExchange) => Promise<void>;

export const trustAuthenticator: Authenticator = async () => undefined;

/** Thrown by authenticators to reject a client; reported as FATAL with SQLSTATE 28P01. */
export class AuthenticationFailedError extends StrataError {
  readonly sqlState = '28P01';

  constructor(user: string, context: ErrorContext = {}) {
    super('pgwire_auth_failed', `password authentication failed for user "${user}"`, { user, ...context });
    this.name = 'AuthenticationFailedError';
  }
}

/** Decodes a cleartext PasswordMessage body. */
export function decodePasswordMessage(body: Buffer): string {
  const end = body.indexOf(0);
  if (end !== body.length - 1) throw new ProtocolError('invalid password packet: not a single NUL-terminated string');
  return decodeUtf8(body, 0, end);
}

export interface PgWireServerOptions {
  /** Address to bind, e.g. '127.0.0.1'. */
  host: string;
  /** Port to bind; 0 lets the kernel choose (read it from listen()'s result or `port`). */
  port: number;
  onQuery: QueryHandler;
  /** Default: trust. */
  authenticate?: Authenticator;
  /** Sessions past the startup packet; more get FATAL 53300. Default 100. */
  maxConnections?: number;
  /** Largest Query message. Default 1 MiB. */
  maxQueryBytes?: number;
  /** Largest CopyData message. Default 1 GiB. */
  maxCopyDataBytes?: number;
  /** Largest message of any other type. Default 1 MiB. */
  maxMessageBytes?: number;
  /** Input buffered for the handler before the socket is paused. Default 8 MiB. */
  maxBufferedInputBytes?: number;
  /** Time from accept to ReadyForQuery (PostgreSQL's authentication_timeout). Default 60 s. */
  startupTimeoutMs?: number;
  /** Close a session that sits idle (waiting for a query) this long; 0 = never (default). */
  idleTimeoutMs?: number;
  /** How long close() waits for connection loops (and their handlers) to finish. Default 5 s. */
  closeTimeoutMs?: number;
  /** Extra or overriding ParameterStatus values. */
  serverParameters?: Readonly<Record<string, string>>;
  logger?: Logger;
}

const DEFAULT_SERVER_PARAMETERS: Readonly<Record<string, string>> = {
  server_version: '15.0 (Strata)',
  server_encoding: 'UTF8',
  client_encoding: 'UTF8',
  DateStyle: 'ISO, MDY',
  integer_datetimes: 'on',
  standard_conforming_strings: 'on',
};

const KIB = 1024;
const MIB = 1024 * KIB;
const DEFAULTS = {
  maxConnections: 100,
  maxQueryBytes: 1 * MIB,
  maxCopyDataBytes: 1024 * MIB,
  maxMessageBytes: 1 * MIB,
  maxBufferedInputBytes: 8 * MIB,
  startupTimeoutMs: 60_000,
  idleTimeoutMs: 0,
  closeTimeoutMs: 5_000,
} as const;

/** Connections still in startup beyond maxConnections that we accept before dropping sockets outright. */
const STARTUP_SLACK = 16;
/** Flush accumulated output once this much is buffered (PostgreSQL's send buffer is 8 KB). */
const FLUSH_THRESHOLD_BYTES = 8 * KIB;
/** CopyData payloads up to this size are copied into the output buffer; larger ones are written as they are. */
const COPY_INLINE_MAX_BYTES = 8 * KIB;
/** After a graceful end (FATAL, Terminate), destroy the socket if the peer has not closed it by then. */
const GRACEFUL_CLOSE_MS = 1_000;
/** SSLRequest + GSSENCRequest: a client may try each once before the StartupMessage. */
const MAX_ENCRYPTION_REQUESTS = 2;
const TCP_KEEPALIVE_DELAY_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Errors

function connectionClosedError(where: string): StrataError {
  return new StrataError('pgwire_connection_closed', `${where}: the client connection is closed`);
}

class MisuseError extends StrataError {
  constructor(message: string) {
    super('pgwire_misuse', message);
    this.name = 'PgWireMisuseError';
  }
}

/** An error with a SQLSTATE of our own: FATAL conditions (too many clients, idle timeout) and query cancel. */
class SqlStateError extends StrataError {
  readonly sqlState: string;

  constructor(sqlState: string, message: string, code = 'pgwire_fatal') {
    super(code, message);
    this.sqlState = sqlState;
  }
}

function sqlStateOf(err: unknown, fallback: string): string {
  const s = (err as { sqlState?: unknown } | null)?.sqlState;
  return typeof s === 'string' && /^[0-9A-Z]{5}$/.test(s) ? s : fallback;
}

function renderContextValue(v: string | number | bigint | boolean): string {
  return typeof v === 'string' && /[\s,=]/.test(v) ? JSON.stringify(v) : String(v);
}

/** ErrorResponse fields for an error thrown by a handler or authenticator. */
export function errorFieldsFor(err: unknown, severity: 'ERROR' | 'FATAL', fallbackState = 'XX000'): ErrorFields {
  const message = err instanceof Error ? err.message : String(err);
  const fields: ErrorFields = { severity, code: sqlStateOf(err, fallbackState), message: message === '' ? 'internal error' : message };
  const details: string[] = [];
  const ownDetail = (err as { detail?: unknown } | null)?.detail;
  if (typeof ownDetail === 'string' && ownDetail !== '') details.push(ownDetail);
  if (err instanceof StrataError) {
    const ctx = Object.entries(err.context)
      .filter((e): e is [string, string | number | bigint | boolean] => e[1] !== undefined)
      .map(([k, v]) => `${k}=${renderContextValue(v)}`);
    details.push(`Strata error code: ${err.code}${ctx.length > 0 ? ` (${ctx.join(', ')})` : ''}`);
  }
  if (details.length > 0) fields.detail = details.join('\n');
  const hint = (err as { hint?: unknown } | null)?.hint;
  if (typeof hint === 'string' && hint !== '') fields.hint = hint;
  return fields;
}

// ---------------------------------------------------------------------------------------------
// Server

interface ResolvedOptions {
  onQuery: QueryHandler;
  authenticate: Authenticator;
  maxConnections: number;
  maxQueryBytes: number;
  maxCopyDataBytes: number;
  maxMessageBytes: number;
  maxBufferedInputBytes: number;
  startupTimeoutMs: number;
  idleTimeoutMs: number;
  closeTimeoutMs: number;
  serverParameters: Readonly<Record<string, string>>;
  logger: Logger;
}

function positiveInt(name: string, v: number | undefined, dflt: number, allowZero = false): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < 0 || (x === 0 && !allowZero)) {
    throw new StrataError('invalid_input', `pgwire server option ${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${String(v)}`, { option: name });
  }
  return x;
}

export class PgWireServer {
  readonly host: string;
  #requestedPort: number;
  #port = 0;
  readonly #opts: ResolvedOptions;
  readonly #server: net.Server;
  readonly #connections = new Set<Connection>();
  #sessions = 0;
  #nextProcessId = 1;
  #listening = false;
  #closing: Promise<void> | null = null;

  constructor(opts: PgWireServerOptions) {
    this.host = opts.host;
    this.#requestedPort = positiveInt('port', opts.port, 0, true);
    if (this.#requestedPort > 65535) throw new StrataError('invalid_input', `pgwire server port ${opts.port} is out of range`, { port: opts.port });
    this.#opts = {
      onQuery: opts.onQuery,
      authenticate: opts.authenticate ?? trustAuthenticator,
      maxConnections: positiveInt('maxConnections', opts.maxConnections, DEFAULTS.maxConnections),
      maxQueryBytes: positiveInt('maxQueryBytes', opts.maxQueryBytes, DEFAULTS.maxQueryBytes),
      maxCopyDataBytes: positiveInt('maxCopyDataBytes', opts.maxCopyDataBytes, DEFAULTS.maxCopyDataBytes),
      maxMessageBytes: positiveInt('maxMessageBytes', opts.maxMessageBytes, DEFAULTS.maxMessageBytes),
      maxBufferedInputBytes: positiveInt('maxBufferedInputBytes', opts.maxBufferedInputBytes, DEFAULTS.maxBufferedInputBytes),
      startupTimeoutMs: positiveInt('startupTimeoutMs', opts.startupTimeoutMs, DEFAULTS.startupTimeoutMs),
      idleTimeoutMs: positiveInt('idleTimeoutMs', opts.idleTimeoutMs, DEFAULTS.idleTimeoutMs, true),
      closeTimeoutMs: positiveInt('closeTimeoutMs', opts.closeTimeoutMs, DEFAULTS.closeTimeoutMs),
      serverParameters: { ...DEFAULT_SERVER_PARAMETERS, ...opts.serverParameters },
      logger: opts.logger ?? rootLogger.child({ component: 'pgwire' }),
    };
    this.#server = net.createServer({ pauseOnConnect: false });
    this.#server.on('connection', (socket) => this.#accept(socket));
    this.#server.on('error', (err) => this.#opts.logger.error('pgwire server socket error', { error: err.message }));
  }

  /** The bound port (after listen()). */
  get port(): number {
    return this.#port;
  }

  /** Open sockets, including ones still in startup. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  async listen(): Promise<{ host: string; port: number }> {
    if (this.#listening) return { host: this.host, port: this.#port };
    if (this.#closing !== null) throw new StrataError('pgwire_closed', 'pgwire server: listen() after close()');
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(new StrataError('pgwire_listen_failed', `pgwire server could not listen on ${this.host}:${this.#requestedPort}: ${err.message}`, { host: this.host, port: this.#requestedPort }, { cause: err }));
      };
      this.#server.once('error', onError);
      this.#server.listen(this.#requestedPort, this.host, () => {
        this.#server.removeListener('error', onError);
        resolve();
      });
    });
    const addr = this.#server.address();
    if (addr === null || typeof addr === 'string') throw new StrataError('pgwire_listen_failed', 'pgwire server: could not read the bound address');
    this.#port = addr.port;
    this.#listening = true;
    this.#opts.logger.info('pgwire server listening', { host: this.host, port: this.#port });
    return { host: this.host, port: this.#port };
  }

  /** Stops listening, closes every connection and waits (bounded) for their loops to end. Idempotent. */
  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#doClose();
    return this.#closing;
  }

  async #doClose(): Promise<void> {
    const closed = new Promise<void>((resolve) => {
      if (!this.#server.listening) {
        resolve();
        return;
      }
      this.#server.close(() => resolve());
    });
    const loops = [...this.#connections].map((c) => {
      c.destroy('server shutting down');
      return c.finished;
    });
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<void>((resolve) => { timer = setTimeout(resolve, this.#opts.closeTimeoutMs); });
    await Promise.race([Promise.all([closed, ...loops]), bound]);
    clearTimeout(timer);
    this.#listening = false;
  }

  #accept(socket: net.Socket): void {
    if (this.#closing !== null) {
      socket.destroy();
      return;
    }
    if (this.#connections.size >= this.#opts.maxConnections + STARTUP_SLACK) {
      this.#opts.logger.warn('pgwire: dropping connection, too many sockets', { remote: socket.remoteAddress, sockets: this.#connections.size });
      socket.destroy();
      return;
    }
    const processId = this.#nextProcessId;
    this.#nextProcessId = this.#nextProcessId >= 0x7fff_ffff ? 1 : this.#nextProcessId + 1;
    const conn = new Connection(socket, this.#opts, processId, {
      tryStartSession: () => {
        if (this.#sessions >= this.#opts.maxConnections) return false;
        this.#sessions++;
        return true;
      },
      endSession: () => { this.#sessions--; },
      cancel: (pid, key) => this.#cancel(pid, key),
      closed: (c) => { this.#connections.delete(c); },
    });
    this.#connections.add(conn);
    conn.start();
  }

  #cancel(processId: number, secretKey: number): void {
    for (const c of this.#connections) {
      if (c.processId === processId) {
        if (c.secretKey === secretKey) c.cancelQuery();
        return;
      }
    }
  }
}

/** Creates a server and starts listening. */
export async function startPgWireServer(opts: PgWireServerOptions): Promise<PgWireServer> {
  const server = new PgWireServer(opts);
  await server.listen();
  return server;
}

// ---------------------------------------------------------------------------------------------
// Connection

interface ServerHooks {
  tryStartSession(): boolean;
  endSession(): void;
  cancel(processId: number, secretKey: number): void;
  closed(conn: Connection): void;
}

interface InboxMessage {
  type: number;
  body: Buffer;
  packet: StartupPacket | null;
}

const EMPTY_BUFFER = Buffer.alloc(0);
const NO_MESSAGE: InboxMessage = { type: 0, body: EMPTY_BUFFER, packet: null };

const COPY_ROUTED = new Set<number>([FrontendMessage.CopyData, FrontendMessage.CopyDone, FrontendMessage.CopyFail]);
const EXTENDED = new Set<number>([
  FrontendMessage.Parse, FrontendMessage.Bind, FrontendMessage.Describe, FrontendMessage.Execute, FrontendMessage.Close, FrontendMessage.Flush,
]);

class Connection {
  readonly processId: number;
  readonly secretKey: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Resolves when the connection loop has ended and the socket is gone. */
  readonly finished: Promise<void>;

  readonly #socket: net.Socket;
  readonly #opts: ResolvedOptions;
  readonly #hooks: ServerHooks;
  readonly #log: Logger;
  readonly #framer: MessageFramer;
  readonly #writer = new BackendWriter();
  readonly #inbox: InboxMessage[] = [];
  #inboxHead = 0;
  #bufferedBytes = 0;
  #paused = false;
  #wake: (() => void) | null = null;
  #closed = false;
  #session = false;
  #params: StartupParams = Object.freeze({});
  #query: QueryState | null = null;
  /** The CopyBoth whose client side is still open: CopyData/CopyDone/CopyFail are routed to it. */
  #copyIn: CopyBothImpl | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  #startupTimer: NodeJS.Timeout | null = null;
  #graceTimer: NodeJS.Timeout | null = null;
  #resolveFinished: () => void = () => undefined;

  constructor(socket: net.Socket, opts: ResolvedOptions, processId: number, hooks: ServerHooks) {
    this.#socket = socket;
    this.#opts = opts;
    this.#hooks = hooks;
    this.processId = processId;
    this.secretKey = randomBytes(4).readInt32BE(0);
    this.remoteAddress = socket.remoteAddress ?? '';
    this.remotePort = socket.remotePort ?? 0;
    this.#log = opts.logger.child({ remote: `${this.remoteAddress}:${this.remotePort}`, pid: processId });
    this.finished = new Promise<void>((resolve) => { this.#resolveFinished = resolve; });
    this.#framer = new MessageFramer({
      maxBodyBytes: (type) => type === FrontendMessage.CopyData ? opts.maxCopyDataBytes : type === FrontendMessage.Query ? opts.maxQueryBytes : opts.maxMessageBytes,
      onMessage: (type, body) => this.#dispatch(type, body),
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  get params(): StartupParams {
    return this.#params;
  }

  start(): void {
    const socket = this.#socket;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, TCP_KEEPALIVE_DELAY_MS);
    socket.on('data', (chunk: Buffer) => {
      if (this.#closed) return;
      try {
        this.#framer.push(chunk);
      } catch (err) {
        this.#fail(err);
      }
    });
    socket.on('error', (err) => {
      this.#log.debug('pgwire socket error', { error: err.message });
    });
    socket.on('end', () => this.destroy('client closed the connection'));
    socket.on('close', () => this.destroy('socket closed'));
    this.#startupTimer = setTimeout(() => {
      this.#log.warn('pgwire: startup did not complete in time; closing', { timeoutMs: this.#opts.startupTimeoutMs });
      this.destroy('startup timeout');
    }, this.#opts.startupTimeoutMs);
    this.#startupTimer.unref();
    void this.#run();
  }

  // ---- input ----------------------------------------------------------------------------------

  /** Called synchronously by the framer for each complete message. */
  #dispatch(type: number, body: Buffer): void {
    if (this.#closed) return;
    if (type === UNTYPED) {
      const packet = decodeStartupPacket(body);
      if (packet.kind === 'startup') this.#framer.typed = true;
      if (packet.kind === 'cancel') {
        // A cancel connection carries nothing else: act on it and hang up.
        this.#hooks.cancel(packet.processId, packet.secretKey);
        this.destroy('cancel request handled');
        return;
      }
      this.#enqueue({ type, body, packet });
      return;
    }
    const copy = this.#copyIn;
    if (copy !== null) {
      if (COPY_ROUTED.has(type)) {
        this.#routeToCopy(copy, type, body);
        return;
      }
      if (type === FrontendMessage.Flush || type === FrontendMessage.Sync) return; // allowed and ignored during COPY
      throw new ProtocolError(`unexpected message type ${messageTypeName(type)} during COPY`, { type });
    }
    this.#enqueue({ type, body, packet: null });
  }

  #routeToCopy(copy: CopyBothImpl, type: number, body: Buffer): void {
    if (type === FrontendMessage.CopyData) {
      this.#addBuffered(body.length);
      copy.pushData(body);
      return;
    }
    this.#copyIn = null;
    if (type === FrontendMessage.CopyDone) copy.pushDone();
    else copy.pushFail(decodeCopyFail(body));
  }

  #enqueue(msg: InboxMessage): void {
    this.#inbox.push(msg);
    this.#addBuffered(msg.body.length);
    this.#notify();
  }

  #addBuffered(n: number): void {
    this.#bufferedBytes += n;
    if (!this.#paused && this.#bufferedBytes > this.#opts.maxBufferedInputBytes) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  /** Called when a consumer took `n` buffered bytes. */
  releaseBuffered(n: number): void {
    this.#bufferedBytes -= n;
    if (this.#paused && this.#bufferedBytes <= this.#opts.maxBufferedInputBytes / 2) {
      this.#paused = false;
      if (!this.#closed) this.#socket.resume();
    }
  }

  #notify(): void {
    const w = this.#wake;
    if (w !== null) {
      this.#wake = null;
      w();
    }
  }

  /** The next inbox message, or null once the connection is closed. */
  async #next(): Promise<InboxMessage | null> {
    for (;;) {
      if (this.#closed) return null;
      if (this.#inboxHead < this.#inbox.length) {
        const msg = this.#inbox[this.#inboxHead]!;
        this.#inbox[this.#inboxHead] = NO_MESSAGE;
        this.#inboxHead++;
        if (this.#inboxHead === this.#inbox.length) {
          this.#inbox.length = 0;
          this.#inboxHead = 0;
        }
        this.releaseBuffered(msg.body.length);
        return msg;
      }
      await new Promise<void>((resolve) => { this.#wake = resolve; });
    }
  }

  /** Moves CopyData/CopyDone/CopyFail already queued in the inbox (pipelined by the client) into a new copy. */
  #adoptQueuedCopyMessages(copy: CopyBothImpl): void {
    while (this.#copyIn === copy && this.#inboxHead < this.#inbox.length) {
      const msg = this.#inbox[this.#inboxHead]!;
      const ignorable = msg.type === FrontendMessage.Flush || msg.type === FrontendMessage.Sync;
      if (!COPY_ROUTED.has(msg.type) && !ignorable) {
        // Same rule as for messages arriving during the copy (see #dispatch): fatal for the connection.
        this.#fail(new ProtocolError(`unexpected message type ${messageTypeName(msg.type)} during COPY`, { type: msg.type }));
        return;
      }
      this.#inboxHead++;
      this.releaseBuffered(msg.body.length);
      if (!ignorable) this.#routeToCopy(copy, msg.type, msg.body);
    }
    if (this.#inboxHead === this.#inbox.length) {
      this.#inbox.length = 0;
      this.#inboxHead = 0;
    }
  }

  // ---- output ---------------------------------------------------------------------------------

  get writer(): BackendWriter {
    return this.#writer;
  }

  /** Hands accumulated output to the socket. */
  flush(): void {
    const out = this.#writer.take();
    if (out !== null && !this.#closed) this.#socket.write(out);
  }

  flushIfLarge(): void {
    if (this.#writer.length >= FLUSH_THRESHOLD_BYTES) this.flush();
  }

  /** Sends one CopyData message (small payloads copied, large ones written directly) and flushes. */
  writeCopyData(payload: Uint8Array): void {
    if (payload.length <= COPY_INLINE_MAX_BYTES) {
      this.#writer.copyData(payload);
      this.flush();
      return;
    }
    this.#writer.copyDataHeader(payload.length);
    this.flush();
    if (!this.#closed) this.#socket.write(payload);
  }

  /** Resolves when the socket's write buffer is below its high-water mark; rejects if the connection closes. */
  waitForDrain(where: string): Promise<void> {
    if (this.#closed) return Promise.reject(connectionClosedError(where));
    if (!this.#socket.writableNeedDrain) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const socket = this.#socket;
      const cleanup = (): void => {
        socket.removeListener('drain', onDrain);
        socket.removeListener('close', onClose);
      };
      const onDrain = (): void => { cleanup(); resolve(); };
      const onClose = (): void => { cleanup(); reject(connectionClosedError(where)); };
      socket.on('drain', onDrain);
      socket.on('close', onClose);
    });
  }

  // ---- lifecycle ------------------------------------------------------------------------------

  async #run(): Promise<void> {
    try {
      if (await this.#startup()) await this.#commandLoop();
    } catch (err) {
      this.#fail(err);
    } finally {
      this.#end();
    }
  }

  /** Negotiation, startup packet, authentication, session parameters. False when the connection went away. */
  async #startup(): Promise<boolean> {
    let encryptionRequests = 0;
    let packet: StartupPacket | null = null;
    for (let i = 0; i <= MAX_ENCRYPTION_REQUESTS; i++) {
      const msg = await this.#next();
      if (msg === null) return false;
      const p = msg.packet;
      if (p === null) throw new ProtocolError('expected a startup packet');
      if (p.kind === 'ssl' || p.kind === 'gssenc') {
        if (++encryptionRequests > MAX_ENCRYPTION_REQUESTS) throw new ProtocolError('too many encryption requests');
        // We do not offer TLS or GSSAPI encryption: a single 'N' byte, not a framed message.
        this.flush();
        this.#socket.write('N');
        continue;
      }
      packet = p;
      break;
    }
    if (packet === null || packet.kind !== 'startup') throw new ProtocolError('expected a StartupMessage');

    const params: Record<string, string> = {};
    const unrecognized: string[] = [];
    for (const [k, v] of packet.params) {
      if (k.startsWith('_pq_.')) unrecognized.push(k);
      else params[k] = v;
    }
    const user = params['user'];
    if (user === undefined || user === '') throw new SqlStateError('28000', 'no PostgreSQL user name specified in startup packet');
    if (params['database'] === undefined || params['database'] === '') params['database'] = user;
    this.#params = Object.freeze(params);
    if (packet.minorVersion > 0 || unrecognized.length > 0) this.#writer.negotiateProtocolVersion(0, unrecognized);

    if (!this.#hooks.tryStartSession()) throw new SqlStateError('53300', 'sorry, too many clients already');
    this.#session = true;

    await this.#authenticate(user, params['database']!);
    if (this.#closed) return false;

    const w = this.#writer;
    w.authentication(AuthRequest.Ok);
    for (const [name, value] of Object.entries(this.#opts.serverParameters)) w.parameterStatus(name, value);
    if (params['application_name'] !== undefined) w.parameterStatus('application_name', params['application_name']);
    w.backendKeyData(this.processId, this.secretKey);
    w.readyForQuery('I');
    this.flush();
    if (this.#startupTimer !== null) clearTimeout(this.#startupTimer);
    this.#startupTimer = null;
    this.#log.debug('pgwire session started', { user, database: params['database'], application_name: params['application_name'] });
    return true;
  }

  async #authenticate(user: string, database: string): Promise<void> {
    const exchange: AuthExchange = {
      params: this.#params,
      user,
      database,
      remoteAddress: this.remoteAddress,
      sendRequest: (code, data) => {
        this.#writer.authentication(code, data);
        this.flush();
      },
      sendSaslMechanisms: (mechanisms) => {
        this.#writer.authenticationSasl(mechanisms);
        this.flush();
      },
      readResponse: async () => {
        const msg = await this.#next();
        if (msg === null) throw connectionClosedError('authentication');
        if (msg.type !== FrontendMessage.Password) {
          throw new ProtocolError(`expected a password response, got message type ${messageTypeName(msg.type)}`, { type: msg.type });
        }
        return msg.body;
      },
    };
    try {
      await this.#opts.authenticate(exchange);
    } catch (err) {
      if (err instanceof ProtocolError || this.#closed) throw err;
      this.#log.info('pgwire authentication failed', { user, error: err instanceof Error ? err.message : String(err) });
      throw new FatalFromError(err);
    }
  }

  async #commandLoop(): Promise<void> {
    // A session lives as long as the client wants it; every iteration waits for one client message.
    for (;;) {
      this.#armIdleTimer();
      const msg = await this.#next();
      this.#disarmIdleTimer();
      if (msg === null) return;
      const type = msg.type;
      if (type === FrontendMessage.Query) {
        await this.#simpleQuery(msg.body);
      } else if (type === FrontendMessage.Terminate) {
        return;
      } else if (EXTENDED.has(type)) {
        if (!(await this.#rejectExtended())) return;
      } else if (type === FrontendMessage.Sync) {
        this.#writer.readyForQuery('I');
        this.flush();
      } else if (type === FrontendMessage.FunctionCall) {
        this.#writer.errorResponse({ severity: 'ERROR', code: '0A000', message: 'function call protocol is not supported' });
        this.#writer.readyForQuery('I');
        this.flush();
      } else if (COPY_ROUTED.has(type)) {
        // Left over from a COPY that ended with an error: ignored, as PostgreSQL does.
      } else {
        throw new ProtocolError(`invalid frontend message type ${messageTypeName(type)}`, { type });
      }
    }
  }

  /** Extended protocol: one ErrorResponse, then skip to Sync. False if the client terminated meanwhile. */
  async #rejectExtended(): Promise<boolean> {
    this.#writer.errorResponse({ severity: 'ERROR', code: '0A000', message: 'extended query protocol is not supported' });
    this.flush();
    // Bounded by the client: every iteration consumes one message.
    for (;;) {
      const msg = await this.#next();
      if (msg === null || msg.type === FrontendMessage.Terminate) return false;
      if (msg.type === FrontendMessage.Sync) break;
      if (msg.type === FrontendMessage.Query) {
        // libpq never does this, but be predictable: a Query ends the skipped batch.
        await this.#simpleQuery(msg.body);
        return true;
      }
    }
    this.#writer.readyForQuery('I');
    this.flush();
    return true;
  }

  async #simpleQuery(body: Buffer): Promise<void> {
    let text: string;
    try {
      text = decodeQuery(body);
    } catch (err) {
      if (!(err instanceof ProtocolError) || err.sqlState !== '22021') throw err;
      this.#writer.errorResponse(errorFieldsFor(err, 'ERROR'));
      this.#writer.readyForQuery('I');
      this.flush();
      return;
    }
    if (text.trim() === '') {
      this.#writer.emptyQueryResponse();
    } else {
      const q = new QueryState(this, text);
      this.#query = q;
      try {
        await this.#opts.onQuery(text, q);
        if (!this.#closed) q.finishOk();
      } catch (err) {
        if (this.#closed) {
          this.#log.debug('pgwire query handler failed after the connection closed', { error: err instanceof Error ? err.message : String(err) });
        } else {
          this.#log.debug('pgwire query failed', { query: text.slice(0, 200), error: err instanceof Error ? err.message : String(err) });
          q.finishError(err);
        }
      } finally {
        q.retire();
        this.#query = null;
        this.#copyIn = null;
      }
    }
    if (this.#closed) return;
    this.#writer.readyForQuery('I');
    this.flush();
  }

  /** Registers a CopyBoth as the receiver of client copy messages. */
  openCopyIn(copy: CopyBothImpl): void {
    this.#copyIn = copy;
    this.#adoptQueuedCopyMessages(copy);
  }

  closeCopyIn(copy: CopyBothImpl): void {
    if (this.#copyIn === copy) this.#copyIn = null;
  }

  cancelQuery(): void {
    const q = this.#query;
    if (q === null) return;
    this.#log.info('pgwire: query canceled by client request');
    q.abort(new SqlStateError('57014', 'canceling statement due to user request', 'pgwire_query_canceled'));
  }

  #armIdleTimer(): void {
    if (this.#opts.idleTimeoutMs === 0 || this.#closed) return;
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null;
      this.#log.info('pgwire: closing idle session', { idleTimeoutMs: this.#opts.idleTimeoutMs });
      this.#sendFatalAndClose(new SqlStateError('57P05', 'terminating connection due to idle-session timeout'));
    }, this.#opts.idleTimeoutMs);
    this.#idleTimer.unref();
  }

  #disarmIdleTimer(): void {
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
  }

  /** Protocol violations, FATAL conditions and internal failures: report (best effort) and close. */
  #fail(err: unknown): void {
    if (this.#closed) return;
    if (err instanceof ProtocolError) {
      this.#log.warn('pgwire: malformed input from client; closing the connection', { error: err.message });
    } else if (!(err instanceof SqlStateError) && !(err instanceof FatalFromError)) {
      this.#log.error('pgwire: connection failed', { error: err instanceof Error ? err.message : String(err) });
    }
    if (err instanceof FatalFromError) this.#sendFatalAndClose(err.original, '28000');
    else this.#sendFatalAndClose(err, err instanceof ProtocolError ? '08P01' : 'XX000');
  }

  #sendFatalAndClose(err: unknown, fallbackState = 'XX000'): void {
    if (this.#closed) return;
    this.#writer.errorResponse(errorFieldsFor(err, 'FATAL', fallbackState));
    this.flush();
    this.#closeGracefully();
  }

  /** Ends our side after pending output is sent; destroys if the peer does not close soon. */
  #closeGracefully(): void {
    if (this.#closed) return;
    this.#markClosed('closed by server');
    this.#socket.end();
    this.#graceTimer = setTimeout(() => this.#socket.destroy(), GRACEFUL_CLOSE_MS);
    this.#graceTimer.unref();
  }

  /** Loop finished: terminate normally (Terminate, client gone). */
  #end(): void {
    if (!this.#closed) this.#closeGracefully();
    if (this.#session) {
      this.#session = false;
      this.#hooks.endSession();
    }
    this.#resolveFinished();
  }

  /** Immediate close (server shutdown, socket gone, cancel connection). */
  destroy(reason: string): void {
    if (!this.#closed) this.#markClosed(reason);
    this.#socket.destroy();
    if (this.#graceTimer !== null) clearTimeout(this.#graceTimer);
  }

  #markClosed(reason: string): void {
    this.#closed = true;
    this.#log.debug('pgwire connection closing', { reason });
    if (this.#startupTimer !== null) clearTimeout(this.#startupTimer);
    this.#disarmIdleTimer();
    this.#query?.abort(connectionClosedError(`query (${reason})`));
    this.#copyIn = null;
    this.#notify();
    this.#hooks.closed(this);
  }
}

/** Wraps an authenticator's error so it is reported as FATAL (default SQLSTATE 28000). */
class FatalFromError extends StrataError {
  readonly original: unknown;

  constructor(original: unknown) {
    super('pgwire_auth_failed', original instanceof Error ? original.message : String(original));
    this.original = original;
  }
}

// ---------------------------------------------------------------------------------------------
// Per-query state

type Phase = 'idle' | 'rows' | 'copyOut' | 'copyBoth';

class QueryState implements QueryContext {
  readonly params: StartupParams;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly processId: number;
  readonly #conn: Connection;
  readonly #query: string;
  readonly #abort = new AbortController();
  #retired = false;
  #phase: Phase = 'idle';
  #columns = 0;
  #rows = 0;
  /** Tag we owe the client if the handler does not send CommandComplete itself. */
  #owedTag: string | null = null;
  #responses = 0;
  #copyOut: CopyOutImpl | null = null;
  #copyBoth: CopyBothImpl | null = null;

  constructor(conn: Connection, query: string) {
    this.#conn = conn;
    this.#query = query;
    this.params = conn.params;
    this.remoteAddress = conn.remoteAddress;
    this.remotePort = conn.remotePort;
    this.processId = conn.processId;
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  abort(reason: StrataError): void {
    if (!this.#abort.signal.aborted) this.#abort.abort(reason);
    this.#copyBoth?.fail(reason);
  }

  /** Throws unless this query may still talk to the client. */
  check(what: string): void {
    if (this.#retired) throw new MisuseError(`${what}: the query "${this.#query.slice(0, 60)}" has already finished`);
    if (this.#conn.closed) throw connectionClosedError(what);
  }

  get conn(): Connection {
    return this.#conn;
  }

  sendRowDescription(columns: readonly ColumnDescription[]): void {
    this.check('sendRowDescription');
    if (this.#phase !== 'idle') throw new MisuseError(`sendRowDescription while a ${this.#phase} response is open; send CommandComplete first`);
    if (columns.length > 1664) throw new MisuseError(`too many columns: ${columns.length}`);
    this.#conn.writer.rowDescription(columns);
    this.#phase = 'rows';
    this.#columns = columns.length;
    this.#rows = 0;
    this.#owedTag = 'SELECT 0';
    this.#responses++;
    this.#conn.flushIfLarge();
  }

  sendDataRow(values: readonly (string | null)[]): void {
    this.check('sendDataRow');
    if (this.#phase !== 'rows') throw new MisuseError('sendDataRow without a RowDescription');
    if (values.length !== this.#columns) throw new MisuseError(`sendDataRow: ${values.length} values for ${this.#columns} columns`);
    this.#conn.writer.dataRow(values);
    this.#rows++;
    this.#owedTag = `SELECT ${this.#rows}`;
    this.#conn.flushIfLarge();
  }

  sendCommandComplete(tag: string): void {
    this.check('sendCommandComplete');
    if (this.#phase === 'copyOut' || this.#phase === 'copyBoth') throw new MisuseError('sendCommandComplete during COPY; finish the copy first (done()/end())');
    this.#conn.writer.commandComplete(tag);
    this.#phase = 'idle';
    this.#owedTag = null;
    this.#responses++;
    this.#conn.flushIfLarge();
  }

  sendNotice(message: string): void {
    this.check('sendNotice');
    this.#conn.writer.noticeResponse({ severity: 'NOTICE', code: '00000', message });
    this.#conn.flushIfLarge();
  }

  waitForDrain(): Promise<void> {
    this.#conn.flush();
    return this.#conn.waitForDrain('waitForDrain');
  }

  startCopyOut(opts: CopyOutOptions = {}): CopyOutWriter {
    this.check('startCopyOut');
    if (this.#phase !== 'idle') throw new MisuseError(`startCopyOut while a ${this.#phase} response is open`);
    this.#conn.writer.copyResponse('out', opts.format === 'text' ? 0 : 1, opts.columnFormats ?? []);
    this.#conn.flush();
    this.#phase = 'copyOut';
    this.#responses++;
    this.#copyOut = new CopyOutImpl(this);
    return this.#copyOut;
  }

  startCopyBoth(): CopyBothStream {
    this.check('startCopyBoth');
    if (this.#phase !== 'idle') throw new MisuseError(`startCopyBoth while a ${this.#phase} response is open`);
    this.#conn.writer.copyResponse('both', 1);
    this.#conn.flush();
    this.#phase = 'copyBoth';
    this.#responses++;
    const copy = new CopyBothImpl(this);
    this.#copyBoth = copy;
    if (this.#abort.signal.aborted) copy.fail(this.#abort.signal.reason as StrataError);
    else this.#conn.openCopyIn(copy);
    return copy;
  }

  /** A copy finished both ways (or CopyOut done): back to idle, owing "COPY n". */
  copyFinished(messages: number): void {
    this.#phase = 'idle';
    this.#owedTag = `COPY ${messages}`;
  }

  /** The handler returned: close whatever it left open so the client sees a complete response. */
  finishOk(): void {
    if (this.#phase === 'copyOut') this.#copyOut?.done();
    if (this.#phase === 'copyBoth') this.#copyBoth?.finishForHandler();
    if (this.#owedTag !== null) {
      this.#conn.writer.commandComplete(this.#owedTag);
    } else if (this.#responses === 0) {
      this.#conn.writer.commandComplete('OK');
    }
  }

  finishError(err: unknown): void {
    if (this.#copyBoth !== null) this.#conn.closeCopyIn(this.#copyBoth);
    this.#conn.writer.errorResponse(errorFieldsFor(err, 'ERROR'));
  }

  retire(): void {
    this.#retired = true;
    this.#copyBoth?.fail(new MisuseError('the query handler has returned'));
  }
}

class CopyOutImpl implements CopyOutWriter {
  readonly #q: QueryState;
  #done = false;
  messagesSent = 0;
  bytesSent = 0;

  constructor(q: QueryState) {
    this.#q = q;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#q.check('CopyOut write');
    if (this.#done) throw new MisuseError('CopyOut write after done()');
    this.#q.conn.writeCopyData(chunk);
    this.messagesSent++;
    this.bytesSent += chunk.length;
    await this.#q.conn.waitForDrain('CopyOut write');
  }

  done(): void {
    if (this.#done) return;
    this.#q.check('CopyOut done');
    this.#done = true;
    this.#q.conn.writer.copyDone();
    this.#q.conn.flush();
    this.#q.copyFinished(this.messagesSent);
  }
}

class CopyBothImpl implements CopyBothStream {
  readonly #q: QueryState;
  readonly #queue: Buffer[] = [];
  #head = 0;
  #clientDone = false;
  #serverDone = false;
  #failure: Error | null = null;
  #wake: (() => void) | null = null;
  #sent = 0;

  constructor(q: QueryState) {
    this.#q = q;
  }

  get clientDone(): boolean {
    return this.#clientDone;
  }

  pushData(payload: Buffer): void {
    this.#queue.push(payload);
    this.#notify();
  }

  pushDone(): void {
    this.#clientDone = true;
    this.#maybeFinished();
    this.#notify();
  }

  pushFail(message: string): void {
    this.#clientDone = true;
    const err = new StrataError('pgwire_copy_failed', `COPY from stdin failed: ${message}`);
    (err as StrataError & { sqlState: string }).sqlState = '57014';
    this.fail(err);
  }

  fail(err: Error): void {
    if (this.#failure === null) this.#failure = err;
    this.#q.conn.closeCopyIn(this);
    this.#notify();
  }

  #notify(): void {
    const w = this.#wake;
    if (w !== null) {
      this.#wake = null;
      w();
    }
  }

  async next(): Promise<Buffer | null> {
    // Bounded: each wake-up either yields, ends, throws, or waits again for a new event.
    for (;;) {
      if (this.#head < this.#queue.length) {
        const payload = this.#queue[this.#head]!;
        this.#queue[this.#head] = EMPTY_BUFFER;
        this.#head++;
        if (this.#head === this.#queue.length) {
          this.#queue.length = 0;
          this.#head = 0;
        }
        this.#q.conn.releaseBuffered(payload.length);
        return payload;
      }
      if (this.#failure !== null) throw this.#failure;
      if (this.#clientDone) return null;
      await new Promise<void>((resolve) => { this.#wake = resolve; });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: async (): Promise<IteratorResult<Buffer>> => {
        const v = await this.next();
        return v === null ? { done: true, value: undefined } : { done: false, value: v };
      },
    };
  }

  async write(payload: Uint8Array): Promise<void> {
    this.#q.check('CopyBoth write');
    if (this.#serverDone) throw new MisuseError('CopyBoth write after end()');
    this.#q.conn.writeCopyData(payload);
    this.#sent++;
    await this.#q.conn.waitForDrain('CopyBoth write');
  }

  end(): void {
    if (this.#serverDone) return;
    this.#q.check('CopyBoth end');
    this.#serverDone = true;
    this.#q.conn.writer.copyDone();
    this.#q.conn.flush();
    this.#maybeFinished();
  }

  /** The handler returned with the copy still open: finish our side, stop routing client copy messages. */
  finishForHandler(): void {
    this.end();
    if (!this.#clientDone) {
      this.#q.conn.closeCopyIn(this);
      this.#q.copyFinished(this.#sent);
    }
  }

  #maybeFinished(): void {
    if (this.#serverDone && this.#clientDone) this.#q.copyFinished(this.#sent);
  }
}

