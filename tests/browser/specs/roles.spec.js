// roles: what a token's roles offer on the page (contract section 9), and who
// did what. Three people open one run waiting for approval, each in a
// browser context of their own: a viewer and an operator see the card with
// the call and who may decide it, and no decision controls; only the
// operator may start and cancel runs; the approver edits the command and
// approves. The request the page sent names the arguments shown by their
// hash, the journal holds the edit, the model is told a human changed the
// call, and every page shows who created the run and who decided.

import fs from 'node:fs';
import path from 'node:path';
import { test, expect, token, codingScript, rest, call } from '../helpers/fixtures.js';

const WHO_DECIDES = 'Waiting for an approver: a token with the approver or admin role decides this call.';

/** A context of its own for `secret`, signed in through a `#token=` link and
 * showing run `runId`. */
async function openAs(browser, baseURL, secret, name, runId) {
  const context = await browser.newContext({ baseURL });
  const page = await context.newPage();
  await page.goto(`/#token=${secret}`);
  await expect(page.getByTestId('whoami')).toHaveText(name);
  await page.goto(`/#/runs/${runId}`);
  return { context, page };
}

test('a viewer and an operator watch, an approver edits the command and approves', async ({ browser, mock, server, baseURL }) => {
  const tag = token('roles');
  const names = { viewer: token('vera'), operator: token('olga'), approver: token('arne') };
  const secrets = {
    viewer: await rest.createToken(baseURL, names.viewer, ['viewer']),
    operator: await rest.createToken(baseURL, names.operator, ['operator']),
    approver: await rest.createToken(baseURL, names.approver, ['approver']),
  };
  const asked = { command: `echo model ${tag} > edit-${tag}.txt`, timeout_secs: 30 };
  const edited = `echo human ${tag} > edit-${tag}.txt && echo edited by a human ${tag}`;
  await mock.setFixtures(codingScript(tag, [
    { text: 'A command.', tool_calls: [{ name: 'shell', arguments: asked }] },
    { text: `Done: {{last_tool_result}}` },
  ]));
  const run = await rest.createRun(baseURL, `roles ${tag}`, 'coding', secrets.operator);
  expect(run.created_by).toBe(names.operator);

  const opened = {};
  for (const role of ['viewer', 'operator', 'approver']) {
    opened[role] = await openAs(browser, baseURL, secrets[role], names[role], run.id);
  }
  const { viewer, operator, approver } = Object.fromEntries(Object.entries(opened).map(([role, o]) => [role, o.page]));

  for (const page of [viewer, operator, approver]) {
    const card = page.getByTestId('approval-card');
    await expect(card).toBeVisible();
    await expect(page.getByTestId('approval-tool')).toContainText('shell');
    await expect(page.getByTestId('approval-args')).toContainText(asked.command);
    await expect(page.getByTestId('run-created-by')).toContainText(`created by ${names.operator}`);
    await expect(page.locator(`[data-testid="run-item"][data-run-id="${run.id}"] [data-testid="run-item-created-by"]`)).toHaveText(`by ${names.operator}`);
    await expect(page.locator('[data-testid="timeline-event"][data-type="RUN_STARTED"] [data-testid="created-by"]')).toHaveText(names.operator);
  }

  // Only an approver decides: the others see who may, and no controls.
  for (const page of [viewer, operator]) {
    await expect(page.getByTestId('approval-who-decides')).toHaveText(WHO_DECIDES);
    for (const hook of ['approve-button', 'reject-button', 'feedback-input', 'edit-args-button']) {
      await expect(page.getByTestId(hook)).toHaveCount(0);
    }
  }
  // Only an operator starts and cancels runs.
  await expect(operator.getByTestId('run-form')).toBeVisible();
  await expect(operator.getByTestId('cancel-button')).toBeVisible();
  for (const page of [viewer, approver]) {
    await expect(page.getByTestId('run-form')).toHaveCount(0);
    await expect(page.getByTestId('cancel-button')).toHaveCount(0);
  }
  await expect(approver.getByTestId('approval-who-decides')).toHaveCount(0);
  for (const hook of ['approve-button', 'reject-button', 'feedback-input', 'edit-args-button']) {
    await expect(approver.getByTestId(hook)).toBeVisible();
  }

  // The card's hash of what it shows is the server's.
  const pending = (await rest.getRun(baseURL, run.id)).pending_approval;
  expect(pending.args).toEqual(asked);
  expect(pending.args_sha256).toMatch(/^[0-9a-f]{64}$/);
  await expect(approver.getByTestId('approval-card')).toHaveAttribute('data-args-sha256', pending.args_sha256);

  const decisions = [];
  approver.on('request', (request) => {
    if (request.method() === 'POST' && request.url().endsWith(`/api/runs/${run.id}/resume`)) decisions.push(request);
  });

  // Edit: the command becomes a textarea; the timeout stays as shown.
  await approver.getByTestId('edit-args-button').click();
  const input = approver.getByTestId('edit-args-input');
  await expect(input).toBeFocused();
  await expect(input).toHaveValue(asked.command);
  await expect(approver.getByTestId('approval-args')).toContainText('Timeout: 30 s');
  await expect(approver.getByRole('textbox', { name: 'Command to run instead' })).toBeVisible();

  // An empty command does not fit the tool: the server's 400 is on the card.
  await input.fill('');
  await expect(approver.getByTestId('approve-button')).toHaveText('Approve edited command');
  await approver.getByTestId('approve-button').click();
  await expect(approver.getByTestId('approval-message')).toContainText('do not fit the tool');
  await expect(approver.getByTestId('approve-button')).toBeEnabled();
  expect((await rest.getRun(baseURL, run.id)).status).toBe('waiting_approval');
  // The run was fetched again after the refusal; the editor kept its state.
  await expect(input).toBeVisible();
  await expect(input).toHaveValue('');

  await input.fill(edited);
  await approver.getByTestId('approve-button').click();
  for (const page of [viewer, operator, approver]) {
    await expect(page.getByTestId('run-status')).toHaveText('completed');
    await expect(page.getByTestId('approval-card')).toHaveCount(0);
    const resumed = page.locator('[data-testid="timeline-event"][data-type="RUN_RESUMED"]');
    await expect(resumed.getByTestId('decided-by')).toHaveText(names.approver);
    await expect(resumed).toContainText('approved with edited arguments by');
    await expect(resumed.getByTestId('edited-args')).toContainText(edited);
  }

  // Both requests named the arguments shown, by the server's own hash; the
  // second carried the full arguments with the edited command.
  expect(decisions).toHaveLength(2);
  for (const request of decisions) {
    expect(await request.headerValue('content-type')).toBe('application/json');
    expect(request.postDataJSON().args_sha256).toBe(pending.args_sha256);
  }
  expect(decisions[1].postDataJSON()).toEqual({
    approval_id: pending.approval_id,
    decision: 'approved',
    args_sha256: pending.args_sha256,
    args: { ...asked, command: edited },
  });

  // The journal holds the edit and who made it; the tool ran the edit, and
  // its result says a human changed the arguments.
  const events = await rest.events(baseURL, run.id);
  const resumed = events.filter((e) => e.type === 'RUN_RESUMED');
  expect(resumed).toHaveLength(1);
  expect(resumed[0].payload).toMatchObject({
    decision: 'approved',
    decided_by: names.approver,
    edited_args: { command: edited, timeout_secs: 30 },
  });
  expect(events[0].payload.created_by).toBe(names.operator);
  const result = events.find((e) => e.type === 'TOOL_RESULT');
  expect(result.payload.ok).toBe(true);
  expect(result.payload.output).toContain('a human approver changed the arguments');
  expect(result.payload.output).toContain(`edited by a human ${tag}`);
  expect(fs.readFileSync(path.join(server.workspace, `edit-${tag}.txt`), 'utf8')).toBe(`human ${tag}\n`);

  for (const { context } of Object.values(opened)) await context.close();
});

test('an approval nobody decides in time shows it was the system', async ({ page, mock, baseURL }) => {
  const tag = token('expiry');
  await mock.setFixtures(codingScript(tag, [
    { tool_calls: [{ name: 'shell', arguments: { command: `echo never ${tag}` } }] },
    { text: 'Understood: {{last_tool_result}}' },
  ]));
  const run = await call(baseURL, 'POST', '/api/runs', { task: `expire ${tag}`, agent: 'coding', approval_timeout_secs: 1 });
  await page.goto(`/#/runs/${run.id}`);

  await expect(page.getByTestId('run-status')).toHaveText('completed');
  const resumed = page.locator('[data-testid="timeline-event"][data-type="RUN_RESUMED"]');
  await expect(resumed).toContainText('expired');
  await expect(resumed.getByTestId('decided-by')).toHaveText('system');
  await expect(page.getByTestId('run-created-by')).toContainText('admin');
  const events = await rest.events(baseURL, run.id);
  expect(events.find((e) => e.type === 'RUN_RESUMED').payload).toMatchObject({ decision: 'expired', decided_by: 'system', edited_args: null });
});
