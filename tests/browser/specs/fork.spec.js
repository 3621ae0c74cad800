// fork: a run forked from one of its timeline entries (contract section
// 11). The entry's fork button asks for a message in a dialog of the page;
// the new run is selected, says where it came from (a link to the source at
// that entry), its journal starts with copies of the source's entries, then
// RUN_FORKED and the message, which reaches the model; the source lists its
// fork. Terminal entries offer no fork, and keeping the source sends nothing.

import { test, expect, token, createRunFromForm, codingScript, rest } from '../helpers/fixtures.js';

const entries = (page) => page.locator('[data-testid="timeline-event"]');
const entry = (page, type) => page.locator(`[data-testid="timeline-event"][data-type="${type}"]`);

test('forking a run from a timeline entry, with a message', async ({ page, mock, baseURL }) => {
  const tag = token('fork');
  const message = `Take the other road ${tag}`;
  await mock.setFixtures([
    // The fork's model call: the conversation ends with the message.
    { name: 'the fork', match: { task_contains: tag, last_user_contains: 'other road' }, reply: { text: `forked answer ${tag}` } },
    ...codingScript(tag, [
      { text: 'Looking around.', tool_calls: [{ name: 'list_files', arguments: { path: '.' } }] },
      { text: `source answer ${tag}` },
    ]),
  ]);
  await page.goto('/');
  const sourceId = await createRunFromForm(page, `fork me ${tag}`, 'coding');
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('lineage')).toBeHidden();

  // The entry that ends the run offers no fork; the others do.
  await expect(entry(page, 'RUN_COMPLETED').getByTestId('fork-button')).toHaveCount(0);
  const count = await entries(page).count();
  await expect(page.getByTestId('fork-button')).toHaveCount(count - 1);

  // Fork at the tool's result: asked first; keeping the run sends nothing.
  const forks = [];
  page.on('request', (request) => {
    if (request.url().endsWith(`/api/runs/${sourceId}/fork`)) forks.push(request.postDataJSON());
  });
  const at = entry(page, 'TOOL_RESULT');
  const atSeq = Number(await at.getAttribute('data-seq'));
  await at.getByTestId('fork-button').click();
  const dialog = page.getByTestId('fork-dialog');
  await expect(dialog).toBeVisible();
  await expect(dialog).toContainText(`Fork this run at #${atSeq}`);
  await expect(page.getByTestId('fork-message')).toBeFocused();
  await page.keyboard.press('Escape');
  await expect(dialog).toBeHidden();
  expect(forks).toEqual([]);

  await at.getByTestId('fork-button').click();
  await page.getByTestId('fork-message').fill(message);
  await page.getByTestId('fork-confirm').click();
  await expect(dialog).toBeHidden();

  // The fork is selected.
  await expect(page).not.toHaveURL(new RegExp(`#/runs/${sourceId}$`));
  await expect(page).toHaveURL(/#\/runs\/[0-9a-f-]{36}$/);
  const forkId = decodeURIComponent(new URL(page.url()).hash.replace('#/runs/', ''));
  expect(forks).toEqual([{ at_seq: atSeq, message }]);
  await expect(page.locator('#run-title')).toContainText(forkId);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('run-result')).toContainText(`forked answer ${tag}`);

  // Where it came from: a link to the source at that entry.
  const from = page.getByTestId('forked-from');
  await expect(from).toContainText(`Forked from run ${sourceId.slice(0, 8)} at #${atSeq}`);
  await expect(from.getByRole('link')).toHaveAttribute('href', `#/runs/${sourceId}/events/${atSeq}`);

  // Its journal: the source's entries 1..atSeq, then RUN_FORKED, then the
  // message; the page shows them so, copies marked.
  const source = await rest.events(baseURL, sourceId);
  const journal = await rest.events(baseURL, forkId);
  const copies = source.filter((e) => e.seq <= atSeq);
  expect(journal.slice(0, atSeq).map(({ seq, type, key, payload }) => ({ seq, type, key, payload })))
    .toEqual(copies.map(({ seq, type, key, payload }) => ({ seq, type, key, payload })));
  expect(journal[atSeq]).toMatchObject({ seq: atSeq + 1, type: 'RUN_FORKED', payload: { from_run_id: sourceId, from_seq: atSeq, by: 'admin' } });
  expect(journal[atSeq + 1]).toMatchObject({ type: 'OPERATOR_MESSAGE', payload: { text: message, by: 'admin' } });
  await expect.poll(() => page.getByTestId('timeline-event').evaluateAll((nodes) => nodes.map((n) => [n.dataset.type, n.dataset.copied ?? null])))
    .toEqual(journal.map((e) => [e.type, e.seq <= atSeq ? 'true' : null]));
  await expect(entry(page, 'RUN_FORKED')).toContainText(`forked by admin from run ${sourceId.slice(0, 8)} at #${atSeq}`);
  await expect(entry(page, 'OPERATOR_MESSAGE').getByTestId('operator-message-text')).toHaveText(message);
  // What the copies hold is not done again: the tool ran once, in the source.
  expect(journal.filter((e) => e.type === 'TOOL_STARTED')).toHaveLength(1);
  const asked = (await mock.requests()).filter((r) => r.rule === 'the fork');
  expect(asked).toHaveLength(1);
  expect(JSON.stringify(asked[0].body.messages.at(-1))).toContain(message);

  // Back to the source by the link: it lists the fork, and the entry the
  // fork was taken at is highlighted.
  await from.getByRole('link').click();
  await expect(page.locator('#run-title')).toContainText(sourceId);
  await expect(page.locator(`[data-testid="timeline-event"][data-seq="${atSeq}"]`)).toHaveAttribute('data-highlighted', 'true');
  const item = page.locator(`[data-testid="fork-item"][data-run-id="${forkId}"]`);
  await expect(item).toBeVisible();
  await expect(item).toHaveAttribute('data-seq', String(atSeq));
  await expect(item).toContainText(`run ${forkId.slice(0, 8)} from #${atSeq}`);
  await expect(page.getByTestId('forked-from')).toHaveCount(0);
  expect((await rest.getRun(baseURL, sourceId)).forks).toEqual([{ run_id: forkId, seq: atSeq }]);

  // A reload of the source shows it from the server's own account.
  await page.goto(`/#/runs/${sourceId}`);
  await page.reload();
  await expect(item).toBeVisible();
  await item.getByRole('link', { name: `run ${forkId.slice(0, 8)}` }).click();
  await expect(page.locator('#run-title')).toContainText(forkId);
});

test('a fork refused by the server says why in the dialog', async ({ page, mock, baseURL }) => {
  const tag = token('forkrefused');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
  const run = await rest.createRun(baseURL, `refuse ${tag}`, 'coding');
  // The server refuses the fork (as it would a fork at an entry it cannot
  // fork from); the page is made to send it at the terminal entry.
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  const last = await rest.events(baseURL, run.id);
  await page.route(`**/api/runs/${run.id}/fork`, async (route) => {
    await route.continue({ postData: JSON.stringify({ at_seq: last.at(-1).seq }) });
  });
  await entry(page, 'RUN_STARTED').getByTestId('fork-button').click();
  await page.getByTestId('fork-confirm').click();
  await expect(page.getByTestId('fork-error')).toContainText('Not forked:');
  await expect(page.getByTestId('fork-dialog')).toBeVisible();
  await page.getByTestId('fork-keep').click();
  await expect(page.getByTestId('fork-dialog')).toBeHidden();
  await expect(page).toHaveURL(new RegExp(`#/runs/${run.id}$`));
  expect((await rest.getRun(baseURL, run.id)).forks).toEqual([]);
});
