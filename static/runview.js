// runview.js: the selected run: status, who created it, its clock (total
// time, time spent waiting for humans, tokens, cost when the server knows
// it), cancel with a confirmation and a reason, the approval card, result
// (as Markdown) or error, usage per agent, a waterfall of model and tool
// calls with delegated agents nested under their `delegate` call, and the
// journal as a timeline grouped by agent (with who decided each approval,
// retries and the marks restarts leave), with model text streaming in.
//
// The timeline only ever grows (events are applied once, in seq order), so
// it is appended to, never rebuilt: what a reader has expanded stays open.
// The approval card (approval.js) is rebuilt only when the approval it shows
// changes, so feedback or an edited command being typed is never wiped by an
// unrelated update.
//
// Controls a signed-in token's roles do not allow are not built at all:
// no cancel without operator or admin, no decision without approver or admin.
//
// Beside the status it names the instance driving the run (`instance`, the
// run's `owner`, contract section 10), or says why none does: a run that
// waits for a human is parked, a finished one is over, and an active run
// without an owner is about to be taken by one.

import { h, replaceChildren, setText, classSafe } from './dom.js';
import { markdown } from './markdown.js';
import { millis, duration, countdown, localTime, pretty, compact, count, traceUrl, axisTicks, usd } from './format.js';
import { TERMINAL_STATUSES, driverOf, runTimes, runTokens, runCost, retryOf } from './store.js';
import { approvalCard } from './approval.js';

/** Tool output longer than this many lines starts folded. */
const FOLD_LINES = 12;

/** How long a timeline entry a waterfall bar led to stays highlighted. */
const HIGHLIGHT_MS = 4000;

/** The mark a restart leaves: the server restarted, or another instance
 * took the run over (contract sections 4 and 10). */
const RESTARTED = 'the server restarted, or another instance took the run over';

/** What the `instance` hook says when no instance drives the run, and a
 * longer sentence for its tooltip, by `driverOf(run).state`. */
const NO_DRIVER = {
  parked: ['parked — no instance drives it', 'The run waits for a human; it holds no memory on any instance, and any instance picks it up once someone decides.'],
  finished: ['— (finished, no instance drives it)', 'The run is over; no instance drives it.'],
  unclaimed: ['waiting for an instance to take it', 'The run is active, but no live instance holds it yet; one takes it over within seconds.'],
};

export class RunView {
  /** `onCancel(runId, reason)` and `onDecide(runId, approvalId, {decision, feedback,
   * argsSha256, args})` return promises that reject with an ApiError. */
  constructor(root, { onCancel, onDecide, announce }) {
    this.root = root;
    this.onCancel = onCancel;
    this.onDecide = onDecide;
    this.announce = announce;
    this.runId = null;
    /** What the signed-in token may do here (`permissions` in session.js). */
    this.can = { operate: false, decide: false };
  }

  /** Takes effect with the next `show`. */
  setPermissions(can) {
    this.can = { operate: !!can.operate, decide: !!can.decide };
  }

  /** Shows no run. */
  clear() {
    this.runId = null;
    this.run = null;
    this.status = null;
    replaceChildren(this.root, h('div', { class: 'placeholder' }, h('p', {}, 'Select a run from the list, or start a new one.')));
  }

  /** Shows an empty view for run `id` until its data arrives. */
  show(id) {
    this.runId = id;
    this.rendered = 0;
    this.group = null;
    this.groupAgent = undefined;
    this.openCalls = new Map();
    this.suspendedAt = new Map();
    /** When each `delegate` call was made, by call id. */
    this.delegatedAt = new Map();
    this.startedAt = NaN;
    this.cardApproval = undefined;
    this.card = null;
    this.waterfallEvents = -1;
    this.waterfallStatus = null;
    this.outcomeKey = undefined;
    this.usageKey = '';
    this.cancelling = false;
    this.run = null;
    this.journal = null;
    this.statsKey = '';
    this.highlighted = null;
    this.highlightTimer = null;
    /** The seq of the last entry that got a restart mark, so the
     * re-asked approval after a TOOL_INTERRUPTED gets none of its own. */
    this.markedSeq = -1;

    this.title = h('h2', { id: 'run-title' }, 'Run ', h('code', { class: 'run-id' }, id));
    this.task = h('p', { class: 'task', 'data-testid': 'run-task' });
    this.metaText = h('span', {});
    this.createdBy = h('span', { class: 'created-by', 'data-testid': 'run-created-by' });
    this.trace = h('span', { class: 'trace', 'data-testid': 'run-trace' });
    this.traceKey = '';
    this.meta = h('p', { class: 'meta' }, this.metaText, this.createdBy, this.trace);
    this.status = h('span', { class: 'status', 'data-testid': 'run-status', 'data-status': '' }, '…');
    this.cancelButton = this.can.operate
      ? h(
        'button',
        { type: 'button', class: 'danger', 'data-testid': 'cancel-button', hidden: true, disabled: true,
          'aria-haspopup': 'dialog', onclick: () => this.askCancel() },
        'Cancel run',
      )
      : null;
    this.cancelDialog = this.can.operate ? this.buildCancelDialog() : null;
    this.stats = h('p', { class: 'run-stats', 'data-testid': 'run-stats' },
      h('span', { 'data-testid': 'run-total-time' }),
      h('span', { 'data-testid': 'run-human-wait' }),
      h('span', { 'data-testid': 'run-tokens' }),
      h('span', { 'data-testid': 'run-cost', hidden: true }));
    this.instance = h('span', { class: 'instance', 'data-testid': 'instance', 'data-state': '' }, '…');
    this.instanceKey = '';
    this.cancelMessage = h('p', { class: 'message', role: 'status' });
    this.approvalSlot = h('div', { class: 'approval-slot' });
    this.outcome = h('div', { class: 'outcome' });
    this.usage = h('section', { class: 'usage', 'data-testid': 'usage', 'aria-labelledby': 'usage-title' });
    this.waterfall = h('div', { class: 'waterfall', 'data-testid': 'waterfall' });
    this.timeline = h('ol', { class: 'timeline', 'data-testid': 'timeline', 'aria-label': 'Journal events' });
    this.streaming = h('div', { class: 'streaming-slot', 'aria-live': 'off' });

    replaceChildren(
      this.root,
      h('article', { class: 'run', 'aria-labelledby': 'run-title' },
        h('header', { class: 'run-head' },
          this.title,
          this.task,
          this.meta,
          this.stats,
          h('div', { class: 'run-actions' },
            h('p', { class: 'status-line', 'aria-live': 'polite' }, 'Status: ', this.status),
            h('p', { class: 'driver-line' }, 'Instance: ', this.instance),
            this.cancelButton),
          this.cancelMessage,
          this.cancelDialog),
        this.approvalSlot,
        this.outcome,
        this.usage,
        h('section', { class: 'calls', 'aria-labelledby': 'calls-title' },
          h('h3', { id: 'calls-title' }, 'Model and tool calls'),
          this.waterfall),
        h('section', { class: 'journal', 'aria-labelledby': 'timeline-title' },
          h('h3', { id: 'timeline-title' }, 'Timeline'),
          this.timeline,
          this.streaming)));
  }

  /** Shows that run `id` cannot be shown, and why. */
  showMissing(id, message) {
    this.runId = id;
    this.run = null;
    this.status = null;
    replaceChildren(
      this.root,
      h('div', { class: 'placeholder', role: 'alert' }, h('p', {}, message), h('p', {}, h('a', { href: '#/' }, 'Back to the runs'))),
    );
  }

  /** The run's trace id, a link to its trace in Grafana when the server
   * was given GRAFANA_URL; rebuilt only when the trace changes. */
  renderTrace(run) {
    const key = run.trace_id || '';
    if (key === this.traceKey) return;
    this.traceKey = key;
    if (!key) {
      replaceChildren(this.trace);
      return;
    }
    const grafana = document.querySelector('meta[name="grafana-url"]')?.content;
    const url = traceUrl(grafana, key, run.created_at);
    const id = h('code', { 'data-testid': 'trace-id' }, key);
    replaceChildren(
      this.trace,
      ' · trace ',
      url
        ? h('a', { href: url, target: '_blank', rel: 'noopener', 'data-testid': 'trace-link',
            title: 'Open this trace in Grafana' }, id)
        : id,
    );
  }

  /** Brings the view up to date with the run and its journal. */
  render(run, journal) {
    if (!run || run.id !== this.runId || !this.status) return;
    this.run = run;
    this.journal = journal;
    setText(this.task, run.task ?? '');
    setText(
      this.metaText,
      `${run.agent} · started ${localTime(run.created_at)} · updated ${localTime(run.updated_at)}`,
    );
    setText(this.createdBy, run.created_by ? ` · created by ${run.created_by}` : '');
    this.renderTrace(run);
    this.renderDriver(run);
    setText(this.status, run.status);
    this.status.dataset.status = run.status;
    this.status.className = `status status-${classSafe(run.status)}`;
    const finished = TERMINAL_STATUSES.has(run.status);
    if (this.cancelButton) {
      this.cancelButton.hidden = finished;
      this.cancelButton.disabled = finished || this.cancelling;
    }
    if (finished) {
      setText(this.cancelMessage, '');
      if (this.cancelDialog?.open) this.cancelDialog.close();
    }

    this.renderStats();
    this.renderApproval(run, journal);
    this.renderOutcome(run, journal);
    this.renderUsage(run);
    this.appendEvents(journal);
    this.renderStreaming(journal);
    // Streamed text re-renders many times a second; the bars change only
    // with new events (and with the clock, which tick() covers).
    if (this.waterfallEvents !== (journal ? journal.events.length : 0) || this.waterfallStatus !== run.status) {
      this.renderWaterfall();
    }
  }

  /** The instance driving the run, or why none does. */
  renderDriver(run) {
    const { state, owner } = driverOf(run);
    const key = `${state}:${owner ?? ''}`;
    if (key === this.instanceKey) return;
    this.instanceKey = key;
    this.instance.dataset.state = state;
    this.instance.className = `instance instance-${state}`;
    if (owner) {
      this.instance.dataset.owner = owner;
      this.instance.title = 'The agent-server instance that holds this run\'s lease and drives it';
      replaceChildren(this.instance, h('code', {}, owner));
    } else {
      delete this.instance.dataset.owner;
      const [text, sentence] = NO_DRIVER[state];
      this.instance.title = sentence;
      replaceChildren(this.instance, text);
    }
  }

  /** Once a second: countdown and the bars of calls still open. */
  tick() {
    if (!this.run) return;
    if (this.card) this.updateCountdown();
    if (!TERMINAL_STATUSES.has(this.run.status)) {
      this.renderWaterfall();
      this.renderStats();
    }
  }

  /** The run's clock, tokens and cost, under its task. */
  renderStats() {
    const run = this.run;
    const events = this.journal ? this.journal.events : [];
    const { total, waiting, waitingNow } = runTimes(run, events);
    const tokens = runTokens(run);
    const cost = runCost(run);
    const live = !TERMINAL_STATUSES.has(run.status);
    const key = `${total}:${waiting}:${tokens.input}:${tokens.output}:${cost}:${live}`;
    if (key === this.statsKey) return;
    this.statsKey = key;
    const [totalNode, waitNode, tokensNode, costNode] = this.stats.children;
    setText(totalNode, `${live ? 'running for' : 'took'} ${duration(total) || '0 ms'}`);
    totalNode.title = live ? 'Since the run was created' : 'From creation to the end';
    setText(waitNode, `${duration(waiting) || '0 ms'} waiting for humans${waitingNow ? ' (waiting now)' : ''}`);
    waitNode.dataset.ms = String(Math.round(waiting));
    waitNode.title = 'Approvals and budget raises: from each request to its decision';
    setText(tokensNode, `${count(tokens.total)} tokens`);
    tokensNode.title = `${count(tokens.input)} in, ${count(tokens.output)} out, all agents together`;
    costNode.hidden = cost === null;
    setText(costNode, cost === null ? '' : usd(cost));
    costNode.title = cost === null ? '' : 'What the model calls cost, as the server counts it';
  }

  /** The dialog cancel opens: a reason, then confirm or keep the run. */
  buildCancelDialog() {
    const reason = h('input', { id: 'cancel-reason', 'data-testid': 'cancel-reason', type: 'text', maxlength: 1000,
      autocomplete: 'off', placeholder: 'e.g. wrong task, taking too long' });
    const dialog = h('dialog', { class: 'cancel-dialog', 'data-testid': 'cancel-dialog', 'aria-labelledby': 'cancel-title' },
      h('form', { method: 'dialog', onsubmit: (submit) => {
        submit.preventDefault();
        dialog.close();
        this.cancel(reason.value.trim());
      } },
      h('h3', { id: 'cancel-title' }, 'Cancel this run?'),
      h('p', {}, 'The model request in flight is aborted and a running command is killed. A cancelled run cannot go on.'),
      h('label', { for: 'cancel-reason' }, 'Reason (kept in the journal)'),
      reason,
      h('div', { class: 'buttons' },
        h('button', { type: 'submit', class: 'danger', 'data-testid': 'cancel-confirm' }, 'Cancel the run'),
        h('button', { type: 'button', class: 'secondary', 'data-testid': 'cancel-keep', onclick: () => dialog.close() }, 'Keep it running'))));
    dialog.addEventListener('close', () => this.cancelButton?.focus());
    this.cancelReason = reason;
    return dialog;
  }

  askCancel() {
    if (!this.run || this.cancelling || !this.cancelDialog || this.cancelDialog.open) return;
    this.cancelReason.value = '';
    this.cancelDialog.showModal();
    this.cancelReason.focus();
  }

  async cancel(reason) {
    if (!this.run || this.cancelling || !this.cancelButton) return;
    const runId = this.run.id;
    this.cancelling = true;
    this.cancelButton.disabled = true;
    setText(this.cancelMessage, 'Cancelling…');
    try {
      await this.onCancel(runId, reason);
      if (this.runId === runId) setText(this.cancelMessage, '');
    } catch (error) {
      if (this.runId !== runId) return;
      setText(this.cancelMessage, error.code === 'already_finished' ? 'The run had already finished.' : `Could not cancel: ${error.message}`);
    } finally {
      if (this.runId === runId && this.cancelButton) {
        this.cancelling = false;
        this.cancelButton.disabled = TERMINAL_STATUSES.has(this.run?.status);
      }
    }
  }

  // ----- approval card --------------------------------------------------

  renderApproval(run, journal) {
    const pending = run.pending_approval;
    const id = pending ? pending.approval_id : null;
    if (id === this.cardApproval) return;
    this.cardApproval = id;
    this.card = null;
    if (!pending) {
      this.approvalSlot.replaceChildren();
      return;
    }
    const suspended = journal?.events.findLast(
      (e) => e.type === 'RUN_SUSPENDED' && e.payload?.approval_id === id,
    );
    this.card = approvalCard({
      runId: run.id,
      pending,
      interrupted: suspended?.payload?.interrupted === true,
      canDecide: this.can.decide,
      onDecide: this.onDecide,
    });
    this.updateCountdown();
    this.approvalSlot.replaceChildren(this.card.node);
    this.announce(`Approval needed: ${pending.agent} wants to run ${pending.tool}.`);
  }

  updateCountdown() {
    const expires = this.run?.pending_approval?.expires_at;
    if (!expires || !this.card) return;
    const text = countdown(expires);
    setText(this.card.countdown, text === 'expired' ? 'expired; the server will deny it' : text);
  }

  // ----- result, error, usage -------------------------------------------

  renderOutcome(run, journal) {
    let node = null;
    if (run.status === 'completed') {
      node = h('section', { class: 'result', 'data-testid': 'run-result', 'aria-labelledby': 'result-title' },
        h('h3', { id: 'result-title' }, 'Result'),
        markdown(run.result ?? ''));
    } else if (run.status === 'failed') {
      const error = run.error || {};
      node = h('section', { class: 'error', 'data-testid': 'run-error', role: 'alert' },
        h('h3', {}, 'Error'),
        h('p', {}, h('code', {}, error.code ?? 'unknown'), ' ', error.message ?? ''));
    } else if (run.status === 'cancelled') {
      const event = journal?.events.findLast((e) => e.type === 'RUN_CANCELLED');
      const reason = event?.payload?.reason;
      node = h('section', { class: 'cancelled', 'data-testid': 'run-cancelled' },
        h('h3', {}, 'Cancelled'),
        h('p', {}, event ? `By ${event.payload?.by ?? 'someone'}${reason ? `: ${reason}` : '.'}` : 'The run was cancelled.'));
    }
    const key = node ? `${run.status}:${run.result}:${JSON.stringify(run.error)}:${node.textContent}` : '';
    if (key === this.outcomeKey) return;
    this.outcomeKey = key;
    this.outcome.replaceChildren(...(node ? [node] : []));
  }

  renderUsage(run) {
    const usage = run.usage || {};
    const key = JSON.stringify(usage);
    if (key === this.usageKey) return;
    this.usageKey = key;
    const agents = Object.keys(usage).sort();
    const rows = agents.map((agent) =>
      h('tr', { 'data-agent': agent },
        h('th', { scope: 'row' }, agent),
        h('td', {}, count(usage[agent].input_tokens)),
        h('td', {}, count(usage[agent].output_tokens))));
    const total = (field) => agents.reduce((sum, agent) => sum + (usage[agent][field] || 0), 0);
    replaceChildren(
      this.usage,
      h('h3', { id: 'usage-title' }, 'Usage'),
      agents.length === 0
        ? h('p', { class: 'muted' }, 'No model answers yet.')
        : h('table', {},
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'agent'), h('th', { scope: 'col' }, 'input tokens'), h('th', { scope: 'col' }, 'output tokens'))),
          h('tbody', {}, rows),
          agents.length > 1
            ? h('tfoot', {}, h('tr', {}, h('th', { scope: 'row' }, 'total'), h('td', {}, count(total('input_tokens'))), h('td', {}, count(total('output_tokens')))))
            : null),
    );
  }

  // ----- timeline -------------------------------------------------------

  appendEvents(journal) {
    if (!journal) return;
    const events = journal.events;
    while (this.rendered < events.length) {
      const event = events[this.rendered];
      this.rendered += 1;
      if (!Number.isFinite(this.startedAt)) this.startedAt = millis(event.at);
      const agent = event.agent ?? null;
      if (!this.group || agent !== this.groupAgent) {
        this.groupAgent = agent;
        this.group = h('ol', { class: 'events' });
        this.timeline.append(
          h('li', { class: `agent-group agent-${classSafe(agent ?? 'run')}` },
            h('p', { class: 'agent-name' }, agent ?? 'run'),
            this.group),
        );
      }
      this.group.append(this.eventItem(event, this.rendered - 1));
      if (event.type === 'RUN_COMPLETED') this.foldFinalAnswer(event.payload?.result);
    }
  }

  /** The top agent's last answer is the run's result, shown above as such:
   * its text is folded here rather than shown twice. */
  foldFinalAnswer(result) {
    if (typeof result !== 'string' || result === '') return;
    const thoughts = this.timeline.querySelectorAll('[data-type="AGENT_THOUGHT"] pre.thought');
    const last = thoughts[thoughts.length - 1];
    if (!last || last.textContent !== result || last.closest('details')) return;
    const folded = h('details', { class: 'final-answer', 'data-testid': 'final-answer' },
      h('summary', {}, 'the final answer: the run\'s result, shown above'));
    last.replaceWith(folded);
    folded.append(last);
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
      took ? h('span', { class: 'took', title: 'duration' }, took) : null),
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
      case 'BUDGET_EXCEEDED':
        this.suspendedAt.set(p.approval_id, at);
        return {
          summary: `over budget: ${count(p.used_tokens)} of ${p.max_tokens === null || p.max_tokens === undefined ? 'unlimited' : count(p.max_tokens)} tokens; waiting for a human to raise it`,
        };
      case 'BUDGET_RAISED': {
        const asked = this.suspendedAt.get(p.approval_id);
        return { summary: ['budget raised by ', h('span', { class: 'who' }, p.by ?? 'someone')], took: asked !== undefined ? duration(at - asked) : '' };
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
    const item = this.timeline.querySelector(`[data-testid="timeline-event"][data-seq="${Number(seq)}"]`);
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

  // ----- waterfall ------------------------------------------------------

  renderWaterfall() {
    const events = this.journal ? this.journal.events : [];
    this.waterfallEvents = events.length;
    this.waterfallStatus = this.run?.status;
    const spans = callSpans(events);
    if (spans.length === 0) {
      replaceChildren(this.waterfall, h('p', { class: 'muted' }, 'No calls yet.'));
      return;
    }
    const start = millis(events[0].at);
    const finished = TERMINAL_STATUSES.has(this.run?.status);
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
        onclick: () => this.reveal(span.seq),
      },
      label,
      h('span', { class: 'wf-track' }, bar),
      h('span', { class: 'wf-took' }, span.end === null ? `${took}…` : took)));
      return row;
    });
    replaceChildren(this.waterfall, axis, h('ol', { class: 'wf', 'aria-label': 'Durations of model and tool calls; each leads to its timeline entry' }, rows));
  }
}

/**
 * Model calls (LLM_CALLED → AGENT_THOUGHT), tool runs (TOOL_STARTED →
 * TOOL_RESULT), delegations (the `delegate` call's TOOL_CALLED → its
 * TOOL_RESULT: the delegated agent's whole work) and waits for humans
 * (RUN_SUSPENDED → RUN_RESUMED, BUDGET_EXCEEDED → BUDGET_RAISED or
 * RUN_RESUMED), in the order they began, each child after its parent;
 * `end` is null while one is still open. `depth` counts the delegations a
 * span runs under: while a `delegate` call is open, its agent is waiting, so
 * everything that starts then is the delegated agent's work. `seq` is the
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

