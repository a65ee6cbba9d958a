/**
 * `strata safekeeper`: runs one safekeeper in the foreground until SIGINT/SIGTERM.
 *
 * Prints where it listens (one line each for the replication service and the HTTP API) so scripts
 * and people can find it, then logs to stderr. On a signal it stops pulling and serving, persists
 * its control files and exits 0; a second signal exits at once.
 */
import { InvalidInputError } from '../util/errors.ts';
import { waitForShutdownSignal } from './signals.ts';
import type { Logger } from '../util/log.ts';
import { Safekeeper } from '../safekeeper/safekeeper.ts';

export function parseHostPort(text: string, what: string): { host: string; port: number } {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new InvalidInputError(`${what}: expected host:port (e.g. 127.0.0.1:5454), got "${text}"`);
  }
  return { host: m[1]!, port };
}

export interface RunSafekeeperOptions {
  id: string;
  dataDir: string;
  listenPg: string;
  listenHttp: string;
  broker: string | null;
  availabilityZone?: string;
  log: Logger;
  stdout: NodeJS.WritableStream;
}

export async function runSafekeeper(opts: RunSafekeeperOptions): Promise<number> {
  if (!/^[0-9]{1,15}$/.test(opts.id) || BigInt(opts.id) === 0n) throw new InvalidInputError(`--id must be a positive integer, got "${opts.id}"`);
  const sk = await Safekeeper.start({
    id: BigInt(opts.id), dataDir: opts.dataDir, listenPg: parseHostPort(opts.listenPg, '--listen-pg'),
    listenHttp: parseHostPort(opts.listenHttp, '--listen-http'), brokerEndpoint: opts.broker, log: opts.log,
    ...(opts.availabilityZone !== undefined ? { availabilityZone: opts.availabilityZone } : {}),
  });
  opts.stdout.write(`safekeeper ${opts.id}: replication on ${sk.pgConnstr}, HTTP on ${sk.httpConnstr}, data in ${opts.dataDir}\n`);
  await waitForShutdownSignal();
  await sk.shutdown();
  return 0;
}
