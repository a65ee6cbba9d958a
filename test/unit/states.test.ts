import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { InvalidInputError, StrataError } from '../../src/util/errors.ts';
import {
  StateMachine,
  StateWaitAbortedError,
  StateWaitFailedError,
  StateWaitTimeoutError,
  TENANT_STATE_SPEC,
  attachmentStatus,
  createTenantStateMachine,
  createTimelineStateMachine,
  isStoppingOrBroken,
} from '../../src/pageserver/states.ts';
import type { TenantState, TenantStateKind, TimelineState, TimelineStateKind } from '../../src/pageserver/states.ts';

const TENANT_ID = '0123456789abcdef0123456789abcdef';
const TIMELINE_ID = 'fedcba9876543210fedcba9876543210';

// The allowed moves, written out here independently of the module's tables.
const TENANT_ALLOWED = new Set([
  'Loading>Activating',
  'Loading>Broken',
  'Attaching>Activating',
  'Attaching>Broken',
  'Activating>Active',
  'Activating>Broken',
  'Active>Stopping',
  'Active>Broken',
  'Stopping>Broken',
]);
const TIMELINE_ALLOWED = new Set(['Loading>Active', 'Loading>Stopping', 'Loading>Broken', 'Active>Stopping', 'Active>Broken', 'Stopping>Broken']);

const TENANT_KINDS: TenantStateKind[] = ['Loading', 'Attaching', 'Activating', 'Active', 'Stopping', 'Broken'];
const TIMELINE_KINDS: TimelineStateKind[] = ['Loading', 'Active', 'Stopping', 'Broken'];

/** A tenant state machine brought to `kind` through allowed moves only. */
function tenantIn(kind: TenantStateKind): StateMachine<TenantState> {
  const start: TenantState = kind === 'Attaching' ? { kind: 'Attaching' } : { kind: 'Loading' };
  const sm = createTenantStateMachine(TENANT_ID, start);
  const path: TenantState[] = {
    Loading: [],
    Attaching: [],
    Activating: [{ kind: 'Activating', from: 'Loading' }],
    Active: [{ kind: 'Activating', from: 'Loading' }, { kind: 'Active' }],
    Stopping: [{ kind: 'Activating', from: 'Loading' }, { kind: 'Active' }, { kind: 'Stopping' }],
    Broken: [{ kind: 'Broken', reason: 'setup' }],
  }[kind] as TenantState[];
  for (const s of path) sm.transition(s);
  assert.equal(sm.current.kind, kind);
  return sm;
}

function tenantState(kind: TenantStateKind, current: TenantStateKind): TenantState {
  switch (kind) {
    case 'Activating':
      return { kind, from: current === 'Attaching' ? 'Attaching' : 'Loading' };
    case 'Broken':
      return { kind, reason: 'test failure' };
    default:
      return { kind };
  }
}

function timelineIn(kind: TimelineStateKind): StateMachine<TimelineState> {
  const sm = createTimelineStateMachine(TIMELINE_ID);
  const path: TimelineState[] = {
    Loading: [],
    Active: [{ kind: 'Active' }],
    Stopping: [{ kind: 'Active' }, { kind: 'Stopping' }],
    Broken: [{ kind: 'Broken', reason: 'setup' }],
  }[kind] as TimelineState[];
  for (const s of path) sm.transition(s);
  assert.equal(sm.current.kind, kind);
  return sm;
}

function isInvalidTransition(id: string, from: string, to: string) {
  return (e: unknown): boolean =>
    e instanceof StrataError &&
    e.code === 'invalid_state_transition' &&
    e.message.includes(id) &&
    e.message.includes(from) &&
    e.message.includes(to) &&
    e.context['from'] === from &&
    e.context['to'] === to &&
    e.context['id'] === id;
}

test('tenant: every (from, to) pair is allowed or refused exactly as the lifecycle says', () => {
  let allowedSeen = 0;
  for (const from of TENANT_KINDS) {
    for (const to of TENANT_KINDS) {
      const sm = tenantIn(from);
      const target = tenantState(to, from);
      if (TENANT_ALLOWED.has(`${from}>${to}`)) {
        sm.transition(target, 'test');
        assert.deepEqual(sm.current, target, `${from}>${to}`);
        allowedSeen++;
      } else {
        assert.throws(() => sm.transition(target, 'test'), isInvalidTransition(TENANT_ID, from, to), `${from}>${to}`);
        assert.equal(sm.current.kind, from, `${from}>${to} refused: state unchanged`);
      }
    }
  }
  assert.equal(allowedSeen, TENANT_ALLOWED.size);
});

test('timeline: every (from, to) pair is allowed or refused exactly as the lifecycle says', () => {
  let allowedSeen = 0;
  for (const from of TIMELINE_KINDS) {
    for (const to of TIMELINE_KINDS) {
      const sm = timelineIn(from);
      const target: TimelineState = to === 'Broken' ? { kind: 'Broken', reason: 'boom' } : { kind: to };
      if (TIMELINE_ALLOWED.has(`${from}>${to}`)) {
        sm.transition(target);
        assert.deepEqual(sm.current, target, `${from}>${to}`);
        allowedSeen++;
      } else {
        assert.throws(() => sm.transition(target), isInvalidTransition(TIMELINE_ID, from, to), `${from}>${to}`);
        assert.equal(sm.current.kind, from);
      }
    }
  }
  assert.equal(allowedSeen, TIMELINE_ALLOWED.size);
});

test('Activating must record where it came from', () => {
  const sm = createTenantStateMachine(TENANT_ID, { kind: 'Attaching' });
  assert.throws(() => sm.transition({ kind: 'Activating', from: 'Loading' }), isInvalidTransition(TENANT_ID, 'Attaching', 'Activating'));
  sm.transition({ kind: 'Activating', from: 'Attaching' });
  assert.deepEqual(sm.current, { kind: 'Activating', from: 'Attaching' });
});

test('machines start only in their initial states; the reason of a refused move is in the message', () => {
  for (const kind of ['Activating', 'Active', 'Stopping', 'Broken'] as const) {
    assert.throws(() => createTenantStateMachine(TENANT_ID, tenantState(kind, 'Loading')), InvalidInputError, kind);
  }
  assert.equal(createTenantStateMachine(TENANT_ID).current.kind, 'Attaching');
  assert.equal(createTimelineStateMachine(TIMELINE_ID).current.kind, 'Loading');
  const sm = tenantIn('Broken');
  assert.throws(() => sm.transition({ kind: 'Active' }, 'operator asked to activate'), /operator asked to activate/);
});

test('the current state cannot be mutated from outside', () => {
  const sm = tenantIn('Broken');
  const s = sm.current as { reason: string };
  assert.throws(() => {
    s.reason = 'changed';
  }, TypeError);
  assert.deepEqual(sm.current, { kind: 'Broken', reason: 'setup' });
});

test('attachment status per tenant state', () => {
  assert.equal(attachmentStatus({ kind: 'Attaching' }), 'maybe');
  assert.equal(attachmentStatus({ kind: 'Activating', from: 'Attaching' }), 'maybe');
  assert.equal(attachmentStatus({ kind: 'Activating', from: 'Loading' }), 'attached');
  assert.equal(attachmentStatus({ kind: 'Loading' }), 'attached');
  assert.equal(attachmentStatus({ kind: 'Active' }), 'attached');
  assert.equal(attachmentStatus({ kind: 'Stopping' }), 'attached');
  assert.deepEqual(attachmentStatus({ kind: 'Broken', reason: 'disk on fire' }), { failed: { reason: 'disk on fire' } });
});

// ------------------------------------------------------------------------------- waitFor

const isActive = (s: { kind: string }): boolean => s.kind === 'Active';

function activeTimers(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

test('waitFor resolves at once when the state already matches', async () => {
  const sm = tenantIn('Active');
  const got = await sm.waitFor(isActive, { timeoutMs: 1000 });
  assert.deepEqual(got, { kind: 'Active' });
  assert.equal(sm.waiterCount, 0);
});

test('waitFor resolves on the transition and cleans up its timer and listeners', async () => {
  const sm = tenantIn('Loading');
  const timersBefore = activeTimers();
  const ac = new AbortController();
  const p = sm.waitFor(isActive, { timeoutMs: 5_000, signal: ac.signal });
  assert.equal(sm.waiterCount, 1);
  assert.equal(getEventListeners(ac.signal, 'abort').length, 1);
  sm.transition({ kind: 'Activating', from: 'Loading' });
  assert.equal(sm.waiterCount, 1, 'Activating does not satisfy the wait');
  sm.transition({ kind: 'Active' });
  assert.deepEqual(await p, { kind: 'Active' });
  assert.equal(sm.waiterCount, 0);
  assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
  assert.equal(activeTimers(), timersBefore, 'timeout timer cleared');
});

test('waitFor times out with a typed error and removes itself', async () => {
  const sm = tenantIn('Loading');
  const started = Date.now();
  await assert.rejects(sm.waitFor(isActive, { timeoutMs: 30 }), (e: unknown) => {
    return e instanceof StateWaitTimeoutError && e.code === 'state_wait_timeout' && e.message.includes(TENANT_ID) && e.context['state'] === 'Loading';
  });
  assert.ok(Date.now() - started >= 25);
  assert.equal(sm.waiterCount, 0);
});

test('waitFor rejects when the state becomes one the caller gives up on (failOn)', async () => {
  const sm = tenantIn('Active');
  const p = sm.waitFor((s) => s.kind === 'Broken' && s.reason === 'never', { timeoutMs: 5_000, failOn: isStoppingOrBroken });
  sm.transition({ kind: 'Stopping' });
  await assert.rejects(p, (e: unknown) => e instanceof StateWaitFailedError && e.code === 'state_wait_failed' && e.context['state'] === 'Stopping');
  assert.equal(sm.waiterCount, 0);
});

test('waitFor rejects at a dead end even without failOn, with the Broken reason', async () => {
  const sm = tenantIn('Activating');
  const p = sm.waitFor(isActive, { timeoutMs: 5_000 });
  sm.transition({ kind: 'Broken', reason: 'layer map load failed' });
  await assert.rejects(p, (e: unknown) => e instanceof StateWaitFailedError && e.message.includes('layer map load failed'));
  assert.equal(sm.waiterCount, 0);
  // Waiting on a machine that is already at a dead end fails immediately.
  await assert.rejects(sm.waitFor(isActive, { timeoutMs: 5_000 }), StateWaitFailedError);
  assert.equal(sm.waiterCount, 0);
  // ...but a predicate that accepts the dead end resolves.
  assert.equal((await sm.waitFor((s) => s.kind === 'Broken', { timeoutMs: 10 })).kind, 'Broken');
});

test('waitFor can be aborted, before or while waiting', async () => {
  const sm = tenantIn('Loading');
  const ac = new AbortController();
  const p = sm.waitFor(isActive, { timeoutMs: 5_000, signal: ac.signal });
  ac.abort(new Error('shutdown'));
  await assert.rejects(p, (e: unknown) => e instanceof StateWaitAbortedError && e.code === 'state_wait_aborted');
  assert.equal(sm.waiterCount, 0);
  assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
  await assert.rejects(sm.waitFor(isActive, { timeoutMs: 5_000, signal: ac.signal }), StateWaitAbortedError);
  assert.equal(sm.waiterCount, 0);
});

test('many waiters all settle and none remain; the number of waiters is capped', async () => {
  const sm = tenantIn('Loading');
  const timersBefore = activeTimers();
  const waits = Array.from({ length: 500 }, () => sm.waitFor(isActive, { timeoutMs: 5_000 }));
  assert.equal(sm.waiterCount, 500);
  sm.transition({ kind: 'Activating', from: 'Loading' });
  sm.transition({ kind: 'Active' });
  const results = await Promise.all(waits);
  assert.ok(results.every((s) => s.kind === 'Active'));
  assert.equal(sm.waiterCount, 0);
  assert.equal(activeTimers(), timersBefore);

  const small = new StateMachine(TENANT_STATE_SPEC, TENANT_ID, { kind: 'Loading' }, { maxWaiters: 2 });
  const a = small.waitFor(isActive, { timeoutMs: 5_000 });
  const b = small.waitFor(isActive, { timeoutMs: 5_000 });
  await assert.rejects(small.waitFor(isActive, { timeoutMs: 5_000 }), (e: unknown) => e instanceof StrataError && e.code === 'too_many_waiters');
  assert.equal(small.waiterCount, 2);
  small.transition({ kind: 'Broken', reason: 'done' });
  await assert.rejects(a, StateWaitFailedError);
  await assert.rejects(b, StateWaitFailedError);
  assert.equal(small.waiterCount, 0);
});

test('a throwing predicate fails only its own wait, not the transition', async () => {
  const sm = tenantIn('Loading');
  const bad = sm.waitFor((s) => {
    if (s.kind === 'Activating') throw new Error('predicate bug');
    return false;
  }, { timeoutMs: 5_000 });
  const good = sm.waitFor(isActive, { timeoutMs: 5_000 });
  sm.transition({ kind: 'Activating', from: 'Loading' });
  sm.transition({ kind: 'Active' });
  await assert.rejects(bad, /predicate bug/);
  assert.equal((await good).kind, 'Active');
  assert.equal(sm.waiterCount, 0);
});

test('waitFor refuses nonsensical timeouts', async () => {
  const sm = tenantIn('Loading');
  for (const timeoutMs of [-1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31]) {
    await assert.rejects(sm.waitFor(isActive, { timeoutMs }), InvalidInputError, String(timeoutMs));
  }
  assert.equal(sm.waiterCount, 0);
});
