// four-eyes: with AGENT_REQUIRE_SECOND_APPROVER=true the token that created a
// run may not decide its approvals. The page still offers an admin the
// buttons (the rule depends on the run, and the server is the judge); the
// server's 403 and its reason show on the card, nothing is decided, and a
// second approver's decision goes through.

import { test, expect, token, codingScript, rest, createRunFromForm } from '../helpers/fixtures.js';

test.use({ ownServerEnv: { AGENT_REQUIRE_SECOND_APPROVER: 'true' } });

test('the creator\'s own approval is refused on the card; a second approver decides', async ({ page, browser, mock, ownServer: server }) => {
  const tag = token('foureyes');
  await mock.setFixtures(codingScript(tag, [
    { tool_calls: [{ name: 'shell', arguments: { command: `echo second pair of eyes ${tag}` } }] },
    { text: `done ${tag}` },
  ]));
  await page.goto(`${server.url}/`);
  const id = await createRunFromForm(page, `four eyes ${tag}`);
  await expect(page.getByTestId('run-created-by')).toContainText('created by admin');

  await page.getByTestId('approve-button').click();
  const message = page.getByTestId('approval-message');
  await expect(message).toContainText('Not allowed');
  await expect(message).toContainText('four eyes');
  await expect(page.getByTestId('approval-card')).toBeVisible();
  expect((await rest.getRun(server.url, id)).status).toBe('waiting_approval');

  const name = token('second');
  const secret = await rest.createToken(server.url, name, ['approver']);
  const context = await browser.newContext();
  const other = await context.newPage();
  await other.goto(`${server.url}/#token=${secret}`);
  await expect(other.getByTestId('whoami')).toHaveText(name);
  await other.goto(`${server.url}/#/runs/${id}`);
  await other.getByTestId('approve-button').click();

  for (const tab of [page, other]) {
    await expect(tab.getByTestId('run-status')).toHaveText('completed');
    await expect(tab.locator('[data-testid="timeline-event"][data-type="RUN_RESUMED"] [data-testid="decided-by"]')).toHaveText(name);
  }
  await context.close();
});
