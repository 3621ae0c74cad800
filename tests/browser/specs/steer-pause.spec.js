// steer-pause: an operator's hands on a live run (contract section 11). A
// message typed in the run view reaches the model in its next request and
// shows in the timeline with who sent it; pause stops a run after the model
// call in flight (its answer is journaled, its tool does not start), the
// status says `paused` and only unpause is offered, and unpausing lets it go
// on to the end; RUN_PAUSED and RUN_UNPAUSED say who and why. A viewer is
// offered none of it.

import { test, expect, token, createRunFromForm, codingScript, rest, signInContext } from '../helpers/fixtures.js';

const entry = (page, type) => page.locator(`[data-testid="timeline-event"][data-type="${type}"]`);

test('a message sent from the page reaches the model in its next request', async ({ page, mock, baseURL }) => {
  const tag = token('steer');
  const said = `Use the staging database ${tag}, & not <production>`;
  await mock.setFixtures(codingScript(tag, [
    { text: 'A command first.', tool_calls: [{ name: 'shell', arguments: { command: `echo steer-${tag}` } }] },
    { text: 'Done; I read: {{last_user}}' },
  ]));
  await page.goto('/');
  const id = await createRunFromForm(page, `steer me ${tag}`, 'coding');
  // The run waits for an approval: the message is read after the decision.
  await expect(page.getByTestId('approval-card')).toBeVisible();
  const input = page.getByTestId('steer-input');
  await expect(input).toBeVisible();
  await input.fill(said);
  await page.getByTestId('steer-button').click();

  const message = entry(page, 'OPERATOR_MESSAGE');
  await expect(message).toHaveCount(1);
  await expect(message.getByTestId('message-by')).toHaveText('admin');
  await expect(message.getByTestId('operator-message-text')).toHaveText(said);
  await expect(input).toHaveValue('');
  await expect(page.getByTestId('operator-message')).toContainText('Sent');

  await page.getByTestId('approve-button').click();
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  // Over: no message box any more.
  await expect(page.getByTestId('steer-input')).toBeHidden();
  await expect(page.getByTestId('pause-button')).toBeHidden();
  await expect(page.getByTestId('run-result')).toContainText(said);

  // The model's first request had no message; its next one has it, from
  // the operator, as a user message.
  const requests = (await mock.requests()).filter((r) => JSON.stringify(r.body).includes(tag));
  expect(requests).toHaveLength(2);
  expect(JSON.stringify(requests[0].body)).not.toContain('staging database');
  const users = requests[1].body.messages.filter((m) => m.role === 'user').map((m) => JSON.stringify(m.content));
  expect(users.some((text) => text.includes(JSON.stringify(said).slice(1, -1)) && text.includes('admin'))).toBe(true);

  const events = await rest.events(baseURL, id);
  expect(events.find((e) => e.type === 'OPERATOR_MESSAGE').payload).toEqual({ text: said, by: 'admin' });
});

test('pause stops a run after the call in flight, unpause lets it finish', async ({ page, mock, baseURL }) => {
  const tag = token('pause');
  await mock.setFixtures(codingScript(tag, [
    // Long enough to pause while the model is still answering.
    { text: 'Listing.', tool_calls: [{ name: 'list_files', arguments: { path: '.' } }] },
    { text: `all done ${tag}` },
  ]).map((rule, index) => (index === 0 ? { ...rule, latency_ms: 3000 } : rule)));
  await page.goto('/');
  const id = await createRunFromForm(page, `pause me ${tag}`, 'coding');
  await expect(entry(page, 'LLM_CALLED')).toHaveCount(1);
  await expect(page.getByTestId('run-status')).toHaveText('running');
  const pause = page.getByTestId('pause-button');
  const unpause = page.getByTestId('unpause-button');
  await expect(pause).toBeVisible();
  await expect(unpause).toBeHidden();

  await page.getByTestId('pause-reason').fill(`checking something ${tag}`);
  await pause.click();
  await expect(page.getByTestId('run-status')).toHaveText('paused');
  await expect(page.getByTestId('run-status')).toHaveAttribute('data-status', 'paused');
  await expect(page.locator(`[data-testid="run-item"][data-run-id="${id}"]`)).toHaveAttribute('data-status', 'paused');
  await expect(unpause).toBeVisible();
  await expect(pause).toBeHidden();
  const paused = entry(page, 'RUN_PAUSED');
  await expect(paused).toContainText(`paused by admin: checking something ${tag}`);
  await expect(paused.getByTestId('paused-by')).toHaveText('admin');

  // The model's answer comes in and is journaled; then the run parks, and
  // the tool it asked for does not start.
  await expect(entry(page, 'AGENT_THOUGHT')).toHaveCount(1);
  await expect(page.getByTestId('instance')).toHaveAttribute('data-state', 'parked');
  await expect(page.getByTestId('run-status')).toHaveText('paused');
  const whilePaused = await rest.events(baseURL, id);
  expect(whilePaused.map((e) => e.type)).not.toContain('TOOL_STARTED');
  expect((await rest.getRun(baseURL, id)).status).toBe('paused');
  // The waterfall shows the pause as a wait.
  await expect(page.locator('[data-testid="wf-row"][data-kind="wait"]')).toContainText('paused');

  await unpause.click();
  await expect(entry(page, 'RUN_UNPAUSED')).toContainText('unpaused by admin');
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('run-result')).toContainText(`all done ${tag}`);
  const events = await rest.events(baseURL, id);
  const types = events.map((e) => e.type);
  expect(types.indexOf('TOOL_STARTED')).toBeGreaterThan(types.indexOf('RUN_UNPAUSED'));
  expect(events.find((e) => e.type === 'RUN_PAUSED').payload).toEqual({ reason: `checking something ${tag}`, by: 'admin' });
  expect(events.find((e) => e.type === 'RUN_UNPAUSED').payload).toEqual({ by: 'admin' });
});

test('a viewer is offered no message box, pause or fork', async ({ browser, mock, baseURL }) => {
  const tag = token('viewer');
  const name = token('vic');
  const secret = await rest.createToken(baseURL, name, ['viewer']);
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'slow' }, latency_ms: 60_000 }]);
  const run = await rest.createRun(baseURL, `watch only ${tag}`, 'coding');
  const context = await browser.newContext({ baseURL });
  await signInContext(context, baseURL, secret);
  const page = await context.newPage();
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('whoami')).toHaveText(name);
  await expect(page.getByTestId('run-status')).toHaveText('running');
  await expect(page.locator('[data-testid="timeline-event"]').first()).toBeVisible();
  await expect(page.getByTestId('steer-input')).toHaveCount(0);
  await expect(page.getByTestId('pause-button')).toHaveCount(0);
  await expect(page.getByTestId('fork-button')).toHaveCount(0);
  await context.close();
  await rest.cancel(baseURL, run.id);
});
