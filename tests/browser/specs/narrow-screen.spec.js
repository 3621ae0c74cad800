// narrow-screen: on a screen 700 px wide or less the selected run comes
// first, above the list; wider, the list stays beside it.

import { test, expect, token, rest } from '../helpers/fixtures.js';

test('on a narrow screen the selected run is above the list', async ({ page, mock, baseURL }) => {
  const tag = token('narrow');
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: 'done' } }]);
  const run = await rest.createRun(baseURL, `narrow ${tag}`);
  await page.setViewportSize({ width: 390, height: 800 });
  await page.goto('/');
  // No run selected: the list comes first.
  const list = page.getByTestId('run-list');
  await expect(list).toBeVisible();
  const view = page.locator('#run-view');
  expect((await view.boundingBox()).y).toBeGreaterThan((await list.boundingBox()).y);

  await page.locator(`[data-testid="run-item"][data-run-id="${run.id}"] a`).click();
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  const status = await page.getByTestId('run-status').boundingBox();
  expect(status.y).toBeLessThan((await list.boundingBox()).y);
  expect(status.y).toBeLessThan((await page.getByTestId('run-form').boundingBox()).y);
  // The run is in sight without scrolling.
  await expect(page.getByTestId('run-status')).toBeInViewport();

  // At 700 px still first; wider, side by side.
  await page.setViewportSize({ width: 700, height: 800 });
  expect((await page.getByTestId('run-status').boundingBox()).y).toBeLessThan((await list.boundingBox()).y);
  await page.setViewportSize({ width: 1200, height: 800 });
  const wide = await page.getByTestId('run-status').boundingBox();
  expect(wide.x).toBeGreaterThan((await list.boundingBox()).x + (await list.boundingBox()).width);
});
