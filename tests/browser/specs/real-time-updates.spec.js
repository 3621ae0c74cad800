// real-time-updates: a page that is already open sees a run created
// elsewhere appear, its model text stream in while it is written, its
// events arrive and its status change, all without a reload.

import { test, expect, token, rest, timelineSeqs, expectConnection } from '../helpers/fixtures.js';

test('runs, streamed text, events and statuses arrive without a reload', async ({ page, mock, baseURL }) => {
  const tag = token('live');
  const thought = `Let me look around the workspace for ${tag}; ` + 'this sentence streams in small pieces. '.repeat(6);
  await mock.setFixtures([
    {
      name: 'slow streaming step',
      match: { task_contains: tag, tool_results: 0 },
      reply: { text: thought, tool_calls: [{ name: 'list_files', arguments: { path: '.' } }] },
      latency_ms: 1500,
      chunk_chars: 4,
      chunk_delay_ms: 60,
    },
    { name: 'final step', match: { task_contains: tag, tool_results: 1 }, reply: { text: `Finished ${tag}.` } },
  ]);
  await page.goto('/');
  await expectConnection(page, 'connected');
  await page.evaluate(() => {
    window.__sameDocument = true;
  });

  // Created by someone else: the open page learns of it by itself.
  const run = await rest.createRun(baseURL, `look around ${tag}`);
  const item = page.locator(`[data-testid="run-item"][data-run-id="${run.id}"]`);
  await expect(item).toBeVisible();
  await item.locator('a').click();

  // The model's text streams in before its AGENT_THOUGHT is journaled...
  const streaming = page.getByTestId('streaming-text');
  await expect(streaming).toContainText(`Let me look around the workspace for ${tag}`);
  await expect(page.locator('[data-testid="timeline-event"][data-type="AGENT_THOUGHT"]')).toHaveCount(0);
  // ...and is replaced by it once it is.
  const firstThought = page.locator('[data-testid="timeline-event"][data-type="AGENT_THOUGHT"]').first();
  await expect(firstThought).toContainText(thought.trim());
  await expect(streaming).toHaveCount(0);

  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(item).toHaveAttribute('data-status', 'completed');
  await expect(page.getByTestId('run-result')).toContainText(`Finished ${tag}.`);
  const events = await rest.events(baseURL, run.id);
  await expect.poll(() => timelineSeqs(page)).toEqual(events.map((e) => e.seq));
  expect(await page.evaluate(() => window.__sameDocument)).toBe(true);
});
