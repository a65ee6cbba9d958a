/**
 * Tenant and timeline lifecycle states, as explicit state machines.
 *
 * A tenant or timeline is always in exactly one state, and the only way to change it is
 * `StateMachine.transition`, which checks the move against a fixed table of allowed transitions.
 * A disallowed move is a bug in the caller (for example activating a tenant that is already
 * stopping), so it throws a StrataError with code `invalid_state_transition` naming the entity, its
 * id and both states, instead of silently corrupting the lifecycle.
 *
 * The tables follow Neon's lifecycle:
 *   tenant:   Loading | Attaching → Activating → Active → Stopping → (removed from the manager)
 *             Loading, Attaching, Activating, Active, Stopping → Broken
 *   timeline: Loading → Active → Stopping; Loading, Active, Stopping → Broken; Loading → Stopping
 * Broken is final for both; Stopping can only end in Broken (or in removal, which is not a state).
 * `Activating` remembers where it came from, because the HTTP attachment status depends on it.
 *
 * Waiting: `waitFor(predicate, { timeoutMs })` resolves with the first state (current or future)
 * that satisfies the predicate. It rejects with a typed error on timeout, on abort, when the state
 * satisfies the caller's `failOn` predicate (e.g. "Broken or Stopping"), and always when the state
 * reaches a dead end (no allowed transitions out) that does not satisfy the predicate, since
 * waiting longer could only end in a timeout. Each waiter removes its timer, its abort listener
 * and itself from the machine as soon as it settles, and the number of concurrent waiters is
 * capped, so waiting never leaks memory or timers.
 */
import { InvalidInputError, StrataError } from '../util/errors.ts';

// ------------------------------------------------------------------------------------- states

export const TENANT_STATE_KINDS = ['Loading', 'Attaching', 'Activating', 'Active', 'Stopping', 'Broken'] as const;
export type TenantStateKind = (typeof TENANT_STATE_KINDS)[number];

export type TenantState =
  | { readonly kind: 'Loading' }
  | { readonly kind: 'Attaching' }
  | { readonly kind: 'Activating'; readonly from: 'Loading' | 'Attaching' }
  | { readonly kind: 'Active' }
  | { readonly kind: 'Stopping' }
  | { readonly kind: 'Broken'; readonly reason: string };

export const TIMELINE_STATE_KINDS = ['Loading', 'Active', 'Stopping', 'Broken'] as const;
export type TimelineStateKind = (typeof TIMELINE_STATE_KINDS)[number];

export type TimelineState =
  | { readonly kind: 'Loading' }
  | { readonly kind: 'Active' }
  | { readonly kind: 'Stopping' }
  | { readonly kind: 'Broken'; readonly reason: string };

/** Allowed moves: from-state kind → kinds it may move to. */
export type TransitionTable<K extends string> = { readonly [F in K]: readonly K[] };

export const TENANT_TRANSITIONS: TransitionTable<TenantStateKind> = {
  Loading: ['Activating', 'Broken'],
  Attaching: ['Activating', 'Broken'],
  Activating: ['Active', 'Broken'],
  Active: ['Stopping', 'Broken'],
  Stopping: ['Broken'],
  Broken: [],
};

export const TIMELINE_TRANSITIONS: TransitionTable<TimelineStateKind> = {
  Loading: ['Active', 'Stopping', 'Broken'],
  Active: ['Stopping', 'Broken'],
  Stopping: ['Broken'],
  Broken: [],
};

/** Neon's `attachment_status`: is the tenant attached here, still deciding, or failed? */
export type AttachmentStatus = 'maybe' | 'attached' | { readonly failed: { readonly reason: string } };

export function attachmentStatus(state: TenantState): AttachmentStatus {
  switch (state.kind) {
    case 'Attaching':
      return 'maybe';
    case 'Activating':
      return state.from === 'Attaching' ? 'maybe' : 'attached';
    case 'Loading':
    case 'Active':
    case 'Stopping':
      return 'attached';
    case 'Broken':
      return { failed: { reason: state.reason } };
  }
}

// ------------------------------------------------------------------------------------- errors

/** `waitFor` gave up because `timeoutMs` passed; `state` is the state at that moment. */
export class StateWaitTimeoutError extends StrataError {
  readonly state: unknown;
  constructor(entity: string, id: string, timeoutMs: number, state: { kind: string }) {
    super('state_wait_timeout', `${entity} ${id}: the awaited state was not reached within ${timeoutMs} ms (still ${state.kind})`, {
      entity,
      id,
      timeoutMs,
      state: state.kind,
    });
    this.name = 'StateWaitTimeoutError';
    this.state = state;
  }
}

/** `waitFor` gave up because the state can no longer (or should no longer) reach the target. */
export class StateWaitFailedError extends StrataError {
  readonly state: unknown;
  constructor(entity: string, id: string, state: { kind: string; reason?: string }, why: string) {
    const detail = state.reason !== undefined ? ` (${state.reason})` : '';
    super('state_wait_failed', `${entity} ${id}: stopped waiting: ${why}: now ${state.kind}${detail}`, {
      entity,
      id,
      state: state.kind,
      reason: state.reason,
    });
    this.name = 'StateWaitFailedError';
    this.state = state;
  }
}

/** `waitFor` was cancelled through its AbortSignal. */
export class StateWaitAbortedError extends StrataError {
  constructor(entity: string, id: string, cause: unknown) {
    super('state_wait_aborted', `${entity} ${id}: waiting for a state change was aborted`, { entity, id }, { cause });
    this.name = 'StateWaitAbortedError';
  }
}

// ------------------------------------------------------------------------------------- machine

export interface StateMachineSpec<S extends { readonly kind: string }> {
  /** What the machine describes, for messages: 'tenant', 'timeline'. */
  readonly entity: string;
  readonly transitions: TransitionTable<S['kind']>;
  /** Kinds a machine may start in. */
  readonly initialKinds: readonly S['kind'][];
  /** Extra check of a move the table allows; returns a problem description or null. */
  readonly check?: (from: S, to: S) => string | null;
}

export interface WaitOptions<S> {
  /** Give up after this long (0 = only check the current state). */
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Reject as soon as the state satisfies this (and not the awaited predicate). */
  readonly failOn?: (state: S) => boolean;
}

interface Waiter<S> {
  check(state: S): void;
}

/** Largest timer Node honours (longer values fire immediately). */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const DEFAULT_MAX_WAITERS = 10_000;

export class StateMachine<S extends { readonly kind: string }> {
  readonly entity: string;
  readonly id: string;
  private readonly spec: StateMachineSpec<S>;
  private state: S;
  private readonly waiters = new Set<Waiter<S>>();
  private readonly maxWaiters: number;

  constructor(spec: StateMachineSpec<S>, id: string, initial: S, opts: { maxWaiters?: number } = {}) {
    this.spec = spec;
    this.entity = spec.entity;
    this.id = id;
    if (!spec.initialKinds.includes(initial.kind)) {
      throw new InvalidInputError(`${spec.entity} ${id}: cannot start in state ${initial.kind} (allowed: ${spec.initialKinds.join(', ')})`, {
        entity: spec.entity,
        id,
        state: initial.kind,
      });
    }
    this.state = Object.freeze({ ...initial });
    this.maxWaiters = opts.maxWaiters ?? DEFAULT_MAX_WAITERS;
  }

  get current(): S {
    return this.state;
  }

  /** Number of pending `waitFor` calls (for tests and metrics). */
  get waiterCount(): number {
    return this.waiters.size;
  }

  /** True if the table allows moving from the current state to a state of kind `to`. */
  canTransition(to: S['kind']): boolean {
    return this.spec.transitions[this.state.kind as S['kind']].includes(to);
  }

  /** True if no transition leads out of `state` (Broken). */
  isFinal(state: S = this.state): boolean {
    return this.spec.transitions[state.kind as S['kind']].length === 0;
  }

  /**
   * Moves to `to`, or throws `invalid_state_transition` if the table forbids it. `reason` says why
   * the move happened (it goes into the error message when the move is refused); a Broken state
   * carries its own reason.
   */
  transition(to: S, reason?: string): void {
    const from = this.state;
    const allowed = this.spec.transitions[from.kind as S['kind']];
    let problem: string | null = null;
    if (!allowed.includes(to.kind)) {
      problem = allowed.length === 0 ? `${from.kind} is final` : `from ${from.kind} only ${allowed.join(', ')} may follow`;
    } else if (this.spec.check !== undefined) {
      problem = this.spec.check(from, to);
    }
    if (problem !== null) {
      const why = reason !== undefined ? ` (requested because: ${reason})` : '';
      throw new StrataError('invalid_state_transition', `${this.entity} ${this.id}: cannot move from ${from.kind} to ${to.kind}: ${problem}${why}`, {
        entity: this.entity,
        id: this.id,
        from: from.kind,
        to: to.kind,
        reason,
      });
    }
    this.state = Object.freeze({ ...to });
    // Copy: settling waiters delete themselves from the set while we iterate.
    for (const w of [...this.waiters]) w.check(this.state);
  }

  /**
   * Resolves with the first state (now or later) satisfying `predicate`. Rejects with
   * StateWaitTimeoutError after `timeoutMs`, StateWaitAbortedError on abort, and
   * StateWaitFailedError when the state satisfies `failOn` or is final without satisfying
   * `predicate`.
   */
  waitFor(predicate: (state: S) => boolean, opts: WaitOptions<S>): Promise<S> {
    const { timeoutMs, signal, failOn } = opts;
    if (!Number.isFinite(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_TIMEOUT_MS) {
      return Promise.reject(new InvalidInputError(`waitFor: timeoutMs must be between 0 and ${MAX_TIMEOUT_MS}, got ${timeoutMs}`, { timeoutMs }));
    }
    return new Promise<S>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiters.delete(waiter);
        fn();
      };
      const onAbort = (): void => settle(() => reject(new StateWaitAbortedError(this.entity, this.id, signal?.reason)));
      const waiter: Waiter<S> = {
        check: (state) => {
          try {
            if (predicate(state)) settle(() => resolve(state));
            else if (failOn?.(state) === true) settle(() => reject(new StateWaitFailedError(this.entity, this.id, state, 'the state became one the caller gave up on')));
            else if (this.isFinal(state)) settle(() => reject(new StateWaitFailedError(this.entity, this.id, state, 'the state is final and does not satisfy the wait')));
          } catch (err) {
            // A throwing predicate fails its own wait, never the transition that woke it.
            settle(() => reject(err));
          }
        },
      };
      if (signal?.aborted === true) {
        onAbort();
        return;
      }
      waiter.check(this.state);
      if (settled) return;
      if (this.waiters.size >= this.maxWaiters) {
        settle(() =>
          reject(new StrataError('too_many_waiters', `${this.entity} ${this.id}: more than ${this.maxWaiters} concurrent waits for a state change`, {
            entity: this.entity,
            id: this.id,
            maxWaiters: this.maxWaiters,
          })),
        );
        return;
      }
      this.waiters.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(() => settle(() => reject(new StateWaitTimeoutError(this.entity, this.id, timeoutMs, this.state))), timeoutMs);
    });
  }
}

// ------------------------------------------------------------------------------------- specs

export const TENANT_STATE_SPEC: StateMachineSpec<TenantState> = {
  entity: 'tenant',
  transitions: TENANT_TRANSITIONS,
  initialKinds: ['Loading', 'Attaching'],
  check: (from, to) =>
    to.kind === 'Activating' && to.from !== from.kind ? `Activating must record the state it came from (${from.kind}), not ${to.from}` : null,
};

export const TIMELINE_STATE_SPEC: StateMachineSpec<TimelineState> = {
  entity: 'timeline',
  transitions: TIMELINE_TRANSITIONS,
  initialKinds: ['Loading'],
};

export type TenantStateMachine = StateMachine<TenantState>;
export type TimelineStateMachine = StateMachine<TimelineState>;

export function createTenantStateMachine(tenantId: string, initial: TenantState = { kind: 'Attaching' }): TenantStateMachine {
  return new StateMachine(TENANT_STATE_SPEC, tenantId, initial);
}

export function createTimelineStateMachine(timelineId: string): TimelineStateMachine {
  return new StateMachine(TIMELINE_STATE_SPEC, timelineId, { kind: 'Loading' });
}

/** Convenience predicate for `failOn`: the entity is going away or failed. */
export function isStoppingOrBroken(state: { readonly kind: string }): boolean {
  return state.kind === 'Stopping' || state.kind === 'Broken';
}
