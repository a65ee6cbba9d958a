/**
 * The broker's wire format: loading broker.proto and converting between protobuf objects and
 * Strata's own types.
 *
 * broker.proto is loaded once, at run time, with proto-loader (no generated code). The options
 * matter: `keepCase` keeps Neon's snake_case field names, `longs: String` turns every uint64 into
 * decimal text (JS numbers would silently lose LSNs above 2^53), `bytes: Buffer` gives ids as
 * Buffers, `defaults` fills absent scalars with their zero value and `oneofs` names the chosen
 * branch of a oneof (the subscription key).
 *
 * Invariants at this boundary:
 * - Nothing outside broker/ sees a protobuf object. Incoming objects are validated here (ids exactly
 *   16 bytes, uint64 values as decimal text within range, strings as strings) and rejected with
 *   InvalidInputError naming the field; outgoing values are range-checked before they are encoded,
 *   because the protobuf encoder itself would wrap -1 to 2^64-1 or write "abc" as 0 without a word.
 * - Ids are canonical lower-case hex in Strata's types and 16 raw bytes on the wire.
 */
import { fileURLToPath } from 'node:url';
import { loadSync } from '@grpc/proto-loader';
import type { MethodDefinition, PackageDefinition } from '@grpc/proto-loader';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { InvalidInputError } from '../util/errors.ts';
import { ID_BYTES, idFromBytes, idToBytes } from '../util/ids.ts';
import type { SafekeeperTimelineInfo, TenantTimelineId } from './types.ts';

export const PROTO_PATH = fileURLToPath(new URL('./broker.proto', import.meta.url));

export const U64_MAX = 0xffff_ffff_ffff_ffffn;

/** Longest string accepted in a message field (connection strings, zone names). */
export const MAX_STRING_FIELD_CHARS = 4096;

/** MessageType values of broker.proto. */
export const MessageType = {
  UNKNOWN: 0,
  SAFEKEEPER_TIMELINE_INFO: 2,
  SAFEKEEPER_DISCOVERY_REQUEST: 3,
  SAFEKEEPER_DISCOVERY_RESPONSE: 4,
} as const;
export type MessageTypeValue = (typeof MessageType)[keyof typeof MessageType];

const MESSAGE_TYPE_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(MessageType).map(([k, v]) => [v, k]));

export function messageTypeName(type: number): string {
  return MESSAGE_TYPE_NAMES.get(type) ?? `unknown message type ${type}`;
}

// ---------------------------------------------------------------------------------------------
// Wire shapes (as proto-loader encodes/decodes them with the options above)

export interface WireTenantTimelineId {
  tenant_id: Uint8Array;
  timeline_id: Uint8Array;
}

export interface WireSafekeeperTimelineInfo {
  safekeeper_id: string;
  tenant_timeline_id: WireTenantTimelineId | null;
  term: string;
  last_log_term: string;
  flush_lsn: string;
  commit_lsn: string;
  backup_lsn: string;
  remote_consistent_lsn: string;
  peer_horizon_lsn: string;
  local_start_lsn: string;
  safekeeper_connstr: string;
  http_connstr: string;
  availability_zone?: string;
}

export interface WireSafekeeperDiscoveryRequest {
  tenant_timeline_id: WireTenantTimelineId | null;
}

export interface WireSafekeeperDiscoveryResponse {
  safekeeper_id: string;
  tenant_timeline_id: WireTenantTimelineId | null;
  commit_lsn: string;
  safekeeper_connstr: string;
  availability_zone?: string;
}

export interface WireTypedMessage {
  type: number;
  safekeeper_timeline_info?: WireSafekeeperTimelineInfo | null;
  safekeeper_discovery_request?: WireSafekeeperDiscoveryRequest | null;
  safekeeper_discovery_response?: WireSafekeeperDiscoveryResponse | null;
}

export type WireSubscribeSafekeeperInfoRequest =
  | { all: Record<string, never>; tenant_timeline_id?: undefined }
  | { all?: undefined; tenant_timeline_id: WireTenantTimelineId };

export interface WireSubscribeByFilterRequest {
  types: { type: number }[];
  tenant_timeline_id?: { enabled: boolean; tenant_timeline_id: WireTenantTimelineId | null } | null;
}

// ---------------------------------------------------------------------------------------------
// Loading

export const BROKER_SERVICE_NAME = 'storage_broker.BrokerService';

export const METHOD_NAMES = ['SubscribeSafekeeperInfo', 'PublishSafekeeperInfo', 'SubscribeByFilter', 'PublishOne'] as const;
export type BrokerMethodName = (typeof METHOD_NAMES)[number];

/** One grpc method of BrokerService, with its path and (de)serializers. */
export type BrokerMethod = MethodDefinition<object, object>;

export interface BrokerProto {
  packageDefinition: PackageDefinition;
  /** The service as grpc-js wants it for `server.addService` and the generic client calls. */
  service: ServiceDefinition;
  methods: Readonly<Record<BrokerMethodName, BrokerMethod>>;
}

let loaded: BrokerProto | null = null;

/** Loads broker.proto (once per process). */
export function loadBrokerProto(): BrokerProto {
  if (loaded !== null) return loaded;
  const packageDefinition = loadSync(PROTO_PATH, { keepCase: true, longs: String, defaults: true, oneofs: true, bytes: Buffer });
  const serviceObject = packageDefinition[BROKER_SERVICE_NAME];
  if (serviceObject === undefined || !('SubscribeSafekeeperInfo' in serviceObject)) {
    throw new InvalidInputError(`${PROTO_PATH} does not define service ${BROKER_SERVICE_NAME}`, { file: PROTO_PATH });
  }
  const service = serviceObject as unknown as ServiceDefinition;
  const methods = {} as Record<BrokerMethodName, BrokerMethod>;
  for (const name of METHOD_NAMES) {
    const m = (serviceObject as Record<string, unknown>)[name];
    if (m === undefined) throw new InvalidInputError(`${PROTO_PATH}: ${BROKER_SERVICE_NAME} has no method ${name}`, { file: PROTO_PATH });
    methods[name] = m as BrokerMethod;
  }
  loaded = { packageDefinition, service, methods };
  return loaded;
}

/** The protobuf encoding of a SafekeeperTimelineInfo (no gRPC framing). */
export function encodeSafekeeperTimelineInfo(wire: WireSafekeeperTimelineInfo): Buffer {
  return loadBrokerProto().methods.PublishSafekeeperInfo.requestSerialize(wire);
}

/** The protobuf encoding of a TypedMessage (no gRPC framing). */
export function encodeTypedMessage(wire: WireTypedMessage): Buffer {
  return loadBrokerProto().methods.PublishOne.requestSerialize(wire);
}

// ---------------------------------------------------------------------------------------------
// Scalar conversions

const U64_TEXT = /^[0-9]{1,20}$/;

/** A uint64 field from the wire (decimal text, or a safe integer) as a bigint. */
export function u64FromWire(value: unknown, field: string): bigint {
  let n: bigint;
  if (typeof value === 'string' && U64_TEXT.test(value)) {
    n = BigInt(value);
  } else if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) {
    n = BigInt(value);
  } else if (typeof value === 'bigint') {
    n = value;
  } else {
    throw new InvalidInputError(`field ${field}: expected an unsigned 64-bit integer, got ${describe(value)}`, { field });
  }
  if (n < 0n || n > U64_MAX) {
    throw new InvalidInputError(`field ${field}: ${n} is outside the uint64 range`, { field });
  }
  return n;
}

/** A bigint as the decimal text the encoder takes for a uint64 field; range-checked. */
export function u64ToWire(value: bigint, field: string): string {
  if (typeof value !== 'bigint' || value < 0n || value > U64_MAX) {
    throw new InvalidInputError(`field ${field}: ${describe(value)} is not an unsigned 64-bit integer`, { field });
  }
  return value.toString();
}

function stringFromWire(value: unknown, field: string): string {
  if (typeof value !== 'string') throw new InvalidInputError(`field ${field}: expected a string, got ${describe(value)}`, { field });
  if (value.length > MAX_STRING_FIELD_CHARS) {
    throw new InvalidInputError(`field ${field}: ${value.length} characters, more than the ${MAX_STRING_FIELD_CHARS} allowed`, { field });
  }
  return value;
}

function stringToWire(value: unknown, field: string): string {
  return stringFromWire(value, field);
}

function idBytesFromWire(value: unknown, field: string): string {
  if (!(value instanceof Uint8Array)) {
    throw new InvalidInputError(`field ${field}: expected ${ID_BYTES} bytes, got ${describe(value)}`, { field });
  }
  if (value.length !== ID_BYTES) {
    throw new InvalidInputError(`field ${field}: expected ${ID_BYTES} bytes, got ${value.length}`, { field, lengthBytes: value.length });
  }
  return idFromBytes(value);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'nothing';
  if (typeof value === 'string') return `"${value.length > 40 ? value.slice(0, 40) + '…' : value}"`;
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value instanceof Uint8Array) return `${value.length} bytes`;
  return typeof value;
}

function asRecord(value: unknown, field: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null) {
    throw new InvalidInputError(`field ${field}: missing (a message is required here)`, { field });
  }
  return value as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// TenantTimelineId

export function tenantTimelineIdFromWire(value: unknown, field = 'tenant_timeline_id'): TenantTimelineId {
  const r = asRecord(value, field);
  return {
    tenantId: idBytesFromWire(r['tenant_id'], `${field}.tenant_id`),
    timelineId: idBytesFromWire(r['timeline_id'], `${field}.timeline_id`),
  };
}

export function tenantTimelineIdToWire(ttid: TenantTimelineId): WireTenantTimelineId {
  return { tenant_id: Buffer.from(idToBytes(ttid.tenantId)), timeline_id: Buffer.from(idToBytes(ttid.timelineId)) };
}

/** The key under which the broker groups messages of one timeline. */
export function timelineKey(ttid: TenantTimelineId): string {
  return `${ttid.tenantId}/${ttid.timelineId}`;
}

// ---------------------------------------------------------------------------------------------
// SafekeeperTimelineInfo

export function safekeeperInfoFromWire(value: unknown): SafekeeperTimelineInfo {
  const r = asRecord(value, 'SafekeeperTimelineInfo');
  const ttid = tenantTimelineIdFromWire(r['tenant_timeline_id']);
  const info: SafekeeperTimelineInfo = {
    tenantId: ttid.tenantId,
    timelineId: ttid.timelineId,
    safekeeperId: u64FromWire(r['safekeeper_id'], 'safekeeper_id'),
    term: u64FromWire(r['term'], 'term'),
    lastLogTerm: u64FromWire(r['last_log_term'], 'last_log_term'),
    flushLsn: u64FromWire(r['flush_lsn'], 'flush_lsn'),
    commitLsn: u64FromWire(r['commit_lsn'], 'commit_lsn'),
    backupLsn: u64FromWire(r['backup_lsn'], 'backup_lsn'),
    remoteConsistentLsn: u64FromWire(r['remote_consistent_lsn'], 'remote_consistent_lsn'),
    peerHorizonLsn: u64FromWire(r['peer_horizon_lsn'], 'peer_horizon_lsn'),
    localStartLsn: u64FromWire(r['local_start_lsn'], 'local_start_lsn'),
    safekeeperConnstr: stringFromWire(r['safekeeper_connstr'], 'safekeeper_connstr'),
    httpConnstr: stringFromWire(r['http_connstr'], 'http_connstr'),
  };
  // proto3 `optional`: absent (undefined/null) is different from "".
  const az = r['availability_zone'];
  if (az !== undefined && az !== null) info.availabilityZone = stringFromWire(az, 'availability_zone');
  return info;
}

export function safekeeperInfoToWire(info: SafekeeperTimelineInfo): WireSafekeeperTimelineInfo {
  const wire: WireSafekeeperTimelineInfo = {
    safekeeper_id: u64ToWire(info.safekeeperId, 'safekeeper_id'),
    tenant_timeline_id: tenantTimelineIdToWire(info),
    term: u64ToWire(info.term, 'term'),
    last_log_term: u64ToWire(info.lastLogTerm, 'last_log_term'),
    flush_lsn: u64ToWire(info.flushLsn, 'flush_lsn'),
    commit_lsn: u64ToWire(info.commitLsn, 'commit_lsn'),
    backup_lsn: u64ToWire(info.backupLsn, 'backup_lsn'),
    remote_consistent_lsn: u64ToWire(info.remoteConsistentLsn, 'remote_consistent_lsn'),
    peer_horizon_lsn: u64ToWire(info.peerHorizonLsn, 'peer_horizon_lsn'),
    local_start_lsn: u64ToWire(info.localStartLsn, 'local_start_lsn'),
    safekeeper_connstr: stringToWire(info.safekeeperConnstr, 'safekeeper_connstr'),
    http_connstr: stringToWire(info.httpConnstr, 'http_connstr'),
  };
  if (info.availabilityZone !== undefined) wire.availability_zone = stringToWire(info.availabilityZone, 'availability_zone');
  return wire;
}

// ---------------------------------------------------------------------------------------------
// Discovery messages (carried by TypedMessage only)

export interface SafekeeperDiscoveryResponse extends TenantTimelineId {
  safekeeperId: bigint;
  commitLsn: bigint;
  safekeeperConnstr: string;
  availabilityZone?: string;
}

export function discoveryResponseFromWire(value: unknown): SafekeeperDiscoveryResponse {
  const r = asRecord(value, 'SafekeeperDiscoveryResponse');
  const ttid = tenantTimelineIdFromWire(r['tenant_timeline_id']);
  const resp: SafekeeperDiscoveryResponse = {
    tenantId: ttid.tenantId,
    timelineId: ttid.timelineId,
    safekeeperId: u64FromWire(r['safekeeper_id'], 'safekeeper_id'),
    commitLsn: u64FromWire(r['commit_lsn'], 'commit_lsn'),
    safekeeperConnstr: stringFromWire(r['safekeeper_connstr'], 'safekeeper_connstr'),
  };
  const az = r['availability_zone'];
  if (az !== undefined && az !== null) resp.availabilityZone = stringFromWire(az, 'availability_zone');
  return resp;
}

export function discoveryResponseToWire(resp: SafekeeperDiscoveryResponse): WireSafekeeperDiscoveryResponse {
  const wire: WireSafekeeperDiscoveryResponse = {
    safekeeper_id: u64ToWire(resp.safekeeperId, 'safekeeper_id'),
    tenant_timeline_id: tenantTimelineIdToWire(resp),
    commit_lsn: u64ToWire(resp.commitLsn, 'commit_lsn'),
    safekeeper_connstr: stringToWire(resp.safekeeperConnstr, 'safekeeper_connstr'),
  };
  if (resp.availabilityZone !== undefined) wire.availability_zone = stringToWire(resp.availabilityZone, 'availability_zone');
  return wire;
}

/** A validated TypedMessage. */
export type TypedMessage =
  | { type: typeof MessageType.SAFEKEEPER_TIMELINE_INFO; info: SafekeeperTimelineInfo }
  | { type: typeof MessageType.SAFEKEEPER_DISCOVERY_REQUEST; request: TenantTimelineId }
  | { type: typeof MessageType.SAFEKEEPER_DISCOVERY_RESPONSE; response: SafekeeperDiscoveryResponse };

/** Validates a TypedMessage: a known type whose body field is present and valid. */
export function typedMessageFromWire(value: unknown): TypedMessage {
  const r = asRecord(value, 'TypedMessage');
  const type = r['type'];
  switch (type) {
    case MessageType.SAFEKEEPER_TIMELINE_INFO:
      return { type, info: safekeeperInfoFromWire(requireBody(r, 'safekeeper_timeline_info', type)) };
    case MessageType.SAFEKEEPER_DISCOVERY_REQUEST: {
      const body = asRecord(requireBody(r, 'safekeeper_discovery_request', type), 'safekeeper_discovery_request');
      return { type, request: tenantTimelineIdFromWire(body['tenant_timeline_id'], 'safekeeper_discovery_request.tenant_timeline_id') };
    }
    case MessageType.SAFEKEEPER_DISCOVERY_RESPONSE:
      return { type, response: discoveryResponseFromWire(requireBody(r, 'safekeeper_discovery_response', type)) };
    default:
      throw new InvalidInputError(`TypedMessage.type: ${typeof type === 'number' ? messageTypeName(type) : describe(type)} cannot be published`, {
        field: 'type',
      });
  }
}

function requireBody(r: Record<string, unknown>, field: string, type: number): unknown {
  const body = r[field];
  if (body === undefined || body === null) {
    throw new InvalidInputError(`TypedMessage of type ${messageTypeName(type)} has no ${field}`, { field });
  }
  return body;
}

export function typedMessageToWire(msg: TypedMessage): WireTypedMessage {
  switch (msg.type) {
    case MessageType.SAFEKEEPER_TIMELINE_INFO:
      return { type: msg.type, safekeeper_timeline_info: safekeeperInfoToWire(msg.info) };
    case MessageType.SAFEKEEPER_DISCOVERY_REQUEST:
      return { type: msg.type, safekeeper_discovery_request: { tenant_timeline_id: tenantTimelineIdToWire(msg.request) } };
    case MessageType.SAFEKEEPER_DISCOVERY_RESPONSE:
      return { type: msg.type, safekeeper_discovery_response: discoveryResponseToWire(msg.response) };
  }
}

/** The timeline a typed message is about. */
export function typedMessageTimeline(msg: TypedMessage): TenantTimelineId {
  switch (msg.type) {
    case MessageType.SAFEKEEPER_TIMELINE_INFO:
      return msg.info;
    case MessageType.SAFEKEEPER_DISCOVERY_REQUEST:
      return msg.request;
    case MessageType.SAFEKEEPER_DISCOVERY_RESPONSE:
      return msg.response;
  }
}

// ---------------------------------------------------------------------------------------------
// Subscription requests

/** What a subscriber asked for: one timeline, or every timeline. */
export type SubscriptionKey = TenantTimelineId | 'all';

export function subscribeRequestFromWire(value: unknown): SubscriptionKey {
  const r = asRecord(value, 'SubscribeSafekeeperInfoRequest');
  const which = r['subscription_key'];
  if (which === 'all') return 'all';
  if (which === 'tenant_timeline_id') return tenantTimelineIdFromWire(r['tenant_timeline_id']);
  throw new InvalidInputError('SubscribeSafekeeperInfoRequest has no subscription_key (set `all` or `tenant_timeline_id`)', {
    field: 'subscription_key',
  });
}

export function subscribeRequestToWire(key: SubscriptionKey): WireSubscribeSafekeeperInfoRequest {
  return key === 'all' ? { all: {} } : { tenant_timeline_id: tenantTimelineIdToWire(key) };
}

export interface FilterSubscription {
  /** Message types to deliver (known types only; an empty set delivers nothing). */
  types: Set<MessageTypeValue>;
  /** One timeline, or every timeline. */
  key: SubscriptionKey;
}

const MAX_FILTER_TYPES = 64;

export function filterRequestFromWire(value: unknown): FilterSubscription {
  const r = asRecord(value, 'SubscribeByFilterRequest');
  const typesValue = r['types'] ?? [];
  if (!Array.isArray(typesValue)) throw new InvalidInputError('SubscribeByFilterRequest.types: expected a list', { field: 'types' });
  if (typesValue.length > MAX_FILTER_TYPES) {
    throw new InvalidInputError(`SubscribeByFilterRequest.types: ${typesValue.length} entries, at most ${MAX_FILTER_TYPES} allowed`, { field: 'types' });
  }
  const types = new Set<MessageTypeValue>();
  for (const entry of typesValue) {
    const t = asRecord(entry, 'types[]')['type'];
    if (t === MessageType.SAFEKEEPER_TIMELINE_INFO || t === MessageType.SAFEKEEPER_DISCOVERY_REQUEST || t === MessageType.SAFEKEEPER_DISCOVERY_RESPONSE) {
      types.add(t);
    } else {
      throw new InvalidInputError(`SubscribeByFilterRequest.types: ${typeof t === 'number' ? messageTypeName(t) : describe(t)} cannot be subscribed to`, {
        field: 'types',
      });
    }
  }
  const filter = r['tenant_timeline_id'];
  let key: SubscriptionKey = 'all';
  if (filter !== undefined && filter !== null) {
    const f = asRecord(filter, 'tenant_timeline_id');
    if (f['enabled'] === true) key = tenantTimelineIdFromWire(f['tenant_timeline_id'], 'tenant_timeline_id.tenant_timeline_id');
  }
  return { types, key };
}

export function filterRequestToWire(sub: FilterSubscription): WireSubscribeByFilterRequest {
  return {
    types: [...sub.types].map((type) => ({ type })),
    tenant_timeline_id: sub.key === 'all' ? { enabled: false, tenant_timeline_id: null } : { enabled: true, tenant_timeline_id: tenantTimelineIdToWire(sub.key) },
  };
}

// ---------------------------------------------------------------------------------------------
// A fixed-capacity FIFO that evicts its oldest element when full (subscriber queues in the server,
// the publisher queue in the client): the one buffer shape the broker allows itself.

export class RingQueue<T> {
  private readonly items: (T | undefined)[];
  private head = 0;
  private count = 0;

  constructor(capacity: number) {
    this.items = new Array<T | undefined>(capacity);
  }

  get length(): number {
    return this.count;
  }

  /** Appends; returns true if the oldest element had to be evicted to make room. */
  push(item: T): boolean {
    const capacity = this.items.length;
    if (this.count === capacity) {
      this.items[this.head] = item;
      this.head = (this.head + 1) % capacity;
      return true;
    }
    this.items[(this.head + this.count) % capacity] = item;
    this.count++;
    return false;
  }

  shift(): T | undefined {
    if (this.count === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.items.length;
    this.count--;
    return item;
  }

  clear(): void {
    this.items.fill(undefined);
    this.head = 0;
    this.count = 0;
  }
}
