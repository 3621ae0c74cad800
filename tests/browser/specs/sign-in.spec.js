// sign-in: the page signs in from a `#token=` link (and takes the token out
// of the address bar), or from its form (a wrong token says so); signing out
// ends the session on the server, and the page then stops its WebSocket for
// good; a session that ends under an open page (its token revoked) brings
// the form back without losing the run the URL names. The token is never
// kept by the page: the session cookie is HttpOnly and nothing is stored.

import { test, expect, token, ADMIN_TOKEN, rest, send, expectConnection } from '../helpers/fixtures.js';

test.use({ signedIn: false });

/** The page's session cookie, as the browser holds it. */
async function sessionCookie(context) {
  return (await context.cookies()).find((cookie) => cookie.name === 'agent_server_session');
}

test('a #token= link signs in, and the token leaves the address bar', async ({ page, context, baseURL }) => {
  const sessionRequests = [];
  page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/api/session') sessionRequests.push(request);
  });
  await page.goto(`/#token=${ADMIN_TOKEN}`);

  await expect(page.getByTestId('whoami')).toHaveText('admin');
  await expect(page.getByTestId('whoami')).toHaveAttribute('title', /roles: admin/);
  await expect(page.getByTestId('sign-in-form')).toBeHidden();
  await expect(page.getByTestId('run-form')).toBeVisible();
  await expect(page.getByTestId('sign-out-button')).toBeVisible();
  await expectConnection(page, 'connected');
  expect(page.url()).toBe(`${baseURL}/`);

  // One JSON sign-in request; the rest rides on the cookie.
  expect(sessionRequests).toHaveLength(1);
  expect(sessionRequests[0].method()).toBe('POST');
  expect(await sessionRequests[0].headerValue('content-type')).toBe('application/json');
  expect(sessionRequests[0].postDataJSON()).toEqual({ token: ADMIN_TOKEN });
  expect((await sessionRequests[0].response()).status()).toBe(204);

  // The cookie is out of scripts' reach, and the page stored nothing.
  const cookie = await sessionCookie(context);
  expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
  expect(cookie.value).not.toContain(ADMIN_TOKEN);
  const kept = await page.evaluate(() => [
    location.href, document.cookie, JSON.stringify({ ...localStorage }), JSON.stringify({ ...sessionStorage }),
    document.documentElement.outerHTML,
  ]);
  for (const place of kept) expect(place).not.toContain(ADMIN_TOKEN);
  expect(kept[1]).toBe('');
});

test('the form refuses a wrong token, then signs in with the right one', async ({ page, baseURL }) => {
  // A link with a wrong token: the form, with the reason; the address is clean.
  await page.goto('/#token=not-a-real-token');
  const form = page.getByTestId('sign-in-form');
  await expect(form).toBeVisible();
  await expect(page.getByTestId('sign-in-error')).toContainText('unknown or revoked');
  expect(page.url()).toBe(`${baseURL}/`);
  await expect(page.getByTestId('run-list')).toBeHidden();
  await expect(page.getByTestId('whoami')).toBeHidden();
  await expectConnection(page, 'signed-out');

  await page.getByLabel('Access token').fill('ast_0000000000000000000000000000000000000000000000000000000000000000');
  await page.getByTestId('sign-in-button').click();
  await expect(page.getByTestId('sign-in-error')).toContainText('That token is unknown or revoked');
  await expect(form).toBeVisible();

  await page.getByTestId('token-input').fill(ADMIN_TOKEN);
  await page.getByTestId('token-input').press('Enter');
  await expect(page.getByTestId('whoami')).toHaveText('admin');
  await expect(form).toBeHidden();
  await expect(page.getByTestId('run-list')).toBeVisible();
  await expectConnection(page, 'connected');
  // No copy of the token is left in the page.
  await expect(page.getByTestId('token-input')).toHaveValue('');
});

test('signing out ends the session, and the page stops its WebSocket', async ({ page, context, baseURL }) => {
  // Count the sockets and API requests the page starts, and drive its clock.
  await page.addInitScript(() => {
    window.__sockets = 0;
    window.__apiCalls = 0;
    const NativeSocket = window.WebSocket;
    window.WebSocket = class extends NativeSocket {
      constructor(...args) {
        super(...args);
        window.__sockets += 1;
      }
    };
    const nativeFetch = window.fetch;
    window.fetch = (...args) => {
      window.__apiCalls += 1;
      return nativeFetch(...args);
    };
  });
  await page.clock.install();
  await page.goto(`/#token=${ADMIN_TOKEN}`);
  await expect(page.getByTestId('whoami')).toHaveText('admin');
  await expectConnection(page, 'connected');
  const cookie = await sessionCookie(context);
  expect(cookie).toBeTruthy();

  await page.getByTestId('sign-out-button').click();
  await expect(page.getByTestId('sign-in-form')).toBeVisible();
  await expect(page.getByTestId('whoami')).toBeHidden();
  await expect(page.getByTestId('sign-out-button')).toBeHidden();
  await expect(page.getByTestId('run-list')).toBeHidden();
  await expectConnection(page, 'signed-out');
  await expect(page.getByRole('status').filter({ hasText: 'You are signed out.' })).toBeVisible();

  // The API now refuses the page, and the old cookie is dead on the server,
  // not only forgotten by the browser.
  expect(await page.evaluate(async () => (await fetch('/api/me')).status)).toBe(401);
  expect(await sessionCookie(context)).toBeUndefined();
  const stale = await fetch(`${baseURL}/api/me`, { headers: { Cookie: `agent_server_session=${cookie.value}` } });
  expect(stale.status).toBe(401);

  // A minute of the page's time passes: no reconnect, no polling.
  const before = await page.evaluate(() => ({ sockets: window.__sockets, calls: window.__apiCalls }));
  await page.clock.runFor(60_000);
  const after = await page.evaluate(() => ({ sockets: window.__sockets, calls: window.__apiCalls }));
  expect(after).toEqual(before);
  await expectConnection(page, 'signed-out');
});

test('a session that ends under an open page brings the form back and keeps the run', async ({ page, context, mock, baseURL }) => {
  const tag = token('ended');
  const name = token('short-lived');
  const secret = await rest.createToken(baseURL, name, ['viewer']);
  await mock.setFixtures([{ match: { task_contains: tag }, reply: { text: `done ${tag}` } }]);
  const first = await rest.createRun(baseURL, `first ${tag}`);
  const second = await rest.createRun(baseURL, `second ${tag}`);

  await page.goto(`/#token=${secret}`);
  await expect(page.getByTestId('whoami')).toHaveText(name);
  await expect(page.getByTestId('whoami')).toHaveAttribute('title', /roles: viewer/);
  await page.goto(`/#/runs/${first.id}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');

  // The token is revoked; the session it opened is dead within a second.
  await rest.revokeToken(baseURL, name);
  const { value } = await sessionCookie(context);
  await expect.poll(async () => (await fetch(`${baseURL}/api/me`, { headers: { Cookie: `agent_server_session=${value}` } })).status).toBe(401);

  // The page's next request meets the 401: the form comes back, the URL
  // still names the run asked for.
  await page.locator(`[data-testid="run-item"][data-run-id="${second.id}"] a`).click();
  await expect(page.getByTestId('sign-in-form')).toBeVisible();
  await expect(page.getByTestId('sign-in-error')).toContainText('session has ended');
  await expect(page.getByTestId('whoami')).toBeHidden();
  await expectConnection(page, 'signed-out');
  await expect(page).toHaveURL(new RegExp(`#/runs/${second.id}$`));

  // Signing in again lands on that run.
  await page.getByTestId('token-input').fill(ADMIN_TOKEN);
  await page.getByTestId('sign-in-button').click();
  await expect(page.getByTestId('whoami')).toHaveText('admin');
  await expect(page.getByTestId('run-task')).toHaveText(`second ${tag}`);
  await expect(page.getByTestId('run-status')).toHaveText('completed');
  await expectConnection(page, 'connected');
  // Admin again: the form is offered.
  await expect(page.getByTestId('run-form')).toBeVisible();
  expect((await send(baseURL, 'GET', '/api/me', undefined, secret)).status).toBe(401);
});
