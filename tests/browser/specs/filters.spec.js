// filters: search (`q`, in the task, ignoring case), agent and creator
// filters beside the status filter, all kept in the URL's query (the hash
// keeps the selected run), restored on reload, sent to `GET /api/runs`; and
// "more" pages past the first page of the list. The server does the
// filtering (contract section 11): only matching runs come back.

import { test, expect, token, rest, call } from '../helpers/fixtures.js';

const runItem = (page, id) => page.locator(`[data-testid="run-item"][data-run-id="${id}"]`);

/** The `GET /api/runs` requests the page makes, as URLSearchParams. */
function recordListRequests(page) {
  const seen = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.pathname === '/api/runs' && request.method() === 'GET') seen.push(url.searchParams);
  });
  return seen;
}

test('search, agent and creator filters live in the URL, reach the server, and survive a reload', async ({ page, mock, baseURL }) => {
  const tag = token('filters');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: `done ${tag}` } }]);
  const alpha = await rest.createRun(baseURL, `find ${tag} Alpha one`, 'coding');
  const beta = await rest.createRun(baseURL, `find ${tag} beta two`, 'coding');
  const alphaOrchestrated = await rest.createRun(baseURL, `find ${tag} alpha three`, 'orchestrator');
  const requests = recordListRequests(page);
  await page.goto('/');
  for (const run of [alpha, beta, alphaOrchestrated]) await expect(runItem(page, run.id)).toBeVisible();

  // Search: typed in another case; the URL and the request carry it.
  const query = `${tag.toUpperCase()} ALPHA`;
  const asked = page.waitForRequest((r) => new URL(r.url()).pathname === '/api/runs' && new URL(r.url()).searchParams.get('q') === query);
  await page.getByTestId('search-input').fill(query);
  await asked;
  await expect.poll(() => new URL(page.url()).searchParams.get('q')).toBe(query);
  await expect(runItem(page, alpha.id)).toBeVisible();
  await expect(runItem(page, alphaOrchestrated.id)).toBeVisible();
  await expect(runItem(page, beta.id)).toHaveCount(0);

  // The agent and the creator narrow it further.
  await page.getByTestId('agent-filter').selectOption('coding');
  await expect.poll(() => new URL(page.url()).searchParams.get('agent')).toBe('coding');
  await expect(runItem(page, alphaOrchestrated.id)).toHaveCount(0);
  await expect(runItem(page, alpha.id)).toBeVisible();
  const all = page.waitForRequest((r) => {
    const sent = new URL(r.url()).searchParams;
    return new URL(r.url()).pathname === '/api/runs' && sent.get('q') === query && sent.get('agent') === 'coding' && sent.get('created_by') === 'admin';
  });
  await page.getByTestId('created-by-filter').fill('admin');
  await all;
  await expect.poll(() => new URL(page.url()).searchParams.get('created_by')).toBe('admin');
  await expect(runItem(page, alpha.id)).toBeVisible();

  // Selecting a run keeps the filters; a reload restores both.
  await runItem(page, alpha.id).getByRole('link').click();
  await expect(page).toHaveURL(new RegExp(`\\?.*#/runs/${alpha.id}$`));
  requests.length = 0;
  await page.reload();
  await expect(page.getByTestId('search-input')).toHaveValue(query);
  await expect(page.getByTestId('agent-filter')).toHaveValue('coding');
  await expect(page.getByTestId('created-by-filter')).toHaveValue('admin');
  await expect(page.getByTestId('run-task')).toHaveText(`find ${tag} Alpha one`);
  await expect(runItem(page, alpha.id)).toBeVisible();
  await expect(runItem(page, beta.id)).toHaveCount(0);
  await expect(runItem(page, alphaOrchestrated.id)).toHaveCount(0);
  expect(requests.some((r) => r.get('q') === query && r.get('agent') === 'coding' && r.get('created_by') === 'admin')).toBe(true);

  // Another creator: nothing of these matches.
  await page.getByTestId('created-by-filter').fill('nobody-by-that-name');
  await expect(runItem(page, alpha.id)).toHaveCount(0);
  await expect(page.getByText('No runs match.')).toBeVisible();

  // Cleared, everything is back, and the URL has no query left.
  await page.getByTestId('created-by-filter').fill('');
  await page.getByTestId('search-input').fill('');
  await page.getByTestId('agent-filter').selectOption('');
  await expect.poll(() => new URL(page.url()).search).toBe('');
  await expect(page).toHaveURL(new RegExp(`#/runs/${alpha.id}$`));
  for (const run of [alpha, beta, alphaOrchestrated]) await expect(runItem(page, run.id)).toBeVisible();
});

test('the server filters by task text, agent and creator', async ({ page, mock, baseURL }) => {
  const tag = token('needle');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
  const needle = await rest.createRun(baseURL, `a ${tag} in the haystack`, 'coding');
  const other = await rest.createRun(baseURL, `a ${tag} elsewhere`, 'log-analyzer');
  await page.goto('/');
  const answered = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/runs' && new URL(r.url()).searchParams.get('q') === `${tag} IN THE`);
  await page.getByTestId('search-input').fill(`${tag} IN THE`);
  const response = await answered;
  expect(response.status()).toBe(200);
  // Only what matches, from the server itself (the shared server holds
  // many other runs).
  const listed = (await response.json()).runs;
  expect(listed.map((r) => r.id)).toEqual([needle.id]);
  await expect(runItem(page, needle.id)).toBeVisible();
  await expect(runItem(page, other.id)).toHaveCount(0);
  // Agent and creator, through the API as the page sends them.
  const byAgent = await call(baseURL, 'GET', `/api/runs?q=${encodeURIComponent(tag)}&agent=log-analyzer`);
  expect(byAgent.runs.map((r) => r.id)).toEqual([other.id]);
  const byCreator = await call(baseURL, 'GET', `/api/runs?q=${encodeURIComponent(tag)}&created_by=nobody-by-that-name`);
  expect(byCreator.runs).toEqual([]);
});

test('"more" loads the runs past the first page', async ({ page, mock, baseURL }) => {
  const tag = token('paging');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
  // A token of its own, so that its rate limit is not the suite's.
  const pager = await rest.createToken(baseURL, tag, ['operator']);
  const ids = [];
  for (let i = 0; i < 52; i++) ids.push((await rest.createRun(baseURL, `page ${tag} ${i}`, 'coding', pager)).id);
  await page.goto('/');
  // The newest fifty are the first page; the two oldest are not loaded.
  await expect(runItem(page, ids[51])).toBeVisible();
  await expect(runItem(page, ids[2])).toBeVisible();
  await expect(runItem(page, ids[1])).toHaveCount(0);
  await expect(runItem(page, ids[0])).toHaveCount(0);
  const more = page.getByTestId('load-more');
  await expect(more).toBeVisible();
  await more.click();
  await expect(runItem(page, ids[1])).toBeVisible();
  await expect(runItem(page, ids[0])).toBeVisible();
  await expect(page.locator('[data-testid="run-item"]').filter({ hasText: `page ${tag} ` })).toHaveCount(52);
});
