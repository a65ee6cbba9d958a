/**
 * Client side of the storage broker: a publisher for safekeepers and reconnecting subscriptions for
 * pageservers (and anything else that wants to watch timelines).
 *
 * Design and invariants
 * - One BrokerClient is one gRPC channel (its own HTTP/2 connection: a local subchannel pool, so
 *   two clients in one process do not share a socket or each other's failures). All publishers
 *   and subscriptions made from it are streams multiplexed on that connection.
 * - The broker is stateless and may restart at any time, so everything here reconnects by itself
 *   with exponential backoff (100 ms, ×1.5, capped at 5 s; reset once a stream is established).
 *   HTTP/2 keepalive pings (default every 5 s, 5 s timeout) detect a dead peer that never closed
 *   its socket, which then surfaces as a failed stream and a reconnect.
 * - Nothing buffers without bound. The publisher writes to one long-lived client stream. While the
 *   stream applies backpressure (write() returned false, no 'drain' yet) messages wait in a
 *   fixed-size queue (default 4096, enough for a burst of one push round over thousands of
 *   timelines); when it is full the oldest is dropped. While there is no stream at all, messages
 *   are dropped at once. Drops are counted, not retried: safekeepers republish their full state
 *   every second, so a fresh message always supersedes a lost one. A subscription is a pull-based async
 *   iterator on top of the stream's own flow control: when the consumer stops pulling, the HTTP/2
 *   window fills up and the broker starts dropping for this subscriber, not buffering here.
 * - Messages from the broker are validated like anything else off the network; an invalid one is
 *   logged and skipped rather than ending the subscription.
 * - Connection state (connecting → connected → disconnected → … → closed) is reported through an
 *   `onState` callback and a `state` property, so callers can log it or export it.
 */
import * as grpc from '@grpc/grpc-js';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { rootLogger } from '../util/log.ts';
import type { Logger } from '../util/log.ts';
import {
  filterRequestToWire,
  loadBrokerProto,
  RingQueue,
  safekeeperInfoFromWire,
  safekeeperInfoToWire,
  subscribeRequestToWire,
  timelineKey,
  typedMessageFromWire,
  typedMessageToWire,
} from './proto.ts';
import type { BrokerMethod, FilterSubscription, SubscriptionKey, TypedMessage, WireSafekeeperTimelineInfo } from './proto.ts';
import type { SafekeeperTimelineInfo, TenantTimelineId } from './types.ts';

export const DEFAULT_BROKER_ENDPOINT = '127.0.0.1:50051';
export const DEFAULT_CLIENT_KEEPALIVE_MS = 5_000;
export const INITIAL_BACKOFF_MS = 100;
export const BACKOFF_FACTOR = 1.5;
export const MAX_BACKOFF_MS = 5_000;
export const DEFAULT_PUBLISHER_QUEUE_SIZE = 4096;

export type BrokerConnectionState = 'connecting' | 'connected' | 'disconnected' | 'closed';
export type BrokerStateListener = (state: BrokerConnectionState, detail?: string) => void;

export interface BrokerClientOptions {
  /** `host:port` (an `http://` prefix is accepted; TLS is not supported). */
  endpoint: string;
  log?: Logger;
  /** HTTP/2 keepalive ping interval and timeout. Default 5 s. */
  keepaliveMs?: number;
  /** Reconnect backoff; defaults 100 ms and 5 s. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface SubscribeOptions {
  /** Ends the subscription (the iterator returns) when aborted. */
  signal: AbortSignal;
  onState?: BrokerStateListener;
}

export interface PublisherOptions {
  onState?: BrokerStateListener;
  /** Messages held while the stream applies backpressure. Default 4096. */
  queueSize?: number;
}

/** Parses `host:port` or `http://host:port[/]` into the gRPC target `host:port`. */
export function parseBrokerEndpoint(endpoint: string): string {
  let text = endpoint.trim();
  if (/^https:\/\//i.test(text)) {
    throw new InvalidInputError(`broker endpoint "${endpoint}": TLS (https) is not supported; use host:port or http://host:port`, { endpoint });
  }
  text = text.replace(/^http:\/\//i, '').replace(/\/+$/, '');
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s/:[\]]+):([0-9]{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || !(port >= 1 && port <= 65535)) {
    throw new InvalidInputError(`broker endpoint "${endpoint}": expected host:port, e.g. ${DEFAULT_BROKER_ENDPOINT}`, { endpoint });
  }
  return text;
}

/** Exponential backoff between reconnect attempts. */
class Backoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private nextMs: number;

  constructor(initialMs: number, maxMs: number) {
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.nextMs = initialMs;
  }

  /** The delay before the next attempt; grows the one after. */
  next(): number {
    const d = this.nextMs;
    this.nextMs = Math.min(this.maxMs, Math.round(this.nextMs * BACKOFF_FACTOR));
    return d;
  }

  reset(): void {
    this.nextMs = this.initialMs;
  }
}

/** Resolves after `ms`, or early (without error) when the signal aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function statusCodeOf(e: unknown): number | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e && typeof (e as { code: unknown }).code === 'number') return (e as { code: number }).code;
  return undefined;
}

/** Status codes that a retry cannot fix: the request itself is wrong for this broker. */
const PERMANENT_CODES: ReadonlySet<number> = new Set([grpc.status.INVALID_ARGUMENT, grpc.status.UNIMPLEMENTED]);

export class BrokerClient {
  readonly target: string;
  private readonly grpcClient: grpc.Client;
  private readonly log: Logger;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;
  private readonly closeController = new AbortController();
  private readonly calls = new Set<grpc.Call>();
  private readonly publishers = new Set<BrokerPublisher>();

  constructor(opts: BrokerClientOptions) {
    this.target = parseBrokerEndpoint(opts.endpoint);
    this.log = (opts.log ?? rootLogger).child({ component: 'broker_client', broker: this.target });
    const keepaliveMs = opts.keepaliveMs ?? DEFAULT_CLIENT_KEEPALIVE_MS;
    this.initialBackoffMs = opts.initialBackoffMs ?? INITIAL_BACKOFF_MS;
    this.maxBackoffMs = opts.maxBackoffMs ?? MAX_BACKOFF_MS;
    for (const [name, v] of [['keepaliveMs', keepaliveMs], ['initialBackoffMs', this.initialBackoffMs], ['maxBackoffMs', this.maxBackoffMs]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new InvalidInputError(`broker client option ${name} must be a positive integer, got ${v}`, { [name]: v });
    }
    this.grpcClient = new grpc.Client(this.target, grpc.credentials.createInsecure(), {
      'grpc.keepalive_time_ms': keepaliveMs,
      'grpc.keepalive_timeout_ms': keepaliveMs,
      'grpc.keepalive_permit_without_calls': 1,
      // The channel's own reconnect backoff follows ours, so a restarted broker is found quickly.
      'grpc.initial_reconnect_backoff_ms': this.initialBackoffMs,
      'grpc.max_reconnect_backoff_ms': this.maxBackoffMs,
      'grpc.use_local_subchannel_pool': 1,
    });
  }

  get closed(): boolean {
    return this.closeController.signal.aborted;
  }

  /** A publisher on one long-lived PublishSafekeeperInfo stream; starts connecting right away. */
  publisher(opts: PublisherOptions = {}): BrokerPublisher {
    this.assertOpen();
    const queueSize = opts.queueSize ?? DEFAULT_PUBLISHER_QUEUE_SIZE;
    if (!Number.isInteger(queueSize) || queueSize < 1) throw new InvalidInputError(`publisher queueSize must be a positive integer, got ${queueSize}`, { queueSize });
    const p = new BrokerPublisher({
      queueSize,
      client: this.grpcClient,
      method: loadBrokerProto().methods.PublishSafekeeperInfo,
      backoff: new Backoff(this.initialBackoffMs, this.maxBackoffMs),
      log: this.log,
      onState: opts.onState,
      track: (call) => this.calls.add(call),
      untrack: (call) => this.calls.delete(call),
      onClosed: (self) => this.publishers.delete(self),
    });
    this.publishers.add(p);
    return p;
  }

  /** SafekeeperTimelineInfo of one timeline (or of all), reconnecting until the signal aborts. */
  subscribe(key: TenantTimelineId | 'all', opts: SubscribeOptions): BrokerSubscription<SafekeeperTimelineInfo> {
    this.assertOpen();
    const request = subscribeRequestToWire(key);
    return new BrokerSubscription({
      ...this.subscriptionBase(opts, describeKey(key)),
      method: loadBrokerProto().methods.SubscribeSafekeeperInfo,
      request,
      convert: safekeeperInfoFromWire,
    });
  }

  /** Typed messages selected by type and timeline (SubscribeByFilter), reconnecting until aborted. */
  subscribeByFilter(filter: FilterSubscription, opts: SubscribeOptions): BrokerSubscription<TypedMessage> {
    this.assertOpen();
    const request = filterRequestToWire(filter);
    return new BrokerSubscription({
      ...this.subscriptionBase(opts, `filter:${describeKey(filter.key)}`),
      method: loadBrokerProto().methods.SubscribeByFilter,
      request,
      convert: typedMessageFromWire,
    });
  }

  /** Publishes one typed message (PublishOne). Rejects if the broker cannot be reached in time. */
  publishOne(msg: TypedMessage, opts: { timeoutMs?: number } = {}): Promise<void> {
    this.assertOpen();
    const method = loadBrokerProto().methods.PublishOne;
    const wire = typedMessageToWire(msg);
    const deadline = Date.now() + (opts.timeoutMs ?? 5_000);
    return new Promise((resolve, reject) => {
      const call = this.grpcClient.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, wire, new grpc.Metadata(), { deadline }, (err) => {
        this.calls.delete(call);
        if (err) {
          reject(new StrataError('broker_publish_failed', `PublishOne to broker ${this.target} failed: ${err.details || err.message}`, {
            broker: this.target,
            grpcCode: err.code,
          }));
        } else {
          resolve();
        }
      });
      this.calls.add(call);
    });
  }

  /** Stops all publishers and subscriptions of this client and closes its connection. */
  close(): void {
    if (this.closed) return;
    for (const p of [...this.publishers]) p.close();
    this.closeController.abort();
    for (const call of [...this.calls]) call.cancel();
    this.calls.clear();
    this.grpcClient.close();
  }

  private subscriptionBase(opts: SubscribeOptions, keyText: string): SubscriptionBase {
    return {
      client: this.grpcClient,
      signal: AbortSignal.any([opts.signal, this.closeController.signal]),
      backoff: new Backoff(this.initialBackoffMs, this.maxBackoffMs),
      log: this.log.child({ subscription: keyText }),
      onState: opts.onState,
      keyText,
      track: (call) => this.calls.add(call),
      untrack: (call) => this.calls.delete(call),
    };
  }

  private assertOpen(): void {
    if (this.closed) throw new StrataError('broker_client_closed', `broker client for ${this.target} is closed`, { broker: this.target });
  }
}

function describeKey(key: SubscriptionKey): string {
  return key === 'all' ? 'all' : timelineKey(key);
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

interface SubscriptionBase {
  client: grpc.Client;
  signal: AbortSignal;
  backoff: Backoff;
  log: Logger;
  onState: BrokerStateListener | undefined;
  keyText: string;
  track(call: grpc.Call): void;
  untrack(call: grpc.Call): void;
}

/**
 * A server-streaming subscription that reconnects forever (until its signal aborts). Iterate it
 * once with `for await`; breaking out of the loop also ends it.
 */
export class BrokerSubscription<T> implements AsyncIterable<T> {
  private readonly base: SubscriptionBase;
  private readonly method: BrokerMethod;
  private readonly request: object;
  private readonly convert: (wire: unknown) => T;
  private currentState: BrokerConnectionState = 'connecting';
  private iterated = false;
  /** How many times a stream was established (1 on the first connection). */
  connections = 0;
  /** Messages from the broker that failed validation and were skipped. */
  invalidMessages = 0;

  constructor(args: SubscriptionBase & { method: BrokerMethod; request: object; convert: (wire: unknown) => T }) {
    this.base = args;
    this.method = args.method;
    this.request = args.request;
    this.convert = args.convert;
  }

  get state(): BrokerConnectionState {
    return this.currentState;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.iterated) throw new StrataError('broker_subscription_reused', `broker subscription ${this.base.keyText} can be iterated only once`);
    this.iterated = true;
    return this.run();
  }

  private setState(state: BrokerConnectionState, detail?: string): void {
    if (state === this.currentState) return;
    this.currentState = state;
    try {
      this.base.onState?.(state, detail);
    } catch (e) {
      this.base.log.warn('broker state listener threw', { error: errorMessage(e) });
    }
  }

  private async *run(): AsyncGenerator<T, void, undefined> {
    const { client, signal, backoff, log } = this.base;
    try {
      while (!signal.aborted) {
        this.setState('connecting');
        const call = client.makeServerStreamRequest(this.method.path, this.method.requestSerialize, this.method.responseDeserialize, this.request, new grpc.Metadata(), {});
        const onAbort = (): void => call.cancel();
        signal.addEventListener('abort', onAbort, { once: true });
        this.base.track(call);
        let established = false;
        const markEstablished = (): void => {
          if (established) return;
          established = true;
          this.connections++;
          backoff.reset();
          this.setState('connected');
          log.debug('broker subscription established', { connections: this.connections });
        };
        call.on('metadata', markEstablished);
        let reason = 'stream ended by the broker';
        try {
          for await (const wire of call as AsyncIterable<unknown>) {
            markEstablished();
            let item: T;
            try {
              item = this.convert(wire);
            } catch (e) {
              this.invalidMessages++;
              log.warn('skipping invalid message from broker', { error: errorMessage(e) });
              continue;
            }
            yield item;
          }
        } catch (e) {
          if (signal.aborted) break;
          const code = statusCodeOf(e);
          if (code !== undefined && PERMANENT_CODES.has(code)) {
            throw new StrataError('broker_subscription_refused', `broker ${client.getChannel().getTarget()} refused subscription ${this.base.keyText}: ${errorMessage(e)}`, {
              grpcCode: code,
            });
          }
          reason = errorMessage(e);
        } finally {
          signal.removeEventListener('abort', onAbort);
          this.base.untrack(call);
          call.cancel();
        }
        if (signal.aborted) break;
        const delayMs = backoff.next();
        this.setState('disconnected', reason);
        (established ? log.warn.bind(log) : log.debug.bind(log))('broker subscription lost; reconnecting', { reason, retry_in_ms: delayMs });
        await sleep(delayMs, signal);
      }
    } finally {
      this.setState('closed');
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Publisher

interface PublisherArgs {
  queueSize: number;
  client: grpc.Client;
  method: BrokerMethod;
  backoff: Backoff;
  log: Logger;
  onState: BrokerStateListener | undefined;
  track(call: grpc.Call): void;
  untrack(call: grpc.Call): void;
  onClosed(p: BrokerPublisher): void;
}

/**
 * Publishes SafekeeperTimelineInfo on one long-lived stream. publish() never blocks: under
 * backpressure messages wait in a bounded queue (oldest dropped when full); without a stream they
 * are dropped at once. Every drop is counted in droppedTotal.
 */
export class BrokerPublisher {
  private readonly args: PublisherArgs;
  private call: grpc.ClientWritableStream<object> | null = null;
  private blocked = false;
  private readonly queue: RingQueue<WireSafekeeperTimelineInfo>;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private currentState: BrokerConnectionState = 'connecting';
  private closedFlag = false;
  /** Messages handed to a stream. */
  sentTotal = 0;
  /** Messages dropped: no stream, or the stream was applying backpressure. */
  droppedTotal = 0;
  /** How many times a stream was established. */
  connections = 0;

  constructor(args: PublisherArgs) {
    this.args = args;
    this.queue = new RingQueue(args.queueSize);
    this.connect();
  }

  get state(): BrokerConnectionState {
    return this.currentState;
  }

  /** Messages waiting for the stream to accept them. */
  get queued(): number {
    return this.queue.length;
  }

  /** Sends, queues or drops one message (see the class comment). Throws InvalidInputError for an invalid one. */
  publish(info: SafekeeperTimelineInfo): void {
    const wire = safekeeperInfoToWire(info);
    if (this.closedFlag || this.call === null) {
      this.droppedTotal++;
      return;
    }
    if (this.blocked || this.queue.length > 0) {
      if (this.queue.push(wire)) this.droppedTotal++;
      return;
    }
    this.write(this.call, wire);
  }

  private write(call: grpc.ClientWritableStream<object>, wire: WireSafekeeperTimelineInfo): void {
    this.sentTotal++;
    if (!call.write(wire)) this.blocked = true;
  }

  private flush(call: grpc.ClientWritableStream<object>): void {
    while (!this.blocked && this.call === call) {
      const next = this.queue.shift();
      if (next === undefined) return;
      this.write(call, next);
    }
  }

  /** Forgets queued messages (their stream is gone), counting them as dropped. */
  private discardQueue(): void {
    this.droppedTotal += this.queue.length;
    this.queue.clear();
  }

  /** Ends the stream (half-close) and stops reconnecting. Idempotent. */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const call = this.call;
    this.call = null;
    this.discardQueue();
    if (call !== null) {
      try {
        call.end();
      } catch {
        call.cancel();
      }
    }
    this.setState('closed');
    this.args.onClosed(this);
  }

  private setState(state: BrokerConnectionState, detail?: string): void {
    if (state === this.currentState) return;
    this.currentState = state;
    try {
      this.args.onState?.(state, detail);
    } catch (e) {
      this.args.log.warn('broker state listener threw', { error: errorMessage(e) });
    }
  }

  private connect(): void {
    this.reconnectTimer = null;
    if (this.closedFlag) return;
    const { client, method, log } = this.args;
    this.setState('connecting');
    let established = false;
    const call: grpc.ClientWritableStream<object> = client.makeClientStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      new grpc.Metadata(),
      {},
      (err) => {
        this.args.untrack(call);
        if (this.call !== call && !this.closedFlag) return;
        this.call = null;
        this.discardQueue();
        if (this.closedFlag) return;
        const reason = err ? err.details || err.message : 'broker ended the publish stream';
        const delayMs = this.args.backoff.next();
        this.setState('disconnected', reason);
        (established ? log.warn.bind(log) : log.debug.bind(log))('broker publish stream lost; reconnecting', {
          reason,
          retry_in_ms: delayMs,
          sent_total: this.sentTotal,
          dropped_total: this.droppedTotal,
        });
        this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
        this.reconnectTimer.unref();
      },
    );
    call.on('metadata', () => {
      if (this.call !== call || established) return;
      established = true;
      this.connections++;
      this.args.backoff.reset();
      this.setState('connected');
      log.debug('broker publish stream established', { connections: this.connections });
    });
    call.on('drain', () => {
      if (this.call !== call) return;
      this.blocked = false;
      this.flush(call);
    });
    // Failures arrive through the callback above; this only keeps an 'error' event from throwing.
    call.on('error', () => {});
    this.args.track(call);
    this.call = call;
    this.blocked = false;
  }
}
