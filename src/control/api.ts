/**
 * A small typed client of the pageserver's management HTTP API (contract: api-contract, the
 * pageserver's /v1/openapi.json), for the CLI.
 *
 * Every call is bounded by a timeout. Failures come back as one of two typed errors, so the CLI
 * can print one clear line: PageserverApiError carries the HTTP status and the server's own `msg`
 * (404 "tenant … not found" stays the server's words); PageserverUnreachableError says nothing
 * answers at the address — almost always "the cluster is not started".
 */
import { StrataError } from '../util/errors.ts';
import { isCanonicalId } from '../util/ids.ts';
import type { TenantConfigJson } from '../pageserver/tenantconfig.ts';

export interface TenantInfo {
  id: string;
  state: string;
  attachment_status: { slug: string; data?: { reason: string } };
  current_physical_size: number;
}

export interface TimelineInfo {
  tenant_id: string;
  timeline_id: string;
  ancestor_timeline_id: string | null;
  ancestor_lsn: string | null;
  last_record_lsn: string;
  prev_record_lsn: string | null;
  latest_gc_cutoff_lsn: string;
  disk_consistent_lsn: string;
  remote_consistent_lsn: string;
  initdb_lsn: string;
  current_physical_size: number;
  pg_version: number;
  state: string;
  pg_system_identifier: string;
  wal_seg_size: number;
  wal_source: string;
}

export interface TenantConfigResponse {
  tenant_specific_overrides: TenantConfigJson;
  effective_config: TenantConfigJson;
}

export type LsnByTimestampKind = 'present' | 'future' | 'past' | 'nodata';

export interface LsnByTimestamp {
  lsn: string;
  kind: LsnByTimestampKind;
}

export class PageserverApiError extends StrataError {
  readonly status: number;
  readonly serverMsg: string;

  constructor(method: string, urlPath: string, status: number, serverMsg: string) {
    super('pageserver_api', `pageserver: ${serverMsg !== '' ? serverMsg : `HTTP ${status}`} (HTTP ${status} on ${method} ${urlPath})`, { status, path: urlPath });
    this.name = 'PageserverApiError';
    this.status = status;
    this.serverMsg = serverMsg;
  }
}

export class PageserverUnreachableError extends StrataError {
  constructor(baseUrl: string, why: string) {
    super('pageserver_unreachable', `the pageserver is not running or not reachable at ${baseUrl} (${why}); start the cluster with \`strata start\``, { url: baseUrl });
    this.name = 'PageserverUnreachableError';
  }
}

export const DEFAULT_API_TIMEOUT_MS = 30_000;
/** Bootstrap runs initdb and imports it: give it minutes, not seconds. */
export const TIMELINE_CREATE_TIMEOUT_MS = 300_000;
const MAX_RESPONSE_CHARS = 16 * 1024 * 1024;

export class PageserverClient {
  readonly baseUrl: string;
  private readonly timeoutMs: number;

  constructor(baseUrl: string, opts: { timeoutMs?: number } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_API_TIMEOUT_MS;
  }

  private async call<T>(method: string, urlPath: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<{ status: number; json: T; text: string }> {
    let res: Response;
    try {
      res = await fetch(this.baseUrl + urlPath, {
        method,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      if (e.name === 'TimeoutError') {
        throw new StrataError('pageserver_timeout', `pageserver: ${method} ${urlPath} got no answer within ${timeoutMs} ms`, { path: urlPath });
      }
      throw new PageserverUnreachableError(this.baseUrl, e.cause?.code ?? e.message);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      throw new StrataError('pageserver_api', `pageserver: ${method} ${urlPath}: the answer broke off (${(err as Error).message})`, { path: urlPath });
    }
    if (text.length > MAX_RESPONSE_CHARS) throw new StrataError('pageserver_api', `pageserver: ${method} ${urlPath}: answer larger than ${MAX_RESPONSE_CHARS} characters`, { path: urlPath });
    let json: unknown = null;
    if (text.length > 0) {
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
    }
    if (res.status >= 300) {
      const msg = json !== null && typeof json === 'object' && typeof (json as { msg?: unknown }).msg === 'string' ? (json as { msg: string }).msg : text.slice(0, 300);
      throw new PageserverApiError(method, urlPath, res.status, msg);
    }
    return { status: res.status, json: json as T, text };
  }

  async status(): Promise<{ id: number }> {
    return (await this.call<{ id: number }>('GET', '/v1/status')).json;
  }

  async listTenants(): Promise<TenantInfo[]> {
    return (await this.call<TenantInfo[]>('GET', '/v1/tenant')).json;
  }

  /** Returns the new tenant's id. */
  async createTenant(tenantId: string | undefined, config: TenantConfigJson): Promise<string> {
    const r = await this.call<unknown>('POST', '/v1/tenant', { ...(tenantId !== undefined ? { new_tenant_id: tenantId } : {}), ...config });
    // The contract says a JSON string; a bare id in text/plain is accepted too.
    const id = typeof r.json === 'string' ? r.json : r.text.trim();
    if (!isCanonicalId(id)) throw new StrataError('pageserver_api', `pageserver: POST /v1/tenant answered ${JSON.stringify(r.text.slice(0, 100))}, not a tenant id`);
    return id;
  }

  async getTenant(tenantId: string): Promise<TenantInfo> {
    return (await this.call<TenantInfo>('GET', `/v1/tenant/${tenantId}`)).json;
  }

  async deleteTenant(tenantId: string): Promise<void> {
    await this.call('DELETE', `/v1/tenant/${tenantId}`);
  }

  async getTenantConfig(tenantId: string): Promise<TenantConfigResponse> {
    return (await this.call<TenantConfigResponse>('GET', `/v1/tenant/${tenantId}/config`)).json;
  }

  /** Replaces the tenant's overrides with `config`. */
  async setTenantConfig(tenantId: string, config: TenantConfigJson): Promise<void> {
    await this.call('PUT', '/v1/tenant/config', { tenant_id: tenantId, ...config });
  }

  async createTimeline(tenantId: string, body: { new_timeline_id?: string; ancestor_timeline_id?: string; ancestor_start_lsn?: string; pg_version?: number }): Promise<TimelineInfo> {
    return (await this.call<TimelineInfo>('POST', `/v1/tenant/${tenantId}/timeline`, body, TIMELINE_CREATE_TIMEOUT_MS)).json;
  }

  async listTimelines(tenantId: string): Promise<TimelineInfo[]> {
    return (await this.call<TimelineInfo[]>('GET', `/v1/tenant/${tenantId}/timeline`)).json;
  }

  async getTimeline(tenantId: string, timelineId: string): Promise<TimelineInfo> {
    return (await this.call<TimelineInfo>('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}`)).json;
  }

  async deleteTimeline(tenantId: string, timelineId: string): Promise<void> {
    await this.call('DELETE', `/v1/tenant/${tenantId}/timeline/${timelineId}`);
  }

  async getLsnByTimestamp(tenantId: string, timelineId: string, timestamp: string): Promise<LsnByTimestamp> {
    return (await this.call<LsnByTimestamp>('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}/get_lsn_by_timestamp?timestamp=${encodeURIComponent(timestamp)}`)).json;
  }

  async getTimestampOfLsn(tenantId: string, timelineId: string, lsn: string): Promise<string> {
    return (await this.call<string>('GET', `/v1/tenant/${tenantId}/timeline/${timelineId}/get_timestamp_of_lsn?lsn=${encodeURIComponent(lsn)}`)).json;
  }
}
