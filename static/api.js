// api.js: the REST half of the dashboard's link to the server (contract
// sections 3 and 9). Every failure becomes an ApiError carrying the server's
// error code, so the views can say "already decided" rather than "HTTP 409".
//
// The page is signed in by the session cookie (`HttpOnly`, set by
// `POST /api/session`), which the browser sends by itself: no request here
// carries a token, and the page never stores one. A 401 from any call but
// the sign-in itself means the session is over; `onUnauthorized` hears it.

/** A failed request: `status` is 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called on a 401 outside sign-in: the session ended (signed out
 * elsewhere, expired, or its token revoked). */
let unauthorized = () => {};

/** Sets what happens when a call answers 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

async function request(method, path, body, { aboutSession = false } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, 'unreachable', 'The server cannot be reached.');
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    // A proxy's HTML error page, or an empty body: fall through with null.
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    if (response.status === 401 && !aboutSession) unauthorized();
    throw new ApiError(
      response.status,
      typeof error.code === 'string' ? error.code : 'http_' + response.status,
      typeof error.message === 'string' ? error.message : `The server answered ${response.status}.`,
    );
  }
  return data;
}

/** A fresh idempotency key. `crypto.randomUUID` exists only on secure
 * origins, so plain-HTTP LAN addresses get one made from random bytes. */
export function newKey() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const runPath = (id) => `/api/runs/${encodeURIComponent(id)}`;

export const api = {
  /** `{name, roles}` of the session's token. */
  me() {
    return request('GET', '/api/me');
  },
  /** Trades a token for the session cookie; 401 for a bad token. */
  signIn(token) {
    return request('POST', '/api/session', { token }, { aboutSession: true });
  },
  /** Ends the session and clears the cookie. */
  signOut() {
    return request('DELETE', '/api/session', undefined, { aboutSession: true });
  },
  /** `{runs, next_before}`, newest first; `status`, `q` (in the task,
   * ignoring case), `agent` and `created_by` filter when given, and only
   * then are they sent. */
  listRuns({ status, q, agent, created_by: createdBy, limit = 50, before } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (status) query.set('status', status);
    if (q) query.set('q', q);
    if (agent) query.set('agent', agent);
    if (createdBy) query.set('created_by', createdBy);
    if (before) query.set('before', before);
    return request('GET', `/api/runs?${query}`);
  },
  getRun(id) {
    return request('GET', runPath(id));
  },
  /** Every event with seq > after, following the 1000-per-page limit. */
  async eventsAfter(id, after) {
    const all = [];
    for (;;) {
      const page = await request('GET', `${runPath(id)}/events?after=${after}&limit=1000`);
      const events = Array.isArray(page.events) ? page.events : [];
      all.push(...events);
      if (events.length < 1000) return all;
      after = events[events.length - 1].seq;
    }
  },
  /** `budget`, when given, is `{max_tokens?, max_cost_usd?}` (contract
   * section 11); it is sent only when it holds a limit. */
  createRun({ task, agent, idempotencyKey, budget }) {
    const body = { task, agent, idempotency_key: idempotencyKey };
    if (budget && Object.keys(budget).length) body.budget = budget;
    return request('POST', '/api/runs', body);
  },
  /** A decision on the approval shown: `argsSha256` names the arguments
   * the human saw; `args`, when given, are the edited ones to run instead;
   * `addTokens` and `addCostUsd` raise a budget (an approval of kind
   * `budget`). */
  resume(id, { approvalId, decision, feedback, argsSha256, args, addTokens, addCostUsd }) {
    const body = { approval_id: approvalId, decision, args_sha256: argsSha256 };
    if (feedback) body.feedback = feedback;
    if (args !== undefined) body.args = args;
    if (addTokens !== undefined) body.add_tokens = addTokens;
    if (addCostUsd !== undefined) body.add_cost_usd = addCostUsd;
    return request('POST', `${runPath(id)}/resume`, body);
  },
  /** Says `text` to the run's active agent (`OPERATOR_MESSAGE`); the run. */
  sendMessage(id, text) {
    return request('POST', `${runPath(id)}/messages`, { text });
  },
  /** Pauses the run, with the reason given or none; the run. */
  pause(id, reason) {
    return request('POST', `${runPath(id)}/pause`, reason ? { reason } : {});
  },
  /** Lets a paused run go on; the run. */
  unpause(id) {
    return request('POST', `${runPath(id)}/unpause`, {});
  },
  /** A new run from the entries 1..=`atSeq` of run `id`, told `message`
   * when one is given; the new run. */
  fork(id, atSeq, message) {
    const body = { at_seq: atSeq };
    if (message) body.message = message;
    return request('POST', `${runPath(id)}/fork`, body);
  },
  /** `{instances: [{id, started_at, heartbeat_at, runs}]}`: the live ones. */
  instances() {
    return request('GET', '/api/instances');
  },
  /** Cancels with the reason the human gave (kept in `RUN_CANCELLED`),
   * or none. */
  cancel(id, reason) {
    return request('POST', `${runPath(id)}/cancel`, reason ? { reason } : {});
  },
};
