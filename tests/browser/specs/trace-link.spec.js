// trace-link: the run view shows the run's trace id, and with GRAFANA_URL set
// on the server it links to that trace in Grafana's Explore view (Tempo).

import { test, expect, token, rest } from '../helpers/fixtures.js';

const GRAFANA = 'http://grafana.test:3000';

test.describe('with GRAFANA_URL', () => {
  test.use({ ownServerEnv: { GRAFANA_URL: `${GRAFANA}/` } });

  test('the trace id links to the trace in Grafana', async ({ page, mock, ownServer }) => {
    const tag = token('trace');
    await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
    const run = await rest.createRun(ownServer.url, `trace ${tag}`);
    expect(run.trace_id).toMatch(/^[0-9a-f]{32}$/);
    await page.goto(`${ownServer.url}/#/runs/${run.id}`);
    await expect(page.getByTestId('run-status')).toHaveText('completed');

    const link = page.getByTestId('trace-link');
    await expect(link).toHaveText(run.trace_id);
    await expect(link).toHaveAttribute('target', '_blank');
    const href = new URL(await link.getAttribute('href'));
    expect(`${href.origin}${href.pathname}`).toBe(`${GRAFANA}/explore`);
    const pane = Object.values(JSON.parse(href.searchParams.get('panes')))[0];
    expect(pane.queries[0].query).toBe(run.trace_id);
    expect(pane.queries[0].datasource).toEqual({ type: 'tempo', uid: 'tempo' });
    expect(Number(pane.range.from)).toBeLessThan(Date.parse(run.created_at));
  });
});

test('without GRAFANA_URL the trace id is shown without a link', async ({ page, mock, baseURL }) => {
  const tag = token('notrace');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
  const run = await rest.createRun(baseURL, `no link ${tag}`);
  await page.goto(`/#/runs/${run.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('trace-id')).toHaveText(run.trace_id);
  await expect(page.getByTestId('trace-link')).toHaveCount(0);
});
