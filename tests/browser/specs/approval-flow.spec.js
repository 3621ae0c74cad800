// approval-flow: dangerous calls wait on the approval card, which names the
// agent and the tool and shows the arguments in full as plain text (the
// whole command for shell; the path and the whole content for write_file),
// and approving lets the run go on to completion.

import fs from 'node:fs';
import path from 'node:path';
import { test, expect, token, createRunFromForm, codingScript, rest } from '../helpers/fixtures.js';

test('approving a shell command and a file write runs both and completes the run', async ({ page, mock, server, baseURL }) => {
  const tag = token('approve');
  const command = `echo "approved ${tag}" && printf '%s\\n' '<b>not bold</b>' | tee shell-${tag}.txt`;
  const content = `# Notes for ${tag}\n\nline two <script>alert(1)</script>\n  indented line three\n`;
  await mock.setFixtures(codingScript(tag, [
    { text: 'I will run a command.', tool_calls: [{ name: 'shell', arguments: { command } }] },
    { text: 'Now the notes.', tool_calls: [{ name: 'write_file', arguments: { path: `notes-${tag}.md`, content } }] },
    { text: 'All done: {{last_tool_result}}' },
  ]));
  await page.goto('/');
  const id = await createRunFromForm(page, `approve things ${tag}`, 'coding');

  // The shell command waits for a human.
  const card = page.getByTestId('approval-card');
  await expect(card).toBeVisible();
  await expect(page.getByTestId('run-status')).toHaveText('waiting_approval');
  await expect(page.locator(`[data-testid="run-item"][data-run-id="${id}"]`)).toHaveAttribute('data-status', 'waiting_approval');
  await expect(page.getByTestId('approval-tool')).toContainText('coding');
  await expect(page.getByTestId('approval-tool')).toContainText('shell');
  await expect(page.getByTestId('approval-args')).toContainText(command);
  await expect(card).toContainText(/expires in \d+ (d|h)/);
  await expect(page.getByTestId('cancel-button')).toBeEnabled();
  expect(await card.locator('b').count()).toBe(0);

  await page.getByTestId('approve-button').click();

  // Then the file write, with its path and its whole content.
  await expect(page.getByTestId('approval-tool')).toContainText('write_file');
  const args = page.getByTestId('approval-args');
  await expect(args).toContainText(`notes-${tag}.md`);
  const shownContent = await args.locator('pre.content').textContent();
  expect(shownContent).toBe(content);
  expect(await card.locator('script').count()).toBe(0);
  await expect(page.getByTestId('timeline-event').filter({ hasText: 'shell succeeded' })).toHaveCount(1);

  await page.getByTestId('feedback-input').fill('looks good');
  await page.getByTestId('approve-button').click();

  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expect(page.getByTestId('approval-card')).toHaveCount(0);
  await expect(page.getByTestId('cancel-button')).toBeHidden();
  await expect(page.getByTestId('run-result')).toContainText('All done');
  await expect(page.locator('[data-testid="timeline-event"][data-type="RUN_RESUMED"]')).toHaveCount(2);
  await expect(page.locator('[data-testid="timeline-event"][data-type="TOOL_RESULT"]')).toHaveCount(2);
  await expect(page.getByTestId('waterfall')).toContainText('coding · shell');

  // The tools really ran, once each.
  expect(fs.readFileSync(path.join(server.workspace, `notes-${tag}.md`), 'utf8')).toBe(content);
  expect(fs.readFileSync(path.join(server.workspace, `shell-${tag}.txt`), 'utf8')).toBe('<b>not bold</b>\n');
  const events = await rest.events(baseURL, id);
  expect(events.filter((e) => e.type === 'RUN_RESUMED').map((e) => e.payload.decision)).toEqual(['approved', 'approved']);
  expect(events.find((e) => e.type === 'RUN_RESUMED' && e.payload.feedback === 'looks good')).toBeTruthy();
});
