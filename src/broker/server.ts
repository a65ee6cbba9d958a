/**
 * The storage broker: a small publish/subscribe hub that tells pageservers (and safekeepers) which
 * safekeeper holds how much WAL of each timeline.
 *
 * Design
 * - Safekeepers keep one client stream open (PublishSafekeeperInfo) and push a
 *   SafekeeperTimelineInfo for every active timeline about once a second. Pageservers open one
 *   server stream per timeline they ingest (SubscribeSafekeeperInfo with a tenant_timeline_id);
 *   peers and tools may subscribe to `all`. SubscribeByFilter / PublishOne carry the same data as
 *   TypedMessage (plus the discovery request/response types, which are only fanned out).
 * - Routing is a fan-out by timeline: a published message goes to every subscriber of its timeline
 *   and to every `all` subscriber (for filter subscribers: if they asked for that message type).
 *   Each message is validated and protobuf-encoded once, then the same bytes are handed to every
 *   subscriber (the server's serializer passes ready-made Buffers through).
 *
 * Why stateless
 * - The broker keeps nothing that cannot be rebuilt in a second: every safekeeper republishes its
 *   whole state each second, so a restarted broker (or a second one behind a load balancer) is as
 *   good as the old one after one push interval. Nothing is written to disk, there is no
 *   replication and no leader; clients simply reconnect. Durability lives in the safekeepers.
 *
 * The latest-entry cache (the only state, and it is soft)
 * - To spare a new subscriber the wait for the next push, the broker remembers the latest message
 *   per (timeline, safekeeper_id) and sends those first, before any live message, in the same tick
 *   the subscriber is registered (so nothing is lost or reordered between snapshot and live flow).
 * - An entry not refreshed for `entryTtlMs` (default 10 s, i.e. ten missed pushes) ages out: a dead
 *   or partitioned safekeeper disappears from /status and from snapshots on its own. Expiry is
 *   checked when entries are read and by a periodic sweep. The cache is capped at
 *   `maxCachedEntries`; beyond that, new (timeline, safekeeper) pairs are routed but not cached.
 *
 * Backpressure and memory bounds
 * - A subscriber that reads slowly must not make the broker buffer without bound. Every subscriber
 *   has a fixed-size queue (`subscriberQueueSize`, default 1024 messages). Messages go straight to
 *   the gRPC stream while its write() says there is room; once write() returns false, the broker
 *   waits for 'drain' and queues meanwhile; when the queue is full the oldest queued message is
 *   dropped (newer state supersedes older state) and counted in
 *   storage_broker_broadcast_dropped_messages_total. Other subscribers are not affected.
 *   What is buffered per subscriber is thus at most the queue, the stream's small write buffer and
 *   one HTTP/2 flow-control window.
 * - Publishers are read with the stream's own flow control (grpc-js reads the next message only
 *   when the previous one was consumed), so a fast publisher is slowed down, not buffered.
 *
 * Invariants
 * - Every accepted message was validated (ids of 16 bytes, uint64 values in range); an invalid
 *   message fails only its own call with INVALID_ARGUMENT, never the broker.
 * - Gauges (publishers, subscribers) are decremented exactly once per call, whatever way it ends.
 * - close() stops timers, ends every call and closes both listening sockets.
 *
 * Ports: gRPC (HTTP/2 without TLS) on `port`; HTTP/1 on `httpPort` for GET /metrics (Prometheus
 * text) and GET /status (JSON view of the cache; also served as GET /v1/status, the readiness URL
 * every Strata process answers). Neon serves both on one port; Strata keeps them apart, which
 * costs a second port but no protocol sniffing.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, Registry } from 'prom-client';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { rootLogger } from '../util/log.ts';
import type { Logger } from '../util/log.ts';
import { formatLsn } from '../postgres/lsn.ts';
import {
  encodeSafekeeperTimelineInfo,
  encodeTypedMessage,
  filterRequestFromWire,
  loadBrokerProto,
  MessageType,
  messageTypeName,
  RingQueue,
  safekeeperInfoFromWire,
  safekeeperInfoToWire,
  subscribeRequestFromWire,
  timelineKey,
  typedMessageFromWire,
  typedMessageTimeline,
  typedMessageToWire,
} from './proto.ts';
import type { MessageTypeValue, SubscriptionKey, TypedMessage, WireSafekeeperTimelineInfo } from './proto.ts';
import type { SafekeeperTimelineInfo } from './types.ts';

export const DEFAULT_ENTRY_TTL_MS = 10_000;
export const DEFAULT_SUBSCRIBER_QUEUE_SIZE = 1024;
export const DEFAULT_MAX_CACHED_ENTRIES = 100_000;
export const DEFAULT_KEEPALIVE_MS = 5_000;
/** Largest gRPC message accepted; broker messages are a few hundred bytes. */
const MAX_RECEIVE_MESSAGE_BYTES = 1 << 20;
/** A subscriber's drops are logged at most this often. */
const DROP_LOG_INTERVAL_MS = 10_000;

export interface BrokerOptions {
  /** Address to listen on (gRPC and HTTP), e.g. 127.0.0.1. */
  host: string;
  /** gRPC port; 0 lets the kernel choose (see Broker.grpcPort). */
  port: number;
  /** HTTP port for /metrics and /status; default 0 (the kernel chooses). */
  httpPort?: number;
  /** How long a cached latest entry lives without a new publish. Default 10 s. */
  entryTtlMs?: number;
  /** Messages queued per subscriber before the oldest is dropped. Default 1024. */
  subscriberQueueSize?: number;
  /** Upper bound of the latest-entry cache. Default 100 000. */
  maxCachedEntries?: number;
  /** HTTP/2 keepalive ping interval (and timeout). Default 5 s. */
  keepaliveMs?: number;
  log?: Logger;
}

export interface Broker {
  readonly host: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  /** Stops accepting, ends all calls, closes both sockets. Idempotent. */
  close(): Promise<void>;
}

/** GET /status body. */
export interface BrokerStatus {
  entryTtlMs: number;
  publishers: number;
  subscribers: { timeline: number; all: number };
  cachedEntries: number;
  timelines: {
    tenant_id: string;
    timeline_id: string;
    safekeepers: {
      safekeeper_id: string;
      age_ms: number;
      term: string;
      last_log_term: string;
      flush_lsn: string;
      commit_lsn: string;
      backup_lsn: string;
      remote_consistent_lsn: string;
      safekeeper_connstr: string;
      http_connstr: string;
      availability_zone?: string;
    }[];
  }[];
}

export async function startBroker(opts: BrokerOptions): Promise<Broker> {
  const broker = new BrokerServer(opts);
  try {
    await broker.listen();
  } catch (e) {
    await broker.close();
    throw e;
  }
  return broker;
}

// ---------------------------------------------------------------------------------------------
// Messages as routed

/** A validated published message with its encodings, made lazily and at most once each. */
class Routed {
  readonly msg: TypedMessage;
  readonly key: string;
  private wireInfo: WireSafekeeperTimelineInfo | null = null;
  private infoBytes: Buffer | null = null;
  private typedBytes: Buffer | null = null;

  constructor(msg: TypedMessage) {
    this.msg = msg;
    this.key = timelineKey(typedMessageTimeline(msg));
  }

  get type(): MessageTypeValue {
    return this.msg.type;
  }

  /** The SafekeeperTimelineInfo encoding (only for that type). */
  infoEncoding(): Buffer {
    if (this.infoBytes === null) {
      if (this.msg.type !== MessageType.SAFEKEEPER_TIMELINE_INFO) {
        throw new StrataError('broker_internal', `a ${messageTypeName(this.msg.type)} message has no SafekeeperTimelineInfo form`);
      }
      this.wireInfo ??= safekeeperInfoToWire(this.msg.info);
      this.infoBytes = encodeSafekeeperTimelineInfo(this.wireInfo);
    }
    return this.infoBytes;
  }

  /** The TypedMessage encoding. */
  typedEncoding(): Buffer {
    if (this.typedBytes === null) {
      if (this.msg.type === MessageType.SAFEKEEPER_TIMELINE_INFO) {
        this.wireInfo ??= safekeeperInfoToWire(this.msg.info);
        this.typedBytes = encodeTypedMessage({ type: this.msg.type, safekeeper_timeline_info: this.wireInfo });
      } else {
        this.typedBytes = encodeTypedMessage(typedMessageToWire(this.msg));
      }
    }
    return this.typedBytes;
  }
}

interface CacheEntry {
  routed: Routed;
  info: SafekeeperTimelineInfo;
  updatedAtMs: number;
}

// ---------------------------------------------------------------------------------------------
// Subscribers

type Encoding = 'info' | 'typed';

interface SubscriberHooks {
  delivered(n: number): void;
  dropped(n: number): void;
}

class Subscriber {
  readonly id: number;
  readonly key: SubscriptionKey;
  readonly keyText: string;
  readonly encoding: Encoding;
  readonly types: ReadonlySet<number>;
  readonly peer: string;
  private readonly call: grpc.ServerWritableStream<unknown, Buffer>;
  private readonly queue: RingQueue<Buffer>;
  private readonly hooks: SubscriberHooks;
  private readonly log: Logger;
  /** Cached entries still to send before anything queued (references, no copies). */
  private snapshot: Buffer[] = [];
  private snapshotIndex = 0;
  private blocked = false;
  closed = false;
  droppedTotal = 0;
  private droppedSinceLog = 0;
  private lastDropLogMs = 0;

  constructor(args: {
    id: number;
    key: SubscriptionKey;
    encoding: Encoding;
    types: ReadonlySet<number>;
    call: grpc.ServerWritableStream<unknown, Buffer>;
    queueSize: number;
    hooks: SubscriberHooks;
    log: Logger;
  }) {
    this.id = args.id;
    this.key = args.key;
    this.keyText = args.key === 'all' ? 'all' : timelineKey(args.key);
    this.encoding = args.encoding;
    this.types = args.types;
    this.call = args.call;
    this.peer = safePeer(args.call);
    this.queue = new RingQueue<Buffer>(args.queueSize);
    this.hooks = args.hooks;
    this.log = args.log;
    this.call.on('drain', () => {
      this.blocked = false;
      this.flush();
    });
  }

  accepts(type: number): boolean {
    return this.types.has(type);
  }

  /** Sets the cached entries to send first; called once, before any offer(). */
  startWith(snapshot: Buffer[]): void {
    this.snapshot = snapshot;
    this.snapshotIndex = 0;
    this.flush();
  }

  offer(routed: Routed): void {
    if (this.closed) return;
    const bytes = this.encoding === 'info' ? routed.infoEncoding() : routed.typedEncoding();
    if (!this.blocked && this.queue.length === 0 && this.snapshotIndex >= this.snapshot.length) {
      this.write(bytes);
      return;
    }
    if (this.queue.push(bytes)) this.noteDrop();
  }

  private flush(): void {
    while (!this.closed && !this.blocked) {
      let next: Buffer | undefined;
      if (this.snapshotIndex < this.snapshot.length) {
        next = this.snapshot[this.snapshotIndex++];
        if (this.snapshotIndex >= this.snapshot.length) this.snapshot = [];
      } else {
        next = this.queue.shift();
      }
      if (next === undefined) return;
      this.write(next);
    }
  }

  private write(bytes: Buffer): void {
    if (this.call.destroyed || this.call.writableEnded) {
      this.close();
      return;
    }
    this.hooks.delivered(1);
    if (!this.call.write(bytes)) this.blocked = true;
  }

  private noteDrop(): void {
    this.droppedTotal++;
    this.droppedSinceLog++;
    this.hooks.dropped(1);
    const now = performance.now();
    if (this.lastDropLogMs === 0 || now - this.lastDropLogMs >= DROP_LOG_INTERVAL_MS) {
      this.log.warn('subscriber is not keeping up; dropping its oldest queued messages', {
        subscription_id: this.id,
        key: this.keyText,
        peer: this.peer,
        dropped: this.droppedSinceLog,
        dropped_total: this.droppedTotal,
      });
      this.lastDropLogMs = now;
      this.droppedSinceLog = 0;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue.clear();
    this.snapshot = [];
  }
}

function safePeer(call: { getPeer(): string }): string {
  try {
    return call.getPeer();
  } catch {
    return 'unknown';
  }
}

function statusError(code: grpc.status, details: string): grpc.ServiceError {
  const err = new Error(details) as grpc.ServiceError;
  err.code = code;
  err.details = details;
  err.metadata = new grpc.Metadata();
  return err;
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------
// The server

class BrokerServer implements Broker {
  readonly host: string;
  grpcPort = 0;
  httpPort = 0;
  private readonly requestedPort: number;
  private readonly requestedHttpPort: number;
  private readonly entryTtlMs: number;
  private readonly queueSize: number;
  private readonly maxCachedEntries: number;
  private readonly keepaliveMs: number;
  private readonly log: Logger;
  private readonly grpcServer: grpc.Server;
  private readonly httpServer: http.Server;
  private readonly registry = new Registry();
  private readonly metrics;

  /** Subscribers of one timeline, by timeline key. */
  private readonly byTimeline = new Map<string, Set<Subscriber>>();
  /** Subscribers of every timeline. */
  private readonly allTimelines = new Set<Subscriber>();
  /** Latest SafekeeperTimelineInfo by timeline key, then safekeeper id. */
  private readonly cache = new Map<string, Map<string, CacheEntry>>();
  private cachedEntries = 0;
  private cacheFullLogged = false;
  private publishers = 0;
  private nextSubscriberId = 1;
  private nextPublisherId = 1;
  private sweepTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;

  constructor(opts: BrokerOptions) {
    this.host = opts.host;
    this.requestedPort = opts.port;
    this.requestedHttpPort = opts.httpPort ?? 0;
    this.entryTtlMs = opts.entryTtlMs ?? DEFAULT_ENTRY_TTL_MS;
    this.queueSize = opts.subscriberQueueSize ?? DEFAULT_SUBSCRIBER_QUEUE_SIZE;
    this.maxCachedEntries = opts.maxCachedEntries ?? DEFAULT_MAX_CACHED_ENTRIES;
    this.keepaliveMs = opts.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
    this.log = (opts.log ?? rootLogger).child({ component: 'broker' });
    for (const [name, v] of [['port', this.requestedPort], ['httpPort', this.requestedHttpPort]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 65535) throw new InvalidInputError(`broker ${name} ${v} is not a port number`, { [name]: v });
    }
    for (const [name, v] of [['entryTtlMs', this.entryTtlMs], ['subscriberQueueSize', this.queueSize], ['maxCachedEntries', this.maxCachedEntries], ['keepaliveMs', this.keepaliveMs]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new InvalidInputError(`broker option ${name} must be a positive integer, got ${v}`, { [name]: v });
    }

    const r = this.registry;
    this.metrics = {
      publishers: new Gauge({ name: 'storage_broker_active_publishers', help: 'Publish streams currently open', registers: [r] }),
      timelineSubscribers: new Gauge({
        name: 'storage_broker_per_timeline_active_subscribers',
        help: 'Subscriptions to one timeline currently open',
        registers: [r],
      }),
      allSubscribers: new Gauge({ name: 'storage_broker_all_keys_active_subscribers', help: 'Subscriptions to all timelines currently open', registers: [r] }),
      processed: new Counter({
        name: 'storage_broker_processed_messages_total',
        help: 'Valid messages received from publishers, before fan-out',
        registers: [r],
      }),
      oneoff: new Counter({ name: 'storage_broker_published_oneoff_messages_total', help: 'Messages received through PublishOne', registers: [r] }),
      rejected: new Counter({ name: 'storage_broker_rejected_messages_total', help: 'Invalid messages and requests refused with INVALID_ARGUMENT', registers: [r] }),
      delivered: new Counter({
        name: 'storage_broker_broadcasted_messages_total',
        help: 'Messages handed to subscriber streams (cached snapshots included)',
        registers: [r],
      }),
      dropped: new Counter({
        name: 'storage_broker_broadcast_dropped_messages_total',
        help: 'Messages dropped because a subscriber queue was full',
        registers: [r],
      }),
      cached: new Gauge({ name: 'storage_broker_cached_entries', help: 'Latest (timeline, safekeeper) entries held for new subscribers', registers: [r] }),
      expired: new Counter({ name: 'storage_broker_expired_entries_total', help: 'Cached entries aged out without a new publish', registers: [r] }),
    };

    this.grpcServer = new grpc.Server({
      'grpc.keepalive_time_ms': this.keepaliveMs,
      'grpc.keepalive_timeout_ms': this.keepaliveMs,
      'grpc.max_receive_message_length': MAX_RECEIVE_MESSAGE_BYTES,
    });
    this.grpcServer.addService(serverServiceDefinition(), {
      SubscribeSafekeeperInfo: (call: grpc.ServerWritableStream<unknown, Buffer>) => this.onSubscribeSafekeeperInfo(call),
      SubscribeByFilter: (call: grpc.ServerWritableStream<unknown, Buffer>) => this.onSubscribeByFilter(call),
      PublishSafekeeperInfo: (call: grpc.ServerReadableStream<unknown, object>, callback: grpc.sendUnaryData<object>) =>
        this.onPublishSafekeeperInfo(call, callback),
      PublishOne: (call: grpc.ServerUnaryCall<unknown, object>, callback: grpc.sendUnaryData<object>) => this.onPublishOne(call, callback),
    });

    this.httpServer = http.createServer((req, res) => this.onHttp(req, res));
  }

  async listen(): Promise<void> {
    const hostForUrl = this.host.includes(':') ? `[${this.host}]` : this.host;
    this.grpcPort = await new Promise<number>((resolve, reject) => {
      this.grpcServer.bindAsync(`${hostForUrl}:${this.requestedPort}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err !== null) {
          reject(new StrataError('broker_listen_failed', `broker cannot listen for gRPC on ${hostForUrl}:${this.requestedPort}: ${err.message}`, {
            host: this.host,
            port: this.requestedPort,
          }));
        } else {
          resolve(port);
        }
      });
    });
    this.httpPort = await new Promise<number>((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(new StrataError('broker_listen_failed', `broker cannot listen for HTTP on ${hostForUrl}:${this.requestedHttpPort}: ${err.message}`, {
          host: this.host,
          port: this.requestedHttpPort,
        }));
      };
      this.httpServer.once('error', onError);
      this.httpServer.listen(this.requestedHttpPort, this.host, () => {
        this.httpServer.off('error', onError);
        resolve((this.httpServer.address() as AddressInfo).port);
      });
    });
    this.httpServer.on('error', (err) => this.log.error('broker HTTP server error', { error: err.message }));
    const sweepEveryMs = Math.max(50, Math.min(1000, Math.floor(this.entryTtlMs / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepEveryMs);
    this.sweepTimer.unref();
    this.log.info('broker listening', { host: this.host, grpc_port: this.grpcPort, http_port: this.httpPort, entry_ttl_ms: this.entryTtlMs });
  }

  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    for (const subs of this.byTimeline.values()) for (const s of subs) s.close();
    for (const s of this.allTimelines) s.close();
    this.grpcServer.forceShutdown();
    await new Promise<void>((resolve) => {
      if (!this.httpServer.listening) {
        resolve();
        return;
      }
      this.httpServer.close(() => resolve());
      this.httpServer.closeAllConnections();
    });
    this.byTimeline.clear();
    this.allTimelines.clear();
    this.cache.clear();
    this.cachedEntries = 0;
    this.log.info('broker stopped', { grpc_port: this.grpcPort, http_port: this.httpPort });
  }

  // ----- subscriptions -----

  private onSubscribeSafekeeperInfo(call: grpc.ServerWritableStream<unknown, Buffer>): void {
    let key: SubscriptionKey;
    try {
      key = subscribeRequestFromWire(call.request);
    } catch (e) {
      this.reject(call, 'SubscribeSafekeeperInfo', e);
      return;
    }
    this.addSubscriber(call, key, 'info', new Set([MessageType.SAFEKEEPER_TIMELINE_INFO]));
  }

  private onSubscribeByFilter(call: grpc.ServerWritableStream<unknown, Buffer>): void {
    let filter;
    try {
      filter = filterRequestFromWire(call.request);
    } catch (e) {
      this.reject(call, 'SubscribeByFilter', e);
      return;
    }
    this.addSubscriber(call, filter.key, 'typed', filter.types);
  }

  private reject(call: grpc.ServerWritableStream<unknown, Buffer>, method: string, e: unknown): void {
    this.metrics.rejected.inc();
    this.log.warn('rejected subscription request', { method, peer: safePeer(call), error: errorMessage(e) });
    call.emit('error', statusError(grpc.status.INVALID_ARGUMENT, `${method}: ${errorMessage(e)}`));
  }

  private addSubscriber(call: grpc.ServerWritableStream<unknown, Buffer>, key: SubscriptionKey, encoding: Encoding, types: ReadonlySet<number>): void {
    if (this.closing !== null) {
      call.emit('error', statusError(grpc.status.UNAVAILABLE, 'broker is shutting down'));
      return;
    }
    const sub = new Subscriber({
      id: this.nextSubscriberId++,
      key,
      encoding,
      types,
      call,
      queueSize: this.queueSize,
      hooks: { delivered: (n) => this.metrics.delivered.inc(n), dropped: (n) => this.metrics.dropped.inc(n) },
      log: this.log,
    });
    // Register and queue the snapshot in the same tick: no live message can slip in between.
    if (key === 'all') {
      this.allTimelines.add(sub);
      this.metrics.allSubscribers.inc();
    } else {
      let set = this.byTimeline.get(sub.keyText);
      if (set === undefined) {
        set = new Set();
        this.byTimeline.set(sub.keyText, set);
      }
      set.add(sub);
      this.metrics.timelineSubscribers.inc();
    }
    const remove = (): void => {
      if (sub.closed && !this.isRegistered(sub)) return;
      sub.close();
      if (!this.unregister(sub)) return;
      this.log.info('subscriber disconnected', { subscription_id: sub.id, key: sub.keyText, peer: sub.peer, dropped: sub.droppedTotal });
    };
    call.on('cancelled', remove);
    call.on('close', remove);
    call.on('error', remove);
    call.on('finish', remove);

    this.log.info('subscriber connected', { subscription_id: sub.id, key: sub.keyText, peer: sub.peer, kind: encoding === 'info' ? 'safekeeper_info' : 'filter' });
    // Response headers right away, so the client knows the subscription is in place.
    call.sendMetadata(new grpc.Metadata());
    sub.startWith(sub.accepts(MessageType.SAFEKEEPER_TIMELINE_INFO) ? this.snapshotFor(key, encoding) : []);
  }

  private isRegistered(sub: Subscriber): boolean {
    return sub.key === 'all' ? this.allTimelines.has(sub) : this.byTimeline.get(sub.keyText)?.has(sub) === true;
  }

  /** Removes a subscriber from the routing tables; true if it was still there. */
  private unregister(sub: Subscriber): boolean {
    if (sub.key === 'all') {
      if (!this.allTimelines.delete(sub)) return false;
      this.metrics.allSubscribers.dec();
      return true;
    }
    const set = this.byTimeline.get(sub.keyText);
    if (set === undefined || !set.delete(sub)) return false;
    if (set.size === 0) this.byTimeline.delete(sub.keyText);
    this.metrics.timelineSubscribers.dec();
    return true;
  }

  /** Encoded cached entries for a new subscriber (expired entries skipped). */
  private snapshotFor(key: SubscriptionKey, encoding: Encoding): Buffer[] {
    const now = performance.now();
    const out: Buffer[] = [];
    const addTimeline = (entries: Map<string, CacheEntry>): void => {
      for (const e of entries.values()) {
        if (now - e.updatedAtMs > this.entryTtlMs) continue;
        out.push(encoding === 'info' ? e.routed.infoEncoding() : e.routed.typedEncoding());
      }
    };
    if (key === 'all') {
      for (const entries of this.cache.values()) addTimeline(entries);
    } else {
      const entries = this.cache.get(timelineKey(key));
      if (entries !== undefined) addTimeline(entries);
    }
    return out;
  }

  // ----- publishing -----

  private onPublishSafekeeperInfo(call: grpc.ServerReadableStream<unknown, object>, callback: grpc.sendUnaryData<object>): void {
    const id = this.nextPublisherId++;
    const peer = safePeer(call);
    let done = false;
    let received = 0;
    this.publishers++;
    this.metrics.publishers.inc();
    this.log.info('publisher connected', { publisher_id: id, peer });
    const finish = (how: string, err: grpc.ServiceError | null): void => {
      if (done) return;
      done = true;
      this.publishers--;
      this.metrics.publishers.dec();
      this.log.info('publisher disconnected', { publisher_id: id, peer, how, messages: received });
      if (how === 'end' || err !== null) {
        try {
          callback(err, err === null ? {} : undefined);
        } catch (e) {
          this.log.warn('could not send publish stream status', { publisher_id: id, error: errorMessage(e) });
        }
      }
    };
    call.on('data', (wire: unknown) => {
      if (done) return;
      let info: SafekeeperTimelineInfo;
      try {
        info = safekeeperInfoFromWire(wire);
      } catch (e) {
        this.metrics.rejected.inc();
        this.log.warn('rejected published message; closing the publish stream', { publisher_id: id, peer, error: errorMessage(e) });
        finish('invalid message', statusError(grpc.status.INVALID_ARGUMENT, `PublishSafekeeperInfo: ${errorMessage(e)}`));
        return;
      }
      received++;
      this.route(new Routed({ type: MessageType.SAFEKEEPER_TIMELINE_INFO, info }));
    });
    call.on('end', () => finish('end', null));
    call.on('cancelled', () => finish('cancelled', null));
    call.on('error', (e: Error) => finish(`error: ${e.message}`, null));
    call.on('close', () => finish('closed', null));
    // Headers right away: lets the client see that its stream is established.
    call.sendMetadata(new grpc.Metadata());
  }

  private onPublishOne(call: grpc.ServerUnaryCall<unknown, object>, callback: grpc.sendUnaryData<object>): void {
    let msg: TypedMessage;
    try {
      msg = typedMessageFromWire(call.request);
    } catch (e) {
      this.metrics.rejected.inc();
      this.log.warn('rejected PublishOne message', { peer: safePeer(call), error: errorMessage(e) });
      callback(statusError(grpc.status.INVALID_ARGUMENT, `PublishOne: ${errorMessage(e)}`));
      return;
    }
    this.metrics.oneoff.inc();
    this.route(new Routed(msg));
    callback(null, {});
  }

  /** Caches (if timeline info) and fans out one validated message. */
  private route(routed: Routed): void {
    this.metrics.processed.inc();
    if (routed.msg.type === MessageType.SAFEKEEPER_TIMELINE_INFO) this.remember(routed, routed.msg.info);
    const subs = this.byTimeline.get(routed.key);
    if (subs !== undefined) {
      for (const s of subs) if (s.accepts(routed.type)) s.offer(routed);
    }
    for (const s of this.allTimelines) if (s.accepts(routed.type)) s.offer(routed);
  }

  private remember(routed: Routed, info: SafekeeperTimelineInfo): void {
    let entries = this.cache.get(routed.key);
    const skKey = info.safekeeperId.toString();
    const existing = entries?.get(skKey);
    if (existing === undefined && this.cachedEntries >= this.maxCachedEntries) {
      if (!this.cacheFullLogged) {
        this.log.warn('broker cache is full; new (timeline, safekeeper) pairs are routed but not cached', { max_cached_entries: this.maxCachedEntries });
        this.cacheFullLogged = true;
      }
      return;
    }
    if (entries === undefined) {
      entries = new Map();
      this.cache.set(routed.key, entries);
    }
    if (existing === undefined) this.cachedEntries++;
    entries.set(skKey, { routed, info, updatedAtMs: performance.now() });
  }

  /** Drops cached entries older than the TTL. */
  private sweep(): void {
    const now = performance.now();
    let expired = 0;
    for (const [key, entries] of this.cache) {
      for (const [sk, e] of entries) {
        if (now - e.updatedAtMs > this.entryTtlMs) {
          entries.delete(sk);
          expired++;
        }
      }
      if (entries.size === 0) this.cache.delete(key);
    }
    if (expired > 0) {
      this.cachedEntries -= expired;
      this.metrics.expired.inc(expired);
      this.cacheFullLogged = false;
      this.log.debug('cached broker entries aged out', { expired, remaining: this.cachedEntries });
    }
  }

  // ----- HTTP -----

  private onHttp(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, contentType: string, body: string): void => {
      res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, 'application/json', JSON.stringify({ msg: `method ${req.method ?? '?'} not allowed` }));
      return;
    }
    if (path === '/metrics') {
      this.sweep();
      this.metrics.cached.set(this.cachedEntries);
      this.registry.metrics().then(
        (text) => send(200, this.registry.contentType, text),
        (e: unknown) => send(500, 'application/json', JSON.stringify({ msg: `cannot render metrics: ${errorMessage(e)}` })),
      );
      return;
    }
    // /v1/status is the same document: every Strata process answers GET /v1/status when ready.
    if (path === '/status' || path === '/v1/status') {
      send(200, 'application/json', JSON.stringify(this.status(), null, 2) + '\n');
      return;
    }
    send(404, 'application/json', JSON.stringify({ msg: `no such endpoint: ${path ?? ''}` }));
  }

  private status(): BrokerStatus {
    this.sweep();
    const now = performance.now();
    const timelines: BrokerStatus['timelines'] = [];
    for (const entries of this.cache.values()) {
      const first = entries.values().next();
      if (first.done === true) continue;
      const safekeepers: BrokerStatus['timelines'][number]['safekeepers'] = [];
      for (const e of entries.values()) {
        const i = e.info;
        const sk: BrokerStatus['timelines'][number]['safekeepers'][number] = {
          safekeeper_id: i.safekeeperId.toString(),
          age_ms: Math.round(now - e.updatedAtMs),
          term: i.term.toString(),
          last_log_term: i.lastLogTerm.toString(),
          flush_lsn: formatLsn(i.flushLsn),
          commit_lsn: formatLsn(i.commitLsn),
          backup_lsn: formatLsn(i.backupLsn),
          remote_consistent_lsn: formatLsn(i.remoteConsistentLsn),
          safekeeper_connstr: i.safekeeperConnstr,
          http_connstr: i.httpConnstr,
        };
        if (i.availabilityZone !== undefined) sk.availability_zone = i.availabilityZone;
        safekeepers.push(sk);
      }
      safekeepers.sort((a, b) => (BigInt(a.safekeeper_id) < BigInt(b.safekeeper_id) ? -1 : 1));
      timelines.push({ tenant_id: first.value.info.tenantId, timeline_id: first.value.info.timelineId, safekeepers });
    }
    timelines.sort((a, b) => (a.tenant_id + a.timeline_id < b.tenant_id + b.timeline_id ? -1 : 1));
    let timelineSubs = 0;
    for (const s of this.byTimeline.values()) timelineSubs += s.size;
    return {
      entryTtlMs: this.entryTtlMs,
      publishers: this.publishers,
      subscribers: { timeline: timelineSubs, all: this.allTimelines.size },
      cachedEntries: this.cachedEntries,
      timelines,
    };
  }
}

/**
 * BrokerService for the server side: like the loaded definition, except that a response which is
 * already a Buffer is taken as its protobuf encoding. That lets the broker encode a message once
 * and hand the same bytes to every subscriber.
 */
function serverServiceDefinition(): grpc.ServiceDefinition {
  const base = loadBrokerProto().service;
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(base)) {
    const serialize = method.responseSerialize;
    out[name] = { ...method, responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : serialize(value)) };
  }
  return out as grpc.ServiceDefinition;
}
