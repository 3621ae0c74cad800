// waterfall: the timing view of a run. An orchestrator delegates to a
// coding agent whose model takes a while: the `delegate` bar spans that
// whole delegation (not the 0 ms between its TOOL_STARTED and TOOL_RESULT),
// the coding agent's bars are nested under it, the axis has readable ticks,
// and a bar leads to its timeline entry, scrolled to and highlighted.

import { test, expect, token, rest } from '../helpers/fixtures.js';

const ORCHESTRATOR = 'You are the orchestrator';
const CODING = 'You are a coding agent';
/** How long the delegated agent's model takes to answer. */
const CODING_MS = 1500;

test('a delegation nests its agent\'s calls, spans them all, and each bar leads to its entry', async ({ page, mock, baseURL }) => {
  const tag = token('waterfall');
  await mock.setFixtures([
    { name: `${tag} delegate`, match: { task_contains: tag, system_contains: ORCHESTRATOR, tool_results: 0 },
      reply: { tool_calls: [{ name: 'delegate', arguments: { agent: 'coding', task: `have a look ${tag}` } }] } },
    { name: `${tag} coding`, match: { task_contains: tag, system_contains: CODING }, reply: { text: `looked ${tag}` }, latency_ms: CODING_MS },
    { name: `${tag} report`, match: { task_contains: tag, system_contains: ORCHESTRATOR, tool_results: 1 }, reply: { text: `Report: looked ${tag}` } },
  ]);
  const run = await rest.createRun(baseURL, `delegate this ${tag}`, 'orchestrator');
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');

  const rows = page.getByTestId('wf-row');
  const described = await rows.evaluateAll((nodes) => nodes.map((n) => ({
    kind: n.dataset.kind, agent: n.dataset.agent, depth: Number(n.dataset.depth), ms: Number(n.dataset.ms), took: n.querySelector('.wf-took').textContent,
  })));
  expect(described.map(({ kind, agent, depth }) => [kind, agent, depth])).toEqual([
    ['model', 'orchestrator', 0],
    ['delegate', 'orchestrator', 0],
    ['model', 'coding', 1],
    ['model', 'orchestrator', 0],
  ]);
  const [, delegation, coding] = described;
  // The delegate bar covers the coding agent's model call, and says so.
  expect(coding.ms).toBeGreaterThanOrEqual(CODING_MS);
  expect(delegation.ms).toBeGreaterThanOrEqual(coding.ms);
  expect(delegation.took).not.toBe('0 ms');
  expect(delegation.took).toMatch(/^\d+(\.\d)? (ms|s)$/);
  // Nested rows are indented under it.
  const indent = (row) => row.locator('.wf-label').evaluate((n) => parseFloat(getComputedStyle(n).paddingLeft));
  expect(await indent(rows.nth(2))).toBeGreaterThan(await indent(rows.nth(1)));
  // The journal agrees: the delegate call's own TOOL_STARTED → TOOL_RESULT
  // is next to nothing, the bar is from TOOL_CALLED to TOOL_RESULT.
  const events = await rest.events(baseURL, run.id);
  const called = events.find((e) => e.type === 'TOOL_CALLED' && e.payload.tool === 'delegate');
  const result = events.find((e) => e.type === 'TOOL_RESULT' && e.payload.tool === 'delegate');
  expect(delegation.ms).toBe(Date.parse(result.at) - Date.parse(called.at));

  // A time axis with round, readable ticks from 0.
  const ticks = await page.getByTestId('wf-tick').allTextContents();
  expect(ticks.length).toBeGreaterThanOrEqual(2);
  expect(ticks[0]).toBe('0');
  for (const tick of ticks.slice(1)) expect(tick).toMatch(/^\d+(\.\d)? (ms|s|min)$/);

  // Each bar leads to its timeline entry: scrolled to and highlighted.
  await page.setViewportSize({ width: 1200, height: 500 });
  const delegateRow = rows.nth(1);
  await delegateRow.getByRole('button').click();
  const entry = page.locator(`[data-testid="timeline-event"][data-seq="${called.seq}"]`);
  await expect(entry).toHaveAttribute('data-highlighted', 'true');
  await expect(entry).toBeInViewport();
  await expect(entry).toHaveAttribute('data-type', 'TOOL_CALLED');
  // Another bar moves the highlight.
  const last = rows.nth(3);
  const lastSeq = await last.getAttribute('data-seq');
  await last.getByRole('button').click();
  const lastEntry = page.locator(`[data-testid="timeline-event"][data-seq="${lastSeq}"]`);
  await expect(lastEntry).toHaveAttribute('data-highlighted', 'true');
  await expect(lastEntry).toBeInViewport();
  await expect(entry).not.toHaveAttribute('data-highlighted', 'true');
});
