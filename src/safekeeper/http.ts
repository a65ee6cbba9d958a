/**
 * The safekeeper's HTTP API (Neon's safekeeper API as the model; paths and bodies snake_case,
 * LSNs as "X/X" text, terms and ids as JSON integers).
 *
 *   GET    /v1/status                                   → {id, timelines, availability_zone}
 *   POST   /v1/tenant/timeline                          create a timeline (idempotent for the same parameters)
 *   GET    /v1/tenant/{tenant_id}/timeline/{timeline_id}           → status
 *   DELETE /v1/tenant/{tenant_id}/timeline/{timeline_id}           → {dir_existed, was_active}
 *   POST   /v1/tenant/{tenant_id}/timeline/{timeline_id}/vote      {term} → vote response
 *   POST   /v1/tenant/{tenant_id}/timeline/{timeline_id}/elected   election result
 *   GET    /v1/tenant/{tenant_id}/timeline/{timeline_id}/wal?start_lsn=&max_bytes=&term=
 *                                                        raw WAL for peer recovery (up to our flush)
 *   GET    /metrics                                     Prometheus text
 *
 * Bodies are validated strictly: unknown fields, wrong types and malformed ids/LSNs are 400 with a
 * message naming the field; nothing is coerced. Errors are JSON {code, msg}.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { formatLsn, parseLsn, type Lsn } from '../postgres/lsn.ts';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { parseId } from '../util/ids.ts';
import type { Logger } from '../util/log.ts';
import type { Safekeeper } from './safekeeper.ts';
import type { TermEntry } from './types.ts';
import { SafekeeperTimelineError, type SafekeeperTimeline } from './timeline.ts';

const LSN_PATTERN = '^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$';
const ID_PATTERN = '^[0-9a-f]{32}$';
const lsnSchema = { type: 'string', pattern: LSN_PATTERN } as const;
const idSchema = { type: 'string', pattern: ID_PATTERN } as const;
const termSchema = { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } as const;
const MAX_WAL_RESPONSE_BYTES = 16 * 1024 * 1024;

const memberSchema = {
  type: 'object', additionalProperties: false, required: ['id', 'pg_connstr', 'http_connstr'],
  properties: { id: termSchema, pg_connstr: { type: 'string', maxLength: 300 }, http_connstr: { type: 'string', maxLength: 300 } },
} as const;

const createSchema = {
  type: 'object', additionalProperties: false,
  required: ['tenant_id', 'timeline_id', 'system_id', 'pg_version', 'wal_seg_size', 'start_lsn', 'members'],
  properties: {
    tenant_id: idSchema, timeline_id: idSchema,
    system_id: { type: 'string', pattern: '^[0-9]{1,20}$' },
    pg_version: { type: 'integer', minimum: 150000, maximum: 159999 },
    wal_seg_size: { type: 'integer', minimum: 1048576, maximum: 1073741824 },
    start_lsn: lsnSchema,
    members: { type: 'array', maxItems: 15, items: memberSchema },
  },
} as const;

const voteSchema = { type: 'object', additionalProperties: false, required: ['term'], properties: { term: termSchema } } as const;

const termEntrySchema = {
  type: 'object', additionalProperties: false, required: ['term', 'start_lsn'], properties: { term: termSchema, start_lsn: lsnSchema },
} as const;

const electedSchema = {
  type: 'object', additionalProperties: false, required: ['term', 'start_lsn', 'term_history', 'compute', 'donor'],
  properties: {
    term: termSchema, start_lsn: lsnSchema,
    term_history: { type: 'array', maxItems: 10000, items: termEntrySchema },
    compute: {
      type: 'object', additionalProperties: false, required: ['host', 'port', 'user', 'slot_name', 'application_name'],
      properties: {
        host: { type: 'string', minLength: 1, maxLength: 255 }, port: { type: 'integer', minimum: 1, maximum: 65535 },
        user: { type: 'string', minLength: 1, maxLength: 63 }, slot_name: { type: 'string', pattern: '^[a-z0-9_]{1,63}$' },
        application_name: { type: 'string', minLength: 1, maxLength: 63 },
      },
    },
    donor: {
      anyOf: [
        { type: 'null' },
        { type: 'object', additionalProperties: false, required: ['id', 'http_connstr'], properties: { id: termSchema, http_connstr: { type: 'string', maxLength: 300 } } },
      ],
    },
  },
} as const;

const timelineParams = {
  type: 'object', additionalProperties: false, required: ['tenant_id', 'timeline_id'], properties: { tenant_id: idSchema, timeline_id: idSchema },
} as const;

const walQuery = {
  type: 'object', additionalProperties: false, required: ['start_lsn', 'term'],
  properties: { start_lsn: lsnSchema, term: { type: 'string', pattern: '^[0-9]{1,15}$' }, max_bytes: { type: 'string', pattern: '^[0-9]{1,10}$' } },
} as const;

interface TimelinePathParams { tenant_id: string; timeline_id: string }

export function historyToJson(h: readonly TermEntry[]): { term: number; start_lsn: string }[] {
  return h.map((e) => ({ term: Number(e.term), start_lsn: formatLsn(e.startLsn) }));
}

export function historyFromJson(h: readonly { term: number; start_lsn: string }[]): TermEntry[] {
  return h.map((e) => ({ term: BigInt(e.term), startLsn: parseLsn(e.start_lsn) }));
}

export function timelineStatusJson(tl: SafekeeperTimeline): Record<string, unknown> {
  const s = tl.state;
  return {
    tenant_id: tl.tenantId, timeline_id: tl.timelineId,
    acceptor_state: { term: Number(s.term), epoch: Number(tl.epochTerm), term_history: historyToJson(s.termHistory) },
    system_id: s.systemId.toString(), pg_version: s.pgVersion, wal_seg_size: s.walSegSizeBytes,
    flush_lsn: formatLsn(tl.storage.flushRecordLsn), write_lsn: formatLsn(tl.storage.writeLsn),
    timeline_start_lsn: formatLsn(s.timelineStartLsn), local_start_lsn: formatLsn(s.localStartLsn),
    first_lsn: formatLsn(tl.storage.firstLsn),
    commit_lsn: formatLsn(tl.commitLsn), quorum_commit_lsn: formatLsn(tl.quorumCommitLsn),
    backup_lsn: formatLsn(s.backupLsn), peer_horizon_lsn: formatLsn(s.peerHorizonLsn),
    remote_consistent_lsn: formatLsn(s.remoteConsistentLsn),
    compute: s.compute === null ? null : {
      host: s.compute.host, port: s.compute.port, user: s.compute.user, slot_name: s.compute.slotName, application_name: s.compute.applicationName,
    },
    members: s.members.map((m) => ({ id: Number(m.id), pg_connstr: m.pgConnstr, http_connstr: m.httpConnstr })),
    peers: [...tl.peers].map(([id, p]) => ({
      id: Number(id), term: Number(p.term), last_log_term: Number(p.lastLogTerm), flush_lsn: formatLsn(p.flushLsn),
      commit_lsn: formatLsn(p.commitLsn), age_ms: Date.now() - p.receivedAtMs,
    })),
  };
}

function sendError(reply: FastifyReply, err: unknown, log: Logger): FastifyReply {
  if (err instanceof SafekeeperTimelineError) return reply.code(err.httpStatus).send({ code: err.code, msg: err.message });
  if (err instanceof InvalidInputError) return reply.code(400).send({ code: err.code, msg: err.message });
  if (err instanceof StrataError) {
    const status = err.code === 'timeline_not_found' ? 404 : 500;
    if (status === 500) log.error('request failed', { code: err.code, error: err.message });
    return reply.code(status).send({ code: err.code, msg: err.message });
  }
  log.error('request failed', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  return reply.code(500).send({ code: 'internal_error', msg: err instanceof Error ? err.message : String(err) });
}

export async function startHttpApi(sk: Safekeeper, opts: { host: string; port: number; log: Logger }): Promise<{ app: FastifyInstance; port: number }> {
  const app = Fastify({
    logger: false,
    bodyLimit: 1024 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
  });
  const log = opts.log;
  app.setErrorHandler((err: unknown, _req: FastifyRequest, reply: FastifyReply) => {
    const e = err as { validation?: unknown; statusCode?: number; message?: string; code?: string };
    if (e.validation !== undefined) {
      // Name the offending field: Ajv's message for an unknown one does not.
      const first = (e.validation as { params?: { additionalProperty?: string } }[])[0];
      const extra = first?.params?.additionalProperty;
      const msg = `${e.message ?? 'invalid request'}${extra !== undefined ? `: unknown field "${extra}"` : ''}`;
      return reply.code(400).send({ code: 'invalid_request', msg });
    }
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(e.statusCode).send({ code: e.code ?? 'bad_request', msg: e.message ?? 'bad request' });
    }
    return sendError(reply, err, log);
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ code: 'not_found', msg: `no route ${req.method} ${req.url}` }));

  app.get('/v1/status', async () => ({ id: Number(sk.id), timelines: sk.timelineCount(), availability_zone: sk.availabilityZone ?? null }));

  app.post('/v1/tenant/timeline', { schema: { body: createSchema } }, async (req, reply) => {
    const b = req.body as {
      tenant_id: string; timeline_id: string; system_id: string; pg_version: number; wal_seg_size: number; start_lsn: string;
      members: { id: number; pg_connstr: string; http_connstr: string }[];
    };
    try {
      const segSize = b.wal_seg_size;
      if ((segSize & (segSize - 1)) !== 0) throw new InvalidInputError(`wal_seg_size ${segSize} is not a power of two`);
      const startLsn = parseLsn(b.start_lsn);
      if (startLsn % 8n !== 0n) throw new InvalidInputError(`start_lsn ${b.start_lsn} is not 8-byte aligned, so it cannot be a WAL record boundary`);
      if (startLsn === 0n) throw new InvalidInputError('start_lsn must not be 0/0');
      const { created, timeline } = await sk.createTimeline({
        tenantId: parseId(b.tenant_id, 'tenant'), timelineId: parseId(b.timeline_id, 'timeline'), systemId: BigInt(b.system_id),
        pgVersion: b.pg_version, walSegSizeBytes: segSize, startLsn,
        members: b.members.map((m) => ({ id: BigInt(m.id), pgConnstr: m.pg_connstr, httpConnstr: m.http_connstr })),
      });
      return reply.code(created ? 201 : 200).send(timelineStatusJson(timeline));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id/timeline/:timeline_id', { schema: { params: timelineParams } }, async (req, reply) => {
    const p = req.params as TimelinePathParams;
    try {
      return reply.send(timelineStatusJson(sk.getTimeline(p.tenant_id, p.timeline_id)));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.delete('/v1/tenant/:tenant_id/timeline/:timeline_id', { schema: { params: timelineParams } }, async (req, reply) => {
    const p = req.params as TimelinePathParams;
    try {
      return reply.send(await sk.deleteTimeline(p.tenant_id, p.timeline_id));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.post('/v1/tenant/:tenant_id/timeline/:timeline_id/vote', { schema: { params: timelineParams, body: voteSchema } }, async (req, reply) => {
    const p = req.params as TimelinePathParams;
    const b = req.body as { term: number };
    try {
      const v = await sk.getTimeline(p.tenant_id, p.timeline_id).vote(BigInt(b.term));
      return reply.send({
        term: Number(v.term), vote_given: v.voteGiven, flush_lsn: formatLsn(v.flushLsn), last_log_term: Number(v.lastLogTerm),
        term_history: historyToJson(v.termHistory), timeline_start_lsn: formatLsn(v.timelineStartLsn),
      });
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.post('/v1/tenant/:tenant_id/timeline/:timeline_id/elected', { schema: { params: timelineParams, body: electedSchema } }, async (req, reply) => {
    const p = req.params as TimelinePathParams;
    const b = req.body as {
      term: number; start_lsn: string; term_history: { term: number; start_lsn: string }[];
      compute: { host: string; port: number; user: string; slot_name: string; application_name: string };
      donor: { id: number; http_connstr: string } | null;
    };
    try {
      const tl = sk.getTimeline(p.tenant_id, p.timeline_id);
      const flush = await tl.elected({
        term: BigInt(b.term), startLsn: parseLsn(b.start_lsn), termHistory: historyFromJson(b.term_history),
        compute: { host: b.compute.host, port: b.compute.port, user: b.compute.user, slotName: b.compute.slot_name, applicationName: b.compute.application_name },
        donor: b.donor === null ? null : { id: BigInt(b.donor.id), httpConnstr: b.donor.http_connstr },
      });
      return reply.send({ term: Number(tl.state.term), flush_lsn: formatLsn(flush) });
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id/timeline/:timeline_id/wal', { schema: { params: timelineParams, querystring: walQuery } }, async (req, reply) => {
    const p = req.params as TimelinePathParams;
    const q = req.query as { start_lsn: string; term: string; max_bytes?: string };
    try {
      const tl = sk.getTimeline(p.tenant_id, p.timeline_id);
      const term = BigInt(q.term);
      const start = parseLsn(q.start_lsn);
      const maxBytes = Math.min(MAX_WAL_RESPONSE_BYTES, q.max_bytes === undefined ? MAX_WAL_RESPONSE_BYTES : Number(q.max_bytes));
      const { data, flushLsn } = await readWalForPeer(tl, term, start, maxBytes);
      return reply.header('content-type', 'application/octet-stream').header('x-strata-flush-lsn', formatLsn(flushLsn)).send(data);
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/metrics', async (_req, reply) => {
    const text = await sk.metrics.render();
    return reply.header('content-type', sk.metrics.contentType).send(text);
  });

  await app.listen({ host: opts.host, port: opts.port });
  const addr = app.server.address();
  const port = addr !== null && typeof addr === 'object' ? addr.port : opts.port;
  return { app, port };
}

/**
 * WAL for a peer catching up in `term`: only if we accepted that term ourselves (so our WAL up to
 * our flush is that term's history), and only up to our flushed record end.
 */
async function readWalForPeer(tl: SafekeeperTimeline, term: bigint, start: Lsn, maxBytes: number): Promise<{ data: Buffer; flushLsn: Lsn }> {
  return tl.mutex.run(async () => {
    if (tl.state.term !== term || tl.epochTerm !== term) {
      throw new SafekeeperTimelineError('term_mismatch', `this safekeeper is in term ${tl.state.term} (accepted ${tl.epochTerm}), not ${term}`, 409);
    }
    const flush = tl.storage.flushRecordLsn;
    if (start > flush) {
      throw new SafekeeperTimelineError('wal_not_here', `WAL from ${formatLsn(start)} requested, this safekeeper has it up to ${formatLsn(flush)}`, 416);
    }
    const n = Number(flush - start < BigInt(maxBytes) ? flush - start : BigInt(maxBytes));
    const data = n === 0 ? Buffer.alloc(0) : await tl.storage.read(start, n);
    return { data, flushLsn: flush };
  });
}
