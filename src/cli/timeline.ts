/**
 * `strata timeline create|branch|list|delete`: timelines by branch name (neon_local's mappings).
 *
 * The pageserver knows timelines by id; the CLI keeps name → id per tenant in its state. A name is
 * recorded only after the pageserver created the timeline, so a name never points at nothing; a
 * timeline created by other means (or whose CLI died before recording) is listed by id.
 *
 * `branch --at TIME` turns a wall-clock time into an LSN through the pageserver's
 * get_lsn_by_timestamp (Neon's semantics): `present` → the LSN just after the last commit at or
 * before TIME, used as the branch point; `future` → TIME is after the last commit: the branch is
 * made at the parent's last record LSN, with a note; `past` (before the history kept) and `nodata`
 * (no commits at all) → refused, nothing is created.
 */
import type { Command } from 'commander';
import { formatLsn, parseLsn } from '../postgres/lsn.ts';
import { InvalidInputError, StrataError } from '../util/errors.ts';
import { PageserverApiError, type TimelineInfo } from '../control/api.ts';
import { checkName, mutateConfig } from '../control/config.ts';
import { listEndpoints } from '../control/endpoints.ts';
import { formatTimestamp, parseTimeSpec } from '../control/timespec.ts';
import { addWorkdirOption, branchNameOf, openState, out, printJson, progress, resolveTenant, resolveTimeline, table, withProgress } from './control-common.ts';
import type { StrataConfig } from '../control/config.ts';

function timelineJson(c: StrataConfig, t: TimelineInfo): Record<string, unknown> {
  return {
    name: branchNameOf(c, t.tenant_id, t.timeline_id),
    ancestor_name: t.ancestor_timeline_id === null ? null : branchNameOf(c, t.tenant_id, t.ancestor_timeline_id),
    ...t,
  };
}

/** The tree lines of `timeline list`: roots first, children under their ancestor by branch LSN. */
export function timelineTree(c: StrataConfig, tenantId: string, timelines: readonly TimelineInfo[]): string[] {
  const byParent = new Map<string | null, TimelineInfo[]>();
  const ids = new Set(timelines.map((t) => t.timeline_id));
  for (const t of timelines) {
    const parent = t.ancestor_timeline_id !== null && ids.has(t.ancestor_timeline_id) ? t.ancestor_timeline_id : null;
    const list = byParent.get(parent) ?? [];
    list.push(t);
    byParent.set(parent, list);
  }
  const lsnOf = (t: TimelineInfo): bigint => (t.ancestor_lsn === null ? 0n : parseLsn(t.ancestor_lsn));
  for (const list of byParent.values()) list.sort((a, b) => (lsnOf(a) < lsnOf(b) ? -1 : lsnOf(a) > lsnOf(b) ? 1 : a.timeline_id.localeCompare(b.timeline_id)));
  const rows: string[][] = [['NAME', 'TIMELINE ID', 'ANCESTOR', 'LAST RECORD LSN']];
  const name = (id: string): string => branchNameOf(c, tenantId, id) ?? '(unnamed)';
  const walk = (t: TimelineInfo, prefix: string, connector: string, depth: number): void => {
    if (depth > 1000) return;
    const anc = t.ancestor_timeline_id === null ? '-' : `${ids.has(t.ancestor_timeline_id) ? name(t.ancestor_timeline_id) : t.ancestor_timeline_id} @ ${t.ancestor_lsn ?? '?'}`;
    rows.push([prefix + connector + name(t.timeline_id), t.timeline_id, anc, t.last_record_lsn]);
    const kids = byParent.get(t.timeline_id) ?? [];
    const childPrefix = prefix + (connector === '' ? '' : connector === '└─ ' ? '   ' : '│  ');
    kids.forEach((k, i) => walk(k, childPrefix, i === kids.length - 1 ? '└─ ' : '├─ ', depth + 1));
  };
  for (const root of byParent.get(null) ?? []) walk(root, '', '', 0);
  return table(rows);
}

export function registerTimelineCommands(program: Command): void {
  const timeline = program.command('timeline').description('timelines (branches) of a tenant');

  addWorkdirOption(timeline
    .command('create')
    .description('bootstrap a new timeline from initdb (takes a few seconds)')
    .argument('<name>', 'branch name, e.g. main')
    .option('--tenant <id>', 'tenant (default: the default tenant)')
    .option('--json', 'machine-readable'))
    .action(async (nameArg: string, o: { tenant?: string; json?: boolean }, cmd: Command) => {
      const ctx = await openState(cmd);
      const name = checkName(nameArg, 'branch');
      const tenantId = resolveTenant(ctx.config, o.tenant);
      if (ctx.config.branches[tenantId]?.[name] !== undefined) {
        throw new StrataError('branch_exists', `tenant ${tenantId} already has a timeline named "${name}" (${ctx.config.branches[tenantId][name]})`);
      }
      const info = await withProgress(`creating timeline "${name}" (initdb, imported into layer files)`, () => ctx.api.createTimeline(tenantId, {}));
      await mutateConfig(ctx.stateDir, (c) => {
        (c.branches[tenantId] ??= {})[name] = info.timeline_id;
      });
      if (o.json === true) printJson({ name, ...info });
      else out(`timeline "${name}" created: ${info.timeline_id} (tenant ${tenantId}), last record LSN ${info.last_record_lsn}`);
    });

  addWorkdirOption(timeline
    .command('branch')
    .description('branch a timeline at an LSN or a point in time (default: at its last record)')
    .argument('<name>', 'name of the new branch')
    .requiredOption('--from <parent>', 'parent timeline: branch name or timeline id')
    .option('--lsn <X/X>', 'branch point LSN')
    .option('--at <time>', 'branch point time: RFC 3339 (2024-05-01T14:02:00Z), "10 minutes ago", "90 s ago", "now"')
    .option('--tenant <id>', 'tenant (default: the default tenant)')
    .option('--json', 'machine-readable'))
    .action(async (nameArg: string, o: { from: string; lsn?: string; at?: string; tenant?: string; json?: boolean }, cmd: Command) => {
      const ctx = await openState(cmd);
      const name = checkName(nameArg, 'branch');
      if (o.lsn !== undefined && o.at !== undefined) throw new InvalidInputError('give either --lsn or --at, not both');
      const tenantId = resolveTenant(ctx.config, o.tenant);
      if (ctx.config.branches[tenantId]?.[name] !== undefined) {
        throw new StrataError('branch_exists', `tenant ${tenantId} already has a timeline named "${name}" (${ctx.config.branches[tenantId][name]})`);
      }
      const parent = resolveTimeline(ctx.config, tenantId, o.from);
      const parentName = parent.name ?? parent.timelineId;
      let startLsn: string | undefined;
      let how: string;
      let resolved: { time: string; lsn: string; kind: string } | null = null;
      if (o.lsn !== undefined) {
        startLsn = formatLsn(parseLsn(o.lsn));
        how = `at LSN ${startLsn}`;
      } else if (o.at !== undefined) {
        const at = formatTimestamp(parseTimeSpec(o.at, new Date()));
        const r = await ctx.api.getLsnByTimestamp(tenantId, parent.timelineId, at);
        resolved = { time: at, lsn: r.lsn, kind: r.kind };
        if (r.kind === 'present') {
          startLsn = r.lsn;
          how = `at ${at}: LSN ${r.lsn} (kind present: transactions committed before that time are on the branch, later ones are not)`;
        } else if (r.kind === 'future') {
          const tip = await ctx.api.getTimeline(tenantId, parent.timelineId);
          startLsn = tip.last_record_lsn;
          how = `at ${at}: kind future — that is after the last commit on "${parentName}", so the branch is at its last record LSN ${startLsn}`;
        } else if (r.kind === 'past') {
          throw new StrataError('branch_time_past', `"${parentName}" has no history that old: ${at} is before the oldest point kept (kind past, LSN ${r.lsn}); nothing was created`);
        } else {
          throw new StrataError('branch_time_nodata', `"${parentName}" has no commit timestamps to resolve ${at} with (kind nodata); nothing was created — branch with --lsn instead`);
        }
      } else {
        how = `at the last record of "${parentName}"`;
      }
      if (o.json !== true) progress(`branching "${name}" from "${parentName}" ${how}`);
      let info: TimelineInfo;
      try {
        info = await ctx.api.createTimeline(tenantId, { ancestor_timeline_id: parent.timelineId, ...(startLsn !== undefined ? { ancestor_start_lsn: startLsn } : {}) });
      } catch (err) {
        if (err instanceof PageserverApiError && err.status === 406) {
          throw new StrataError('branch_below_gc', `cannot branch "${parentName}" at ${startLsn}: it is below the timeline's GC cutoff (${err.serverMsg}); nothing was created`);
        }
        throw err;
      }
      await mutateConfig(ctx.stateDir, (c) => {
        (c.branches[tenantId] ??= {})[name] = info.timeline_id;
      });
      if (o.json === true) printJson({ name, parent: parentName, resolved_time: resolved, ...info });
      else out(`timeline "${name}" created: ${info.timeline_id}, branched from "${parentName}" at ${info.ancestor_lsn ?? startLsn ?? '?'}`);
    });

  addWorkdirOption(timeline
    .command('list')
    .description('the tenant\'s timelines as a tree: name, id, ancestor and branch LSN, last record LSN')
    .option('--tenant <id>', 'tenant (default: the default tenant)')
    .option('--json', 'machine-readable'))
    .action(async (o: { tenant?: string; json?: boolean }, cmd: Command) => {
      const ctx = await openState(cmd);
      const tenantId = resolveTenant(ctx.config, o.tenant);
      const timelines = await ctx.api.listTimelines(tenantId);
      if (o.json === true) {
        printJson(timelines.map((t) => timelineJson(ctx.config, t)));
        return;
      }
      if (timelines.length === 0) {
        out(`tenant ${tenantId} has no timelines (create one with \`strata timeline create main\`)`);
        return;
      }
      for (const l of timelineTree(ctx.config, tenantId, timelines)) out(l);
    });

  addWorkdirOption(timeline
    .command('delete')
    .description('delete a timeline (refused while it has branches or a running endpoint)')
    .argument('<name>', 'branch name or timeline id')
    .option('--tenant <id>', 'tenant (default: the default tenant)'))
    .action(async (nameArg: string, o: { tenant?: string }, cmd: Command) => {
      const ctx = await openState(cmd);
      const tenantId = resolveTenant(ctx.config, o.tenant);
      const tl = resolveTimeline(ctx.config, tenantId, nameArg);
      const running = (await listEndpoints(ctx.stateDir)).filter((e) => e.timeline_id === tl.timelineId && e.state === 'running');
      if (running.length > 0) throw new StrataError('endpoint_running', `endpoint "${running[0]!.name}" runs on timeline "${nameArg}"; stop it first`);
      try {
        await ctx.api.deleteTimeline(tenantId, tl.timelineId);
      } catch (err) {
        if (err instanceof PageserverApiError && err.status === 412) {
          throw new StrataError('timeline_has_children', `cannot delete timeline "${nameArg}": ${err.serverMsg}`);
        }
        // Gone already: forget the name too.
        if (!(err instanceof PageserverApiError && err.status === 404 && tl.name !== null)) throw err;
      }
      await mutateConfig(ctx.stateDir, (c) => {
        const m = c.branches[tenantId];
        if (m === undefined) return;
        for (const [n, id] of Object.entries(m)) if (id === tl.timelineId) delete m[n];
      });
      out(`timeline "${nameArg}" (${tl.timelineId}) deleted`);
    });
}
