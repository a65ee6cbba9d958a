/**
 * `strata quickstart`: from nothing to a PostgreSQL on Strata in one command — init (when there is
 * no state yet), start, a tenant, a `main` timeline and an endpoint `main` on it — then what to do
 * next.
 *
 * Each step is skipped when its result already exists (state initialised, services running and
 * healthy, default tenant present on the pageserver, `main` named, endpoint `main` running), so
 * running it twice only prints the same summary again.
 *
 * Ports: Neon's defaults when they are all free; when any is taken (another Strata, another
 * program), free ports on 127.0.0.1 instead, with a note saying so — quickstart should work on a
 * busy machine. `strata init` itself never does that silently (it needs --free-ports).
 */
import path from 'node:path';
import type { Command } from 'commander';
import { rootLogger } from '../util/log.ts';
import { checkReachableByServerUser } from '../compute/endpoint.ts';
import { PageserverApiError, PageserverClient } from '../control/api.ts';
import { buildConfig, checkPgBin, configExists, defaultPgBin, loadConfig, mutateConfig, type StrataConfig } from '../control/config.ts';
import { startCluster } from '../control/cluster.ts';
import { listEndpoints, startEndpoint, type EndpointStatus } from '../control/endpoints.ts';
import { endpointJson } from './endpoint.ts';
import { portIsFree, serviceSpecs } from '../control/services.ts';
import { runInit } from './cluster.ts';
import { addWorkdirOption, out, printJson, progress, quietLibraryLogs, serviceEnv, stateDirOf, withProgress } from './control-common.ts';

async function defaultPortsFree(stateDir: string): Promise<string | null> {
  const c = await buildConfig({ safekeepers: 1, remoteStorage: null, pgBin: '/x', freePorts: false });
  for (const s of serviceSpecs(c, stateDir)) {
    for (const p of s.ports) if (!(await portIsFree(p.addr))) return `${p.addr.port} (${p.what})`;
  }
  return null;
}

export function registerQuickstartCommand(program: Command): void {
  addWorkdirOption(program
    .command('quickstart')
    .description('init (if needed), start, create a tenant, a `main` timeline and an endpoint `main`; idempotent')
    .option('--pg-bin <dir>', 'PostgreSQL 15 bin directory (default: $STRATA_PG_BIN or /usr/lib/postgresql/15/bin)')
    .option('--json', 'print the result as JSON (progress still goes to stderr)'))
    .action(async (o: { pgBin?: string; json?: boolean }, cmd: Command) => {
      quietLibraryLogs();
      const stateDir = stateDirOf(cmd);
      const say = o.json === true ? progress : out;
      // As root, PostgreSQL runs as the postgres OS user: fail now, not after starting everything.
      await checkReachableByServerUser(path.join(stateDir, 'endpoints'));
      let c: StrataConfig;
      if (await configExists(stateDir)) {
        c = await loadConfig(stateDir);
        say(`using the existing state in ${stateDir}`);
      } else {
        await checkPgBin(o.pgBin ?? defaultPgBin());
        const taken = await defaultPortsFree(stateDir);
        if (taken !== null) say(`default port ${taken} is in use: using free ports on 127.0.0.1 instead`);
        c = await runInit(stateDir, { freePorts: taken !== null, ...(o.pgBin !== undefined ? { pgBin: o.pgBin } : {}) });
        say(`initialised ${stateDir}`);
      }
      await startCluster(stateDir, c, { progress: say, env: serviceEnv() });
      const api = new PageserverClient(`http://${c.pageserver.listen_http}`);

      let tenantId = c.default_tenant;
      if (tenantId !== null) {
        try {
          await api.getTenant(tenantId);
        } catch (err) {
          if (!(err instanceof PageserverApiError && err.status === 404)) throw err;
          say(`the default tenant ${tenantId} no longer exists on the pageserver; creating a new one`);
          tenantId = null;
        }
      }
      if (tenantId === null) {
        const id = await api.createTenant(undefined, {});
        await mutateConfig(stateDir, (cc) => {
          cc.default_tenant = id;
          cc.branches[id] = {};
        });
        tenantId = id;
        say(`created tenant ${id} (the default tenant)`);
      } else {
        say(`tenant ${tenantId} (default)`);
      }
      c = await loadConfig(stateDir);

      let mainId = c.branches[tenantId]?.['main'];
      if (mainId !== undefined) {
        try {
          await api.getTimeline(tenantId, mainId);
          say(`timeline main: ${mainId}`);
        } catch (err) {
          if (!(err instanceof PageserverApiError && err.status === 404)) throw err;
          mainId = undefined;
        }
      }
      if (mainId === undefined) {
        const tid = tenantId;
        const info = await withProgress('creating timeline "main" (initdb, imported into layer files)', () => api.createTimeline(tid, {}));
        await mutateConfig(stateDir, (cc) => {
          (cc.branches[tid] ??= {})['main'] = info.timeline_id;
        });
        mainId = info.timeline_id;
        say(`created timeline main: ${mainId}`);
      }

      let ep: EndpointStatus | undefined = (await listEndpoints(stateDir)).find((e) => e.name === 'main');
      if (ep !== undefined && ep.state === 'running') {
        say(`endpoint main is running (pid ${ep.pid})`);
      } else if (ep !== undefined && ep.timeline_id !== mainId) {
        say(`endpoint main exists for timeline ${ep.timeline_id}, not main; start it yourself with \`strata endpoint start main\``);
      } else {
        const tid = tenantId;
        const tl = mainId;
        ep = await withProgress('starting endpoint "main"', (note) => startEndpoint({
          stateDir, config: c, api, name: 'main', tenantId: tid, timelineId: tl, log: rootLogger, progress: note,
        }));
      }
      const conn = ep?.connection_string ?? '';
      const wd = stateDir === path.resolve('.strata') ? '' : ` --workdir ${stateDir}`;
      if (o.json === true) {
        printJson({ workdir: stateDir, tenant_id: tenantId, timeline_id: mainId, endpoint: ep === undefined ? null : endpointJson(ep), connection_string: conn });
        return;
      }
      out('');
      out(`Strata is running. PostgreSQL 15 on timeline main: ${conn}`);
      out('Next:');
      out(`  strata${wd} psql main                      # a psql session on it`);
      out(`  strata${wd} status                         # services, endpoints, health`);
      out(`  strata${wd} timeline branch before --from main --at '1 minute ago'`);
      out(`  strata${wd} endpoint start before --timeline before   # PostgreSQL on the branch`);
      out(`  strata${wd} stop                           # stop everything`);
      out('The five-minute tour: docs/cli.md');
    });
}
