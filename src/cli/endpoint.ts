/**
 * `strata endpoint start|stop|list` and `strata psql`: compute endpoints (an unmodified
 * PostgreSQL 15 on a timeline) that keep running after the command returns. The mechanics are in
 * src/control/endpoints.ts; this file is the command line around them.
 */
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { StrataError } from '../util/errors.ts';
import { rootLogger } from '../util/log.ts';
import { checkName, loadConfig } from '../control/config.ts';
import { checkPort, destroyEndpoint, getEndpoint, listEndpoints, startEndpoint, stopEndpoint, type EndpointStatus } from '../control/endpoints.ts';
import { addWorkdirOption, openState, out, printJson, quietLibraryLogs, resolveTenant, resolveTimeline, stateDirOf, table, withProgress, type SetExitCode } from './control-common.ts';

/** An endpoint as the CLI prints it with --json. */
export function endpointJson(e: EndpointStatus): Record<string, unknown> {
  return { name: e.name, state: e.state, pid: e.pid, tenant_id: e.tenant_id, timeline_id: e.timeline_id, port: e.port, start_lsn: e.start_lsn, term: e.term, connection_string: e.connection_string };
}

export function registerEndpointCommands(program: Command, setExitCode: SetExitCode): void {
  const endpoint = program.command('endpoint').description('compute endpoints: PostgreSQL 15 on a timeline');

  addWorkdirOption(endpoint
    .command('start')
    .description('start (or restart) an endpoint on a timeline and print its connection string')
    .argument('<name>', 'endpoint name, e.g. main')
    .option('--timeline <name>', 'branch name or timeline id (default: the endpoint\'s own timeline, else "main")')
    .option('--port <port>', 'PostgreSQL port on 127.0.0.1 (default: the endpoint\'s last one, else a free one)')
    .option('--tenant <id>', 'tenant (default: the default tenant)')
    .option('--json', 'machine-readable'))
    .action(async (nameArg: string, o: { timeline?: string; port?: string; tenant?: string; json?: boolean }, cmd: Command) => {
      const ctx = await openState(cmd);
      const name = checkName(nameArg, 'endpoint');
      const existing = (await listEndpoints(ctx.stateDir)).find((e) => e.name === name);
      let tenantId: string;
      let timelineId: string;
      if (o.timeline === undefined && existing !== undefined && o.tenant === undefined) {
        tenantId = existing.tenant_id;
        timelineId = existing.timeline_id;
      } else {
        tenantId = resolveTenant(ctx.config, o.tenant);
        timelineId = resolveTimeline(ctx.config, tenantId, o.timeline ?? 'main').timelineId;
      }
      const port = o.port !== undefined ? checkPort(o.port) : undefined;
      const ep = await withProgress(`starting endpoint "${name}"`, (note) => startEndpoint({
        stateDir: ctx.stateDir, config: ctx.config, api: ctx.api, name, tenantId, timelineId,
        ...(port !== undefined ? { port } : {}), log: rootLogger, progress: note,
      }));
      if (o.json === true) {
        printJson(endpointJson(ep));
        return;
      }
      out(`endpoint "${name}" running on timeline ${timelineId} at LSN ${ep.start_lsn} (pid ${ep.pid})`);
      out(ep.connection_string);
    });

  addWorkdirOption(endpoint
    .command('stop')
    .description('stop an endpoint (fast shutdown: its last WAL reaches the safekeepers)')
    .argument('<name>', 'endpoint name')
    .option('--immediate', 'immediate shutdown (a crash, as far as PostgreSQL knows)')
    .option('--destroy', 'also remove the endpoint and its data directory'))
    .action(async (name: string, o: { immediate?: boolean; destroy?: boolean }, cmd: Command) => {
      quietLibraryLogs();
      const stateDir = stateDirOf(cmd);
      await loadConfig(stateDir);
      const r = await stopEndpoint(stateDir, name, o.immediate === true ? 'immediate' : 'fast');
      if (o.destroy === true) await destroyEndpoint(stateDir, name);
      out(`endpoint "${name}": ${r}${o.destroy === true ? ', destroyed' : ''}`);
    });

  addWorkdirOption(endpoint
    .command('list')
    .description('endpoints: state, pid, timeline, connection string')
    .option('--json', 'machine-readable'))
    .action(async (o: { json?: boolean }, cmd: Command) => {
      quietLibraryLogs();
      const stateDir = stateDirOf(cmd);
      const c = await loadConfig(stateDir);
      const eps = await listEndpoints(stateDir);
      if (o.json === true) {
        printJson(eps.map(endpointJson));
        return;
      }
      if (eps.length === 0) {
        out('no endpoints (start one with `strata endpoint start NAME --timeline main`)');
        return;
      }
      const rows = [['ENDPOINT', 'STATE', 'PID', 'TIMELINE', 'START LSN', 'CONNECTION']];
      for (const e of eps) {
        const tlName = Object.entries(c.branches[e.tenant_id] ?? {}).find(([, id]) => id === e.timeline_id)?.[0] ?? e.timeline_id;
        rows.push([e.name, e.state, e.pid === null ? '-' : String(e.pid), tlName, e.start_lsn ?? '-', e.connection_string]);
      }
      for (const l of table(rows)) out(l);
    });

  addWorkdirOption(program
    .command('psql')
    .description('run psql (from the configured PostgreSQL binaries) against an endpoint; arguments after -- go to psql')
    .argument('<endpoint>', 'endpoint name')
    .argument('[args...]', 'psql arguments (after --)')
    .addHelpText('after', '\nExample: strata psql main -- -c "SELECT 1"'))
    .action(async (name: string, args: string[], _o: unknown, cmd: Command) => {
      const stateDir = stateDirOf(cmd);
      const c = await loadConfig(stateDir);
      const ep = await getEndpoint(stateDir, name);
      if (ep.state !== 'running') throw new StrataError('endpoint_not_running', `endpoint "${name}" is not running (start it with \`strata endpoint start ${name}\`)`);
      const psql = path.join(c.pg_bin, 'psql');
      // Ctrl-C is psql's (it cancels the query); this process just waits for psql to exit.
      const ignore = (): void => undefined;
      process.on('SIGINT', ignore);
      const code = await new Promise<number>((resolve, reject) => {
        const child = spawn(psql, ['-h', '127.0.0.1', '-p', String(ep.port), '-U', 'postgres', ...args], {
          stdio: 'inherit', env: { ...process.env, PGDATABASE: process.env['PGDATABASE'] ?? 'postgres' },
        });
        child.once('error', (err) => reject(new StrataError('psql_failed', `cannot run ${psql}: ${err.message}`)));
        child.once('exit', (c2, sig) => resolve(c2 ?? (sig !== null ? 128 + (osConstants.signals[sig] ?? 0) : 1)));
      }).finally(() => process.off('SIGINT', ignore));
      setExitCode(code);
    });
}
