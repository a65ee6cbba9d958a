/**
 * How a timeline's set of safekeepers looks from outside: the quorum (a majority — what the
 * compute's `ANY k` waits for and what the commit LSN counts) and the name each safekeeper uses on
 * a compute (application_name in synchronous_standby_names, and its slot). Shared by the
 * safekeeper (commit LSN, pulling) and the endpoint (election, postgresql.conf) so both sides can
 * never disagree on either.
 */

/** How many safekeepers out of `n` must flush a commit: a majority. */
export function quorumFor(n: number): number {
  return Math.floor(Math.max(1, n) / 2) + 1;
}

/** The standby (application) name and slot name of safekeeper `id` on computes. */
export function standbyNameFor(id: bigint): string {
  return `sk_${id}`;
}
