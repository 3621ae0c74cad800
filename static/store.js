// store.js: what the dashboard knows about runs, kept apart from the DOM.
//
// Two sources describe a run: summaries (`GET /api/runs`, WebSocket `run`
// frames) and the journal (`GET .../events`, WebSocket `event` frames). They
// arrive in any order and twice after a reconnect, so:
// - a summary replaces the one we hold only if it is at least as recent
//   (`last_seq`, then `updated_at`);
// - each run's journal applies events strictly in seq order, each exactly
//   once: seq <= last_seq is ignored, a seq past a gap waits until the gap
//   is filled;
// - what the views show is the freshest summary with the journal events it
//   has not seen yet folded on top (`effectiveRun`), so a decision seen as an
//   event hides the approval card even before the new summary arrives (the
//   same for a pause, a budget reached or raised, and the tokens and cost a
//   model answer adds to the budget).
//
// A run's forks are named only by `GET /api/runs/{id}`; they are kept
// apart (`forksOf`), since lists and WebSocket frames carry none.
//
// The instance driving a run (`owner`, contract section 10) comes only from
// summaries; a journal event folded on top can only take it away: a run
// that parks for a human or ends has no driver.

export const STATUSES = ['pending', 'running', 'waiting_approval', 'paused', 'completed', 'failed', 'cancelled'];
export const TERMINAL_STATUSES = new Set(['completed', 'failed', 'cancelled']);
export const TERMINAL_EVENTS = new Set(['RUN_COMPLETED', 'RUN_FAILED', 'RUN_CANCELLED']);
/** Statuses in which a run waits for a human and no instance drives it
 * (contract section 10: parked runs have no actor anywhere). */
export const PARKED_STATUSES = new Set(['waiting_approval', 'paused']);

/**
 * Who drives `run` now: `{state, owner}`, where `state` is
 * - `driven`: `owner` is the id of the instance holding its lease;
 * - `parked`: it waits for a human, and no instance drives it;
 * - `finished`: it is over, and no instance drives it;
 * - `unclaimed`: it is active but no live instance holds it yet (just
 *   woken by a decision, or its instance stopped or died and another is
 *   about to take it over).
 */
export function driverOf(run) {
  const owner = typeof run?.owner === 'string' && run.owner !== '' ? run.owner : null;
  if (TERMINAL_STATUSES.has(run?.status)) return { state: 'finished', owner: null };
  if (owner) return { state: 'driven', owner };
  if (PARKED_STATUSES.has(run?.status)) return { state: 'parked', owner: null };
  return { state: 'unclaimed', owner: null };
}

/** One run's journal as this tab has it. */
export class Journal {
  constructor() {
    /** Applied events, seq 1..lastSeq in order. */
    this.events = [];
    /** The highest seq applied; events 1..lastSeq are all here. */
    this.lastSeq = 0;
    /** Events that arrived past a gap, by seq, until the gap is filled. */
    this.waiting = new Map();
    /** Model text streamed so far per agent, for the model call in flight. */
    this.streaming = new Map();
    /** Agents with a model call in flight (LLM_CALLED without its answer). */
    this.inCall = new Set();
  }

  /** Offers one event; returns those now applied, in seq order (possibly
   * none, possibly several when it filled a gap). */
  offer(event) {
    if (!event || !Number.isInteger(event.seq) || event.seq <= this.lastSeq) return [];
    if (this.waiting.has(event.seq)) return [];
    this.waiting.set(event.seq, event);
    const applied = [];
    while (this.waiting.has(this.lastSeq + 1)) {
      const next = this.waiting.get(this.lastSeq + 1);
      this.waiting.delete(next.seq);
      this.events.push(next);
      this.lastSeq = next.seq;
      this.track(next);
      applied.push(next);
    }
    return applied;
  }

  /** Whether events wait behind a gap that only a fetch can fill. */
  hasGap() {
    return this.waiting.size > 0;
  }

  /** Streamed model text for `agent`; shown only while its call is open. */
  addDelta(agent, text) {
    if (typeof agent !== 'string' || typeof text !== 'string') return;
    this.streaming.set(agent, (this.streaming.get(agent) || '') + text);
  }

  /** `[agent, text]` pairs to show as "writing…". */
  liveText() {
    return [...this.streaming].filter(([agent, text]) => text && this.inCall.has(agent));
  }

  /** Drops streamed text the server's own clock has overtaken: after a
   * reconnect, text from before it can never be completed. */
  forgetStreaming() {
    this.streaming.clear();
  }

  track(event) {
    const agent = event.agent ?? event.payload?.agent;
    if (event.type === 'LLM_CALLED') {
      // A new call (or a retry) starts with no text; deltas follow the
      // LLM_CALLED commit, since it is written before the request leaves.
      this.inCall.add(agent);
      this.streaming.delete(agent);
    } else if (event.type === 'AGENT_THOUGHT') {
      this.inCall.delete(agent);
      this.streaming.delete(agent);
    } else if (TERMINAL_EVENTS.has(event.type)) {
      this.inCall.clear();
      this.streaming.clear();
    }
  }
}

/** Whether summary `a` is older than summary `b`. */
function olderThan(a, b) {
  if (a.last_seq !== b.last_seq) return (a.last_seq ?? 0) < (b.last_seq ?? 0);
  return Date.parse(a.updated_at) < Date.parse(b.updated_at);
}

/** A summary from a journal alone, for a run whose summary we never got. */
function summaryFromJournal(id, events) {
  const first = events[0];
  if (!first || first.type !== 'RUN_STARTED') return null;
  return {
    id,
    status: 'pending',
    agent: first.payload?.agent ?? first.agent,
    task: first.payload?.task ?? '',
    created_at: first.at,
    updated_at: first.at,
    pending_approval: null,
    usage: {},
    result: null,
    error: null,
    owner: null,
    last_seq: 0,
  };
}

/** Folds journal events onto a copy of a summary (contract section 4). */
export function overlay(summary, events) {
  if (!events.length) return summary;
  const run = { ...summary, usage: { ...(summary.usage || {}) } };
  for (const event of events) {
    const payload = event.payload || {};
    switch (event.type) {
      case 'RUN_STARTED':
        if (run.status === 'pending') run.status = 'running';
        break;
      case 'RUN_SUSPENDED':
        run.status = 'waiting_approval';
        run.owner = null;
        run.pending_approval = {
          approval_id: payload.approval_id,
          call_id: payload.call_id,
          agent: event.agent,
          tool: payload.tool,
          args: payload.args,
          args_sha256: payload.args_sha256 ?? null,
          kind: 'tool',
          requested_at: event.at,
          expires_at: payload.expires_at,
        };
        break;
      case 'BUDGET_EXCEEDED':
        run.status = 'waiting_approval';
        run.owner = null;
        run.pending_approval = {
          approval_id: payload.approval_id,
          kind: 'budget',
          call_id: '',
          agent: event.agent,
          tool: 'budget',
          args: {
            used_tokens: payload.used_tokens,
            max_tokens: payload.max_tokens,
            used_cost_usd: payload.used_cost_usd,
            max_cost_usd: payload.max_cost_usd,
          },
          args_sha256: null,
          requested_at: event.at,
          expires_at: payload.expires_at,
        };
        break;
      case 'RUN_RESUMED':
      case 'BUDGET_RAISED':
        if (run.pending_approval && run.pending_approval.approval_id === payload.approval_id) {
          run.pending_approval = null;
        }
        if (run.status === 'waiting_approval' && !run.pending_approval) run.status = 'running';
        if (event.type === 'BUDGET_RAISED' && run.budget) {
          run.budget = { ...run.budget, max_tokens: payload.max_tokens ?? null, max_cost_usd: payload.max_cost_usd ?? null };
        }
        break;
      case 'RUN_PAUSED':
        run.status = 'paused';
        break;
      case 'RUN_UNPAUSED':
        if (run.status === 'paused') run.status = run.pending_approval ? 'waiting_approval' : 'running';
        break;
      case 'AGENT_THOUGHT': {
        const agent = event.agent ?? payload.agent;
        const used = payload.usage || {};
        const sum = run.usage[agent] || { input_tokens: 0, output_tokens: 0 };
        run.usage[agent] = {
          input_tokens: sum.input_tokens + (used.input_tokens || 0),
          output_tokens: sum.output_tokens + (used.output_tokens || 0),
        };
        const cost = Number(payload.cost_usd) || 0;
        if (typeof run.cost_usd === 'number') run.cost_usd += cost;
        if (run.budget) {
          run.budget = {
            ...run.budget,
            used_tokens: (run.budget.used_tokens || 0) + (used.input_tokens || 0) + (used.output_tokens || 0),
            used_cost_usd: (run.budget.used_cost_usd || 0) + cost,
          };
        }
        break;
      }
      case 'RUN_COMPLETED':
        Object.assign(run, { status: 'completed', result: payload.result ?? null, pending_approval: null, owner: null });
        break;
      case 'RUN_FAILED':
        Object.assign(run, { status: 'failed', error: payload.error ?? null, pending_approval: null, owner: null });
        break;
      case 'RUN_CANCELLED':
        Object.assign(run, { status: 'cancelled', pending_approval: null, owner: null });
        break;
      default:
        break;
    }
    run.last_seq = event.seq;
    if (Date.parse(event.at) > Date.parse(run.updated_at)) run.updated_at = event.at;
  }
  return run;
}

/** Every run this tab knows of, and the journals of those it has opened. */
export class Store {
  constructor() {
    this.summaries = new Map();
    this.journals = new Map();
    /** The forks of each run, `[{run_id, seq}]`: only `GET /api/runs/{id}`
     * names them, so they are kept apart from summaries, which lists and
     * WebSocket frames replace without them. Forks are never undone. */
    this.forks = new Map();
  }

  /** Keeps `run` unless a more recent summary is held; true if kept. */
  putSummary(run) {
    if (!run || typeof run.id !== 'string') return false;
    if (Array.isArray(run.forks)) for (const fork of run.forks) this.addFork(run.id, fork);
    const held = this.summaries.get(run.id);
    if (held && olderThan(run, held)) return false;
    this.summaries.set(run.id, run);
    return true;
  }

  /** Notes that `fork.run_id` was forked from run `id` at `fork.seq`. */
  addFork(id, fork) {
    if (!fork || typeof fork.run_id !== 'string') return;
    const forks = this.forks.get(id) ?? [];
    if (forks.some((known) => known.run_id === fork.run_id)) return;
    forks.push({ run_id: fork.run_id, seq: fork.seq });
    forks.sort((a, b) => a.seq - b.seq);
    this.forks.set(id, forks);
  }

  /** The forks of run `id` known so far, by the seq they were taken at. */
  forksOf(id) {
    return this.forks.get(id) ?? [];
  }

  journal(id) {
    let journal = this.journals.get(id);
    if (!journal) {
      journal = new Journal();
      this.journals.set(id, journal);
    }
    return journal;
  }

  /** The run as best known: summary plus newer journal events. */
  effectiveRun(id) {
    const journal = this.journals.get(id);
    const events = journal ? journal.events : [];
    const summary = this.summaries.get(id) || summaryFromJournal(id, events);
    if (!summary) return null;
    const newer = [];
    for (let i = events.length - 1; i >= 0 && events[i].seq > (summary.last_seq ?? 0); i--) {
      newer.unshift(events[i]);
    }
    return overlay(summary, newer);
  }

  /** Runs to list, newest first: all, or those `matches(run, filters)`
   * (a status alone may be given as a string). */
  listed(filters = {}) {
    const wanted = typeof filters === 'string' ? { status: filters } : filters;
    const runs = [];
    for (const id of this.summaries.keys()) {
      const run = this.effectiveRun(id);
      if (run && matches(run, wanted)) runs.push(run);
    }
    runs.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || (a.id < b.id ? 1 : -1));
    return runs;
  }
}

/** Whether `run` passes the list's filters (`status`, `agent` and
 * `created_by` exactly, `q` anywhere in the task, ignoring case), as the
 * server filters `GET /api/runs`: runs that reach the page by a WebSocket
 * summary or an older page are filtered here the same way. */
export function matches(run, { status, q, agent, created_by: createdBy } = {}) {
  if (status && run.status !== status) return false;
  if (agent && run.agent !== agent) return false;
  if (createdBy && run.created_by !== createdBy) return false;
  if (q && !String(run.task ?? '').toLowerCase().includes(q.toLowerCase())) return false;
  return true;
}

// ----- what the journal says about time and attempts ---------------------

/** Milliseconds since the epoch of an RFC 3339 time, or NaN. */
const ms = (at) => (typeof at === 'string' ? Date.parse(at) : NaN);

/**
 * The run's clock: `total` ms from its creation to its end (the terminal
 * event, or the summary's last update), or to `now` while it lives; and
 * `waiting` ms spent waiting for humans: each `RUN_SUSPENDED` to the
 * `RUN_RESUMED` of its approval, each `BUDGET_EXCEEDED` to the
 * `BUDGET_RAISED` or `RUN_RESUMED` of its approval, a wait still open
 * counting to `now` (or to the end, for a run ended while waiting);
 * `waitingNow` says whether one is open.
 */
export function runTimes(run, events, now = Date.now()) {
  const created = ms(run?.created_at) || ms(events[0]?.at);
  const terminal = events.find((e) => TERMINAL_EVENTS.has(e.type));
  let end = now;
  if (terminal) end = ms(terminal.at);
  else if (TERMINAL_STATUSES.has(run?.status)) end = ms(run.updated_at);
  const open = new Map();
  let waiting = 0;
  for (const event of events) {
    const id = event.payload?.approval_id;
    const at = ms(event.at);
    switch (event.type) {
      case 'RUN_SUSPENDED':
      case 'BUDGET_EXCEEDED':
        if (!open.has(id)) open.set(id, at);
        break;
      case 'RUN_RESUMED':
      case 'BUDGET_RAISED':
        if (open.has(id)) {
          waiting += Math.max(0, at - open.get(id));
          open.delete(id);
        }
        break;
      default:
        break;
    }
    if (TERMINAL_EVENTS.has(event.type)) break;
  }
  for (const since of open.values()) waiting += Math.max(0, end - since);
  return { total: Math.max(0, end - created), waiting, waitingNow: open.size > 0 && !terminal };
}

/** The run's tokens, all agents together: `{input, output, total}`. */
export function runTokens(run) {
  let input = 0;
  let output = 0;
  for (const used of Object.values(run?.usage || {})) {
    input += Number(used?.input_tokens) || 0;
    output += Number(used?.output_tokens) || 0;
  }
  return { input, output, total: input + output };
}

/** What the run cost in USD, when the server says (`budget.used_cost_usd`,
 * or a top-level `cost_usd`); null when it does not. */
export function runCost(run) {
  for (const value of [run?.budget?.used_cost_usd, run?.cost_usd]) {
    if (typeof value === 'number' && Number.isFinite(value)) return value;
  }
  return null;
}

/**
 * Why the `LLM_CALLED` at `events[index]` is a retry, or null when it is a
 * first attempt: `{attempt, previous, failure}`, where `previous` is the
 * `LLM_CALLED` of the attempt before (when this journal holds it) and
 * `failure` the error an entry between the two reports, or null. The
 * journal records no failed model request (contract section 4), so a null
 * `failure` means only that the previous attempt got no answer: the server
 * restarted or another instance took over, or the request failed.
 */
export function retryOf(events, index) {
  const event = events[index];
  const attempt = Number(event?.payload?.attempt);
  if (event?.type !== 'LLM_CALLED' || !(attempt > 1)) return null;
  const agent = event.agent ?? event.payload?.agent;
  let failure = null;
  for (let i = index - 1; i >= 0; i--) {
    const before = events[i];
    const error = before.payload?.error;
    if (!failure && error && typeof error === 'object' && (before.agent ?? before.payload?.agent) === agent) failure = error;
    if (before.type === 'LLM_CALLED' && (before.agent ?? before.payload?.agent) === agent) {
      return { attempt, previous: before, failure };
    }
    if (before.type === 'AGENT_THOUGHT') break;
  }
  return { attempt, previous: null, failure };
}
