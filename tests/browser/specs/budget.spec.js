// budget: a run with a budget (contract section 11). The form sends the
// limits; the budget bars show tokens and dollars used of them; at the
// limit the run waits on a budget card, which says what was used of what,
// and an approver raises the limit from it (the run goes on and completes)
// or stops the run (it fails with `budget_exceeded`).

import { test, expect, token, createRunFromForm, codingScript, rest } from '../helpers/fixtures.js';

const entry = (page, type) => page.locator(`[data-testid="timeline-event"][data-type="${type}"]`);

/** Two steps of 110 and 112 tokens (a tool, then the answer). */
function script(tag) {
  return codingScript(tag, [
    { text: 'Looking around.', tool_calls: [{ name: 'list_files', arguments: { path: '.' } }] },
    { text: `finished within budget ${tag}` },
  ]);
}

test('a run over its token budget waits; the card raises it and the run completes', async ({ page, mock, baseURL }) => {
  const tag = token('budget');
  await mock.setFixtures(script(tag));
  await page.goto('/');
  const created = page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/api/runs');
  await page.getByTestId('budget-tokens-input').fill('50');
  await page.getByTestId('budget-usd-input').fill('2');
  const id = await createRunFromForm(page, `spend little ${tag}`, 'coding');
  expect((await created).postDataJSON()).toMatchObject({ task: `spend little ${tag}`, budget: { max_tokens: 50, max_cost_usd: 2 } });
  await expect(page.getByTestId('budget-tokens-input')).toHaveValue('');

  // The first answer used 110 tokens: the next call waits for a human.
  const card = page.getByTestId('approval-card');
  await expect(card).toBeVisible();
  await expect(card).toHaveAttribute('data-kind', 'budget');
  await expect(card).toContainText('reached its budget');
  await expect(page.getByTestId('approval-args')).toContainText('110 of 50 tokens');
  await expect(page.getByTestId('approval-args')).toContainText('of $2.00');
  await expect(entry(page, 'BUDGET_EXCEEDED')).toContainText('over budget: 110 of 50 tokens');
  await expect(page.getByTestId('run-status')).toHaveText('waiting_approval');
  await expect(page.getByTestId('inbox-item').filter({ hasText: `spend little ${tag}` })).toContainText('wants a budget raise');

  // The bars: tokens over their limit, dollars far below theirs.
  const budget = page.getByTestId('budget');
  await expect(budget).toBeVisible();
  const tokens = page.getByTestId('budget-tokens');
  await expect(tokens).toHaveAttribute('data-used', '110');
  await expect(tokens).toHaveAttribute('data-max', '50');
  await expect(tokens).toHaveAttribute('data-over', 'true');
  await expect(tokens).toContainText('110 of 50 (reached)');
  const dollars = page.getByTestId('budget-cost');
  await expect(dollars).toHaveAttribute('data-max', '2');
  await expect(dollars).toHaveAttribute('data-over', 'false');
  await expect(dollars).toContainText(/\$0\.0\d* of \$2\.00 \(0%\)/);

  // Nothing to add is refused on the card, before any request.
  const resumes = [];
  page.on('request', (request) => {
    if (request.url().endsWith(`/api/runs/${id}/resume`)) resumes.push(request.postDataJSON());
  });
  await page.getByTestId('approve-button').click();
  await expect(page.getByTestId('approval-message')).toContainText('Say how many tokens or dollars to add');
  expect(resumes).toEqual([]);
  // Too little is refused by the server, and said on the card.
  await page.getByTestId('budget-add-tokens').fill('10');
  await page.getByTestId('approve-button').click();
  await expect(page.getByTestId('approval-message')).toContainText('The server refused this');
  await expect(card).toBeVisible();

  await page.getByTestId('budget-add-tokens').fill('1000');
  await page.getByTestId('approve-button').click();
  await expect(card).toHaveCount(0);
  await expect(entry(page, 'BUDGET_RAISED')).toContainText('budget raised by admin to 1,050 tokens and $2.00');
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('run-result')).toContainText(`finished within budget ${tag}`);
  // The bars follow: 222 tokens of 1,050.
  await expect(tokens).toHaveAttribute('data-used', '222');
  await expect(tokens).toHaveAttribute('data-max', '1050');
  await expect(tokens).toContainText('222 of 1,050 (21%)');
  await expect(tokens).toHaveAttribute('data-over', 'false');

  const pending = resumes.at(-1);
  expect(pending).toMatchObject({ decision: 'approved', add_tokens: 1000 });
  expect(pending.args_sha256).toMatch(/^[0-9a-f]{64}$/);
  const events = await rest.events(baseURL, id);
  const exceeded = events.find((e) => e.type === 'BUDGET_EXCEEDED');
  expect(exceeded.payload).toMatchObject({ used_tokens: 110, max_tokens: 50, max_cost_usd: 2 });
  expect(events.find((e) => e.type === 'BUDGET_RAISED').payload).toMatchObject({ approval_id: exceeded.payload.approval_id, max_tokens: 1050, by: 'admin' });
  const run = await rest.getRun(baseURL, id);
  expect(run.budget).toMatchObject({ max_tokens: 1050, used_tokens: 222 });
});

test('stopping a run at its budget fails it with budget_exceeded', async ({ page, mock, baseURL }) => {
  const tag = token('budgetstop');
  await mock.setFixtures(script(tag));
  await page.goto('/');
  await page.getByTestId('budget-tokens-input').fill('100');
  const id = await createRunFromForm(page, `stop at the limit ${tag}`, 'coding');
  const card = page.getByTestId('approval-card');
  await expect(card).toHaveAttribute('data-kind', 'budget');
  await expect(page.getByTestId('approval-args')).toContainText('110 of 100 tokens');
  await expect(page.getByTestId('approval-args')).toContainText('no USD limit');
  await expect(page.getByTestId('budget-cost')).toContainText('no limit');
  await page.getByTestId('reject-button').click();
  await expect(card).toHaveCount(0);
  await expect(page.getByTestId('run-status')).toHaveText('failed');
  await expect(page.getByTestId('run-error')).toContainText('budget_exceeded');
  const run = await rest.getRun(baseURL, id);
  expect(run.error.code).toBe('budget_exceeded');
  // One model call only: the one the budget stopped was never sent.
  expect((await mock.requests()).filter((r) => JSON.stringify(r.body).includes(tag))).toHaveLength(1);
});

test('a run without a budget shows no budget bars', async ({ page, mock, baseURL }) => {
  const tag = token('nobudget');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
  const run = await rest.createRun(baseURL, `no budget ${tag}`, 'coding');
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('budget')).toBeHidden();
});
