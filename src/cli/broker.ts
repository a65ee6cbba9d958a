/**
 * `strata broker`: run the storage broker in the foreground.
 *
 * gRPC listens on `listen` (default 127.0.0.1:50051, Neon's default broker address). HTTP
 * (/metrics, /status) listens on `httpListen`; without it, on the same host at the gRPC port + 1
 * (or a kernel-chosen port when the gRPC port is 0). The first stdout line says where both
 * listen, so scripts that pass port 0 can read the real ports. The process runs until SIGINT or
 * SIGTERM (or until `stop` aborts, for embedding and tests), then closes the broker and returns 0.
 */
import type { Writable } from 'node:stream';
import { startBroker } from '../broker/server.ts';
import type { Broker } from '../broker/server.ts';
import { InvalidInputError } from '../util/errors.ts';
import type { Logger } from '../util/log.ts';

export const DEFAULT_BROKER_LISTEN = '127.0.0.1:50051';

export interface RunBrokerOptions {
  /** host:port for gRPC; default 127.0.0.1:50051. */
  listen?: string;
  /** host:port for HTTP; default: the gRPC host, gRPC port + 1. */
  httpListen?: string;
  /** How long a cached latest entry lives without a new publish. Default 10 s. */
  entryTtlMs?: number;
  log: Logger;
  /** Where the "listening" line goes; default process.stdout. */
  stdout?: Writable;
  /** Stops the broker like SIGTERM does. */
  stop?: AbortSignal;
  /** Called once the broker listens (embedding, tests). */
  onListening?: (broker: Broker) => void;
}

/** Parses `host:port` (`[v6]:port` for IPv6); port 0 means "let the kernel choose". */
export function parseListenAddress(text: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s/:[\]]+)):([0-9]{1,5})$/.exec(text.trim());
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new InvalidInputError(`${what} "${text}": expected host:port, e.g. ${DEFAULT_BROKER_LISTEN}`, { [what]: text });
  }
  return { host: m[1] ?? m[2] ?? '', port };
}

export async function runBroker(opts: RunBrokerOptions): Promise<number> {
  const grpcAddr = parseListenAddress(opts.listen ?? DEFAULT_BROKER_LISTEN, 'listen address');
  let httpPort: number;
  if (opts.httpListen !== undefined) {
    const httpAddr = parseListenAddress(opts.httpListen, 'HTTP listen address');
    if (httpAddr.host !== grpcAddr.host) {
      throw new InvalidInputError(`HTTP listen address "${opts.httpListen}" must use the gRPC host ${grpcAddr.host}`, { httpListen: opts.httpListen });
    }
    httpPort = httpAddr.port;
  } else {
    httpPort = grpcAddr.port === 0 ? 0 : grpcAddr.port + 1;
    if (httpPort > 65535) throw new InvalidInputError(`no port after ${grpcAddr.port} for HTTP; pass an HTTP listen address`, { port: grpcAddr.port });
  }

  const broker = await startBroker({
    host: grpcAddr.host,
    port: grpcAddr.port,
    httpPort,
    ...(opts.entryTtlMs !== undefined ? { entryTtlMs: opts.entryTtlMs } : {}),
    log: opts.log,
  });
  const hostText = grpcAddr.host.includes(':') ? `[${grpcAddr.host}]` : grpcAddr.host;
  (opts.stdout ?? process.stdout).write(`broker listening: grpc ${hostText}:${broker.grpcPort} http http://${hostText}:${broker.httpPort}\n`);
  opts.onListening?.(broker);

  await new Promise<void>((resolve) => {
    const done = (): void => {
      process.off('SIGINT', done);
      process.off('SIGTERM', done);
      opts.stop?.removeEventListener('abort', done);
      resolve();
    };
    process.on('SIGINT', done);
    process.on('SIGTERM', done);
    if (opts.stop?.aborted === true) done();
    else opts.stop?.addEventListener('abort', done, { once: true });
  });
  opts.log.info('broker shutting down');
  await broker.close();
  return 0;
}
