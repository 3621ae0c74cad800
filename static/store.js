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
//   event hides the approval card even before the new summary arrives.
//
// The instance driving a run (`owner`, contract section 10) comes only from
// summaries; a journal event folded on top can only take it away: a run
// that parks for a human or ends has no driver.

export const STATUSES = ['pending', 'running', 'waiting_approval', 'completed', 'failed', 'cancelled'];
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
      case 'RUN_RESUMED':
        if (run.pending_approval && run.pending_approval.approval_id === payload.approval_id) {
          run.pending_approval = null;
        }
        if (run.status === 'waiting_approval' && !run.pending_approval) run.status = 'running';
        break;
      case 'AGENT_THOUGHT': {
        const agent = event.agent ?? payload.agent;
        const used = payload.usage || {};
        const sum = run.usage[agent] || { input_tokens: 0, output_tokens: 0 };
        run.usage[agent] = {
          input_tokens: sum.input_tokens + (used.input_tokens || 0),
          output_tokens: sum.output_tokens + (used.output_tokens || 0),
        };
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
  }

  /** Keeps `run` unless a more recent summary is held; true if kept. */
  putSummary(run) {
    if (!run || typeof run.id !== 'string') return false;
    const held = this.summaries.get(run.id);
    if (held && olderThan(run, held)) return false;
    this.summaries.set(run.id, run);
    return true;
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

  /** Runs to list: newest first, optionally one status only. */
  listed(status) {
    const runs = [];
    for (const id of this.summaries.keys()) {
      const run = this.effectiveRun(id);
      if (run && (!status || run.status === status)) runs.push(run);
    }
    runs.sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at) || (a.id < b.id ? 1 : -1));
    return runs;
  }
}
