// waterfall.js: the run's model calls, tool runs, delegations and waits
// (for humans, and while paused) as bars on one time axis, delegated agents
// nested under their `delegate` call: `callSpans` finds the spans in a
// journal (pure, tested in the page), `renderWaterfall` draws them.

import { h, replaceChildren, classSafe } from './dom.js';
import { millis, duration, axisTicks } from './format.js';
import { TERMINAL_STATUSES } from './store.js';

/** Draws the waterfall of `events` into `container`: an axis with round
 * ticks, then one row per span of `callSpans`, each a button that calls
 * `onReveal(seq)` with the journal entry the span starts at. `status` is
 * the run's: open spans of a live run run up to now. */
export function renderWaterfall(container, events, status, onReveal) {
  const spans = callSpans(events);
  if (spans.length === 0) {
    replaceChildren(container, h('p', { class: 'muted' }, 'No calls yet.'));
    return;
  }
  const start = millis(events[0].at);
  const finished = TERMINAL_STATUSES.has(status);
  const end = Math.max(
    finished ? millis(events[events.length - 1].at) : Date.now(),
    ...spans.map((s) => s.end ?? 0),
    start + 1,
  );
  const width = end - start;
  const place = (at) => Math.min(((at - start) / width) * 100, 100);
  const axis = h('div', { class: 'wf-axis', 'data-testid': 'wf-axis', 'aria-hidden': 'true' },
    h('span', {}),
    h('span', { class: 'wf-ticks' }, axisTicks(width).map(({ at, label }) => {
      const tick = h('span', { class: 'wf-tick', 'data-testid': 'wf-tick', 'data-ms': at }, label);
      tick.style.left = `${place(start + at)}%`;
      return tick;
    })),
    h('span', {}));
  const rows = spans.map((span) => {
    const stop = span.end ?? (finished ? end : Date.now());
    const left = Math.min(place(span.start), 99.4);
    const size = Math.max(((stop - span.start) / width) * 100, 0.6);
    const took = duration(stop - span.start) || '0 ms';
    const bar = h('span', { class: `bar bar-${span.kind}${span.end === null ? ' open' : ''}${span.failed ? ' failed' : ''}` });
    bar.style.left = `${left}%`;
    bar.style.width = `${Math.min(size, 100 - left)}%`;
    const label = h('span', { class: 'wf-label' }, span.label);
    label.style.paddingLeft = `${span.depth * 1.1}rem`;
    const row = h('li', {
      class: `wf-row agent-${classSafe(span.agent)}${span.depth ? ' nested' : ''}`,
      'data-testid': 'wf-row',
      'data-kind': span.kind,
      'data-agent': span.agent,
      'data-depth': span.depth,
      'data-seq': span.seq,
      'data-ms': Math.round(stop - span.start),
    },
    h('button', {
      type: 'button',
      class: 'wf-link',
      title: `${span.label}: ${span.end === null ? 'running for ' : ''}${took}; show it in the timeline (#${span.seq})`,
      onclick: () => onReveal(span.seq),
    },
    label,
    h('span', { class: 'wf-track' }, bar),
    h('span', { class: 'wf-took' }, span.end === null ? `${took}…` : took)));
    return row;
  });
  replaceChildren(container, axis, h('ol', { class: 'wf', 'aria-label': 'Durations of model and tool calls; each leads to its timeline entry' }, rows));
}

/**
 * Model calls (LLM_CALLED → AGENT_THOUGHT), tool runs (TOOL_STARTED →
 * TOOL_RESULT), delegations (the `delegate` call's TOOL_CALLED → its
 * TOOL_RESULT: the delegated agent's whole work) and waits for humans
 * (RUN_SUSPENDED → RUN_RESUMED, BUDGET_EXCEEDED → BUDGET_RAISED or
 * RUN_RESUMED) and pauses (RUN_PAUSED → RUN_UNPAUSED), in the order they
 * began, each child after its parent; `end` is null while one is still
 * open. `depth` counts the delegations a span runs under: while a
 * `delegate` call is open, its agent is waiting, so everything that starts
 * then is the delegated agent's work. `seq` is the
 * journal entry the span starts at.
 */
export function callSpans(events) {
  const spans = [];
  const openModel = new Map();
  const openTool = new Map();
  const openWait = new Map();
  /** Open delegations, innermost last. */
  const delegations = [];
  const close = (span, at, failed = false) => {
    span.end = at;
    span.failed = failed;
  };
  const begin = (span) => {
    span.depth = delegations.length;
    spans.push(span);
    return span;
  };
  for (const event of events) {
    const p = event.payload || {};
    const at = millis(event.at);
    const agent = event.agent ?? p.agent ?? 'run';
    const seq = event.seq;
    switch (event.type) {
      case 'LLM_CALLED': {
        // A retry closes the attempt before it, which did not answer.
        const previous = openModel.get(agent);
        if (previous) close(previous, at, true);
        const span = begin({ kind: 'model', agent, label: `${agent} · ${p.model}${p.attempt > 1 ? ` #${p.attempt}` : ''}`, start: at, end: null, seq });
        openModel.set(agent, span);
        break;
      }
      case 'AGENT_THOUGHT': {
        const span = openModel.get(agent);
        if (span) close(span, at);
        openModel.delete(agent);
        break;
      }
      case 'TOOL_CALLED': {
        if (p.tool !== 'delegate' || openTool.has(p.call_id)) break;
        const to = typeof p.args?.agent === 'string' ? p.args.agent : 'an agent';
        const span = begin({ kind: 'delegate', agent, label: `${agent} · delegate → ${to}`, start: at, end: null, seq });
        openTool.set(p.call_id, span);
        delegations.push(span);
        break;
      }
      case 'TOOL_STARTED': {
        // A delegation's bar began with its call.
        if (openTool.has(p.call_id)) break;
        const span = begin({ kind: 'tool', agent, label: `${agent} · ${p.tool}`, start: at, end: null, seq });
        openTool.set(p.call_id, span);
        break;
      }
      case 'TOOL_RESULT':
      case 'TOOL_INTERRUPTED': {
        const span = openTool.get(p.call_id);
        if (span) close(span, at, event.type === 'TOOL_INTERRUPTED' || p.ok === false);
        openTool.delete(p.call_id);
        const index = delegations.indexOf(span);
        if (index >= 0) delegations.splice(index, 1);
        break;
      }
      case 'RUN_SUSPENDED':
      case 'BUDGET_EXCEEDED': {
        const what = event.type === 'BUDGET_EXCEEDED' ? 'a budget raise' : `approval of ${p.tool}`;
        const span = begin({ kind: 'wait', agent, label: `${agent} · ${what}`, start: at, end: null, seq });
        openWait.set(p.approval_id, span);
        break;
      }
      case 'RUN_RESUMED':
      case 'BUDGET_RAISED': {
        const span = openWait.get(p.approval_id);
        if (span) close(span, at, event.type === 'RUN_RESUMED' && p.decision !== 'approved');
        openWait.delete(p.approval_id);
        break;
      }
      case 'RUN_PAUSED': {
        const span = begin({ kind: 'wait', agent: 'run', label: 'run · paused', start: at, end: null, seq });
        openWait.set('paused', span);
        break;
      }
      case 'RUN_UNPAUSED': {
        const span = openWait.get('paused');
        if (span) close(span, at);
        openWait.delete('paused');
        break;
      }
      case 'RUN_COMPLETED':
      case 'RUN_FAILED':
      case 'RUN_CANCELLED':
        for (const open of [...openModel.values(), ...openTool.values(), ...openWait.values()]) close(open, at, true);
        openModel.clear();
        openTool.clear();
        openWait.clear();
        delegations.length = 0;
        break;
      default:
        break;
    }
  }
  return spans;
}
