// approval-binding: a decision names the arguments the card showed by their
// hash, `args_sha256` = SHA-256 of the RFC 8785 canonical JSON (contract
// section 9). The page's hash of awkward arguments is the server's, and its
// decisions carry it; a decision whose hash the server refuses (409) says
// so on the card; and a page opened over plain http from another host name
// (no secure context, so no `crypto.subtle`) still sends the right hash,
// from the page's own SHA-256 (canonical.spec.js tests it on its own).

import { test, expect, token, codingScript, rest, createRunFromForm, ADMIN_TOKEN } from '../helpers/fixtures.js';

test('the page hashes awkward arguments as the server does, and its decisions carry that hash', async ({ page, mock, baseURL }) => {
  const tag = token('jcs');
  // Keys out of order, quotes, backslashes, control characters, a line
  // separator, accents and an emoji outside the BMP.
  const awkward = `ünïcødé 😀 "quoted" back\\slash \t tab \u0001 \u007f \u2028 </script> ${tag}`;
  const shellArgs = { timeout_secs: 7, command: `true # ${awkward}` };
  const fileArgs = { path: `jcs-${tag}.txt`, content: `line one\r\n${awkward}\n` };
  await mock.setFixtures(codingScript(tag, [
    { tool_calls: [{ name: 'shell', arguments: shellArgs }] },
    { tool_calls: [{ name: 'write_file', arguments: fileArgs }] },
    { text: `done ${tag}` },
  ]));
  const decisions = [];
  page.on('request', (request) => {
    if (request.method() === 'POST' && request.url().endsWith('/resume')) decisions.push(request.postDataJSON());
  });
  const run = await rest.createRun(baseURL, `hash ${tag}`);
  await page.goto(`/#/runs/${run.id}`);

  const sent = [];
  for (const args of [shellArgs, fileArgs]) {
    const card = page.getByTestId('approval-card');
    await expect.poll(async () => (await rest.getRun(baseURL, run.id)).pending_approval?.args).toEqual(args);
    const pending = (await rest.getRun(baseURL, run.id)).pending_approval;
    await expect(card).toHaveAttribute('data-approval-id', pending.approval_id);
    await expect(card).toHaveAttribute('data-args-sha256', pending.args_sha256);
    // The same from the REST copy, through the module.
    const again = await page.evaluate(async (shown) => (await import('/static/canonical.js')).argsSha256(shown), pending.args);
    expect(again).toBe(pending.args_sha256);
    await page.getByTestId('approve-button').click();
    sent.push(pending);
  }
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  expect(decisions.map((d) => [d.approval_id, d.args_sha256])).toEqual(sent.map((p) => [p.approval_id, p.args_sha256]));
});

test('a hash the server does not recognise is refused, and the card says so', async ({ page, mock, baseURL }) => {
  const tag = token('stale');
  await mock.setFixtures(codingScript(tag, [
    { tool_calls: [{ name: 'shell', arguments: { command: `echo bound ${tag}` } }] },
    { text: `done ${tag}` },
  ]));
  await page.goto('/');
  const id = await createRunFromForm(page, `bound ${tag}`);
  await expect(page.getByTestId('approval-card')).toBeVisible();

  // The decision leaves the page naming other arguments than those waiting.
  const resume = `**/api/runs/${id}/resume`;
  await page.route(resume, (route) => {
    const body = route.request().postDataJSON();
    route.continue({ postData: JSON.stringify({ ...body, args_sha256: '0'.repeat(64) }) });
  });
  await page.getByTestId('approve-button').click();
  await expect(page.getByTestId('approval-message')).toContainText('not the ones shown here');
  await expect(page.getByTestId('approve-button')).toBeEnabled();
  const events = await rest.events(baseURL, id);
  expect(events.map((e) => e.type)).not.toContain('RUN_RESUMED');

  // Sent as shown, it goes through.
  await page.unroute(resume);
  await page.getByTestId('approve-button').click();
  await expect(page.getByTestId('run-status')).toHaveText('completed');
});

test('over plain http from another host name, the page\'s own SHA-256 signs the decision', async ({ browser, mock, server }) => {
  // The browser maps dashboard.test to 127.0.0.1 (playwright.config.js):
  // an http origin that is not localhost is no secure context.
  const origin = `http://dashboard.test:${server.port}`;
  const context = await browser.newContext();
  const page = await context.newPage();
  const tag = token('insecure');
  await mock.setFixtures(codingScript(tag, [
    { tool_calls: [{ name: 'shell', arguments: { command: `echo plain http ${tag} 😀` } }] },
    { text: `done ${tag}` },
  ]));
  await page.goto(`${origin}/#token=${ADMIN_TOKEN}`);
  await expect(page.getByTestId('whoami')).toHaveText('admin');
  expect(await page.evaluate(() => [isSecureContext, typeof crypto.subtle])).toEqual([false, 'undefined']);

  // Created with the session cookie from this origin (the Origin check).
  const id = await createRunFromForm(page, `insecure ${tag}`);
  await expect(page.getByTestId('approval-card')).toBeVisible();
  const pending = (await rest.getRun(server.url, id)).pending_approval;
  await expect(page.getByTestId('approval-card')).toHaveAttribute('data-args-sha256', pending.args_sha256);
  const decision = page.waitForRequest((request) => request.url().endsWith(`/api/runs/${id}/resume`));
  await page.getByTestId('approve-button').click();
  expect((await decision).postDataJSON().args_sha256).toBe(pending.args_sha256);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await context.close();
});
