// inbox: every approval waiting across runs in one list, each leading to
// its run, with the count in the tab's title; both kept live by the
// WebSocket's run summaries, without a reload.

import { test, expect, token, codingScript, rest, call } from '../helpers/fixtures.js';

test('the inbox lists every waiting approval, live, and its count is in the title', async ({ page, mock, baseURL }) => {
  const tag = token('inbox');
  await mock.setFixtures(codingScript(tag, [
    { text: 'A command.', tool_calls: [{ name: 'shell', arguments: { command: `echo ${tag}` } }] },
    { text: `done ${tag}` },
  ]));
  await page.goto('/');
  const count = page.getByTestId('inbox-count');
  await expect(count).toHaveText(/^\d+$/);
  // Other tests' runs may wait on this shared server: count from here.
  const waitingBefore = (await call(baseURL, 'GET', '/api/runs?status=waiting_approval&limit=200')).runs.length;
  await expect(count).toHaveText(String(waitingBefore));
  const items = page.getByTestId('inbox-item');
  await expect(items).toHaveCount(waitingBefore);

  // Two runs created elsewhere come to wait: both appear, and the title says so.
  const first = await rest.createRun(baseURL, `first ${tag}`);
  const second = await rest.createRun(baseURL, `second ${tag}`);
  const firstItem = page.locator(`[data-testid="inbox-item"][data-run-id="${first.id}"]`);
  const secondItem = page.locator(`[data-testid="inbox-item"][data-run-id="${second.id}"]`);
  await expect(firstItem).toBeVisible();
  await expect(secondItem).toBeVisible();
  await expect(firstItem).toContainText('coding wants shell');
  await expect(firstItem).toContainText(`first ${tag}`);
  await expect(count).toHaveText(String(waitingBefore + 2));
  await expect(page).toHaveTitle(new RegExp(`^\\(${waitingBefore + 2}\\) `));

  // An entry leads to its run.
  await secondItem.getByRole('link').click();
  await expect(page).toHaveURL(new RegExp(`#/runs/${second.id}$`));
  await expect(page.getByTestId('approval-card')).toBeVisible();
  await expect(page).toHaveTitle(new RegExp(`^\\(${waitingBefore + 2}\\) waiting_approval · `));

  // Decided elsewhere: it leaves the inbox, and the count follows.
  const pending = (await rest.getRun(baseURL, first.id)).pending_approval;
  await rest.resume(baseURL, first.id, { approval_id: pending.approval_id, decision: 'approved' });
  await expect(firstItem).toHaveCount(0);
  await expect(count).toHaveText(String(waitingBefore + 1));
  await expect(page).toHaveTitle(new RegExp(`^\\(${waitingBefore + 1}\\) `));
  // Decided here: the same.
  await page.getByTestId('reject-button').click();
  await expect(secondItem).toHaveCount(0);
  await expect(count).toHaveText(String(waitingBefore));
  if (waitingBefore === 0) await expect(page).toHaveTitle(/^(?!\()/);

  // A reload lists what waits from the server.
  const third = await rest.createRun(baseURL, `third ${tag}`);
  await expect(count).toHaveText(String(waitingBefore + 1));
  await page.reload();
  await expect(count).toHaveText(String(waitingBefore + 1));
  await expect(page.getByTestId('inbox-item').filter({ hasText: `third ${tag}` })).toHaveCount(1);
  await rest.cancel(baseURL, third.id);
  await expect(count).toHaveText(String(waitingBefore));
});
