// store: the dashboard's bookkeeping (static/store.js), run in the page on
// hand-made input: events applied once and in seq order whatever order and
// however often they arrive, summaries that never go back in time, the
// journal folded over a stale summary, and who drives a run.

import { test, expect } from '../helpers/fixtures.js';

const at = (second) => `2026-01-01T00:00:${String(second).padStart(2, '0')}.000000Z`;

test('events are applied once, in seq order, whatever order they arrive in', async ({ page }) => {
  await page.goto('/');
  const result = await page.evaluate(async () => {
    const { Journal } = await import('/static/store.js');
    const journal = new Journal();
    const event = (seq) => ({ seq, type: 'TOOL_STARTED', agent: 'coding', at: '2026-01-01T00:00:00Z', key: `k${seq}`, payload: {} });
    const applied = [];
    for (const seq of [3, 1, 1, 2, 5, 3, 4, 2, 6, 0, -1]) {
      applied.push(journal.offer(event(seq)).map((e) => e.seq));
    }
    return { applied, all: journal.events.map((e) => e.seq), last: journal.lastSeq, gap: journal.hasGap() };
  });
  expect(result.applied).toEqual([[], [1], [], [2, 3], [], [], [4, 5], [], [6], [], []]);
  expect(result.all).toEqual([1, 2, 3, 4, 5, 6]);
  expect(result.last).toBe(6);
  expect(result.gap).toBe(false);
});

test('the shown run is the freshest summary with newer events folded on', async ({ page }) => {
  await page.goto('/');
  const times = [0, 1, 2, 3, 4, 5].map(at);
  const result = await page.evaluate(async (times) => {
    const { Store } = await import('/static/store.js');
    const store = new Store();
    const id = 'r1';
    const summary = {
      id, status: 'running', agent: 'coding', task: 't', created_at: times[0], updated_at: times[1],
      pending_approval: null, usage: { coding: { input_tokens: 10, output_tokens: 1 } }, result: null, error: null, last_seq: 2,
    };
    store.putSummary(summary);
    const journal = store.journal(id);
    const events = [
      { seq: 1, type: 'RUN_STARTED', agent: 'coding', at: times[0], payload: { task: 't', agent: 'coding' } },
      { seq: 2, type: 'AGENT_THOUGHT', agent: 'coding', at: times[1], payload: { usage: { input_tokens: 10, output_tokens: 1 }, tool_calls: [] } },
      { seq: 3, type: 'AGENT_THOUGHT', agent: 'coding', at: times[2], payload: { usage: { input_tokens: 5, output_tokens: 2 }, tool_calls: [] } },
      { seq: 4, type: 'RUN_SUSPENDED', agent: 'coding', at: times[3], payload: { approval_id: 'a1', call_id: 'c1', tool: 'shell', args: { command: 'ls' }, expires_at: times[5], interrupted: false } },
    ];
    events.forEach((e) => journal.offer(e));
    const waiting = store.effectiveRun(id);
    journal.offer({ seq: 5, type: 'RUN_RESUMED', agent: 'coding', at: times[4], payload: { approval_id: 'a1', decision: 'approved', feedback: null, decided_by: 'api' } });
    const resumed = store.effectiveRun(id);
    // An older summary (seq 1) arriving late changes nothing.
    const keptOld = store.putSummary({ ...summary, status: 'pending', last_seq: 1, updated_at: times[0] });
    // A newer one replaces it, and the journal has nothing newer to add.
    const keptNew = store.putSummary({ ...summary, status: 'completed', last_seq: 5, updated_at: times[5], result: 'ok' });
    return { waiting, resumed, keptOld, keptNew, final: store.effectiveRun(id) };
  }, times);
  expect(result.waiting.status).toBe('waiting_approval');
  expect(result.waiting.pending_approval).toMatchObject({ approval_id: 'a1', tool: 'shell', agent: 'coding', args: { command: 'ls' } });
  // Usage counts seq 3 once: seq 2 is already in the summary.
  expect(result.waiting.usage.coding).toEqual({ input_tokens: 15, output_tokens: 3 });
  expect(result.resumed.status).toBe('running');
  expect(result.resumed.pending_approval).toBeNull();
  expect(result.keptOld).toBe(false);
  expect(result.keptNew).toBe(true);
  expect(result.final).toMatchObject({ status: 'completed', result: 'ok', last_seq: 5 });
});

test('streamed text shows only while its model call is open', async ({ page }) => {
  await page.goto('/');
  const result = await page.evaluate(async () => {
    const { Journal } = await import('/static/store.js');
    const journal = new Journal();
    const event = (seq, type, payload = {}) => ({ seq, type, agent: 'coding', at: '2026-01-01T00:00:00Z', payload });
    journal.offer(event(1, 'RUN_STARTED'));
    journal.offer(event(2, 'LLM_CALLED', { attempt: 1 }));
    journal.addDelta('coding', 'Hel');
    journal.addDelta('coding', 'lo');
    const during = journal.liveText();
    journal.offer(event(3, 'AGENT_THOUGHT', { text: 'Hello' }));
    const after = journal.liveText();
    journal.addDelta('coding', 'late piece');
    const late = journal.liveText();
    return { during, after, late };
  });
  expect(result.during).toEqual([['coding', 'Hello']]);
  expect(result.after).toEqual([]);
  expect(result.late).toEqual([]);
});

test('who drives a run: the summary\'s owner, taken away by a parking or final event', async ({ page }) => {
  await page.goto('/');
  const times = [0, 1, 2, 3, 4].map(at);
  const result = await page.evaluate(async (times) => {
    const { Store, driverOf } = await import('/static/store.js');
    const store = new Store();
    const id = 'r1';
    store.putSummary({
      id, status: 'running', agent: 'coding', task: 't', created_at: times[0], updated_at: times[1],
      pending_approval: null, usage: {}, result: null, error: null, last_seq: 1, owner: 'host-a1',
    });
    const journal = store.journal(id);
    const seen = [];
    const look = () => seen.push(driverOf(store.effectiveRun(id)));
    journal.offer({ seq: 1, type: 'RUN_STARTED', agent: 'coding', at: times[0], payload: { task: 't', agent: 'coding' } });
    look(); // the summary: driven by host-a1
    journal.offer({ seq: 2, type: 'RUN_SUSPENDED', agent: 'coding', at: times[1], payload: { approval_id: 'a1', call_id: 'c1', tool: 'shell', args: {}, expires_at: times[4], interrupted: false } });
    look(); // parked, before any new summary says so
    journal.offer({ seq: 3, type: 'RUN_RESUMED', agent: 'coding', at: times[2], payload: { approval_id: 'a1', decision: 'approved', feedback: null, decided_by: 'x' } });
    look(); // woken: no owner known until the summary names one
    store.putSummary({ ...store.summaries.get(id), status: 'running', last_seq: 3, updated_at: times[2], owner: 'host-b2' });
    look(); // the new summary names the instance that took it
    journal.offer({ seq: 4, type: 'RUN_COMPLETED', agent: null, at: times[3], payload: { result: 'ok' } });
    look(); // over
    return {
      seen,
      // Statuses alone, for a summary from an older server without `owner`.
      bare: ['pending', 'running', 'waiting_approval', 'paused', 'completed', 'failed', 'cancelled'].map((status) => driverOf({ status }).state),
      // A parked run whose decision an instance is handling has that owner.
      claimed: driverOf({ status: 'waiting_approval', owner: 'host-c3' }),
      finishedWithOwner: driverOf({ status: 'completed', owner: 'host-c3' }),
    };
  }, times);
  expect(result.seen).toEqual([
    { state: 'driven', owner: 'host-a1' },
    { state: 'parked', owner: null },
    { state: 'unclaimed', owner: null },
    { state: 'driven', owner: 'host-b2' },
    { state: 'finished', owner: null },
  ]);
  expect(result.bare).toEqual(['unclaimed', 'unclaimed', 'parked', 'parked', 'finished', 'finished', 'finished']);
  expect(result.claimed).toEqual({ state: 'driven', owner: 'host-c3' });
  expect(result.finishedWithOwner).toEqual({ state: 'finished', owner: null });
});

test('pauses, budgets and forks folded on a summary (contract section 11)', async ({ page }) => {
  await page.goto('/');
  const times = [0, 1, 2, 3, 4, 5, 6].map(at);
  const result = await page.evaluate(async (times) => {
    const { Store, driverOf } = await import('/static/store.js');
    const store = new Store();
    const id = 'r2';
    store.putSummary({
      id, status: 'running', agent: 'coding', task: 't', created_at: times[0], updated_at: times[0], owner: 'i-1',
      pending_approval: null, usage: {}, result: null, error: null, last_seq: 1, cost_usd: 0,
      budget: { max_tokens: 100, max_cost_usd: null, used_tokens: 0, used_cost_usd: 0 },
      forks: [{ run_id: 'f2', seq: 1 }],
    });
    const journal = store.journal(id);
    const seen = [];
    const look = () => {
      const run = store.effectiveRun(id);
      seen.push({ status: run.status, kind: run.pending_approval?.kind ?? null, budget: run.budget, cost: run.cost_usd, driver: driverOf(run).state });
    };
    journal.offer({ seq: 1, type: 'RUN_STARTED', agent: 'coding', at: times[0], payload: { task: 't', agent: 'coding' } });
    journal.offer({ seq: 2, type: 'RUN_PAUSED', agent: 'coding', at: times[1], payload: { reason: null, by: 'op' } });
    journal.offer({ seq: 3, type: 'AGENT_THOUGHT', agent: 'coding', at: times[2], payload: { usage: { input_tokens: 100, output_tokens: 20 }, cost_usd: 0.5, tool_calls: [] } });
    look();
    journal.offer({ seq: 4, type: 'RUN_UNPAUSED', agent: 'coding', at: times[3], payload: { by: 'op' } });
    look();
    journal.offer({ seq: 5, type: 'BUDGET_EXCEEDED', agent: 'coding', at: times[4], payload: { approval_id: 'b1', used_tokens: 120, max_tokens: 100, used_cost_usd: 0.5, max_cost_usd: null, expires_at: times[6] } });
    look();
    journal.offer({ seq: 6, type: 'BUDGET_RAISED', agent: 'coding', at: times[5], payload: { approval_id: 'b1', max_tokens: 1100, max_cost_usd: null, by: 'ap' } });
    look();
    // A summary without `forks` (a list, a WebSocket frame) keeps them; a
    // fork made on the page adds one.
    store.putSummary({ ...store.summaries.get(id), last_seq: 6, updated_at: times[5], forks: undefined });
    store.addFork(id, { run_id: 'f1', seq: 1 });
    store.addFork(id, { run_id: 'f0', seq: 0 });
    store.addFork(id, { run_id: 'f1', seq: 1 });
    return { seen, forks: store.forksOf(id) };
  }, times);
  expect(result.seen).toEqual([
    { status: 'paused', kind: null, budget: { max_tokens: 100, max_cost_usd: null, used_tokens: 120, used_cost_usd: 0.5 }, cost: 0.5, driver: 'driven' },
    { status: 'running', kind: null, budget: { max_tokens: 100, max_cost_usd: null, used_tokens: 120, used_cost_usd: 0.5 }, cost: 0.5, driver: 'driven' },
    { status: 'waiting_approval', kind: 'budget', budget: { max_tokens: 100, max_cost_usd: null, used_tokens: 120, used_cost_usd: 0.5 }, cost: 0.5, driver: 'parked' },
    { status: 'running', kind: null, budget: { max_tokens: 1100, max_cost_usd: null, used_tokens: 120, used_cost_usd: 0.5 }, cost: 0.5, driver: 'unclaimed' },
  ]);
  expect(result.forks).toEqual([{ run_id: 'f0', seq: 0 }, { run_id: 'f2', seq: 1 }, { run_id: 'f1', seq: 1 }]);
});
