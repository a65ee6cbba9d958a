/**
 * The pageserver's management HTTP API: setup, error mapping, and the process-level routes.
 *
 * Neon's pageserver API is the model (paths, status codes, body shapes; see docs/openapi.yaml).
 * Design points:
 *   - Strict input. Every route has TypeBox schemas for its path, query and body; fastify's Ajv
 *     runs with `removeAdditional: false, coerceTypes: false`, so an unknown field, a wrong type or
 *     a malformed id/LSN is a 400 naming the field *before* any handler runs — a rejected request
 *     changes nothing. Handlers then parse ids and LSNs again (the schema bounds the text, the
 *     parser checks the value).
 *   - Errors are JSON `{msg}` with Neon's status codes. Typed Strata errors map to statuses by
 *     their code (errorStatus below), in one place; anything unexpected is a 500 that is logged.
 *   - The OpenAPI document is generated from the same schemas (@fastify/swagger) and served at
 *     /v1/openapi.json; docs/openapi.yaml is its committed copy (`npm run openapi` rewrites it and
 *     a test fails when the two differ).
 *
 * Routes are split by concept: tenants.ts (tenants and their config), timelines.ts (timelines,
 * time travel, maintenance).
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { StrataError } from '../../util/errors.ts';
import type { Logger } from '../../util/log.ts';
import type { Pageserver } from '../pageserver.ts';
import { NAMED_SCHEMAS } from './schemas.ts';
import { registerTenantRoutes } from './tenants.ts';
import { registerTimelineRoutes } from './timelines.ts';

export const API_VERSION = '1.0.0';

/** Request bodies are small JSON objects; anything bigger is refused before parsing. */
const MAX_BODY_BYTES = 64 * 1024;

export interface PageserverHttpOptions {
  pageserver: Pageserver;
  nodeId: number;
  host: string;
  port: number;
  /** Where bootstrap runs initdb from (default: the PG 15 bin directory pgbin.ts finds). */
  pgBinDir?: string;
  log: Logger;
}

export interface PageserverHttp {
  readonly app: FastifyInstance;
  readonly port: number;
  close(): Promise<void>;
}

/** HTTP status of a Strata error, by its code (Neon's codes where Neon has the case). */
export function errorStatus(err: StrataError): number {
  switch (err.code) {
    case 'invalid_input':
    case 'invalid_tenant_config':
    case 'lsn_out_of_range':
      return 400;
    case 'not_found':
    case 'timeline_not_found':
      return 404;
    case 'conflict':
      return 409;
    case 'has_children':
      return 412;
    case 'lsn_below_gc_cutoff':
      return 406;
    case 'timeline_not_active':
    case 'shutting_down':
    case 'wait_lsn_timeout':
      return 503;
    default:
      return 500;
  }
}

export function sendError(reply: FastifyReply, err: unknown, log: Logger): FastifyReply {
  if (err instanceof StrataError) {
    const status = errorStatus(err);
    if (status >= 500) log.error('request failed', { code: err.code, error: err.message, status });
    return reply.code(status).send({ msg: err.message });
  }
  log.error('request failed', { error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
  return reply.code(500).send({ msg: `internal error: ${err instanceof Error ? err.message : String(err)}` });
}

/** Builds the fastify app (routes registered, not listening): tests and the OpenAPI script use it too. */
export async function buildPageserverApp(opts: Omit<PageserverHttpOptions, 'host' | 'port'>): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: MAX_BODY_BYTES,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
  });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Strata pageserver management API',
        version: API_VERSION,
        description: 'Tenants, timelines (bootstrap and branches), time travel and maintenance of a Strata pageserver. '
          + 'Modelled on Neon\'s pageserver API. Errors are JSON {msg}; request bodies with unknown fields are refused with 400.',
      },
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json['$id'] === 'string' ? json['$id'] : `def-${i}`) },
  });
  for (const s of NAMED_SCHEMAS) app.addSchema(s);

  const log = opts.log;
  app.setErrorHandler((err: unknown, _req: FastifyRequest, reply: FastifyReply) => {
    const e = err as { validation?: unknown; validationContext?: string; statusCode?: number; message?: string };
    if (e.validation !== undefined) {
      // Name the offending field: Ajv's message for an unknown one does not.
      const first = (e.validation as { params?: { additionalProperty?: string } }[])[0];
      const extra = first?.params?.additionalProperty;
      const msg = `invalid request: ${e.message ?? 'validation failed'}${extra !== undefined ? ` (unknown field "${extra}")` : ''}`;
      return reply.code(400).send({ msg });
    }
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(e.statusCode).send({ msg: e.message ?? 'bad request' });
    }
    return sendError(reply, err, log);
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ msg: `no route ${req.method} ${req.url.split('?')[0]}` }));

  const errors = { 400: { $ref: 'Error#' }, 404: { $ref: 'Error#' }, 500: { $ref: 'Error#' }, 503: { $ref: 'Error#' } } as const;

  app.get('/v1/status', {
    schema: { summary: 'Liveness: the node id', tags: ['process'], response: { 200: { $ref: 'Status#' } } },
  }, async () => ({ id: opts.nodeId }));

  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)', tags: ['process'], produces: ['text/plain'] } }, async (_req, reply) => {
    const registry = opts.pageserver.tenants.metrics.registry;
    const text = await registry.metrics();
    return reply.header('content-type', registry.contentType).send(text);
  });

  registerTenantRoutes(app, { pageserver: opts.pageserver, log, errors });
  registerTimelineRoutes(app, { pageserver: opts.pageserver, log, errors, ...(opts.pgBinDir !== undefined ? { pgBinDir: opts.pgBinDir } : {}) });
  return app;
}

export async function startPageserverHttp(opts: PageserverHttpOptions): Promise<PageserverHttp> {
  const app = await buildPageserverApp(opts);
  await app.listen({ host: opts.host, port: opts.port });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : opts.port;
  return { app, port, close: () => app.close() };
}

/** The OpenAPI document as served (used by `npm run openapi` and the drift test). */
export async function openApiDocument(opts: Omit<PageserverHttpOptions, 'host' | 'port'>): Promise<unknown> {
  const app = await buildPageserverApp(opts);
  await app.ready();
  try {
    return app.swagger();
  } finally {
    await app.close();
  }
}

export type ErrorResponses = { readonly 400: { readonly $ref: 'Error#' }; readonly 404: { readonly $ref: 'Error#' }; readonly 500: { readonly $ref: 'Error#' }; readonly 503: { readonly $ref: 'Error#' } };
