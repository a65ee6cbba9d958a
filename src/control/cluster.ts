/**
 * The whole local cluster at once: `strata start`, `strata stop`, `strata status`.
 *
 * Order matters in both directions. Start: broker (everyone publishes to it), safekeepers, then the
 * pageserver (it subscribes to the broker for its timelines' safekeepers). Stop: compute endpoints
 * first with a fast shutdown (their last WAL reaches the safekeepers while those still run), then
 * the pageserver (it flushes what it ingested), the safekeepers, the broker. Each step is bounded
 * (services.ts, endpoints.ts); a stop continues past a failing step and reports it at the end, so
 * one stuck process does not leave the others running.
 */
import { StrataError } from '../util/errors.ts';
import type { StrataConfig } from './config.ts';
import { listEndpoints, stopEndpoint, type EndpointStatus } from './endpoints.ts';
import { serviceSpecs, serviceStatus, startService, stopService, type Progress, type ServiceStatus } from './services.ts';

export interface ClusterStatus {
  workdir: string;
  services: ServiceStatus[];
  endpoints: EndpointStatus[];
}

export async function startCluster(stateDir: string, c: StrataConfig, opts: { progress: Progress; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<Array<{ label: string; result: 'started' | 'already running' }>> {
  const out: Array<{ label: string; result: 'started' | 'already running' }> = [];
  for (const spec of serviceSpecs(c, stateDir)) {
    const t0 = Date.now();
    const result = await startService(spec, { progress: opts.progress, ...(opts.env !== undefined ? { env: opts.env } : {}), ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}) });
    const ports = spec.ports.map((p) => `${p.what.replace(`${spec.label} `, '')} ${p.addr.host}:${p.addr.port}`).join(', ');
    opts.progress(result === 'started' ? `started ${spec.label} (${ports}) in ${Date.now() - t0} ms` : `${spec.label} is already running (${ports})`);
    out.push({ label: spec.label, result });
  }
  return out;
}

export async function stopCluster(stateDir: string, c: StrataConfig, opts: { progress: Progress }): Promise<void> {
  const failures: string[] = [];
  for (const ep of await listEndpoints(stateDir)) {
    if (ep.state !== 'running') continue;
    try {
      const r = await stopEndpoint(stateDir, ep.name, 'fast');
      opts.progress(`endpoint ${ep.name}: ${r}`);
    } catch (err) {
      failures.push(`endpoint ${ep.name}: ${(err as Error).message}`);
    }
  }
  for (const spec of serviceSpecs(c, stateDir).reverse()) {
    try {
      const r = await stopService(spec);
      opts.progress(`${spec.label}: ${r}`);
    } catch (err) {
      failures.push(`${spec.label}: ${(err as Error).message}`);
    }
  }
  if (failures.length > 0) throw new StrataError('stop_failed', `could not stop everything: ${failures.join('; ')}`);
}

export async function clusterStatus(stateDir: string, c: StrataConfig): Promise<ClusterStatus> {
  const services = await Promise.all(serviceSpecs(c, stateDir).map((s) => serviceStatus(s)));
  return { workdir: stateDir, services, endpoints: await listEndpoints(stateDir) };
}
