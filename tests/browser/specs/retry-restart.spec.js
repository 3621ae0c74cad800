// retry-restart: a model call sent again says so ("retry N", and why, as
// far as the journal tells), and a restart leaves a mark in the timeline:
// after a model error, and after kill -9 of the server, once while a model
// call is in flight and once while an approved command runs (the command is
// interrupted and its approval asked again).

import fs from 'node:fs';
import path from 'node:path';
import { test, expect, token, codingScript, rest, expectConnection } from '../helpers/fixtures.js';

const event = (page, type) => page.locator(`[data-testid="timeline-event"][data-type="${type}"]`);

test('a model call retried after an error says which retry it is, and why', async ({ page, mock, baseURL }) => {
  const tag = token('retry');
  await mock.setFixtures([
    { name: `${tag} flaky`, match: { task_contains: tag }, reply: { text: `answered ${tag}` }, fail: { status: 503, times: 1, message: 'overloaded' } },
  ]);
  const run = await rest.createRun(baseURL, `retry ${tag}`);
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  const calls = event(page, 'LLM_CALLED');
  await expect(calls).toHaveCount(2);
  await expect(calls.nth(0).getByTestId('retry')).toHaveCount(0);
  await expect(calls.nth(1).getByTestId('retry')).toHaveText('retry 1');
  await expect(calls.nth(1).getByTestId('retry')).toHaveAttribute('title', 'attempt 2');
  await expect(calls.nth(1).getByTestId('retry-reason')).toHaveText('attempt 1 got no answer');
  // The journal does not say whether the attempt failed or the server
  // went away: the mark says both, and that it is not certain.
  const mark = calls.nth(1).getByTestId('restart-mark');
  await expect(mark).toHaveAttribute('data-certain', 'false');
  await expect(mark).toContainText('the server restarted, or another instance took the run over, or the model request failed');
  // The waterfall shows the two attempts.
  await expect(page.locator('[data-testid="wf-row"][data-kind="model"]')).toHaveCount(2);
});

test.describe('after kill -9 of the server', () => {
  test('a model call in flight and a running command each leave a restart mark', async ({ page, mock, ownServer: server }) => {
    test.setTimeout(180_000);
    const tag = token('restart');
    const release = `go-${tag}`;
    const script = codingScript(tag, [
      { text: 'A command that waits.', tool_calls: [{ name: 'shell', arguments: { command: `until [ -e ${release} ]; do sleep 0.1; done; echo released ${tag}` } }] },
      { text: `Done ${tag}.` },
    ]);
    // The first model call never answers in time: the server is killed
    // under it.
    await mock.setFixtures([{ name: `${tag} held`, match: { task_contains: tag }, reply: { text: 'too late' }, latency_ms: 120_000 }]);
    const run = await rest.createRun(server.url, `restart ${tag}`);
    await page.goto(`${server.url}/#/runs/${run.id}`);
    await expect(event(page, 'LLM_CALLED')).toHaveCount(1);
    await expectConnection(page, 'connected');

    await server.kill9();
    await mock.setFixtures(script);
    await server.restart();
    // Sent again after the restart, and marked.
    await expect(event(page, 'LLM_CALLED')).toHaveCount(2, { timeout: 30_000 });
    const retried = event(page, 'LLM_CALLED').nth(1);
    await expect(retried.getByTestId('retry')).toHaveText('retry 1');
    await expect(retried.getByTestId('restart-mark')).toBeVisible();

    // The command, approved, runs until the server is killed again.
    await expect(page.getByTestId('approval-card')).toBeVisible();
    await page.getByTestId('approve-button').click();
    await expect(event(page, 'TOOL_STARTED')).toHaveCount(1);
    await server.kill9();
    await server.restart();
    await expect(event(page, 'TOOL_INTERRUPTED')).toHaveCount(1, { timeout: 30_000 });
    const interrupted = event(page, 'TOOL_INTERRUPTED');
    await expect(interrupted.getByTestId('restart-mark')).toHaveAttribute('data-certain', 'true');
    await expect(interrupted.getByTestId('restart-mark')).toHaveText('⟲ Restart: the server restarted, or another instance took the run over.');
    // Its approval is asked again; the mark is not repeated there.
    const reasked = event(page, 'RUN_SUSPENDED').nth(1);
    await expect(reasked).toContainText('again, after a restart');
    await expect(reasked.getByTestId('restart-mark')).toHaveCount(0);
    await expect(page.getByTestId('restart-mark')).toHaveCount(2);

    fs.writeFileSync(path.join(server.workspace, release), '');
    await expect(page.getByTestId('approval-card')).toBeVisible();
    await page.getByTestId('approve-button').click();
    await expect(page.getByTestId('run-status')).toHaveText('completed', { timeout: 30_000 });
    await expect(page.getByTestId('restart-mark')).toHaveCount(2);
  });
});
