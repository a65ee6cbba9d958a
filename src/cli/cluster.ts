/**
 * `strata init`, `strata start`, `strata stop`, `strata status`: the local cluster's lifecycle
 * (neon_local's init/start/stop). The state is in the state directory (config.ts); the processes
 * are managed by src/control/services.ts and endpoints.ts, orchestrated by cluster.ts.
 */
import type { Command } from 'commander';
import { InvalidInputError } from '../util/errors.ts';
import {
  buildConfig, checkPgBin, configPath, defaultPgBin, describeRemoteStorage, initState, loadConfig, parseRemoteStorage,
  type StrataConfig,
} from '../control/config.ts';
import { clusterStatus, startCluster, stopCluster, type ClusterStatus } from '../control/cluster.ts';
import { addWorkdirOption, out, printJson, progress, quietLibraryLogs, serviceEnv, stateDirOf, table } from './control-common.ts';

export const REMOTE_STORAGE_NOTE = 'recorded, but Strata has no remote storage yet: layers stay on local disk until remote storage lands';

export function describeServices(c: StrataConfig): string[] {
  return table([
    ['broker', `gRPC ${c.broker.listen}`, `HTTP ${c.broker.listen_http}`],
    ...c.safekeepers.map((s) => [`safekeeper ${s.id}`, `WAL ${s.listen_pg}`, `HTTP ${s.listen_http}`]),
    [`pageserver ${c.pageserver.id}`, `page service ${c.pageserver.listen_pg}`, `HTTP ${c.pageserver.listen_http}`],
  ]).map((l) => '  ' + l);
}

export interface InitCliOptions {
  safekeepers?: string;
  remoteStorage?: string;
  pgBin?: string;
  freePorts?: boolean;
}

/** init as a function (quickstart uses it too). Returns the config written. */
export async function runInit(stateDir: string, o: InitCliOptions): Promise<StrataConfig> {
  const n = o.safekeepers === undefined ? 1 : /^[0-9]{1,3}$/.test(o.safekeepers) ? Number(o.safekeepers) : NaN;
  if (!Number.isInteger(n) || n < 1) throw new InvalidInputError(`--safekeepers must be a whole number ≥ 1, got "${o.safekeepers}"`);
  const pgBin = await checkPgBin(o.pgBin ?? defaultPgBin());
  const remoteStorage = o.remoteStorage === undefined ? null : await parseRemoteStorage(o.remoteStorage);
  const c = await buildConfig({ safekeepers: n, remoteStorage, pgBin, freePorts: o.freePorts === true });
  await initState(stateDir, c);
  return c;
}

export function printStatus(s: ClusterStatus, c: StrataConfig): void {
  out(`Strata in ${s.workdir}`);
  const rows = [['SERVICE', 'STATE', 'PID', 'HEALTH', 'PORTS']];
  for (const v of s.services) {
    rows.push([v.label, v.state, v.pid === null ? '-' : String(v.pid), v.state === 'running' ? (v.healthy ? 'healthy' : 'UNHEALTHY') : '-',
      v.ports.map((p) => `${p.key} ${p.addr.host}:${p.addr.port}`).join(', ')]);
  }
  for (const l of table(rows)) out(l);
  out();
  if (s.endpoints.length === 0) {
    out('no endpoints (create one with `strata endpoint start NAME --timeline main`)');
    return;
  }
  const eps = [['ENDPOINT', 'STATE', 'PID', 'TIMELINE', 'CONNECTION']];
  for (const e of s.endpoints) {
    const name = Object.entries(c.branches[e.tenant_id] ?? {}).find(([, id]) => id === e.timeline_id)?.[0] ?? e.timeline_id;
    eps.push([e.name, e.state, e.pid === null ? '-' : String(e.pid), name, e.connection_string]);
  }
  for (const l of table(eps)) out(l);
}

export function statusJson(s: ClusterStatus, c: StrataConfig): unknown {
  return {
    workdir: s.workdir,
    services: s.services.map((v) => ({
      name: v.name, kind: v.kind, state: v.state, pid: v.pid, healthy: v.healthy, stale_pid: v.stalePid,
      ports: Object.fromEntries(v.ports.map((p) => [p.key, `${p.addr.host}:${p.addr.port}`])),
      log_file: v.logFile,
    })),
    endpoints: s.endpoints.map((e) => ({
      name: e.name, state: e.state, pid: e.pid, tenant_id: e.tenant_id, timeline_id: e.timeline_id,
      timeline: Object.entries(c.branches[e.tenant_id] ?? {}).find(([, id]) => id === e.timeline_id)?.[0] ?? null, port: e.port,
      connection_string: e.connection_string, start_lsn: e.start_lsn, term: e.term,
    })),
  };
}

export function registerClusterCommands(program: Command): void {
  addWorkdirOption(program
    .command('init')
    .description('create the local control plane\'s state (.strata/config.json): ports of every service, PostgreSQL binaries')
    .option('--safekeepers <n>', 'number of safekeepers (default 1; 3 for a quorum that survives one failure)')
    .option('--remote-storage <dir|s3://bucket/prefix>', 'where layers will be uploaded (recorded only: no remote storage yet)')
    .option('--pg-bin <dir>', 'PostgreSQL 15 bin directory (default: $STRATA_PG_BIN or /usr/lib/postgresql/15/bin)')
    .option('--free-ports', 'pick free ports on 127.0.0.1 instead of Neon\'s defaults (9898, 64000, 5454, 7676, 50051)')
    .option('--json', 'print the config written as JSON'))
    .action(async (o: InitCliOptions & { json?: boolean }, cmd: Command) => {
      const stateDir = stateDirOf(cmd);
      const c = await runInit(stateDir, o);
      if (o.json === true) {
        printJson({ workdir: stateDir, config: c, ...(c.remote_storage !== null ? { remote_storage_note: REMOTE_STORAGE_NOTE } : {}) });
      } else {
        out(`initialised Strata in ${stateDir} (${configPath(stateDir)})`);
        for (const l of describeServices(c)) out(l);
        out(`  PostgreSQL binaries: ${c.pg_bin}`);
        if (c.remote_storage !== null) out(`remote storage ${describeRemoteStorage(c.remote_storage)}: ${REMOTE_STORAGE_NOTE}`);
        out('next: strata start');
      }
    });

  addWorkdirOption(program
    .command('start')
    .description('start the broker, the safekeepers and the pageserver in the background (idempotent)'))
    .action(async (_o: unknown, cmd: Command) => {
      quietLibraryLogs();
      const stateDir = stateDirOf(cmd);
      const c = await loadConfig(stateDir);
      await startCluster(stateDir, c, { progress: out, env: serviceEnv() });
      const s = await clusterStatus(stateDir, c);
      for (const e of s.endpoints) if (e.state !== 'running') progress(`endpoint ${e.name} is not running (start it with \`strata endpoint start ${e.name}\`)`);
    });

  addWorkdirOption(program
    .command('stop')
    .description('stop the endpoints (fast shutdown), then the pageserver, the safekeepers and the broker'))
    .action(async (_o: unknown, cmd: Command) => {
      quietLibraryLogs();
      const stateDir = stateDirOf(cmd);
      const c = await loadConfig(stateDir);
      await stopCluster(stateDir, c, { progress: out });
    });

  addWorkdirOption(program
    .command('status')
    .description('each service and endpoint: state, pid, ports, health')
    .option('--json', 'machine-readable'))
    .action(async (o: { json?: boolean }, cmd: Command) => {
      quietLibraryLogs();
      const stateDir = stateDirOf(cmd);
      const c = await loadConfig(stateDir);
      const s = await clusterStatus(stateDir, c);
      if (o.json === true) printJson(statusJson(s, c));
      else printStatus(s, c);
    });
}
