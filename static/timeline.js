// timeline.js: the run's journal as a timeline, one entry per event in seq
// order, grouped by agent: what each entry means in words (who decided,
// edited, cancelled, paused, sent a message or forked; retries and the
// marks restarts leave; the entries a fork copied from its source), a fork
// button on each entry that does not end the run, the text a model is
// streaming now, and `reveal`, which scrolls to an entry and highlights it.
//
// It only ever grows (events are applied once, in seq order), so it is
// appended to, never rebuilt: what a reader has expanded stays open.

import { h, setText, classSafe } from './dom.js';
import { markdown } from './markdown.js';
import { millis, duration, localTime, pretty, compact, count, usd } from './format.js';
import { TERMINAL_EVENTS, retryOf } from './store.js';

/** Tool output longer than this many lines starts folded. */
const FOLD_LINES = 12;

/** How long a timeline entry a waterfall bar led to stays highlighted. */
const HIGHLIGHT_MS = 4000;

/** The mark a restart leaves: the server restarted, or another instance
 * took the run over (contract sections 4 and 10). */
const RESTARTED = 'the server restarted, or another instance took the run over';

export class Timeline {
  /** `canFork`: whether to offer a fork button on entries (operators and
   * admins); `onFork(seq)` opens the fork dialog at that entry. */
  constructor({ canFork, onFork }) {
    this.canFork = !!canFork;
    this.onFork = onFork;
    this.node = h('ol', { class: 'timeline', 'data-testid': 'timeline', 'aria-label': 'Journal events' });
    this.streaming = h('div', { class: 'streaming-slot', 'aria-live': 'off' });
    this.journal = null;
    this.rendered = 0;
    this.group = null;
    this.groupAgent = undefined;
    /** When each agent's open model call was made. */
    this.openCalls = new Map();
    /** When each approval (or budget raise) was asked for, by approval id. */
    this.suspendedAt = new Map();
    /** When each `delegate` call was made, by call id. */
    this.delegatedAt = new Map();
    this.startedAt = NaN;
    this.highlighted = null;
    this.highlightTimer = null;
    /** The seq of the last entry that got a restart mark, so the
     * re-asked approval after a TOOL_INTERRUPTED gets none of its own. */
    this.markedSeq = -1;
  }

  /** Whether the entry of `seq` is shown. */
  has(seq) {
    return this.rendered > 0 && this.journal?.events[this.rendered - 1]?.seq >= seq;
  }

  /** Appends the entries of `journal` not shown yet. */
  append(journal) {
    if (!journal) return;
    this.journal = journal;
    const events = journal.events;
    while (this.rendered < events.length) {
      const event = events[this.rendered];
      this.rendered += 1;
      if (!Number.isFinite(this.startedAt)) this.startedAt = millis(event.at);
      const agent = event.agent ?? null;
      if (!this.group || agent !== this.groupAgent) {
        this.groupAgent = agent;
        this.group = h('ol', { class: 'events' });
        this.node.append(
          h('li', { class: `agent-group agent-${classSafe(agent ?? 'run')}` },
            h('p', { class: 'agent-name' }, agent ?? 'run'),
            this.group),
        );
      }
      this.group.append(this.eventItem(event, this.rendered - 1));
      if (event.type === 'RUN_COMPLETED') this.foldFinalAnswer(event.payload?.result);
      if (event.type === 'RUN_FORKED') this.markCopies(event.seq);
    }
  }

  /** The top agent's last answer is the run's result, shown above as such:
   * its text is folded here rather than shown twice. */
  foldFinalAnswer(result) {
    if (typeof result !== 'string' || result === '') return;
    const thoughts = this.node.querySelectorAll('[data-type="AGENT_THOUGHT"] pre.thought');
    const last = thoughts[thoughts.length - 1];
    if (!last || last.textContent !== result || last.closest('details')) return;
    const folded = h('details', { class: 'final-answer', 'data-testid': 'final-answer' },
      h('summary', {}, 'the final answer: the run\'s result, shown above'));
    last.replaceWith(folded);
    folded.append(last);
  }

  /** Every entry before `RUN_FORKED` is a copy of the source's: marked so,
   * since what they record happened in the source run. */
  markCopies(forkSeq) {
    for (const item of this.node.querySelectorAll('[data-testid="timeline-event"]')) {
      if (Number(item.dataset.seq) < forkSeq) {
        item.dataset.copied = 'true';
        item.title = 'Copied from the run this one was forked from';
      }
    }
  }

  eventItem(event, index) {
    const at = millis(event.at);
    const offset = at - this.startedAt;
    const { summary, detail, took, mark } = this.describe(event, at, index);
    return h('li', {
      class: `event type-${classSafe(String(event.type).toLowerCase().replaceAll('_', '-'))}`,
      'data-testid': 'timeline-event',
      'data-type': event.type,
      'data-seq': event.seq,
      tabindex: -1,
    },
    mark ? h('p', { class: 'restart-mark', 'data-testid': 'restart-mark', 'data-certain': String(mark.certain), role: 'note' }, mark.text) : null,
    h('div', { class: 'event-line' },
      h('span', { class: 'seq', title: 'seq' }, `#${event.seq}`),
      h('time', { datetime: event.at, title: localTime(event.at) }, Number.isFinite(offset) ? `+${duration(offset) || '0 ms'}` : ''),
      h('span', { class: 'type' }, event.type),
      h('span', { class: 'summary' }, summary),
      took ? h('span', { class: 'took', title: 'duration' }, took) : null,
      this.canFork && !TERMINAL_EVENTS.has(event.type)
        ? h('button', { type: 'button', class: 'fork-button secondary', 'data-testid': 'fork-button',
            title: `Fork the run here: a new run with entries 1 to ${event.seq} of this one, which goes on from there`,
            'aria-haspopup': 'dialog', onclick: () => this.onFork(event.seq) }, 'Fork')
        : null),
    detail);
  }

  /** One line and an optional detail for an event, from its payload;
   * `index` is its place in the journal. */
  describe(event, at, index) {
    const p = event.payload || {};
    const agent = event.agent ?? p.agent;
    switch (event.type) {
      case 'RUN_STARTED':
        return {
          summary: [`${p.agent} got the task`, p.created_by ? [' from ', h('span', { class: 'who', 'data-testid': 'created-by' }, p.created_by)] : null],
          detail: textBlock(p.task),
        };
      case 'AGENT_STARTED':
        return { summary: `${p.agent} was handed a task`, detail: textBlock(p.task) };
      case 'LLM_CALLED': {
        this.openCalls.set(agent, at);
        const retry = retryOf(this.journal.events, index);
        if (!retry) return { summary: `asked ${p.model}` };
        const before = retry.attempt - 1;
        if (forkedBetween(this.journal.events, retry.previous, index)) {
          return {
            summary: [
              `asked ${p.model} again `,
              h('span', { class: 'retry', 'data-testid': 'retry', title: `attempt ${retry.attempt}` }, `retry ${before}`),
              ' ',
              h('span', { class: 'retry-reason', 'data-testid': 'retry-reason' }, `the fork sends the call its source left unanswered`),
            ],
          };
        }
        const reason = retry.failure
          ? `after an error: ${[retry.failure.code, retry.failure.message].filter(Boolean).join(': ')}`
          : `attempt ${before} got no answer`;
        return {
          summary: [
            `asked ${p.model} again `,
            h('span', { class: 'retry', 'data-testid': 'retry', title: `attempt ${retry.attempt}` }, `retry ${before}`),
            ' ',
            h('span', { class: 'retry-reason', 'data-testid': 'retry-reason' }, reason),
          ],
          took: retry.previous ? `${duration(at - millis(retry.previous.at))} after attempt ${before}` : '',
          // Without a failure in the journal, the attempt before was cut off:
          // a restart, a takeover, or a request that failed (which the
          // journal does not record).
          mark: retry.failure ? null : this.markRestart(event, false),
        };
      }
      case 'AGENT_THOUGHT': {
        const started = this.openCalls.get(agent);
        this.openCalls.delete(agent);
        const calls = Array.isArray(p.tool_calls) ? p.tool_calls : [];
        const usage = p.usage || {};
        return {
          summary: `${p.model} answered${calls.length ? `, asking for ${calls.map((c) => c.tool).join(', ')}` : ''} (${count(usage.input_tokens)} in, ${count(usage.output_tokens)} out)`,
          took: started !== undefined ? duration(at - started) : '',
          detail: h('div', { class: 'detail' },
            p.text ? h('pre', { class: 'text thought' }, p.text) : null,
            calls.length
              ? h('ul', { class: 'calls-asked' }, calls.map((c) => h('li', {}, h('code', {}, c.tool), ' ', compact(c.args, 400))))
              : null),
        };
      }
      case 'TOOL_CALLED':
        if (p.tool === 'delegate') this.delegatedAt.set(p.call_id, at);
        return { summary: `${p.tool} ${compact(p.args)}${p.dangerous ? ' (needs approval)' : ''}` };
      case 'RUN_SUSPENDED':
        this.suspendedAt.set(p.approval_id, at);
        return {
          summary: `waiting for a human to approve ${p.tool}${p.interrupted ? ' again, after a restart' : ''}`,
          mark: p.interrupted === true && this.markedSeq !== event.seq - 1 ? this.markRestart(event, true) : null,
        };
      case 'OPERATOR_MESSAGE':
        return {
          summary: ['message from ', h('span', { class: 'who', 'data-testid': 'message-by' }, p.by ?? 'someone'), ' to the agent'],
          detail: h('blockquote', { class: 'detail operator-message', 'data-testid': 'operator-message-text' }, p.text ?? ''),
        };
      case 'RUN_PAUSED':
        return {
          summary: ['paused by ', h('span', { class: 'who', 'data-testid': 'paused-by' }, p.by ?? 'someone'), p.reason ? `: ${p.reason}` : ''],
        };
      case 'RUN_UNPAUSED':
        return { summary: ['unpaused by ', h('span', { class: 'who', 'data-testid': 'unpaused-by' }, p.by ?? 'someone')] };
      case 'RUN_FORKED': {
        const link = h('a', { href: runLink(p.from_run_id, p.from_seq), 'data-testid': 'forked-from-link' },
          `run ${shortId(p.from_run_id)} at #${p.from_seq}`);
        return {
          summary: ['forked by ', h('span', { class: 'who', 'data-testid': 'forked-by' }, p.by ?? 'someone'), ' from ', link,
            `; the entries above are copies of its entries 1 to ${p.from_seq}`],
        };
      }
      case 'BUDGET_EXCEEDED':
        this.suspendedAt.set(p.approval_id, at);
        return {
          summary: `over budget: ${budgetText(p)}; waiting for a human to raise it`,
        };
      case 'BUDGET_RAISED': {
        const asked = this.suspendedAt.get(p.approval_id);
        return {
          summary: ['budget raised by ', h('span', { class: 'who', 'data-testid': 'raised-by' }, p.by ?? 'someone'), ` to ${limitsText(p)}`],
          took: asked !== undefined ? duration(at - asked) : '',
        };
      }
      case 'RUN_RESUMED': {
        const asked = this.suspendedAt.get(p.approval_id);
        const by = h('span', { class: 'who', 'data-testid': 'decided-by' }, p.decided_by ?? 'someone');
        const edited = p.edited_args !== null && p.edited_args !== undefined;
        return {
          summary: p.decision === 'expired'
            ? ['expired: nobody decided in time (decided by ', by, ')']
            : [`${p.decision}${edited ? ' with edited arguments' : ''} by `, by],
          took: asked !== undefined ? duration(at - asked) : '',
          detail: [
            edited
              ? h('div', { class: 'detail edited', 'data-testid': 'edited-args' },
                h('p', { class: 'arg-name' }, 'The approver changed the arguments to'),
                h('pre', { class: 'text' }, pretty(p.edited_args)))
              : null,
            p.feedback ? h('blockquote', { class: 'feedback' }, p.feedback) : null,
          ],
        };
      }
      case 'TOOL_STARTED':
        return { summary: `${p.tool} started` };
      case 'TOOL_RESULT': {
        const exit = p.exit_code === null || p.exit_code === undefined ? '' : `, exit ${p.exit_code}`;
        return {
          summary: `${p.tool} ${p.ok ? 'succeeded' : 'failed'}${exit}`,
          // A delegation's own duration_ms is only its hand-over; the
          // delegated agent worked from the call on.
          took: this.delegatedAt.has(p.call_id)
            ? duration(at - this.delegatedAt.get(p.call_id))
            : Number.isFinite(p.duration_ms) ? duration(p.duration_ms) : '',
          detail: outputBlock(p.output),
        };
      }
      case 'TOOL_INTERRUPTED':
        return {
          summary: `${p.tool} was interrupted by a restart; it will not run again without a human`,
          mark: this.markRestart(event, true),
        };
      case 'AGENT_FINISHED':
        return {
          summary: `${p.agent} finished`,
          detail: typeof p.result === 'string' && p.result !== '' ? h('div', { class: 'detail' }, markdown(p.result)) : null,
        };
      case 'RUN_COMPLETED':
        return { summary: 'the run completed', took: duration(at - this.startedAt) };
      case 'RUN_FAILED':
        return { summary: `the run failed: ${p.error?.code ?? ''} ${p.error?.message ?? ''}`, took: duration(at - this.startedAt) };
      case 'RUN_CANCELLED':
        return {
          summary: ['cancelled by ', h('span', { class: 'who', 'data-testid': 'cancelled-by' }, p.by ?? 'someone'), p.reason ? `: ${p.reason}` : ''],
          took: duration(at - this.startedAt),
        };
      default:
        return { summary: '', detail: h('pre', { class: 'text' }, pretty(p)) };
    }
  }

  /** The mark of a restart before `event`: `certain` when the journal
   * says so (an interrupted tool, a re-asked approval), not when a model
   * call was merely sent again without an answer to the one before. */
  markRestart(event, certain) {
    this.markedSeq = event.seq;
    return certain
      ? { certain, text: `⟲ Restart: ${RESTARTED}.` }
      : { certain, text: `⟲ Restart? ${RESTARTED}, or the model request failed: the attempt before got no answer, and the journal does not record failed requests.` };
  }

  /** Scrolls to the timeline entry of `seq` and highlights it for a while
   * (a waterfall bar leads there). */
  reveal(seq) {
    const item = this.node.querySelector(`[data-testid="timeline-event"][data-seq="${Number(seq)}"]`);
    if (!item) return;
    if (this.highlighted && this.highlighted !== item) delete this.highlighted.dataset.highlighted;
    clearTimeout(this.highlightTimer);
    this.highlighted = item;
    item.dataset.highlighted = 'true';
    const smooth = !window.matchMedia('(prefers-reduced-motion: reduce)').matches;
    item.scrollIntoView({ block: 'center', behavior: smooth ? 'smooth' : 'auto' });
    item.focus({ preventScroll: true });
    this.highlightTimer = setTimeout(() => {
      if (this.highlighted === item) delete item.dataset.highlighted;
    }, HIGHLIGHT_MS);
  }

  renderStreaming(journal) {
    const live = journal ? journal.liveText() : [];
    if (live.length === 0) {
      if (this.streaming.firstChild) this.streaming.replaceChildren();
      return;
    }
    const blocks = new Map([...this.streaming.children].map((node) => [node.dataset.agent, node]));
    for (const [agent, text] of live) {
      let block = blocks.get(agent);
      if (!block) {
        block = h('div', { class: `streaming agent-${classSafe(agent)}`, 'data-testid': 'streaming-text', 'data-agent': agent },
          h('p', { class: 'agent-name' }, `${agent} is writing…`),
          h('pre', { class: 'text' }));
        this.streaming.append(block);
      }
      blocks.delete(agent);
      setText(block.querySelector('pre'), text);
    }
    for (const stale of blocks.values()) stale.remove();
  }
}

/** `#/runs/{id}`, or the entry `seq` of it: `#/runs/{id}/events/{seq}`. */
export function runLink(id, seq) {
  const run = `#/runs/${encodeURIComponent(String(id))}`;
  return Number.isInteger(seq) ? `${run}/events/${seq}` : run;
}

/** The first eight characters of a run id, enough to tell runs apart. */
export function shortId(id) {
  return String(id ?? '').slice(0, 8);
}

/** `used of max` for tokens and USD, as BUDGET_EXCEEDED reports them. */
function budgetText(p) {
  const tokens = `${count(p.used_tokens)} of ${p.max_tokens === null || p.max_tokens === undefined ? 'unlimited' : count(p.max_tokens)} tokens`;
  const cost = p.max_cost_usd === null || p.max_cost_usd === undefined ? '' : `, ${usd(p.used_cost_usd ?? 0)} of ${usd(p.max_cost_usd)}`;
  return tokens + cost;
}

/** The limits BUDGET_RAISED sets. */
function limitsText(p) {
  const parts = [];
  if (p.max_tokens !== null && p.max_tokens !== undefined) parts.push(`${count(p.max_tokens)} tokens`);
  if (p.max_cost_usd !== null && p.max_cost_usd !== undefined) parts.push(usd(p.max_cost_usd));
  return parts.join(' and ') || 'no limit';
}

/** Whether the journal holds a RUN_FORKED between the attempt `previous`
 * and the model call at `index`: the fork sent again a call the source
 * had not had answered when it was forked. */
function forkedBetween(events, previous, index) {
  for (let i = index - 1; i >= 0 && events[i] !== previous; i--) {
    if (events[i].type === 'RUN_FORKED') return true;
  }
  return false;
}

function textBlock(text) {
  if (typeof text !== 'string' || text === '') return null;
  return h('div', { class: 'detail' }, h('pre', { class: 'text' }, text));
}

/** Tool output: shown, or folded when long. */
function outputBlock(output) {
  if (output === null || output === undefined || output === '') return null;
  const text = typeof output === 'string' ? output : pretty(output);
  const pre = h('pre', { class: 'text output' }, text);
  const lines = text.split('\n').length;
  if (lines <= FOLD_LINES) return h('div', { class: 'detail' }, pre);
  return h('details', { class: 'detail' }, h('summary', {}, `output (${lines} lines)`), pre);
}
