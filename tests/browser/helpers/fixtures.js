// helpers/fixtures.js: the Playwright fixtures every spec uses, and small
// helpers around the REST API and the page.
//
// One mock-llm and one agent-server per worker (the suite runs one worker:
// two cores, and each server has its own PostgreSQL), shared by the tests,
// which stay apart by putting a unique token in their tasks and matching
// their mock-llm rules on it. A failing test gets both servers' output
// attached next to its screenshot.
//
// Every route of the API needs a credential (contract section 9). Each
// test's browser context starts signed in as `admin` (through
// `POST /api/session`, the call the page's own sign-in makes), unless the
// spec says `test.use({ signedIn: false })`; REST calls the tests make
// themselves carry `Authorization: Bearer` (ADMIN_TOKEN unless told).

import { test as base, expect } from '@playwright/test';
import { ADMIN_TOKEN, AgentServer, MockLlm } from './processes.js';

export { expect, ADMIN_TOKEN };

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
  /** Whether the test's browser context starts signed in as `admin`. */
  signedIn: [true, { option: true }],
  context: async ({ context, signedIn, stack }, use) => {
    if (signedIn) await signInContext(context, stack.server.url);
    await use(context);
  },
  /** Extra settings for `ownServer`: `test.use({ ownServerEnv: {...} })`. */
  ownServerEnv: [{}, { option: true }],
  /** A server of the test's own, on the shared mock-llm, for tests that
   * kill it or change its settings; stopped after the failure screenshot. */
  ownServer: async ({ stack, context, ownServerEnv, signedIn }, use, testInfo) => {
    const server = await AgentServer.start({ mockUrl: stack.mock.url, env: ownServerEnv });
    // Cookies do not tell ports apart: this session cookie replaces the
    // shared server's in the context, so such a test uses only this server.
    if (signedIn) await signInContext(context, server.url);
    await use(server);
    if (testInfo.status !== testInfo.expectedStatus) {
      await testInfo.attach('own-agent-server.log', { body: server.log(), contentType: 'text/plain' });
    }
    // Leave the pages first: the server's graceful stop would otherwise wait
    // for their WebSockets to close.
    for (const page of context.pages()) await page.goto('about:blank').catch(() => {});
    await server.stop();
  },
  /** A second instance on `ownServer`'s database (contract section 10):
   * its own process, port, data dir and instance id, the same runs, tokens
   * and workspace. The context is signed in to it (the cookie replaces the
   * own server's, which shares the database, so either would do). Set up
   * after `ownServer`, so torn down before it: the own server's stop ends
   * the cluster this one uses. */
  peerServer: async ({ stack, ownServer, context, ownServerEnv, signedIn }, use, testInfo) => {
    const server = await AgentServer.start({ mockUrl: stack.mock.url, env: ownServerEnv, database: ownServer });
    if (signedIn) await signInContext(context, server.url);
    await use(server);
    if (testInfo.status !== testInfo.expectedStatus) {
      await testInfo.attach('peer-agent-server.log', { body: server.log(), contentType: 'text/plain' });
    }
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

/** Signs a browser context in to the server at `base` with `token`: the
 * context keeps the session cookie, as a page that signed in would. */
export async function signInContext(context, base, token = ADMIN_TOKEN) {
  const response = await context.request.post(`${base}/api/session`, { data: { token } });
  if (response.status() !== 204) {
    throw new Error(`signing in to ${base}: ${response.status()} ${await response.text()}`);
  }
}

/** The answer to `method path` as `token` (none: no credential at all). */
export function send(base, method, path, body, token = ADMIN_TOKEN) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  return fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** JSON over HTTP against `base` as `token` (admin unless told); throws
 * with the body on a non-2xx. */
export async function call(base, method, path, body, token = ADMIN_TOKEN) {
  const response = await send(base, method, path, body, token);
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

export const rest = {
  createRun: (base, task, agent = 'coding', token = ADMIN_TOKEN) => call(base, 'POST', '/api/runs', { task, agent }, token),
  getRun: (base, id) => call(base, 'GET', `/api/runs/${id}`),
  cancel: (base, id) => call(base, 'POST', `/api/runs/${id}/cancel`, {}),
  /** `GET /api/instances`: the live instances. */
  instances: async (base) => (await call(base, 'GET', '/api/instances')).instances,
  events: async (base, id) => (await call(base, 'GET', `/api/runs/${id}/events`)).events,
  resume: (base, id, body, token = ADMIN_TOKEN) => call(base, 'POST', `/api/runs/${id}/resume`, body, token),
  /** A new token named `name` with `roles`; returns the token itself. */
  createToken: async (base, name, roles) => (await call(base, 'POST', '/api/tokens', { name, roles })).token,
  revokeToken: (base, name) => call(base, 'DELETE', `/api/tokens/${encodeURIComponent(name)}`),
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
