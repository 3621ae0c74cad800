// rejection-flow: rejecting a call with feedback from the card sends that
// feedback to the model as the tool's result, in the very next request.

import { test, expect, token, createRunFromForm, codingScript, rest } from '../helpers/fixtures.js';

test('a rejection with feedback reaches the model in its next request', async ({ page, mock, baseURL }) => {
  const tag = token('reject');
  const feedback = `Please do a dry run first (${tag}) & keep <the> build dir`;
  await mock.setFixtures(codingScript(tag, [
    { text: 'Cleaning up.', tool_calls: [{ name: 'shell', arguments: { command: `rm -rf build-${tag}` } }] },
    { text: 'Understood. The tool said: {{last_tool_result}}' },
  ]));
  await page.goto('/');
  const id = await createRunFromForm(page, `clean the build ${tag}`, 'coding');

  await expect(page.getByTestId('approval-card')).toBeVisible();
  await expect(page.getByTestId('approval-args')).toContainText(`rm -rf build-${tag}`);
  await page.getByTestId('feedback-input').fill(feedback);
  await page.getByTestId('reject-button').click();

  await expect(page.getByTestId('approval-card')).toHaveCount(0);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  const resumed = page.locator('[data-testid="timeline-event"][data-type="RUN_RESUMED"]');
  await expect(resumed).toContainText('rejected');
  await expect(resumed).toContainText(feedback);
  await expect(page.locator('[data-testid="timeline-event"][data-type="TOOL_STARTED"]')).toHaveCount(0);
  await expect(page.getByTestId('run-result')).toContainText(feedback);

  // The model's next request carries the rejection and the feedback as the
  // shell call's result.
  const requests = (await mock.requests()).filter((r) => JSON.stringify(r.body).includes(tag));
  expect(requests.length).toBe(2);
  const toolMessages = requests[1].body.messages.filter((m) => m.role === 'tool');
  expect(toolMessages).toHaveLength(1);
  const toolText = JSON.stringify(toolMessages[0].content);
  expect(toolText).toContain(JSON.stringify(feedback).slice(1, -1));
  expect(toolText.toLowerCase()).toContain('reject');
  expect(JSON.stringify(requests[0].body)).not.toContain(feedback);

  const events = await rest.events(baseURL, id);
  const decision = events.find((e) => e.type === 'RUN_RESUMED');
  expect(decision.payload).toMatchObject({ decision: 'rejected', feedback });
});
