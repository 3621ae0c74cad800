// create-run: the form starts a run, selects it, and the page shows the run
// to its end: status, timeline, result and usage, with the task shown as
// text even when it looks like HTML.

import { test, expect, token, createRunFromForm, rest } from '../helpers/fixtures.js';

test('the form creates a run, selects it and shows it to completion', async ({ page, mock, baseURL }) => {
  const tag = token('create');
  const task = `Say hello <b>${tag}</b> <img src=x onerror="window.__pwned=1">`;
  await mock.setFixtures([
    {
      name: 'answer at once',
      match: { task_contains: tag },
      reply: { text: `Hello from the coding agent for ${tag}.`, usage: { input_tokens: 42, output_tokens: 7 } },
    },
  ]);
  await page.goto('/');
  await expect(page.getByLabel('Task')).toBeVisible();
  await expect(page.getByLabel('Agent', { exact: true })).toHaveValue('orchestrator');

  const id = await createRunFromForm(page, task, 'coding');

  const item = page.locator(`[data-testid="run-item"][data-run-id="${id}"]`);
  await expect(item).toBeVisible();
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('run-status')).toHaveAttribute('data-status', 'completed');
  await expect(item).toHaveAttribute('data-status', 'completed');
  await expect(page.getByTestId('run-result')).toContainText(`Hello from the coding agent for ${tag}.`);
  await expect(page.getByTestId('usage')).toContainText('coding');
  await expect(page.getByTestId('usage')).toContainText('42');
  await expect(page.getByTestId('cancel-button')).toBeHidden();
  await expect(page.getByTestId('task-input')).toHaveValue('');

  const types = await page.getByTestId('timeline-event').evaluateAll((nodes) => nodes.map((n) => n.dataset.type));
  expect(types).toEqual(['RUN_STARTED', 'LLM_CALLED', 'AGENT_THOUGHT', 'RUN_COMPLETED']);

  // The task is text, never markup.
  await expect(page.getByTestId('run-task')).toHaveText(task);
  await expect(item).toContainText('<b>');
  expect(await page.locator('#run-view b, #run-view img, #run-list b, #run-list img').count()).toBe(0);
  expect(await page.evaluate(() => window.__pwned)).toBeUndefined();

  const run = await rest.getRun(baseURL, id);
  expect(run.task).toBe(task);
  expect(run.agent).toBe('coding');
  expect(run.status).toBe('completed');
});

test('a reload keeps the selected run, and an unknown run says so', async ({ page, mock, baseURL }) => {
  const tag = token('reload');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
  const run = await rest.createRun(baseURL, `reload ${tag}`);
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await page.reload();
  await expect(page.getByTestId('run-task')).toHaveText(`reload ${tag}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.locator(`[data-testid="run-item"][data-run-id="${run.id}"] a`)).toHaveAttribute('aria-current', 'true');

  await page.goto('/#/runs/00000000-0000-4000-8000-000000000000');
  await expect(page.getByRole('alert')).toContainText('no run with this id');
});

test('the keyboard alone starts a run, and the status filter narrows the list', async ({ page, mock, baseURL }) => {
  const tag = token('keys');
  await mock.setFixtures([
    { match: { task_contains: `${tag} wait`, tool_results: 0 }, reply: { tool_calls: [{ name: 'shell', arguments: { command: 'true' } }] } },
    { match: { task_contains: tag }, reply: { text: 'done' } },
  ]);
  const waiting = await rest.createRun(baseURL, `${tag} wait`);
  await page.goto('/');
  await page.getByTestId('task-input').focus();
  await page.keyboard.type(`${tag} quick`);
  await page.keyboard.press('Tab');
  await page.keyboard.press('ArrowDown'); // orchestrator -> coding
  await page.getByTestId('task-input').press('Control+Enter');
  await expect(page).toHaveURL(/#\/runs\//);
  const quickId = new URL(page.url()).hash.replace('#/runs/', '');
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  const waitingItem = page.locator(`[data-testid="run-item"][data-run-id="${waiting.id}"]`);
  const quickItem = page.locator(`[data-testid="run-item"][data-run-id="${quickId}"]`);
  await expect(waitingItem).toHaveAttribute('data-status', 'waiting_approval');

  await page.getByLabel('Status').selectOption('waiting_approval');
  await expect(waitingItem).toBeVisible();
  await expect(quickItem).toHaveCount(0);
  await page.getByLabel('Status').selectOption('completed');
  await expect(quickItem).toBeVisible();
  await expect(waitingItem).toHaveCount(0);
  await page.getByLabel('Status').selectOption('');

  // Selecting from the list with the keyboard.
  await waitingItem.locator('a').focus();
  await page.keyboard.press('Enter');
  await expect(page).toHaveURL(new RegExp(`#/runs/${waiting.id}$`));
  await expect(page.getByTestId('approval-card')).toBeVisible();
  await rest.resume(baseURL, waiting.id, { approval_id: (await rest.getRun(baseURL, waiting.id)).pending_approval.approval_id, decision: 'rejected' });
  await expect(page.getByTestId('approval-card')).toHaveCount(0);
});
