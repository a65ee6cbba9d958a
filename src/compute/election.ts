/**
 * Starting a term: what a compute start does with the safekeepers before PostgreSQL runs.
 *
 * A vanilla PostgreSQL has no walproposer, so the endpoint plays the proposer once, at start:
 *   1. make sure every safekeeper has the timeline (created at the pageserver's current LSN when new);
 *   2. read their terms and ask for votes on term = (highest seen + 1); a majority must grant it.
 *      Granting is persisted, and from then on each voter refuses WAL of older terms, so an old
 *      compute that may still be running can no longer get a commit acknowledged;
 *   3. the winner is the voter with the most advanced WAL: highest last-log term, then highest
 *      flush LSN. Its flush LSN is the new term's start; its history + (term, start) the new history.
 *      Every acknowledged commit is on at least one voter (quorums intersect), hence ≤ that start;
 *   4. tell every voter (and, best effort, the others): each cuts WAL that diverges from the new
 *      history, fetches what it lacks up to the start from the winner, and then pulls the new
 *      compute's WAL as its synchronous standby, through its own slot `sk_<id>`.
 * The caller then waits for the pageserver to ingest up to the start (the safekeepers serve it once
 * a quorum has it in the new term), takes a basebackup there, and starts PostgreSQL with
 * `synchronous_standby_names = 'ANY k (sk_…)'` and `strata.term = <term>`.
 *
 * Elections can race (two endpoints starting at once): a vote refused because another term got
 * there first makes us retry with a higher term, a bounded number of times.
 */
import { formatLsn, parseLsn, type Lsn } from '../postgres/lsn.ts';
import { StrataError } from '../util/errors.ts';
import { quorumFor, standbyNameFor } from '../safekeeper/membership.ts';

export { quorumFor } from '../safekeeper/membership.ts';
import type { Logger } from '../util/log.ts';

export interface SafekeeperAddress {
  id: bigint;
  /** host:port of its replication service. */
  pgConnstr: string;
  /** http://host:port of its HTTP API. */
  httpConnstr: string;
}

export interface ElectionOptions {
  safekeepers: readonly SafekeeperAddress[];
  tenantId: string;
  timelineId: string;
  systemId: bigint;
  walSegSizeBytes: number;
  /** Where a timeline new to a safekeeper starts (the pageserver's last record LSN). */
  startLsnIfNew: Lsn;
  compute: { host: string; port: number; user: string };
  log: Logger;
  /** Per HTTP request. Default 10 s. */
  requestTimeoutMs?: number;
  /** Election attempts when votes race. Default 5. */
  maxAttempts?: number;
}

export interface ElectionResult {
  term: bigint;
  startLsn: Lsn;
  winner: bigint;
  voters: bigint[];
  /** Safekeepers that could not be reached (they will catch up from peers when they return). */
  unreachable: bigint[];
}

export class ElectionError extends StrataError {
  constructor(message: string, context: Record<string, string | number | bigint> = {}) {
    super('election_failed', message, context);
    this.name = 'ElectionError';
  }
}


/** `ANY k (sk_1, sk_2, …)` for the compute's synchronous_standby_names. */
export function synchronousStandbyNames(safekeepers: readonly SafekeeperAddress[]): string {
  return `ANY ${quorumFor(safekeepers.length)} (${safekeepers.map((s) => standbyNameFor(s.id)).join(', ')})`;
}

interface TimelineStatusJson {
  acceptor_state: { term: number; epoch: number; term_history: { term: number; start_lsn: string }[] };
  flush_lsn: string;
  commit_lsn: string;
  system_id: string;
}

interface VoteJson {
  term: number;
  vote_given: boolean;
  flush_lsn: string;
  last_log_term: number;
  term_history: { term: number; start_lsn: string }[];
}

async function call<T>(method: string, url: string, body: unknown, timeoutMs: number): Promise<{ status: number; json: T | null; text: string }> {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let json: T | null = null;
  try {
    json = text.length > 0 ? JSON.parse(text) as T : null;
  } catch {
    json = null;
  }
  return { status: res.status, json, text };
}

export async function runElection(opts: ElectionOptions): Promise<ElectionResult> {
  const timeoutMs = opts.requestTimeoutMs ?? 10_000;
  const quorum = quorumFor(opts.safekeepers.length);
  const base = (sk: SafekeeperAddress): string => `${sk.httpConnstr}/v1/tenant/${opts.tenantId}/timeline/${opts.timelineId}`;
  const members = opts.safekeepers.map((s) => ({ id: Number(s.id), pg_connstr: s.pgConnstr, http_connstr: s.httpConnstr }));
  const log = opts.log.child({ tenant_id: opts.tenantId, timeline_id: opts.timelineId });

  // 1. The timeline exists everywhere we can reach.
  const statuses = new Map<bigint, TimelineStatusJson>();
  const unreachable: bigint[] = [];
  await Promise.all(opts.safekeepers.map(async (sk) => {
    try {
      let r = await call<TimelineStatusJson>('GET', base(sk), undefined, timeoutMs);
      if (r.status === 404) {
        r = await call<TimelineStatusJson>('POST', `${sk.httpConnstr}/v1/tenant/timeline`, {
          tenant_id: opts.tenantId, timeline_id: opts.timelineId, system_id: opts.systemId.toString(), pg_version: 150000,
          wal_seg_size: opts.walSegSizeBytes, start_lsn: formatLsn(opts.startLsnIfNew), members,
        }, timeoutMs);
      }
      if (r.status >= 300 || r.json === null) throw new ElectionError(`safekeeper ${sk.id}: HTTP ${r.status} ${r.text.slice(0, 300)}`);
      if (BigInt(r.json.system_id) !== opts.systemId) {
        throw new ElectionError(`safekeeper ${sk.id} holds timeline ${opts.timelineId} of system ${r.json.system_id}, the pageserver's is ${opts.systemId}`);
      }
      statuses.set(sk.id, r.json);
    } catch (err) {
      if (err instanceof ElectionError && /holds timeline/.test(err.message)) throw err;
      unreachable.push(sk.id);
      log.warn('safekeeper unreachable for the election', { safekeeper_id: sk.id.toString(), error: err instanceof Error ? err.message : String(err) });
    }
  }));
  if (statuses.size < quorum) {
    throw new ElectionError(`only ${statuses.size} of ${opts.safekeepers.length} safekeepers are reachable; ${quorum} are needed to start a compute`,
      { reachable: statuses.size, needed: quorum });
  }

  // 2. Votes.
  let term = 0n;
  for (const s of statuses.values()) if (BigInt(s.acceptor_state.term) > term) term = BigInt(s.acceptor_state.term);
  const maxAttempts = opts.maxAttempts ?? 5;
  for (let attempt = 1; attempt <= maxAttempts; attempt++) {
    term += 1n;
    const votes = new Map<bigint, VoteJson>();
    let highestSeen = term;
    await Promise.all(opts.safekeepers.filter((sk) => statuses.has(sk.id)).map(async (sk) => {
      try {
        const r = await call<VoteJson>('POST', `${base(sk)}/vote`, { term: Number(term) }, timeoutMs);
        if (r.status !== 200 || r.json === null) throw new ElectionError(`HTTP ${r.status} ${r.text.slice(0, 300)}`);
        if (r.json.vote_given) votes.set(sk.id, r.json);
        else if (BigInt(r.json.term) > highestSeen) highestSeen = BigInt(r.json.term);
      } catch (err) {
        log.warn('vote request failed', { safekeeper_id: sk.id.toString(), term, error: err instanceof Error ? err.message : String(err) });
      }
    }));
    if (votes.size < quorum) {
      log.warn('election lost a race or lacks votes; retrying with a higher term', { term, votes: votes.size, needed: quorum });
      term = highestSeen;
      continue;
    }

    // 3. The most advanced voter wins.
    let winner: [bigint, VoteJson] | null = null;
    for (const [id, v] of votes) {
      if (winner === null) {
        winner = [id, v];
        continue;
      }
      const [wt, wf] = [BigInt(winner[1].last_log_term), parseLsn(winner[1].flush_lsn)];
      const [vt, vf] = [BigInt(v.last_log_term), parseLsn(v.flush_lsn)];
      if (vt > wt || (vt === wt && vf > wf)) winner = [id, v];
    }
    const [winnerId, wv] = winner!;
    const startLsn = parseLsn(wv.flush_lsn);
    const history = [...wv.term_history, { term: Number(term), start_lsn: formatLsn(startLsn) }];
    const donor = opts.safekeepers.find((s) => s.id === winnerId)!;

    // 4. Tell everyone.
    let accepted = 0;
    await Promise.all(opts.safekeepers.map(async (sk) => {
      const name = standbyNameFor(sk.id);
      try {
        const r = await call<unknown>('POST', `${base(sk)}/elected`, {
          term: Number(term), start_lsn: formatLsn(startLsn), term_history: history,
          compute: { host: opts.compute.host, port: opts.compute.port, user: opts.compute.user, slot_name: name, application_name: name },
          donor: { id: Number(donor.id), http_connstr: donor.httpConnstr },
        }, timeoutMs);
        if (r.status !== 200) throw new ElectionError(`HTTP ${r.status} ${r.text.slice(0, 300)}`);
        if (votes.has(sk.id)) accepted++;
      } catch (err) {
        log.warn('safekeeper did not accept the election result (it will adopt the term from its peers later)', {
          safekeeper_id: sk.id.toString(), term, error: err instanceof Error ? err.message : String(err),
        });
      }
    }));
    if (accepted < quorum) {
      log.warn('too few safekeepers accepted the election; retrying', { term, accepted, needed: quorum });
      continue;
    }
    log.info('new term elected', { term, start_lsn: formatLsn(startLsn), winner: winnerId.toString(), voters: [...votes.keys()].join(',') });
    return { term, startLsn, winner: winnerId, voters: [...votes.keys()], unreachable };
  }
  throw new ElectionError(`no term could be elected in ${maxAttempts} attempts (competing compute starts?)`);
}

/**
 * Waits until a quorum of safekeepers has the new term's start: some safekeeper's commit LSN
 * reaches it (peer recovery done where needed). Polls the HTTP status; bounded by timeoutMs.
 */
export async function waitForCommit(opts: { safekeepers: readonly SafekeeperAddress[]; tenantId: string; timelineId: string; lsn: Lsn; timeoutMs: number }): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    for (const sk of opts.safekeepers) {
      try {
        const r = await call<TimelineStatusJson>('GET', `${sk.httpConnstr}/v1/tenant/${opts.tenantId}/timeline/${opts.timelineId}`, undefined, 2_000);
        if (r.status === 200 && r.json !== null) {
          const c = parseLsn(r.json.commit_lsn);
          if (c >= opts.lsn) return;
          last = `safekeeper ${sk.id} commit_lsn ${formatLsn(c)}`;
        }
      } catch (err) {
        last = `safekeeper ${sk.id}: ${err instanceof Error ? err.message : String(err)}`;
      }
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new ElectionError(`safekeepers did not commit ${formatLsn(opts.lsn)} within ${opts.timeoutMs} ms (last seen: ${last})`, { lsn: formatLsn(opts.lsn) });
}
