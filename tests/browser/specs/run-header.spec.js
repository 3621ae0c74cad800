// run-header: the run's clock under its task (total time, live while it
// runs; time spent waiting for humans; tokens; cost when the server says),
// and its result shown once, as Markdown: the final answer in the timeline
// is folded rather than repeated.

import { test, expect, token, codingScript, rest } from '../helpers/fixtures.js';

const RESULT = [
  '## Summary',
  '',
  'Listed the files with `ls` and **checked** them. See [the docs](https://example.com/docs) and [this](javascript:alert(1)).',
  '',
  '- one',
  '- two',
  '',
  '```',
  '<script>window.__pwned = 1</script>',
  '```',
].join('\n');

test('total time, time waiting for a human, tokens, and the result once, as Markdown', async ({ page, mock, baseURL }) => {
  const tag = token('header');
  await mock.setFixtures(codingScript(tag, [
    { text: 'A command.', tool_calls: [{ name: 'shell', arguments: { command: `echo ${tag}` } }], usage: { input_tokens: 1000, output_tokens: 200 } },
    { text: `${RESULT}\n${tag}`, usage: { input_tokens: 2000, output_tokens: 345 } },
  ]));
  const run = await rest.createRun(baseURL, `header ${tag}`);
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('approval-card')).toBeVisible();

  // While it waits: the clock runs, and so does the time waiting for a human.
  const total = page.getByTestId('run-total-time');
  const waited = page.getByTestId('run-human-wait');
  await expect(total).toContainText('running for');
  await expect(waited).toContainText('waiting for humans (waiting now)');
  await expect.poll(async () => Number(await waited.getAttribute('data-ms')), { timeout: 10_000 }).toBeGreaterThanOrEqual(2000);
  await expect(page.getByTestId('run-tokens')).toHaveText('1,200 tokens');
  // A cost shows only when the run JSON carries one (the server is adding
  // it: `budget.used_cost_usd` or `cost_usd`); none is made up.
  const json = await rest.getRun(baseURL, run.id);
  const cost = json.budget?.used_cost_usd ?? json.cost_usd;
  if (typeof cost === 'number') await expect(page.getByTestId('run-cost')).toHaveText(/^\$\d+\.\d+$/);
  else await expect(page.getByTestId('run-cost')).toBeHidden();

  await page.getByTestId('approve-button').click();
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(total).toHaveText(/^took \d/);
  await expect(waited).toHaveText(/^\d.* waiting for humans$/);
  await expect(page.getByTestId('run-tokens')).toHaveText('3,545 tokens');
  // The wait shown is the journal's: RUN_SUSPENDED to RUN_RESUMED.
  const events = await rest.events(baseURL, run.id);
  const asked = events.find((e) => e.type === 'RUN_SUSPENDED');
  const decided = events.find((e) => e.type === 'RUN_RESUMED');
  expect(Number(await waited.getAttribute('data-ms'))).toBe(Date.parse(decided.at) - Date.parse(asked.at));

  // The result as Markdown: a heading, code, strong, a list, an http link,
  // the javascript: one as text, the fenced script as code.
  const result = page.getByTestId('run-result');
  await expect(result.locator('h4')).toHaveText('Summary');
  await expect(result.locator('p code')).toHaveText('ls');
  await expect(result.locator('strong')).toHaveText('checked');
  await expect(result.locator('li')).toHaveText(['one', 'two']);
  await expect(result.locator('a')).toHaveCount(1);
  await expect(result.locator('a')).toHaveAttribute('href', 'https://example.com/docs');
  await expect(result).toContainText('[this](javascript:alert(1))');
  await expect(result.locator('pre code')).toHaveText('<script>window.__pwned = 1</script>');
  expect(await page.locator('#run-view script').count()).toBe(0);
  expect(await page.evaluate(() => window.__pwned)).toBeUndefined();

  // Shown once: the final answer's entry keeps its place, folded.
  await expect(page.locator('[data-testid="timeline-event"][data-type="RUN_COMPLETED"]')).toHaveCount(1);
  const folded = page.getByTestId('final-answer');
  await expect(folded).toHaveCount(1);
  await expect(folded.locator('pre')).toBeHidden();
  await expect(page.getByText('Listed the files with', { exact: false }).filter({ visible: true })).toHaveCount(1);
  await folded.locator('summary').click();
  await expect(folded.locator('pre')).toBeVisible();
});

test('cost, when the run says what it cost', async ({ page, mock, baseURL }) => {
  const tag = token('cost');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done', usage: { input_tokens: 10, output_tokens: 2 } } }]);
  const run = await rest.createRun(baseURL, `cost ${tag}`);
  // The cost fields are new; the page is given them in the run's JSON
  // whether or not this server sends them yet.
  const budget = { max_tokens: null, max_cost_usd: 1, used_tokens: 12, used_cost_usd: 0.01234 };
  await page.route((url) => url.pathname === '/api/runs' || url.pathname === `/api/runs/${run.id}`, async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    for (const summary of body.runs ?? [body]) if (summary.id === run.id) summary.budget = budget;
    await route.fulfill({ response, json: body });
  });
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('run-cost')).toBeVisible();
  await expect(page.getByTestId('run-cost')).toHaveText('$0.0123');
  await expect(page.getByTestId('run-tokens')).toHaveText('12 tokens');
});
