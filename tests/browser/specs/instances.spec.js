// instances: which instance drives a run (contract section 10). The run
// view's `instance` names the run's owner while one drives it, and says
// "parked" while it waits for a human and "finished" once it is over, live;
// the instances panel lists the live instances with the runs each drives;
// and with two servers on one database, a page on the second shows both
// instances and a run created through the first, driven by the first.
//
// A run is held in a known state without fixed sleeps: a model call the
// mock answers only after two minutes (a cancellation ends it), or a shell
// command, once approved, that loops until the test creates a file in the
// workspace.

import fs from 'node:fs';
import path from 'node:path';
import { test, expect, token, createRunFromForm, codingScript, rest, expectConnection } from '../helpers/fixtures.js';

const PARKED = 'parked — no instance drives it';
const FINISHED = '— (finished, no instance drives it)';

/** A shell command that runs until `file` exists in the workspace. */
function holdUntil(file, tag) {
  return `until [ -e ${file} ]; do sleep 0.1; done; echo released ${tag}`;
}

/** A model rule matching `tag` that answers only after two minutes. */
function heldModelCall(tag) {
  return { name: `${tag} held model call`, match: { task_contains: tag }, reply: { text: 'too late' }, latency_ms: 120_000 };
}

test('the run view names the instance driving the run, and says when it is parked or finished', async ({ page, mock, server, baseURL }) => {
  const tag = token('driver');
  const release = `go-${tag}`;
  await mock.setFixtures(codingScript(tag, [
    { text: 'A command that waits.', tool_calls: [{ name: 'shell', arguments: { command: holdUntil(release, tag) } }] },
    { text: 'Now a note.', tool_calls: [{ name: 'write_file', arguments: { path: `note-${tag}.txt`, content: 'driven\n' } }] },
    { text: `Done ${tag}.` },
  ]));
  await page.goto('/');
  const id = await createRunFromForm(page, `hold on ${tag}`, 'coding');
  const instance = page.getByTestId('instance');
  const driverItem = page.locator(`[data-testid="instance-item"][data-instance-id="${server.instanceId}"]`);

  // Waiting for a human: parked, no instance drives it.
  await expect(page.getByTestId('approval-tool')).toContainText('shell');
  await expect(instance).toHaveAttribute('data-state', 'parked');
  await expect(instance).toHaveText(PARKED);
  expect((await rest.getRun(baseURL, id)).owner).toBeNull();
  await expect(driverItem).toBeVisible();
  await expect(driverItem).not.toHaveAttribute('data-drives-selected', 'true');

  // Approved, the command runs until the test lets it end: the server's
  // instance drives the run, and its entry in the panel is marked.
  await page.getByTestId('approve-button').click();
  await expect(page.locator('[data-testid="timeline-event"][data-type="TOOL_STARTED"]')).toHaveCount(1);
  await expect(page.getByTestId('run-status')).toHaveText('running');
  await expect(instance).toHaveAttribute('data-state', 'driven');
  await expect(instance).toHaveText(server.instanceId);
  await expect(instance).toHaveAttribute('data-owner', server.instanceId);
  expect((await rest.getRun(baseURL, id)).owner).toBe(server.instanceId);
  await expect(driverItem).toHaveAttribute('data-drives-selected', 'true');

  // The command ends and the next call waits for a human: parked again,
  // without a reload.
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  fs.writeFileSync(path.join(server.workspace, release), '');
  await expect(page.getByTestId('approval-tool')).toContainText('write_file');
  await expect(page.getByTestId('timeline-event').filter({ hasText: 'shell succeeded' })).toHaveCount(1);
  await expect(instance).toHaveAttribute('data-state', 'parked');
  await expect(instance).toHaveText(PARKED);
  await expect(driverItem).not.toHaveAttribute('data-drives-selected', 'true');
  expect((await rest.getRun(baseURL, id)).owner).toBeNull();

  // Over: finished, no instance drives it.
  await page.getByTestId('approve-button').click();
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(instance).toHaveAttribute('data-state', 'finished');
  await expect(instance).toHaveText(FINISHED);
  expect((await rest.getRun(baseURL, id)).owner).toBeNull();
  expect(await page.evaluate(() => window.__sameDocument)).toBe(true);
});

test('the instances panel lists the server with the runs it drives, refreshed by itself', async ({ page, mock, ownServer: server }) => {
  const tag = token('count');
  await mock.setFixtures([heldModelCall(tag)]);
  await page.goto(`${server.url}/`);
  await expectConnection(page, 'connected');
  await page.evaluate(() => {
    window.__sameDocument = true;
  });

  const items = page.getByTestId('instances').getByTestId('instance-item');
  await expect(items).toHaveCount(1);
  const item = items.first();
  await expect(item).toHaveAttribute('data-instance-id', server.instanceId);
  await expect(item.locator('.instance-id')).toHaveText(server.instanceId);
  await expect(item).toHaveAttribute('data-runs', '0');
  await expect(item.getByTestId('instance-runs')).toHaveText('0 runs driven');
  await expect(item.getByTestId('instance-heartbeat')).toHaveText(/^heartbeat (just now|\d+ s ago)$/);
  await expect(page.locator('#instances-count')).toHaveText('(1)');

  // Two runs whose model calls are in flight: the instance drives both.
  // Only the panel's own refreshes can tell the page (no reload, and no
  // WebSocket frame carries instances).
  const first = await rest.createRun(server.url, `hold one ${tag}`);
  const second = await rest.createRun(server.url, `hold two ${tag}`);
  await expect(item).toHaveAttribute('data-runs', '2');
  await expect(item.getByTestId('instance-runs')).toHaveText('2 runs driven');
  for (const run of [first, second]) expect((await rest.getRun(server.url, run.id)).owner).toBe(server.instanceId);

  // Cancelled runs are over and driven by no one.
  await rest.cancel(server.url, first.id);
  await expect(item).toHaveAttribute('data-runs', '1');
  await expect(item.getByTestId('instance-runs')).toHaveText('1 run driven');
  await rest.cancel(server.url, second.id);
  await expect(item).toHaveAttribute('data-runs', '0');
  await expect(item.getByTestId('instance-runs')).toHaveText('0 runs driven');
  await expect(item.getByTestId('instance-heartbeat')).toHaveText(/^heartbeat (just now|\d+ s ago)$/);
  expect(await page.evaluate(() => window.__sameDocument)).toBe(true);
});

test('two servers on one database: a page on the second shows both instances and a run the first drives, live', async ({ page, mock, ownServer: first, peerServer: second }) => {
  expect(second.instanceId).not.toBe(first.instanceId);
  const tag = token('peer');
  const release = `go-${tag}`;
  await mock.setFixtures([
    heldModelCall(`${tag}-held`),
    ...codingScript(`${tag}-shell`, [
      { text: 'A command that waits.', tool_calls: [{ name: 'shell', arguments: { command: holdUntil(release, tag) } }] },
      { text: `Released ${tag}.` },
    ]),
  ]);
  await page.goto(`${second.url}/`);
  await expectConnection(page, 'connected');
  await page.evaluate(() => {
    window.__sameDocument = true;
  });

  // Both instances, oldest first.
  const items = page.getByTestId('instance-item');
  await expect(items).toHaveCount(2);
  expect(await items.evaluateAll((nodes) => nodes.map((n) => n.dataset.instanceId))).toEqual([first.instanceId, second.instanceId]);
  const entryOf = (id) => page.locator(`[data-testid="instance-item"][data-instance-id="${id}"]`);

  // A run created through the first instance, whose model call is in
  // flight: it appears on the second's page by itself, driven by the first.
  const held = await rest.createRun(first.url, `held by the first ${tag}-held`);
  expect(held.owner).toBe(first.instanceId);
  const heldItem = page.locator(`[data-testid="run-item"][data-run-id="${held.id}"]`);
  await expect(heldItem).toBeVisible();
  await heldItem.locator('a').click();
  await expect(page.getByTestId('run-status')).toHaveText('running');
  const instance = page.getByTestId('instance');
  await expect(instance).toHaveAttribute('data-state', 'driven');
  await expect(instance).toHaveText(first.instanceId);
  await expect(entryOf(first.instanceId)).toHaveAttribute('data-runs', '1');
  await expect(entryOf(first.instanceId)).toHaveAttribute('data-drives-selected', 'true');
  await expect(entryOf(second.instanceId)).toHaveAttribute('data-runs', '0');

  // Cancelled from the second's page: the first, its owner, journals it.
  await page.getByTestId('cancel-button').click();
  await page.getByTestId('cancel-confirm').click();
  await expect(page.getByTestId('run-status')).toHaveText('cancelled');
  await expect(instance).toHaveAttribute('data-state', 'finished');
  await expect(instance).toHaveText(FINISHED);
  await expect(entryOf(first.instanceId)).toHaveAttribute('data-runs', '0');

  // A run created through the first that parks for an approval, approved on
  // the second's page: whichever instance takes it up drives it while its
  // command runs, and the page names that one.
  const parked = await rest.createRun(first.url, `parks on the first ${tag}-shell`);
  const parkedItem = page.locator(`[data-testid="run-item"][data-run-id="${parked.id}"]`);
  await expect(parkedItem).toHaveAttribute('data-status', 'waiting_approval');
  await parkedItem.locator('a').click();
  await expect(page.getByTestId('approval-tool')).toContainText('shell');
  await expect(instance).toHaveAttribute('data-state', 'parked');
  await expect(instance).toHaveText(PARKED);
  await page.getByTestId('approve-button').click();
  await expect(page.locator('[data-testid="timeline-event"][data-type="TOOL_STARTED"]')).toHaveCount(1);
  await expect(instance).toHaveAttribute('data-state', 'driven');
  const owner = (await rest.getRun(second.url, parked.id)).owner;
  expect([first.instanceId, second.instanceId]).toContain(owner);
  await expect(instance).toHaveText(owner);
  await expect(entryOf(owner)).toHaveAttribute('data-runs', '1');
  await expect(entryOf(owner)).toHaveAttribute('data-drives-selected', 'true');

  fs.writeFileSync(path.join(first.workspace, release), '');
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('run-result')).toContainText(`Released ${tag}.`);
  await expect(instance).toHaveText(FINISHED);
  await expect(entryOf(owner)).toHaveAttribute('data-runs', '0');
  await expect(items).toHaveCount(2);
  expect(await page.evaluate(() => window.__sameDocument)).toBe(true);
});
