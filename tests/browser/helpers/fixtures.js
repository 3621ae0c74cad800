// helpers/fixtures.js: the Playwright fixtures every spec uses, and small
// helpers around the REST API and the page.
//
// One mock-llm and one agent-server per worker (the suite runs one worker:
// two cores, and each server has its own PostgreSQL), shared by the tests,
// which stay apart by putting a unique token in their tasks and matching
// their mock-llm rules on it. A failing test gets both servers' output
// attached next to its screenshot.

import { test as base, expect } from '@playwright/test';
import { AgentServer, MockLlm } from './processes.js';

export { expect };

export const test = base.extend({
  stack: [
    async ({}, use) => {
      const mock = await MockLlm.start();
      const server = await AgentServer.start({ mockUrl: mock.url });
      await use({ mock, server });
      await server.stop();
      await mock.stop();
    },
    { scope: 'worker', timeout: 120_000 },
  ],
  mock: async ({ stack }, use) => {
    await stack.mock.clearRequests();
    await use(stack.mock);
  },
  server: async ({ stack }, use) => {
    await use(stack.server);
  },
  /** Extra settings for `ownServer`: `test.use({ ownServerEnv: {...} })`. */
  ownServerEnv: [{}, { option: true }],
  /** A server of the test's own, on the shared mock-llm, for tests that
   * kill it or change its settings; stopped after the failure screenshot. */
  ownServer: async ({ stack, context, ownServerEnv }, use, testInfo) => {
    const server = await AgentServer.start({ mockUrl: stack.mock.url, env: ownServerEnv });
    await use(server);
    if (testInfo.status !== testInfo.expectedStatus) {
      await testInfo.attach('own-agent-server.log', { body: server.log(), contentType: 'text/plain' });
    }
    // Leave the pages first: the server's graceful stop would otherwise wait
    // for their WebSockets to close.
    for (const page of context.pages()) await page.goto('about:blank').catch(() => {});
    await server.stop();
  },
  baseURL: async ({ stack }, use) => {
    await use(stack.server.url);
  },
  /** Attaches the servers' output to a failing test. */
  logsOnFailure: [
    async ({ stack }, use, testInfo) => {
      await use();
      if (testInfo.status !== testInfo.expectedStatus) {
        await testInfo.attach('agent-server.log', { body: stack.server.log(), contentType: 'text/plain' });
        await testInfo.attach('mock-llm.log', { body: stack.mock.log(), contentType: 'text/plain' });
      }
    },
    { auto: true },
  ],
});

/** A token unique to one test, for its task and its mock-llm rules. */
export function token(prefix) {
  return `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
}

/** JSON over HTTP against `base`; throws with the body on a non-2xx. */
export async function call(base, method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

export const rest = {
  createRun: (base, task, agent = 'coding') => call(base, 'POST', '/api/runs', { task, agent }),
  getRun: (base, id) => call(base, 'GET', `/api/runs/${id}`),
  events: async (base, id) => (await call(base, 'GET', `/api/runs/${id}/events`)).events,
  resume: (base, id, body) => call(base, 'POST', `/api/runs/${id}/resume`, body),
};

/** Creates a run from the page's form; returns its id, read from the URL
 * hash the form selects. */
export async function createRunFromForm(page, task, agent = 'coding') {
  await page.getByTestId('task-input').fill(task);
  await page.getByTestId('agent-select').selectOption(agent);
  await page.getByTestId('submit-run').click();
  await expect(page).toHaveURL(/#\/runs\/[0-9a-f-]{36}$/);
  return decodeURIComponent(new URL(page.url()).hash.replace('#/runs/', ''));
}

/** The seqs shown in the page's timeline, in DOM order. */
export async function timelineSeqs(page) {
  return page.getByTestId('timeline-event').evaluateAll((nodes) => nodes.map((node) => Number(node.dataset.seq)));
}

/** Waits until the page shows the connection as `state`. */
export async function expectConnection(page, state, timeout) {
  await expect(page.getByTestId('connection-status')).toHaveAttribute('data-state', state, { timeout });
}

/** Mock-llm rules for a coding agent that asks for one tool per step:
 * `steps[i]` answers the conversation holding i tool results, and the last
 * step is the final text. Each rule matches only runs whose task has `tag`. */
export function codingScript(tag, steps) {
  return steps.map((reply, index) => ({
    name: `${tag} step ${index}`,
    match: { task_contains: tag, tool_results: index },
    reply: { usage: { input_tokens: 100 + index, output_tokens: 10 + index }, ...reply },
  }));
}
