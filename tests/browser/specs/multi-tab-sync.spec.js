// multi-tab-sync: two tabs on one run agree: a decision taken in one makes
// the approval card disappear in the other, and both show the same status.

import { test, expect, token, createRunFromForm, codingScript } from '../helpers/fixtures.js';

test('a decision in one tab clears the card in the other', async ({ context, page, mock }) => {
  const tag = token('tabs');
  await mock.setFixtures(codingScript(tag, [
    { tool_calls: [{ name: 'shell', arguments: { command: `echo first ${tag}` } }] },
    { tool_calls: [{ name: 'shell', arguments: { command: `echo second ${tag}` } }] },
    { text: `Both done for ${tag}.` },
  ]));
  await page.goto('/');
  const id = await createRunFromForm(page, `two tabs ${tag}`, 'coding');
  const other = await context.newPage();
  await other.goto(`/#/runs/${id}`);

  for (const tab of [page, other]) {
    await expect(tab.getByTestId('approval-card')).toBeVisible();
    await expect(tab.getByTestId('approval-args')).toContainText(`echo first ${tag}`);
    await expect(tab.getByTestId('run-status')).toHaveText('waiting_approval');
  }

  // The first tab approves; the second sees the card go, then the next one.
  await page.getByTestId('approve-button').click();
  for (const tab of [other, page]) {
    await expect(tab.getByTestId('approval-args')).toContainText(`echo second ${tag}`);
  }

  // The second tab rejects the next call; the first sees it.
  await other.getByTestId('feedback-input').fill('not twice');
  await other.getByTestId('reject-button').click();
  for (const tab of [page, other]) {
    await expect(tab.getByTestId('approval-card')).toHaveCount(0);
    await expect(tab.getByTestId('run-status')).toHaveText('completed');
    await expect(tab.locator(`[data-testid="run-item"][data-run-id="${id}"]`)).toHaveAttribute('data-status', 'completed');
    await expect(tab.locator('[data-testid="timeline-event"][data-type="RUN_RESUMED"]')).toHaveCount(2);
  }
  await other.close();
});
