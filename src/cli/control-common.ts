/**
 * What every command of the local control plane (init, start, tenant, timeline, endpoint, …) shares:
 * the state directory option, loading the state, the pageserver client, output conventions.
 *
 * Output conventions: results go to stdout (human text, or one JSON document with --json); progress
 * of long steps goes to stderr, so `--json` output stays parseable; errors are thrown as
 * StrataError and main.ts prints them as one line with a non-zero exit code.
 *
 * `--workdir DIR` is accepted both before the command (`strata --workdir D status`) and after it
 * (`strata status --workdir D`): the program and each control command declare it, and the nearest
 * one given wins.
 *
 * Library log lines (election, …) are kept to warnings in the CLI; the services it starts in the
 * background get the level the user asked for (STRATA_LOG as it was when the CLI started, default
 * info), since their logs go to files.
 */
import type { Command } from 'commander';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { isCanonicalId, parseId } from '../util/ids.ts';
import { loadConfig, resolveStateDir, type StrataConfig } from '../control/config.ts';
import { PageserverClient } from '../control/api.ts';

const ORIGINAL_LOG_LEVEL = process.env['STRATA_LOG'];

export type SetExitCode = (code: number) => void;

export function addWorkdirOption(cmd: Command): Command {
  return cmd.option('--workdir <dir>', 'state directory (default: ./.strata)');
}

export function stateDirOf(cmd: Command): string {
  for (let c: Command | null = cmd; c !== null; c = c.parent) {
    const v = (c.opts() as { workdir?: string }).workdir;
    if (v !== undefined) return resolveStateDir(v);
  }
  return resolveStateDir(undefined);
}

/** The environment background services are started with. */
export function serviceEnv(): NodeJS.ProcessEnv {
  return { ...process.env, STRATA_LOG: ORIGINAL_LOG_LEVEL ?? 'info' };
}

/** Library logs (election, …) at warn and above only, unless the user asked for more. */
export function quietLibraryLogs(): void {
  if (ORIGINAL_LOG_LEVEL === undefined) process.env['STRATA_LOG'] = 'warn';
}

export interface ControlContext {
  stateDir: string;
  config: StrataConfig;
  api: PageserverClient;
}

export async function openState(cmd: Command): Promise<ControlContext> {
  quietLibraryLogs();
  const stateDir = stateDirOf(cmd);
  const config = await loadConfig(stateDir);
  return { stateDir, config, api: new PageserverClient(`http://${config.pageserver.listen_http}`) };
}

export function out(line = ''): void {
  process.stdout.write(line + '\n');
}

export function progress(line: string): void {
  process.stderr.write(line + '\n');
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x), 2) + '\n');
}

/**
 * Runs a long step with progress on stderr: `what ...` once the step has taken a second or reports
 * its first detail (`note`), a "still working" line every 5 s, and how long it took. A step that
 * fails at once prints nothing, so its error stays the only line on stderr.
 */
export async function withProgress<T>(what: string, step: (note: (line: string) => void) => Promise<T>): Promise<T> {
  const t0 = Date.now();
  let shown = false;
  const header = (): void => {
    if (!shown) progress(`${what} ...`);
    shown = true;
  };
  const first = setTimeout(header, 1_000);
  const timer = setInterval(() => {
    header();
    progress(`  ... still working (${Math.round((Date.now() - t0) / 1000)} s)`);
  }, 5_000);
  first.unref();
  timer.unref();
  try {
    const r = await step((line) => {
      header();
      progress(`  ${line}`);
    });
    if (shown) progress(`  done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return r;
  } finally {
    clearTimeout(first);
    clearInterval(timer);
  }
}

/** --tenant ID, else the default tenant. */
export function resolveTenant(c: StrataConfig, opt: string | undefined): string {
  if (opt !== undefined) return parseId(opt, 'tenant');
  if (c.default_tenant === null) throw new StrataError('no_tenant', 'no tenant yet: create one with `strata tenant create` (or pass --tenant ID)');
  return c.default_tenant;
}

/** A branch name of the tenant, or a timeline id. */
export function resolveTimeline(c: StrataConfig, tenantId: string, nameOrId: string): { timelineId: string; name: string | null } {
  const byName = c.branches[tenantId]?.[nameOrId];
  if (byName !== undefined) return { timelineId: byName, name: nameOrId };
  if (isCanonicalId(nameOrId.toLowerCase()) && nameOrId.length === 32) {
    const id = nameOrId.toLowerCase();
    return { timelineId: id, name: branchNameOf(c, tenantId, id) };
  }
  throw new InvalidInputError(`no timeline named "${nameOrId}" in tenant ${tenantId} (see \`strata timeline list\`)`, { timeline: nameOrId });
}

export function branchNameOf(c: StrataConfig, tenantId: string, timelineId: string): string | null {
  for (const [name, id] of Object.entries(c.branches[tenantId] ?? {})) if (id === timelineId) return name;
  return null;
}

/** Pads columns of a table (the last column is not padded). */
export function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((cell, i) => { widths[i] = Math.max(widths[i] ?? 0, [...cell].length); });
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell + ' '.repeat((widths[i] ?? 0) - [...cell].length))).join('  ').trimEnd());
}

/** Collects a repeatable option's values. */
export function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}
