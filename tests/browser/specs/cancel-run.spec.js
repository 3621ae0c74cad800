// cancel-run: the cancel button asks first, in a dialog of the page, for a
// confirmation and a reason; keeping the run changes nothing, confirming
// stops a run whose model call is in flight with that reason in the
// request and the journal; the page shows it cancelled, by whom and why,
// and offers no cancel any more.

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
  const requests = [];
  page.on('request', (request) => {
    if (request.url().endsWith(`/api/runs/${id}/cancel`)) requests.push(request.postDataJSON());
  });

  // Asked first; kept running, nothing is sent.
  await cancel.click();
  const dialog = page.getByTestId('cancel-dialog');
  await expect(dialog).toBeVisible();
  await expect(page.getByRole('dialog')).toContainText('Cancel this run?');
  await expect(page.getByTestId('cancel-reason')).toBeFocused();
  await page.getByTestId('cancel-keep').click();
  await expect(dialog).toBeHidden();
  await page.keyboard.press('Escape');
  await cancel.click();
  await expect(dialog).toBeVisible();
  await page.keyboard.press('Escape');
  await expect(dialog).toBeHidden();
  await expect(page.getByTestId('run-status')).toHaveText('running');
  expect(requests).toEqual([]);

  // Confirmed with a reason.
  await cancel.click();
  await page.getByTestId('cancel-reason').fill(`wrong task ${tag}`);
  await page.getByTestId('cancel-confirm').click();
  await expect(dialog).toBeHidden();

  await expect(page.getByTestId('run-status')).toHaveText('cancelled');
  await expect(page.getByTestId('run-status')).toHaveAttribute('data-status', 'cancelled');
  await expect(page.locator(`[data-testid="run-item"][data-run-id="${id}"]`)).toHaveAttribute('data-status', 'cancelled');
  await expect(page.locator('[data-testid="timeline-event"][data-type="RUN_CANCELLED"]')).toHaveCount(1);
  await expect(cancel).toBeHidden();
  await expect(page.getByTestId('run-cancelled')).toBeVisible();
  await expect(page.getByTestId('cancelled-by')).toHaveText('admin');
  await expect(page.getByTestId('run-cancelled')).toHaveText(`CancelledBy admin: wrong task ${tag}`);
  expect(requests).toEqual([{ reason: `wrong task ${tag}` }]);

  const run = await rest.getRun(baseURL, id);
  expect(run.status).toBe('cancelled');
  const events = await rest.events(baseURL, id);
  expect(events.map((e) => e.type)).not.toContain('AGENT_THOUGHT');
  expect(events.find((e) => e.type === 'RUN_CANCELLED').payload).toMatchObject({ reason: `wrong task ${tag}`, by: 'admin' });
});
