// run-facts: what the run view derives from a journal, run in the page on
// hand-made input: the waterfall's spans with delegated agents nested under
// their `delegate` call (static/waterfall.js `callSpans`), the run's clock and
// time spent waiting for humans, tokens and cost, retries and why, and the
// axis ticks (static/store.js, static/format.js).

import { test, expect } from '../helpers/fixtures.js';

/** An event at `second` seconds past a fixed minute. */
const at = (second) => new Date(Date.UTC(2026, 0, 1, 0, 0, 0) + second * 1000).toISOString();

/** A journal of an orchestrator delegating to coding, which waits for an
 * approval inside the delegation. */
function delegatingJournal() {
  const e = (seq, second, type, agent, payload) => ({ seq, type, agent, at: at(second), key: `k${seq}`, payload });
  return [
    e(1, 0, 'RUN_STARTED', 'orchestrator', { task: 't', agent: 'orchestrator' }),
    e(2, 0, 'LLM_CALLED', 'orchestrator', { agent: 'orchestrator', model: 'm', attempt: 1 }),
    e(3, 2, 'AGENT_THOUGHT', 'orchestrator', { text: '', tool_calls: [{ call_id: 'd1', tool: 'delegate', args: { agent: 'coding', task: 'x' } }], usage: { input_tokens: 10, output_tokens: 5 } }),
    e(4, 2, 'TOOL_CALLED', 'orchestrator', { call_id: 'd1', tool: 'delegate', args: { agent: 'coding', task: 'x' }, dangerous: false }),
    e(5, 2, 'AGENT_STARTED', 'coding', { agent: 'coding', task: 'x' }),
    e(6, 2, 'LLM_CALLED', 'coding', { agent: 'coding', model: 'm', attempt: 1 }),
    e(7, 5, 'LLM_CALLED', 'coding', { agent: 'coding', model: 'm', attempt: 2 }),
    e(8, 6, 'AGENT_THOUGHT', 'coding', { text: '', tool_calls: [{ call_id: 's1', tool: 'shell', args: {} }], usage: { input_tokens: 20, output_tokens: 7 } }),
    e(9, 6, 'TOOL_CALLED', 'coding', { call_id: 's1', tool: 'shell', args: {}, dangerous: true }),
    e(10, 6, 'RUN_SUSPENDED', 'coding', { approval_id: 'a1', call_id: 's1', tool: 'shell', args: {}, expires_at: at(999), interrupted: false }),
    e(11, 36, 'RUN_RESUMED', 'coding', { approval_id: 'a1', decision: 'approved', feedback: null, decided_by: 'ann' }),
    e(12, 36, 'TOOL_STARTED', 'coding', { call_id: 's1', tool: 'shell' }),
    e(13, 40, 'TOOL_RESULT', 'coding', { call_id: 's1', tool: 'shell', ok: true, output: '', exit_code: 0, duration_ms: 4000 }),
    e(14, 40, 'LLM_CALLED', 'coding', { agent: 'coding', model: 'm', attempt: 1 }),
    e(15, 41, 'AGENT_THOUGHT', 'coding', { text: 'done', tool_calls: [], usage: { input_tokens: 30, output_tokens: 9 } }),
    e(16, 41, 'AGENT_FINISHED', 'coding', { agent: 'coding', result: 'done' }),
    e(17, 41, 'TOOL_STARTED', 'orchestrator', { call_id: 'd1', tool: 'delegate' }),
    e(18, 41, 'TOOL_RESULT', 'orchestrator', { call_id: 'd1', tool: 'delegate', ok: true, output: 'done', exit_code: null, duration_ms: 0 }),
    e(19, 41, 'LLM_CALLED', 'orchestrator', { agent: 'orchestrator', model: 'm', attempt: 1 }),
    e(20, 43, 'AGENT_THOUGHT', 'orchestrator', { text: 'all done', tool_calls: [], usage: { input_tokens: 40, output_tokens: 11 } }),
    e(21, 43, 'RUN_COMPLETED', null, { result: 'all done' }),
  ];
}

test.beforeEach(async ({ page }) => {
  await page.goto('/');
});

test('a delegation spans its call to its result, with the delegated agent\'s work nested under it', async ({ page }) => {
  const spans = await page.evaluate(async (events) => {
    const { callSpans } = await import('/static/waterfall.js');
    return callSpans(events).map(({ kind, agent, label, start, end, depth, seq, failed }) => ({ kind, agent, label, ms: end - start, depth, seq, failed }));
  }, delegatingJournal());
  expect(spans).toEqual([
    { kind: 'model', agent: 'orchestrator', label: 'orchestrator · m', ms: 2000, depth: 0, seq: 2, failed: false },
    // 39 s, not the 0 ms between the delegate's TOOL_STARTED and TOOL_RESULT.
    { kind: 'delegate', agent: 'orchestrator', label: 'orchestrator · delegate → coding', ms: 39_000, depth: 0, seq: 4, failed: false },
    { kind: 'model', agent: 'coding', label: 'coding · m', ms: 3000, depth: 1, seq: 6, failed: true },
    { kind: 'model', agent: 'coding', label: 'coding · m #2', ms: 1000, depth: 1, seq: 7, failed: false },
    { kind: 'wait', agent: 'coding', label: 'coding · approval of shell', ms: 30_000, depth: 1, seq: 10, failed: false },
    { kind: 'tool', agent: 'coding', label: 'coding · shell', ms: 4000, depth: 1, seq: 12, failed: false },
    { kind: 'model', agent: 'coding', label: 'coding · m', ms: 1000, depth: 1, seq: 14, failed: false },
    { kind: 'model', agent: 'orchestrator', label: 'orchestrator · m', ms: 2000, depth: 0, seq: 19, failed: false },
  ]);
});

test('the run\'s clock: total, waiting for humans (approvals and budgets), tokens, cost', async ({ page }) => {
  const result = await page.evaluate(async ({ events, times }) => {
    const { runTimes, runTokens, runCost } = await import('/static/store.js');
    const finished = { status: 'completed', created_at: times[0], updated_at: times[43], usage: { orchestrator: { input_tokens: 50, output_tokens: 16 }, coding: { input_tokens: 50, output_tokens: 16 } } };
    const waitingRun = { status: 'waiting_approval', created_at: times[0], updated_at: times[6] };
    const budget = [
      { seq: 1, type: 'RUN_STARTED', at: times[0], payload: {} },
      { seq: 2, type: 'BUDGET_EXCEEDED', at: times[10], payload: { approval_id: 'b1' } },
      { seq: 3, type: 'BUDGET_RAISED', at: times[25], payload: { approval_id: 'b1' } },
      { seq: 4, type: 'RUN_RESUMED', at: times[25], payload: { approval_id: 'b1', decision: 'approved' } },
    ];
    return {
      finished: runTimes(finished, events),
      // Still waiting at second 16: 10 s so far.
      waiting: runTimes(waitingRun, events.slice(0, 10), Date.parse(times[16])),
      budget: runTimes({ status: 'running', created_at: times[0] }, budget, Date.parse(times[30])),
      tokens: runTokens(finished),
      costs: [runCost(finished), runCost({ budget: { used_cost_usd: 0.0123 } }), runCost({ cost_usd: 1.5 }), runCost({ budget: { used_cost_usd: null } })],
    };
  }, { events: delegatingJournal(), times: Array.from({ length: 44 }, (_, s) => at(s)) });
  expect(result.finished).toEqual({ total: 43_000, waiting: 30_000, waitingNow: false });
  expect(result.waiting).toEqual({ total: 16_000, waiting: 10_000, waitingNow: true });
  expect(result.budget).toEqual({ total: 30_000, waiting: 15_000, waitingNow: false });
  expect(result.tokens).toEqual({ input: 100, output: 32, total: 132 });
  expect(result.costs).toEqual([null, 0.0123, 1.5, null]);
});

test('a retry knows its attempt, the attempt before, and an error reported between', async ({ page }) => {
  const result = await page.evaluate(async (events) => {
    const { retryOf } = await import('/static/store.js');
    const withError = [
      events[5],
      { seq: 7, type: 'LLM_FAILED', agent: 'coding', at: events[5].at, payload: { error: { code: 'http_503', message: 'overloaded' } } },
      { ...events[6], seq: 8 },
    ];
    const pick = (r) => r && { attempt: r.attempt, previous: r.previous?.seq ?? null, failure: r.failure };
    return { first: retryOf(events, 5), second: pick(retryOf(events, 6)), withError: pick(retryOf(withError, 2)), orphan: pick(retryOf([events[6]], 0)) };
  }, delegatingJournal());
  expect(result.first).toBeNull();
  expect(result.second).toEqual({ attempt: 2, previous: 6, failure: null });
  expect(result.withError).toEqual({ attempt: 2, previous: 6, failure: { code: 'http_503', message: 'overloaded' } });
  expect(result.orphan).toEqual({ attempt: 2, previous: null, failure: null });
});

test('axis ticks are round and readable', async ({ page }) => {
  const ticks = await page.evaluate(async () => {
    const { axisTicks } = await import('/static/format.js');
    return [800, 9_000, 65_000, 5_400_000].map((width) => axisTicks(width).map((t) => t.label));
  });
  expect(ticks).toEqual([
    ['0', '200 ms', '400 ms', '600 ms', '800 ms'],
    ['0', '2 s', '4 s', '6 s', '8 s'],
    ['0', '15 s', '30 s', '45 s', '1 min'],
    ['0', '30 min', '1 h', '1 h 30 min'],
  ]);
});
