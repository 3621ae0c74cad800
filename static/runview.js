// runview.js: the selected run, put together: its header (task, status,
// the instance driving it, who created it, its trace id, its clock, the
// budget bars, pause and unpause, cancel with a confirmation and a reason),
// where it stands among forks, the message box that steers it, the
// approval card (a tool's, approval.js, or a budget's, budget.js), result
// (as Markdown) or error, usage per agent, the waterfall of calls
// (waterfall.js) and the timeline (timeline.js), whose entries each offer
// a fork (the dialog is operator.js's).
//
// The approval card is rebuilt only when the approval it shows changes,
// so feedback or an edited command being typed is never wiped by an
// unrelated update; the timeline is only ever appended to.
//
// Controls a signed-in token's roles do not allow are not built at all:
// no cancel, message, pause or fork without operator or admin, no decision
// without approver or admin.
//
// Beside the status it names the instance driving the run (`instance`, the
// run's `owner`, contract section 10), or says why none does: a run that
// waits for a human or is paused is parked, a finished one is over, and an
// active run without an owner is about to be taken by one.

import { h, replaceChildren, setText, classSafe } from './dom.js';
import { markdown } from './markdown.js';
import { duration, countdown, localTime, count, traceUrl, usd } from './format.js';
import { TERMINAL_STATUSES, driverOf, runTimes, runTokens, runCost } from './store.js';
import { approvalCard } from './approval.js';
import { budgetCard, renderBudget } from './budget.js';
import { Timeline } from './timeline.js';
import { renderWaterfall } from './waterfall.js';
import { OperatorControls, ForkDialog, renderLineage } from './operator.js';

/** What the `instance` hook says when no instance drives the run, and a
 * longer sentence for its tooltip, by `driverOf(run).state`. */
const NO_DRIVER = {
  parked: ['parked — no instance drives it', 'The run waits for a human; it holds no memory on any instance, and any instance picks it up once someone decides.'],
  finished: ['— (finished, no instance drives it)', 'The run is over; no instance drives it.'],
  unclaimed: ['waiting for an instance to take it', 'The run is active, but no live instance holds it yet; one takes it over within seconds.'],
};

export class RunView {
  /** `onCancel(runId, reason)`, `onDecide(runId, approvalId, {decision,
   * feedback, argsSha256, args, addTokens, addCostUsd})`, `onMessage(runId,
   * text)`, `onPause(runId, reason)`, `onUnpause(runId)` and `onFork(runId,
   * seq, message)` (which resolves with the new run once it is selected)
   * return promises that reject with an ApiError. */
  constructor(root, { onCancel, onDecide, onMessage, onPause, onUnpause, onFork, announce }) {
    this.root = root;
    this.onCancel = onCancel;
    this.onDecide = onDecide;
    this.onMessage = onMessage;
    this.onPause = onPause;
    this.onUnpause = onUnpause;
    this.onFork = onFork;
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
    this.budget = h('div', { class: 'budget', 'data-testid': 'budget', hidden: true });
    this.lineage = h('section', { class: 'lineage', 'data-testid': 'lineage', 'aria-labelledby': 'lineage-title', hidden: true });
    this.operator = this.can.operate
      ? new OperatorControls({
        onMessage: (text) => this.onMessage(id, text),
        onPause: (reason) => this.onPause(id, reason),
        onUnpause: () => this.onUnpause(id),
      })
      : null;
    this.forkDialog = this.can.operate
      ? new ForkDialog({ onFork: (seq, message) => this.onFork(id, seq, message) })
      : null;
    this.timeline = new Timeline({
      canFork: this.can.operate,
      onFork: (seq) => {
        const type = this.journal?.events.find((e) => e.seq === seq)?.type ?? 'entry';
        this.forkDialog?.open(seq, type);
      },
    });
    this.instance = h('span', { class: 'instance', 'data-testid': 'instance', 'data-state': '' }, '…');
    this.instanceKey = '';
    this.cancelMessage = h('p', { class: 'message', role: 'status' });
    this.approvalSlot = h('div', { class: 'approval-slot' });
    this.outcome = h('div', { class: 'outcome' });
    this.usage = h('section', { class: 'usage', 'data-testid': 'usage', 'aria-labelledby': 'usage-title' });
    this.waterfall = h('div', { class: 'waterfall', 'data-testid': 'waterfall' });

    replaceChildren(
      this.root,
      h('article', { class: 'run', 'aria-labelledby': 'run-title' },
        h('header', { class: 'run-head' },
          this.title,
          this.task,
          this.meta,
          this.stats,
          this.budget,
          h('div', { class: 'run-actions' },
            h('p', { class: 'status-line', 'aria-live': 'polite' }, 'Status: ', this.status),
            h('p', { class: 'driver-line' }, 'Instance: ', this.instance),
            this.cancelButton),
          this.cancelMessage,
          this.cancelDialog,
          this.forkDialog?.node),
        this.lineage,
        this.approvalSlot,
        this.operator?.node,
        this.outcome,
        this.usage,
        h('section', { class: 'calls', 'aria-labelledby': 'calls-title' },
          h('h3', { id: 'calls-title' }, 'Model and tool calls'),
          this.waterfall),
        h('section', { class: 'journal', 'aria-labelledby': 'timeline-title' },
          h('h3', { id: 'timeline-title' }, 'Timeline'),
          this.timeline.node,
          this.timeline.streaming)));
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

  /** Brings the view up to date with the run, its journal and its forks
   * (`[{run_id, seq}]`). */
  render(run, journal, forks = []) {
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

    this.operator?.update(run);

    this.renderStats();
    renderBudget(this.budget, run.budget ?? null);
    renderLineage(this.lineage, run, forks);
    this.renderApproval(run, journal);
    this.renderOutcome(run, journal);
    this.renderUsage(run);
    this.timeline.append(journal);
    this.timeline.renderStreaming(journal);
    // Streamed text re-renders many times a second; the bars change only
    // with new events (and with the clock, which tick() covers).
    if (this.waterfallEvents !== (journal ? journal.events.length : 0) || this.waterfallStatus !== run.status) {
      this.renderWaterfall();
    }
  }

  /** Draws the waterfall; each bar leads to its timeline entry. */
  renderWaterfall() {
    const events = this.journal ? this.journal.events : [];
    this.waterfallEvents = events.length;
    this.waterfallStatus = this.run?.status;
    renderWaterfall(this.waterfall, events, this.run?.status, (seq) => this.timeline.reveal(seq));
  }

  /** Whether the timeline shows the entry of `seq` yet. */
  shows(seq) {
    return !!this.timeline?.has(seq);
  }

  /** Scrolls to the timeline entry of `seq` and highlights it. */
  reveal(seq) {
    this.timeline?.reveal(seq);
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
    if (pending.kind === 'budget') {
      this.card = budgetCard({ runId: run.id, pending, canDecide: this.can.decide, onDecide: this.onDecide });
    } else {
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
    }
    this.updateCountdown();
    this.approvalSlot.replaceChildren(this.card.node);
    this.announce(pending.kind === 'budget'
      ? 'Approval needed: the run reached its budget.'
      : `Approval needed: ${pending.agent} wants to run ${pending.tool}.`);
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

}
