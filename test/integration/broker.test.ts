/**
 * The storage broker over the network: real gRPC servers and clients on 127.0.0.1 (ports chosen by
 * the kernel), Neon's broker.proto on the wire, HTTP /metrics and /status read with fetch.
 *
 * Expected values come from what each test published (safekeeper ids, rounds, LSNs it chose) and
 * from the broker's documented contract (fan-out by timeline, latest entry per safekeeper, TTL,
 * bounded per-subscriber queue); never from the broker's own code paths. Raw grpc-js clients send
 * what Strata's own client never would (3-byte ids, unknown types) and play the slow reader.
 * Every broker, client and timer is closed in teardown, also when a test fails.
 */
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { startBroker } from '../../src/broker/server.ts';
import type { Broker, BrokerOptions, BrokerStatus } from '../../src/broker/server.ts';
import { BrokerClient } from '../../src/broker/client.ts';
import type { BrokerConnectionState, BrokerPublisher, BrokerSubscription } from '../../src/broker/client.ts';
import { loadBrokerProto, MessageType } from '../../src/broker/proto.ts';
import type { TypedMessage } from '../../src/broker/proto.ts';
import type { SafekeeperTimelineInfo, TenantTimelineId } from '../../src/broker/types.ts';
import { runBroker } from '../../src/cli/broker.ts';
import { InvalidInputError } from '../../src/util/errors.ts';
import { generateId } from '../../src/util/ids.ts';
import { Logger } from '../../src/util/log.ts';
import type { LogFields, LogLevel } from '../../src/util/log.ts';

const HOST = '127.0.0.1';

// ---------------------------------------------------------------------------------------------
// Helpers

interface LogLine {
  level: LogLevel;
  message: string;
  fields: LogFields;
}

/** Records log lines instead of printing them (child loggers share the sink). */
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
    if (this.sink.length < 20_000) this.sink.push({ level, message, fields: { ...this.fields, ...fields } });
  }
}

/** Cleanups run in reverse order in teardown, whatever happened in the test. */
function cleanups(t: TestContext): (fn: () => unknown) => void {
  const fns: (() => unknown)[] = [];
  t.after(async () => {
    for (const fn of fns.reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning up
      }
    }
  });
  return (fn) => {
    fns.push(fn);
  };
}

async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

async function waitUntil(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

async function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Consumes an async iterable in the background. */
class Collector<T> {
  readonly items: T[] = [];
  error: unknown = null;
  finished = false;
  readonly done: Promise<void>;

  constructor(iterable: AsyncIterable<T>) {
    this.done = (async () => {
      try {
        for await (const item of iterable) this.items.push(item);
      } catch (e) {
        this.error = e;
      } finally {
        this.finished = true;
      }
    })();
  }

  async waitFor(n: number, timeoutMs: number, what: string): Promise<void> {
    await waitUntil(() => this.items.length >= n || this.error !== null, timeoutMs, `${what}: ${n} messages (have ${this.items.length})`);
    if (this.error !== null) throw this.error;
  }
}

function ttid(): TenantTimelineId {
  return { tenantId: generateId(), timelineId: generateId() };
}

/** A message whose every field is derived from (safekeeper, timeline index, round). */
function makeInfo(sk: number, tl: TenantTimelineId, round: number): SafekeeperTimelineInfo {
  const r = BigInt(round);
  const s = BigInt(sk);
  return {
    tenantId: tl.tenantId,
    timelineId: tl.timelineId,
    safekeeperId: s,
    term: 7n,
    lastLogTerm: 6n,
    flushLsn: (r << 32n) + 0x1000n * s,
    commitLsn: (r << 32n) + 0x800n * s,
    backupLsn: r,
    remoteConsistentLsn: r * 2n,
    peerHorizonLsn: r * 3n,
    localStartLsn: 0x100_0000n,
    safekeeperConnstr: `sk${sk}.local:5454`,
    httpConnstr: `http://sk${sk}.local:7676`,
    ...(sk % 2 === 0 ? { availabilityZone: `az-${sk}` } : {}),
  };
}

/** The round a message was made for (makeInfo put it in the high half of flushLsn). */
function roundOf(info: SafekeeperTimelineInfo): number {
  return Number(info.flushLsn >> 32n);
}

async function getText(port: number, path: string): Promise<{ status: number; contentType: string; body: string }> {
  const res = await fetch(`http://${HOST}:${port}${path}`);
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: await res.text() };
}

async function getStatus(broker: Broker): Promise<BrokerStatus> {
  const res = await getText(broker.httpPort, '/status');
  assert.equal(res.status, 200);
  return JSON.parse(res.body) as BrokerStatus;
}

/** Unlabelled samples of /metrics by name. */
async function getMetrics(broker: Broker): Promise<Map<string, number>> {
  const res = await getText(broker.httpPort, '/metrics');
  assert.equal(res.status, 200);
  assert.match(res.contentType, /^text\/plain/);
  const out = new Map<string, number>();
  for (const line of res.body.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*) ([0-9.eE+-]+)$/.exec(line);
    if (m !== null) out.set(m[1] ?? '', Number(m[2]));
  }
  return out;
}

function metric(metrics: Map<string, number>, name: string): number {
  const v = metrics.get(name);
  assert.notEqual(v, undefined, `metric ${name} missing from /metrics`);
  return v ?? NaN;
}

async function newBroker(t: TestContext, add: (fn: () => unknown) => void, opts: Partial<BrokerOptions> = {}): Promise<{ broker: Broker; logs: LogLine[] }> {
  const logs: LogLine[] = [];
  const broker = await startBroker({ host: HOST, port: 0, log: new CapturingLogger(logs), ...opts });
  add(() => broker.close());
  t.diagnostic(`broker grpc=${broker.grpcPort} http=${broker.httpPort}`);
  return { broker, logs };
}

function newClient(add: (fn: () => unknown) => void, broker: Broker | number, logs: LogLine[] = []): BrokerClient {
  const port = typeof broker === 'number' ? broker : broker.grpcPort;
  const client = new BrokerClient({ endpoint: `${HOST}:${port}`, log: new CapturingLogger(logs) });
  add(() => client.close());
  return client;
}

function newRawClient(add: (fn: () => unknown) => void, broker: Broker): grpc.Client {
  const client = new grpc.Client(`${HOST}:${broker.grpcPort}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  add(() => client.close());
  return client;
}

function subscription<T>(add: (fn: () => unknown) => void, make: (signal: AbortSignal) => BrokerSubscription<T>): { sub: BrokerSubscription<T>; got: Collector<T>; abort: AbortController } {
  const abort = new AbortController();
  const sub = make(abort.signal);
  const got = new Collector(sub);
  add(async () => {
    abort.abort();
    await got.done;
  });
  return { sub, got, abort };
}

async function waitConnected(things: { state: BrokerConnectionState }[], what: string): Promise<void> {
  await waitUntil(() => things.every((x) => x.state === 'connected'), 5_000, `${what} connected`);
}

// ---------------------------------------------------------------------------------------------

test('fan-out: 5 safekeepers x 20 timelines to per-timeline and all subscribers, no drops, exact metrics', async (t) => {
  const add = cleanups(t);
  const { broker } = await newBroker(t, add);
  const timelines = Array.from({ length: 20 }, ttid);
  const SAFEKEEPERS = 5;
  const ROUNDS = 10;

  // Subscribers spread over three client connections; two of them also hold an `all` subscription.
  const subClients = [newClient(add, broker), newClient(add, broker), newClient(add, broker)];
  const perTimeline = timelines.map((tl, i) => subscription(add, (signal) => (subClients[i % 3] as BrokerClient).subscribe(tl, { signal })));
  const alls = [0, 1].map((i) => subscription(add, (signal) => (subClients[i] as BrokerClient).subscribe('all', { signal })));
  await waitConnected([...perTimeline, ...alls].map((s) => s.sub), 'subscriptions');

  const publishers: BrokerPublisher[] = [];
  for (let sk = 1; sk <= SAFEKEEPERS; sk++) publishers.push(newClient(add, broker).publisher());
  await waitConnected(publishers, 'publishers');

  const status0 = await getStatus(broker);
  assert.deepEqual(status0.subscribers, { timeline: 20, all: 2 });
  assert.equal(status0.publishers, SAFEKEEPERS);

  for (let round = 1; round <= ROUNDS; round++) {
    for (let sk = 1; sk <= SAFEKEEPERS; sk++) {
      for (const tl of timelines) (publishers[sk - 1] as BrokerPublisher).publish(makeInfo(sk, tl, round));
    }
    await new Promise((r) => setImmediate(r));
  }
  const perTimelineCount = SAFEKEEPERS * ROUNDS;
  const total = perTimelineCount * timelines.length;
  for (const [i, s] of perTimeline.entries()) await s.got.waitFor(perTimelineCount, 10_000, `timeline subscriber ${i}`);
  for (const s of alls) await s.got.waitFor(total, 10_000, 'all subscriber');
  await sleep(100); // anything extra would arrive now

  for (const [i, s] of perTimeline.entries()) {
    const tl = timelines[i] as TenantTimelineId;
    assert.equal(s.got.items.length, perTimelineCount, `timeline ${i} got exactly its messages`);
    const expected = new Map<string, SafekeeperTimelineInfo>();
    for (let sk = 1; sk <= SAFEKEEPERS; sk++) for (let round = 1; round <= ROUNDS; round++) expected.set(`${sk}/${round}`, makeInfo(sk, tl, round));
    const lastRound = new Map<bigint, number>();
    for (const info of s.got.items) {
      const want = expected.get(`${info.safekeeperId}/${roundOf(info)}`);
      assert.deepEqual(info, want, `timeline ${i}: unexpected or altered message`);
      expected.delete(`${info.safekeeperId}/${roundOf(info)}`);
      // One safekeeper's messages arrive in the order it published them.
      assert.ok(roundOf(info) > (lastRound.get(info.safekeeperId) ?? 0), 'per-safekeeper order kept');
      lastRound.set(info.safekeeperId, roundOf(info));
    }
    assert.equal(expected.size, 0, `timeline ${i} got every message`);
  }
  for (const s of alls) {
    assert.equal(s.got.items.length, total);
    const keys = new Set(s.got.items.map((m) => `${m.tenantId}/${m.timelineId}/${m.safekeeperId}/${roundOf(m)}`));
    assert.equal(keys.size, total, 'all subscriber got every message once');
    for (const tl of timelines) assert.ok(keys.has(`${tl.tenantId}/${tl.timelineId}/3/${ROUNDS}`));
  }
  for (const p of publishers) {
    assert.equal(p.sentTotal, timelines.length * ROUNDS);
    assert.equal(p.droppedTotal, 0);
  }

  const m = await getMetrics(broker);
  assert.equal(metric(m, 'storage_broker_active_publishers'), SAFEKEEPERS);
  assert.equal(metric(m, 'storage_broker_per_timeline_active_subscribers'), 20);
  assert.equal(metric(m, 'storage_broker_all_keys_active_subscribers'), 2);
  assert.equal(metric(m, 'storage_broker_processed_messages_total'), total);
  assert.equal(metric(m, 'storage_broker_broadcasted_messages_total'), total * 3, 'each message to its timeline subscriber and two all subscribers');
  assert.equal(metric(m, 'storage_broker_broadcast_dropped_messages_total'), 0);
  assert.equal(metric(m, 'storage_broker_rejected_messages_total'), 0);
  assert.equal(metric(m, 'storage_broker_cached_entries'), SAFEKEEPERS * timelines.length);

  const status = await getStatus(broker);
  assert.equal(status.cachedEntries, SAFEKEEPERS * timelines.length);
  assert.equal(status.timelines.length, timelines.length);
  for (const tl of status.timelines) {
    assert.deepEqual(tl.safekeepers.map((s) => s.safekeeper_id), ['1', '2', '3', '4', '5']);
    const want = makeInfo(4, { tenantId: tl.tenant_id, timelineId: tl.timeline_id }, ROUNDS);
    const sk4 = tl.safekeepers[3];
    assert.equal(sk4?.flush_lsn, `${ROUNDS.toString(16).toUpperCase()}/${(want.flushLsn & 0xffff_ffffn).toString(16).toUpperCase()}`);
    assert.equal(sk4?.availability_zone, 'az-4');
    assert.ok((sk4?.age_ms ?? -1) >= 0 && (sk4?.age_ms ?? Infinity) < 10_000);
  }

  // Unsubscribing is seen by the broker.
  (perTimeline[0] as { abort: AbortController }).abort.abort();
  await waitUntil(async () => (await getStatus(broker)).subscribers.timeline === 19, 5_000, 'subscriber count to drop');

  assert.equal((await getText(broker.httpPort, '/nope')).status, 404);
});

test('a late subscriber gets the cached latest entries at once; filters and PublishOne', async (t) => {
  const add = cleanups(t);
  const { broker } = await newBroker(t, add);
  const a = ttid();
  const b = ttid();
  const pubClient = newClient(add, broker);
  const publishers = [1, 2, 3].map(() => pubClient.publisher());
  await waitConnected(publishers, 'publishers');
  for (let round = 1; round <= 3; round++) {
    for (const [i, p] of publishers.entries()) p.publish(makeInfo(i + 1, a, round));
  }
  (publishers[0] as BrokerPublisher).publish(makeInfo(1, b, 9));
  await waitUntil(async () => (await getStatus(broker)).cachedEntries === 4, 5_000, 'four cached entries');

  const client = newClient(add, broker);
  const started = Date.now();
  const late = subscription(add, (signal) => client.subscribe(a, { signal }));
  await late.got.waitFor(3, 2_000, 'late subscriber snapshot');
  const elapsedMs = Date.now() - started;
  t.diagnostic(`snapshot arrived after ${elapsedMs} ms`);
  assert.ok(elapsedMs < 1_000, `the snapshot came without waiting for a publish (${elapsedMs} ms)`);
  assert.deepEqual(
    [...late.got.items].sort((x, y) => Number(x.safekeeperId - y.safekeeperId)),
    [makeInfo(1, a, 3), makeInfo(2, a, 3), makeInfo(3, a, 3)],
    'the latest message of each safekeeper, and nothing of the other timeline',
  );

  const lateAll = subscription(add, (signal) => client.subscribe('all', { signal }));
  await lateAll.got.waitFor(4, 2_000, 'late all subscriber snapshot');

  const byFilter = subscription(add, (signal) =>
    client.subscribeByFilter({ types: new Set([MessageType.SAFEKEEPER_TIMELINE_INFO]), key: a }, { signal }),
  );
  const discovery = subscription(add, (signal) =>
    client.subscribeByFilter({ types: new Set([MessageType.SAFEKEEPER_DISCOVERY_REQUEST]), key: 'all' }, { signal }),
  );
  await byFilter.got.waitFor(3, 2_000, 'filter subscriber snapshot');
  await waitConnected([discovery.sub], 'discovery subscriber');

  // Live messages follow the snapshot.
  (publishers[1] as BrokerPublisher).publish(makeInfo(2, a, 4));
  await late.got.waitFor(4, 2_000, 'live message after the snapshot');
  assert.deepEqual(late.got.items[3], makeInfo(2, a, 4));
  await byFilter.got.waitFor(4, 2_000, 'filter subscriber live message');
  assert.deepEqual(byFilter.got.items[3], { type: MessageType.SAFEKEEPER_TIMELINE_INFO, info: makeInfo(2, a, 4) } satisfies TypedMessage);

  // PublishOne: a discovery request reaches the discovery filter only; timeline info reaches both kinds.
  await client.publishOne({ type: MessageType.SAFEKEEPER_DISCOVERY_REQUEST, request: b });
  await discovery.got.waitFor(1, 2_000, 'discovery request');
  assert.deepEqual(discovery.got.items[0], { type: MessageType.SAFEKEEPER_DISCOVERY_REQUEST, request: b });
  await client.publishOne({ type: MessageType.SAFEKEEPER_TIMELINE_INFO, info: makeInfo(5, a, 5) });
  await late.got.waitFor(5, 2_000, 'PublishOne timeline info');
  assert.deepEqual(late.got.items[4], makeInfo(5, a, 5));
  await sleep(100);
  assert.equal(late.got.items.length, 5, 'the discovery message did not reach SubscribeSafekeeperInfo');
  assert.equal(discovery.got.items.length, 1, 'timeline info did not reach the discovery-only filter');
  assert.equal(lateAll.got.items.length, 4 + 2, 'all subscriber: snapshot, one live publish, one PublishOne');

  const m = await getMetrics(broker);
  assert.equal(metric(m, 'storage_broker_published_oneoff_messages_total'), 2);
  assert.equal(metric(m, 'storage_broker_processed_messages_total'), 3 * 3 + 1 + 1 + 2);
});

test('entries of a dead publisher age out of /status and of snapshots', async (t) => {
  const add = cleanups(t);
  const ENTRY_TTL_MS = 400;
  const { broker } = await newBroker(t, add, { entryTtlMs: ENTRY_TTL_MS });
  const tl = ttid();
  const deadClient = newClient(add, broker);
  const dead = deadClient.publisher();
  const alive = newClient(add, broker).publisher();
  await waitConnected([dead, alive], 'publishers');

  let round = 0;
  const timer = setInterval(() => alive.publish(makeInfo(2, tl, ++round)), 50);
  add(() => clearInterval(timer));
  dead.publish(makeInfo(1, tl, 1));
  const publishedAt = Date.now();
  await waitUntil(async () => {
    const s = await getStatus(broker);
    return s.timelines[0]?.safekeepers.length === 2;
  }, 2_000, 'both safekeepers in /status');
  assert.ok(Date.now() - publishedAt < ENTRY_TTL_MS, 'seen before its TTL');
  deadClient.close(); // the safekeeper dies: no more publishes from it

  await waitUntil(async () => {
    const s = await getStatus(broker);
    return s.timelines.length === 1 && s.timelines[0]?.safekeepers.length === 1;
  }, 3_000, 'the dead safekeeper to age out');
  const goneAfterMs = Date.now() - publishedAt;
  t.diagnostic(`dead entry gone after ${goneAfterMs} ms`);
  assert.ok(goneAfterMs >= ENTRY_TTL_MS, `not removed before its TTL (${goneAfterMs} ms)`);
  const status = await getStatus(broker);
  assert.equal(status.timelines[0]?.safekeepers[0]?.safekeeper_id, '2');
  assert.ok((status.timelines[0]?.safekeepers[0]?.age_ms ?? Infinity) < ENTRY_TTL_MS);

  const late = subscription(add, (signal) => newClient(add, broker).subscribe(tl, { signal }));
  await late.got.waitFor(1, 2_000, 'snapshot of the live safekeeper');
  await sleep(250);
  assert.ok(late.got.items.length >= 1);
  for (const info of late.got.items) assert.equal(info.safekeeperId, 2n, 'no entry of the dead safekeeper');

  const m = await getMetrics(broker);
  assert.equal(metric(m, 'storage_broker_cached_entries'), 1);
  assert.equal(metric(m, 'storage_broker_expired_entries_total'), 1);
});

test('clients reconnect by themselves when the broker restarts', async (t) => {
  const add = cleanups(t);
  const first = await newBroker(t, add);
  const port = first.broker.grpcPort;
  const tl = ttid();

  const subStates: string[] = [];
  const pubStates: string[] = [];
  const clientLogs: LogLine[] = [];
  const subClient = newClient(add, port, clientLogs);
  const pubClient = newClient(add, port, clientLogs);
  const s = subscription(add, (signal) => subClient.subscribe(tl, { signal, onState: (st) => subStates.push(st) }));
  const pub = pubClient.publisher({ onState: (st) => pubStates.push(st) });
  await waitConnected([s.sub, pub], 'subscription and publisher');
  pub.publish(makeInfo(1, tl, 1));
  await s.got.waitFor(1, 2_000, 'first message');

  await first.broker.close();
  await waitUntil(() => s.sub.state !== 'connected' && pub.state === 'disconnected', 5_000, 'clients to notice the broker is gone');
  // Between attempts the publisher has no stream: a message is dropped on the spot, not queued.
  const droppedBefore = pub.droppedTotal;
  pub.publish(makeInfo(1, tl, 2));
  assert.equal(pub.droppedTotal, droppedBefore + 1);
  assert.equal(pub.queued, 0);

  // Same gRPC port, fresh (empty) broker.
  const second = await newBroker(t, add, { port });
  await waitUntil(() => s.sub.state === 'connected' && pub.state === 'connected', 10_000, 'clients to reconnect');
  pub.publish(makeInfo(1, tl, 3));
  await waitUntil(() => s.got.items.some((m) => roundOf(m) === 3), 5_000, 'a message through the new broker');
  assert.deepEqual(s.got.items.find((m) => roundOf(m) === 3), makeInfo(1, tl, 3));
  assert.ok(!s.got.items.some((m) => roundOf(m) === 2), 'the message published while down was dropped, not delivered late');
  assert.equal(s.sub.connections, 2);
  assert.equal(pub.connections, 2);
  assert.deepEqual(subStates.slice(0, 1), ['connected']);
  assert.ok(subStates.includes('disconnected') && subStates.at(-1) === 'connected', `subscription states ${subStates.join(',')}`);
  assert.ok(pubStates.includes('disconnected') && pubStates.at(-1) === 'connected', `publisher states ${pubStates.join(',')}`);
  assert.ok(clientLogs.some((l) => l.level === 'warn' && /reconnecting/.test(l.message)), 'the loss was logged');

  const m = await getMetrics(second.broker);
  assert.equal(metric(m, 'storage_broker_processed_messages_total'), 1);
  assert.equal(metric(m, 'storage_broker_active_publishers'), 1);
  assert.equal(metric(m, 'storage_broker_per_timeline_active_subscribers'), 1);
});

test('malformed messages and requests are refused with INVALID_ARGUMENT; the broker keeps serving', async (t) => {
  const add = cleanups(t);
  const { broker, logs } = await newBroker(t, add);
  const { methods } = loadBrokerProto();
  const tl = ttid();
  const good = { tenant_id: Buffer.from(tl.tenantId, 'hex'), timeline_id: Buffer.from(tl.timelineId, 'hex') };
  const client = newClient(add, broker);
  const watcher = subscription(add, (signal) => client.subscribe(tl, { signal }));
  await waitConnected([watcher.sub], 'watcher');

  const raw = newRawClient(add, broker);
  // 1. A publish stream: one valid message, then one with a 3-byte tenant id.
  const publishErr = await new Promise<grpc.ServiceError | null>((resolve) => {
    const call = raw.makeClientStreamRequest(methods.PublishSafekeeperInfo.path, methods.PublishSafekeeperInfo.requestSerialize, methods.PublishSafekeeperInfo.responseDeserialize, (err) => resolve(err));
    call.write({ safekeeper_id: '1', tenant_timeline_id: good, flush_lsn: '100' });
    call.write({ safekeeper_id: '1', tenant_timeline_id: { tenant_id: Buffer.from([1, 2, 3]), timeline_id: good.timeline_id }, flush_lsn: '200' });
    call.end();
  });
  assert.equal(publishErr?.code, grpc.status.INVALID_ARGUMENT);
  assert.match(publishErr?.details ?? '', /tenant_id.*16 bytes.*got 3/);
  await watcher.got.waitFor(1, 2_000, 'the valid message before the bad one');
  assert.equal(watcher.got.items[0]?.flushLsn, 100n);

  // 2. PublishOne with type UNKNOWN, and with a type but no body.
  const unary = (msg: object): Promise<grpc.ServiceError | null> =>
    new Promise((resolve) => {
      raw.makeUnaryRequest(methods.PublishOne.path, methods.PublishOne.requestSerialize, methods.PublishOne.responseDeserialize, msg, (err) => resolve(err));
    });
  const unknownErr = await unary({ type: MessageType.UNKNOWN });
  assert.equal(unknownErr?.code, grpc.status.INVALID_ARGUMENT);
  assert.match(unknownErr?.details ?? '', /UNKNOWN/);
  const noBodyErr = await unary({ type: MessageType.SAFEKEEPER_TIMELINE_INFO });
  assert.equal(noBodyErr?.code, grpc.status.INVALID_ARGUMENT);
  assert.match(noBodyErr?.details ?? '', /safekeeper_timeline_info/);

  // 3. Subscriptions with a 3-byte timeline id, and with no key at all.
  const subscribeErr = (req: object): Promise<grpc.ServiceError> =>
    new Promise((resolve, reject) => {
      const call = raw.makeServerStreamRequest(methods.SubscribeSafekeeperInfo.path, methods.SubscribeSafekeeperInfo.requestSerialize, methods.SubscribeSafekeeperInfo.responseDeserialize, req);
      call.on('data', () => reject(new Error('a refused subscription delivered data')));
      call.on('error', (e: grpc.ServiceError) => resolve(e));
      call.on('end', () => reject(new Error('subscription ended without an error')));
    });
  const badKey = await subscribeErr({ tenant_timeline_id: { tenant_id: good.tenant_id, timeline_id: Buffer.from([9, 9, 9]) } });
  assert.equal(badKey.code, grpc.status.INVALID_ARGUMENT);
  assert.match(badKey.details, /timeline_id.*got 3/);
  const noKey = await subscribeErr({});
  assert.equal(noKey.code, grpc.status.INVALID_ARGUMENT);

  // 4. Strata's client refuses to encode values the wire cannot carry.
  const pub = client.publisher();
  assert.throws(() => pub.publish({ ...makeInfo(1, tl, 1), flushLsn: 1n << 64n }), InvalidInputError);
  assert.throws(() => pub.publish({ ...makeInfo(1, tl, 1), safekeeperId: -1n }), InvalidInputError);
  assert.throws(() => pub.publish({ ...makeInfo(1, tl, 1), tenantId: 'abc' }), InvalidInputError);

  // The broker is still fine: a good message flows end to end.
  await waitConnected([pub], 'publisher');
  pub.publish(makeInfo(4, tl, 4));
  await watcher.got.waitFor(2, 2_000, 'a valid message after the rejections');
  assert.deepEqual(watcher.got.items[1], makeInfo(4, tl, 4));
  const m = await getMetrics(broker);
  assert.equal(metric(m, 'storage_broker_rejected_messages_total'), 5);
  assert.equal(metric(m, 'storage_broker_processed_messages_total'), 2);
  assert.ok(logs.some((l) => l.level === 'warn' && /rejected published message/.test(l.message)), 'the rejection was logged');
});

test('a subscriber that stops reading gets drops (counted), not unbounded buffering', async (t) => {
  const add = cleanups(t);
  const QUEUE = 1024;
  const { broker } = await newBroker(t, add, { subscriberQueueSize: QUEUE });
  const tl = ttid();
  // The stuck reader: Strata's own subscription whose consumer takes one message and then stops
  // asking. grpc-js then stops reading the HTTP/2 stream, the flow-control window closes, and the
  // broker's writes to this subscriber stop completing. (A grpc-js call that is never read at all
  // is different: grpc-js keeps decoding into its own unbounded list, a client-side matter the
  // broker cannot see.)
  const abort = new AbortController();
  const sub = newClient(add, broker).subscribe(tl, { signal: abort.signal });
  const it = sub[Symbol.asyncIterator]();
  add(() => it.return?.());
  add(() => abort.abort());
  const first = it.next();

  const pub = newClient(add, broker).publisher();
  await waitConnected([pub, sub], 'publisher and subscriber');
  pub.publish(makeInfo(1, tl, 1));
  const firstResult = await first;
  assert.equal(firstResult.done, false);
  assert.equal(firstResult.done === false ? roundOf(firstResult.value) : -1, 1);

  const TOTAL = 5000;
  for (let i = 2; i <= TOTAL; i++) {
    pub.publish(makeInfo(1, tl, i));
    if (i % 100 === 0) await sleep(2);
  }
  await waitUntil(async () => metric(await getMetrics(broker), 'storage_broker_processed_messages_total') === TOTAL, 10_000, 'all messages processed');
  assert.equal(pub.droppedTotal, 0, 'the publisher side kept everything');

  const metrics = await getMetrics(broker);
  const dropped = metric(metrics, 'storage_broker_broadcast_dropped_messages_total');
  const delivered = metric(metrics, 'storage_broker_broadcasted_messages_total');
  t.diagnostic(`delivered=${delivered} dropped=${dropped}`);
  assert.ok(dropped > 0, 'drops were counted');
  // Every message is delivered, dropped, or still in the bounded queue.
  assert.ok(delivered + dropped <= TOTAL && delivered + dropped >= TOTAL - QUEUE, `delivered ${delivered} + dropped ${dropped} vs ${TOTAL}`);
  // What was handed to gRPC is limited by HTTP/2 flow control (a 64 KiB window), not by TOTAL.
  assert.ok(delivered < 2000, `delivered ${delivered} is bounded by flow control`);

  // When the reader resumes it gets every message that was not dropped (the oldest were dropped).
  const received = [1];
  while (received.at(-1) !== TOTAL) {
    const r = await withTimeout(it.next(), 5_000, `message after ${received.length} received`);
    assert.ok(r.done === false, `subscription ended after ${received.length} messages`);
    received.push(roundOf(r.value));
  }
  assert.equal(received.length, TOTAL - dropped);
  for (let i = 1; i < received.length; i++) assert.ok((received[i] ?? 0) > (received[i - 1] ?? 0), 'order kept');
});

test('runBroker prints its ports, serves, and stops on its stop signal', async (t) => {
  const add = cleanups(t);
  const out = new PassThrough();
  let printed = '';
  out.on('data', (c: Buffer) => (printed += c.toString()));
  const stop = new AbortController();
  add(() => stop.abort());
  let broker: Broker | null = null;
  const run = runBroker({ listen: `${HOST}:0`, log: new CapturingLogger(), stdout: out, stop: stop.signal, onListening: (b) => (broker = b) });
  add(() => run);
  await waitUntil(() => broker !== null, 5_000, 'the broker to listen');
  const b = broker as unknown as Broker;
  assert.match(printed, new RegExp(`grpc ${HOST}:${b.grpcPort} http http://${HOST}:${b.httpPort}`));
  assert.equal((await getStatus(b)).publishers, 0);
  stop.abort();
  assert.equal(await run, 0);
  await assert.rejects(fetch(`http://${HOST}:${b.httpPort}/status`));
});

test('GET /v1/status answers like /status (the readiness URL every Strata process serves)', async (t) => {
  const add = cleanups(t);
  const ENTRY_TTL_MS = 4321;
  const { broker } = await newBroker(t, add, { entryTtlMs: ENTRY_TTL_MS });
  const v1 = await getText(broker.httpPort, '/v1/status');
  assert.equal(v1.status, 200);
  assert.match(v1.contentType, /^application\/json/);
  const doc = JSON.parse(v1.body) as BrokerStatus;
  assert.equal(doc.entryTtlMs, ENTRY_TTL_MS);
  assert.equal(doc.publishers, 0);
  assert.deepEqual(doc.timelines, []);
  assert.deepEqual(doc, await getStatus(broker));
  assert.equal((await getText(broker.httpPort, '/v1/nope')).status, 404);
});
