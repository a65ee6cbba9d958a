/**
 * How the long-running services (`strata pageserver`, `strata safekeeper`) wait to be stopped.
 *
 * The first SIGINT or SIGTERM resolves the promise, and the service starts its graceful shutdown
 * (flushing what it must). A second signal during that shutdown exits at once with the usual
 * 128 + signal status: an operator who asks twice means it, and every service is crash-safe, so
 * skipping the graceful part loses nothing that was acknowledged.
 */
export function waitForShutdownSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.once('SIGINT', () => process.exit(130));
      process.once('SIGTERM', () => process.exit(143));
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
