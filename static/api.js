// api.js: the REST half of the dashboard's link to the server (contract
// section 3). Every failure becomes an ApiError carrying the server's error
// code, so the views can say "already decided" rather than "HTTP 409".

/** A failed request: `status` is 0 when the server could not be reached. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function request(method, path, body) {
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
  /** `{runs, next_before}`, newest first. */
  listRuns({ status, limit = 50, before } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (status) query.set('status', status);
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
  createRun({ task, agent, idempotencyKey }) {
    return request('POST', '/api/runs', { task, agent, idempotency_key: idempotencyKey });
  },
  resume(id, { approvalId, decision, feedback }) {
    const body = { approval_id: approvalId, decision };
    if (feedback) body.feedback = feedback;
    return request('POST', `${runPath(id)}/resume`, body);
  },
  cancel(id) {
    return request('POST', `${runPath(id)}/cancel`, { reason: 'cancelled from the dashboard' });
  },
};
