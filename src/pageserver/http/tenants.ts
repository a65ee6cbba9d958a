/**
 * Tenant routes of the management API: create, list, get, delete, and the tenant config.
 *
 *   GET    /v1/tenant                      → [TenantInfo]
 *   POST   /v1/tenant                      {new_tenant_id?, ...TenantConfig} → 201 "<id>"; 409 exists
 *   GET    /v1/tenant/{tenant_id}          → TenantInfo (attachment_status as Neon reports it)
 *   DELETE /v1/tenant/{tenant_id}          → 202; the deletion is complete when the answer comes,
 *                                            so Neon's "poll until 404" clients finish at once
 *   GET    /v1/tenant/{tenant_id}/config   → {tenant_specific_overrides, effective_config}
 *   PUT    /v1/tenant/config               {tenant_id, ...TenantConfig}: replaces the overrides
 *
 * Config bodies pass the schema first (unknown fields → 400) and then the tenant config parser
 * (ranges, durations), which names every bad field; only a fully valid body changes anything.
 */
import type { FastifyInstance } from 'fastify';
import { parseId } from '../../util/ids.ts';
import type { Logger } from '../../util/log.ts';
import { attachmentStatus } from '../states.ts';
import type { Tenant } from '../tenant.ts';
import { TENANT_CONFIG_DEFAULTS, parseTenantConfigOverrides, tenantConfigToJson } from '../tenantconfig.ts';
import type { Pageserver } from '../pageserver.ts';
import { TenantParams, type TenantConfigBody, type TenantCreateBody, type TenantInfoJson } from './schemas.ts';
import { sendError, type ErrorResponses } from './server.ts';

export function tenantInfo(tenant: Tenant): TenantInfoJson {
  const status = attachmentStatus(tenant.states.current);
  let physical = 0;
  for (const tl of tenant.listTimelines()) physical += timelinePhysicalSize(tl.layers.historicLayers());
  return {
    id: tenant.tenantId,
    state: tenant.state,
    attachment_status: typeof status === 'string' ? { slug: status } : { slug: 'failed', data: { reason: status.failed.reason } },
    current_physical_size: physical,
    timelines: tenant.listTimelines().length,
  };
}

export function timelinePhysicalSize(layers: readonly { readonly sizeBytes: number }[]): number {
  let sum = 0;
  for (const l of layers) sum += l.sizeBytes;
  return sum;
}

function configFields(body: Record<string, unknown>, skip: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) if (k !== skip) out[k] = v;
  return out;
}

export function registerTenantRoutes(app: FastifyInstance, ctx: { pageserver: Pageserver; log: Logger; errors: ErrorResponses }): void {
  const { pageserver: ps, log, errors } = ctx;
  const tags = ['tenant'];

  app.get('/v1/tenant', {
    schema: { summary: 'List tenants', tags, response: { 200: { type: 'array', items: { $ref: 'TenantInfo#' } }, 500: errors[500] } },
  }, async () => ps.tenants.listTenants().map(tenantInfo));

  app.post('/v1/tenant', {
    schema: {
      summary: 'Create a tenant', tags, body: { $ref: 'TenantCreateRequest#' },
      response: { 201: { type: 'string', description: 'the new tenant\'s id' }, 400: errors[400], 409: { $ref: 'Error#' }, 500: errors[500] },
    },
  }, async (req, reply) => {
    const body = req.body as TenantCreateBody;
    try {
      const config = parseTenantConfigOverrides(configFields(body, 'new_tenant_id'));
      const tenant = await ps.tenants.createTenant({ ...(body.new_tenant_id !== undefined ? { tenantId: body.new_tenant_id } : {}), config });
      // A JSON string, as Neon answers (fastify would send a bare string as text).
      return reply.code(201).type('application/json').send(JSON.stringify(tenant.tenantId));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id', {
    schema: { summary: 'Tenant status', tags, params: TenantParams, response: { 200: { $ref: 'TenantInfo#' }, ...errors } },
  }, async (req, reply) => {
    try {
      const { tenant_id } = req.params as { tenant_id: string };
      return reply.send(tenantInfo(ps.tenants.getTenant(parseId(tenant_id, 'tenant'))));
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.delete('/v1/tenant/:tenant_id', {
    schema: {
      summary: 'Delete a tenant and all its timelines',
      description: 'Stops the tenant\'s WAL intake, then removes its directory. The deletion is complete when the 202 arrives; a GET then answers 404.',
      tags, params: TenantParams, response: { 202: { type: 'object', additionalProperties: false, properties: {} }, ...errors },
    },
  }, async (req, reply) => {
    try {
      const tenantId = parseId((req.params as { tenant_id: string }).tenant_id, 'tenant');
      const tenant = ps.tenants.getTenant(tenantId);
      for (const tl of tenant.listTimelines()) await ps.detachWalSource(tenantId, tl.timelineId);
      await ps.tenants.deleteTenant(tenantId);
      return reply.code(202).send({});
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.get('/v1/tenant/:tenant_id/config', {
    schema: { summary: 'Tenant config: the overrides and the effective values', tags, params: TenantParams, response: { 200: { $ref: 'TenantConfigResponse#' }, ...errors } },
  }, async (req, reply) => {
    try {
      const tenant = ps.tenants.getTenant(parseId((req.params as { tenant_id: string }).tenant_id, 'tenant'));
      return reply.send({
        tenant_specific_overrides: tenantConfigToJson(tenant.configOverrides),
        effective_config: tenantConfigToJson(tenant.config as typeof TENANT_CONFIG_DEFAULTS),
      });
    } catch (err) {
      return sendError(reply, err, log);
    }
  });

  app.put('/v1/tenant/config', {
    schema: {
      summary: 'Replace a tenant\'s config overrides', description: 'Fields left out return to the pageserver\'s defaults. Persisted, and applied at once.',
      tags, body: { $ref: 'TenantConfigRequest#' }, response: { 200: { type: 'object', additionalProperties: false, properties: {} }, ...errors },
    },
  }, async (req, reply) => {
    const body = req.body as TenantConfigBody;
    try {
      const tenant = ps.tenants.getTenant(parseId(body.tenant_id, 'tenant'));
      const overrides = parseTenantConfigOverrides(configFields(body, 'tenant_id'));
      await tenant.setConfig(overrides);
      return reply.send({});
    } catch (err) {
      return sendError(reply, err, log);
    }
  });
}
