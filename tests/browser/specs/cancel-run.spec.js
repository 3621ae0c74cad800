// cancel-run: the cancel button stops a run whose model call is in flight;
// the page shows it cancelled and offers no cancel any more.

import { test, expect, token, createRunFromForm, rest } from '../helpers/fixtures.js';

test('cancelling a running run from the page', async ({ page, mock, baseURL }) => {
  const tag = token('cancel');
  await mock.setFixtures([
    // The model takes a minute to answer: the run stays `running` until the
    // cancellation aborts the request.
    { name: 'slow model', match: { task_contains: tag }, reply: { text: 'too late' }, latency_ms: 60_000 },
  ]);
  await page.goto('/');
  const id = await createRunFromForm(page, `take your time ${tag}`, 'coding');

  await expect(page.getByTestId('run-status')).toHaveText('running');
  await expect(page.locator('[data-testid="timeline-event"][data-type="LLM_CALLED"]')).toHaveCount(1);
  const cancel = page.getByTestId('cancel-button');
  await expect(cancel).toBeVisible();
  await expect(cancel).toBeEnabled();
  await cancel.click();

  await expect(page.getByTestId('run-status')).toHaveText('cancelled');
  await expect(page.getByTestId('run-status')).toHaveAttribute('data-status', 'cancelled');
  await expect(page.locator(`[data-testid="run-item"][data-run-id="${id}"]`)).toHaveAttribute('data-status', 'cancelled');
  await expect(page.locator('[data-testid="timeline-event"][data-type="RUN_CANCELLED"]')).toHaveCount(1);
  await expect(cancel).toBeHidden();
  await expect(page.getByTestId('run-cancelled')).toBeVisible();
  await expect(page.getByTestId('cancelled-by')).toHaveText('admin');

  const run = await rest.getRun(baseURL, id);
  expect(run.status).toBe('cancelled');
  const events = await rest.events(baseURL, id);
  expect(events.map((e) => e.type)).not.toContain('AGENT_THOUGHT');
});
