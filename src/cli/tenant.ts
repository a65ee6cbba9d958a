/**
 * `strata tenant create|list|show|config set|delete`: tenants through the pageserver's HTTP API.
 *
 * The CLI keeps two things about tenants in its state (config.ts): the default tenant (the first
 * one created, so most people never type a tenant id) and the branch names of each tenant. The
 * pageserver is the truth about which tenants exist; the CLI's names follow it (a deleted tenant's
 * names are dropped, and the default moves to another tenant or none).
 *
 * `config set k=v …` merges into the tenant's current overrides (the API replaces them whole):
 * what is not named keeps its value.
 */
import type { Command } from 'commander';
import { parseId } from '../util/ids.ts';
import { parseKeyValueSettings, parseTenantConfigOverrides, tenantConfigToJson, type TenantConfigJson } from '../pageserver/tenantconfig.ts';
import { mutateConfig } from '../control/config.ts';
import { listEndpoints } from '../control/endpoints.ts';
import { StrataError } from '../util/errors.ts';
import { addWorkdirOption, collect, openState, out, printJson, resolveTenant, table } from './control-common.ts';

function settingsJson(settings: readonly string[]): TenantConfigJson {
  return tenantConfigToJson(parseKeyValueSettings(settings));
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

export function registerTenantCommands(program: Command): void {
  const tenant = program.command('tenant').description('tenants on the pageserver');

  addWorkdirOption(tenant
    .command('create')
    .description('create a tenant (the first one becomes the default)')
    .option('--tenant-id <id>', '32 hex digits (default: random)')
    .option('--config <key=value>', 'tenant setting (Neon names, e.g. checkpoint_distance=268435456); repeatable', collect, [] as string[])
    .option('--set-default', 'make it the default tenant even if there is one')
    .option('--json', 'machine-readable'))
    .action(async (o: { tenantId?: string; config: string[]; setDefault?: boolean; json?: boolean }, cmd: Command) => {
      const ctx = await openState(cmd);
      const wanted = o.tenantId !== undefined ? parseId(o.tenantId, 'tenant') : undefined;
      const config = settingsJson(o.config);
      const id = await ctx.api.createTenant(wanted, config);
      const isDefault = await mutateConfig(ctx.stateDir, (c) => {
        if (c.default_tenant === null || o.setDefault === true) c.default_tenant = id;
        c.branches[id] ??= {};
        return c.default_tenant === id;
      });
      if (o.json === true) printJson({ tenant_id: id, default: isDefault, config });
      else out(`tenant ${id} created${isDefault ? ' (the default tenant)' : ''}`);
    });

  addWorkdirOption(tenant
    .command('list')
    .description('tenants on the pageserver (* = the default)')
    .option('--json', 'machine-readable'))
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const ctx = await openState(cmd);
      const tenants = await ctx.api.listTenants();
      tenants.sort((a, b) => a.id.localeCompare(b.id));
      if (o.json === true) {
        printJson(tenants.map((t) => ({ ...t, default: t.id === ctx.config.default_tenant })));
        return;
      }
      if (tenants.length === 0) {
        out('no tenants (create one with `strata tenant create`)');
        return;
      }
      for (const l of table([['', 'TENANT ID', 'STATE', 'SIZE'], ...tenants.map((t) => [t.id === ctx.config.default_tenant ? '*' : '', t.id, t.state, formatBytes(t.current_physical_size)])])) out(l);
    });

  addWorkdirOption(tenant
    .command('show')
    .description('one tenant: state, size, timelines, config (default: the default tenant)')
    .argument('[id]', 'tenant id')
    .option('--tenant <id>', 'tenant (the same as the argument; every tenant-scoped command takes it)')
    .option('--json', 'machine-readable'))
    .action(async (idArg: string | undefined, o: { tenant?: string; json?: boolean }, cmd: Command) => {
      const ctx = await openState(cmd);
      if (idArg !== undefined && o.tenant !== undefined && idArg !== o.tenant) {
        throw new StrataError('invalid_input', `two different tenants given: ${idArg} and --tenant ${o.tenant}`);
      }
      const id = resolveTenant(ctx.config, idArg ?? o.tenant);
      const [info, conf, timelines] = await Promise.all([ctx.api.getTenant(id), ctx.api.getTenantConfig(id), ctx.api.listTimelines(id)]);
      if (o.json === true) {
        printJson({ ...info, default: id === ctx.config.default_tenant, timelines: timelines.length, config: conf });
        return;
      }
      out(`tenant ${info.id}${id === ctx.config.default_tenant ? ' (default)' : ''}`);
      out(`  state: ${info.state}, attachment: ${info.attachment_status.slug}${info.attachment_status.data !== undefined ? ` (${info.attachment_status.data.reason})` : ''}`);
      out(`  physical size: ${formatBytes(info.current_physical_size)}, timelines: ${timelines.length}`);
      const overrides = Object.entries(conf.tenant_specific_overrides);
      out(`  config overrides: ${overrides.length === 0 ? 'none' : overrides.map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ')}`);
      out('  effective config:');
      for (const [k, v] of Object.entries(conf.effective_config)) out(`    ${k} = ${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
    });

  const config = tenant.command('config').description('tenant settings');
  addWorkdirOption(config
    .command('set')
    .description('change settings of a tenant (merged into its current overrides)')
    .argument('<key=value...>', 'settings, Neon\'s names (e.g. gc_horizon=67108864 "pitr_interval=1 day")')
    .option('--tenant <id>', 'tenant (default: the default tenant)'))
    .action(async (settings: string[], o: { tenant?: string }, cmd: Command) => {
      const ctx = await openState(cmd);
      const id = resolveTenant(ctx.config, o.tenant);
      const current = await ctx.api.getTenantConfig(id);
      const changes = settingsJson(settings);
      const merged = tenantConfigToJson(parseTenantConfigOverrides({ ...current.tenant_specific_overrides, ...changes }));
      await ctx.api.setTenantConfig(id, merged);
      out(`tenant ${id}: ${Object.entries(changes).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`).join(', ')}`);
    });

  addWorkdirOption(tenant
    .command('delete')
    .description('delete a tenant and all its timelines (refused while an endpoint runs on it)')
    .argument('<id>', 'tenant id'))
    .action(async (idArg: string, _o: unknown, cmd: Command) => {
      const ctx = await openState(cmd);
      const id = parseId(idArg, 'tenant');
      const running = (await listEndpoints(ctx.stateDir)).filter((e) => e.tenant_id === id && e.state === 'running');
      if (running.length > 0) {
        throw new StrataError('endpoint_running', `tenant ${id} has running endpoints (${running.map((e) => e.name).join(', ')}); stop them first`);
      }
      await ctx.api.deleteTenant(id);
      const remaining = (await ctx.api.listTenants()).map((t) => t.id).sort();
      const next = await mutateConfig(ctx.stateDir, (c) => {
        delete c.branches[id];
        if (c.default_tenant === id) c.default_tenant = remaining[0] ?? null;
        return c.default_tenant;
      });
      const note = ctx.config.default_tenant !== id ? '' : next === null ? '; there is no default tenant now' : `; the default tenant is now ${next}`;
      out(`tenant ${id} deleted${note}`);
    });
}
