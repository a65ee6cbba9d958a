#!/usr/bin/env node
// Launcher for the `strata` CLI. Strata ships TypeScript sources and runs them through tsx's
// loader, so there is no build step between `npm ci` and a working command.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
