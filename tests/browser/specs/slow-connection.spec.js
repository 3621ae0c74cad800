// slow-connection: a server with a tiny per-connection queue drops the page's
// WebSocket (close code 4008) when model text bursts in faster than the
// page reads it. The page reconnects by itself, resubscribes after the last
// seq it has, and still ends with every event exactly once.

import { test, expect, token, codingScript, rest, timelineSeqs, expectConnection } from '../helpers/fixtures.js';

test.use({ ownServerEnv: { AGENT_SERVER_WS_QUEUE: '2' } });

test('the page survives being dropped as a slow reader (4008)', async ({ page, mock, ownServer: server }) => {
  const tag = token('slow');
  // Each step streams a long answer one character at a time with no pause:
  // thousands of delta frames in a burst, far more than a queue of 2 holds.
  const burst = (n) => ({ text: `Step ${n} of ${tag}. ` + 'x'.repeat(3000) });
  const rules = codingScript(tag, [
    { ...burst(1), tool_calls: [{ name: 'list_files', arguments: {} }] },
    { ...burst(2), tool_calls: [{ name: 'list_files', arguments: {} }] },
    { ...burst(3), tool_calls: [{ name: 'list_files', arguments: {} }] },
    { text: `Done ${tag}.` },
  ]).map((rule) => ({ ...rule, chunk_chars: 1, latency_ms: 300 }));
  await mock.setFixtures(rules);

  const drops = [];
  page.on('console', (message) => {
    if (message.text().includes('dropped this slow connection')) drops.push(message.text());
  });
  await page.goto(server.url);
  await expectConnection(page, 'connected');
  const run = await rest.createRun(server.url, `burst ${tag}`);
  await page.goto(`${server.url}/#/runs/${run.id}`);

  await expect(page.getByTestId('run-status')).toHaveText('completed', { timeout: 60_000 });
  const events = await rest.events(server.url, run.id);
  await expect.poll(() => timelineSeqs(page)).toEqual(events.map((e) => e.seq));
  await expectConnection(page, 'connected');
  expect(drops.length).toBeGreaterThan(0);
});
