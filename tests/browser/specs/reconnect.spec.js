// reconnect: kill -9 the server under an open page and start it again on the
// same port and data dir. The page says it is reconnecting, then connected,
// without a reload, and catches up with exactly the events it missed: its
// timeline is seq 1..N, no gap, no duplicate, the same as the journal.

import { test, expect, token, codingScript, rest, timelineSeqs, expectConnection } from '../helpers/fixtures.js';
import { sleep } from '../helpers/processes.js';

test('the page reconnects after kill -9 and catches up exactly', async ({ page, mock, ownServer: server }) => {
  const tag = token('reconnect');
  await mock.setFixtures(codingScript(tag, [
    { text: 'A command first.', tool_calls: [{ name: 'shell', arguments: { command: `echo before and after ${tag}` } }] },
    { text: 'Then a look around.', tool_calls: [{ name: 'list_files', arguments: {} }] },
    { text: 'And a file.', tool_calls: [{ name: 'read_file', arguments: { path: 'missing.txt' } }] },
    { text: `Survived the restart: ${tag}.` },
  ]));
  const run = await rest.createRun(server.url, `survive a restart ${tag}`);
  // Record what the page sends over its WebSockets.
  await page.addInitScript(() => {
    window.__sent = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function record(data) {
      window.__sent.push(String(data));
      return send.call(this, data);
    };
  });
  await page.goto(`${server.url}/#/runs/${run.id}`);
  await expectConnection(page, 'connected');
  await expect(page.getByTestId('approval-card')).toBeVisible();
  await page.evaluate(() => {
    window.__sameDocument = true;
  });
  const before = await timelineSeqs(page);
  expect(before.length).toBeGreaterThan(3);

  await server.kill9();
  await expectConnection(page, 'reconnecting');
  await sleep(1000);
  await server.restart();

  // Decide at once through the API: the run goes on while the page may
  // still be backing off, so it has events to catch up on.
  const approvalId = (await rest.getRun(server.url, run.id)).pending_approval.approval_id;
  await retry(() => rest.resume(server.url, run.id, { approval_id: approvalId, decision: 'approved' }));

  await expectConnection(page, 'connected', 30_000);
  // It resubscribed to the runs and to this run, after the seq it had.
  const sent = (await page.evaluate(() => window.__sent)).map((text) => JSON.parse(text));
  expect(sent.filter((m) => m.op === 'subscribe_runs').length).toBeGreaterThanOrEqual(2);
  const subscriptions = sent.filter((m) => m.op === 'subscribe' && m.run_id === run.id);
  expect(subscriptions.length).toBeGreaterThanOrEqual(2);
  // At least what it had before the kill; more if a REST poll caught up first.
  expect(subscriptions[subscriptions.length - 1].after).toBeGreaterThanOrEqual(before[before.length - 1]);

  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('approval-card')).toHaveCount(0);
  const events = await rest.events(server.url, run.id);
  const expected = events.map((e) => e.seq);
  expect(expected).toEqual(Array.from({ length: expected.length }, (_, i) => i + 1));
  await expect.poll(() => timelineSeqs(page)).toEqual(expected);
  const types = await page.getByTestId('timeline-event').evaluateAll((nodes) => nodes.map((n) => n.dataset.type));
  expect(types).toEqual(events.map((e) => e.type));
  expect(await page.evaluate(() => window.__sameDocument)).toBe(true);
});

/** Retries a request while the restarted server recovers its runs (503). */
async function retry(request) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request();
    } catch (error) {
      if (attempt >= 50) throw error;
      await sleep(200);
    }
  }
}
