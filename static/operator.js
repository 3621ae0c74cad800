// operator.js: what an operator does to a run while it lives, and where a
// run stands among its forks (contract section 11): the message box that
// steers the agent (`steer-input`, `steer-button`), pause and unpause
// (`pause-button`, `unpause-button`, only the one that applies), the dialog
// a timeline entry's fork button opens (`fork-message`, `fork-confirm`),
// and the lineage: the run this one was forked from (a link to that entry)
// and the runs forked from this one.
//
// The controls are built only for tokens that may operate (operator or
// admin); the lineage is for everyone. The server's refusals are shown
// next to the control that got them.

import { h, replaceChildren, setText } from './dom.js';
import { TERMINAL_STATUSES } from './store.js';
import { runLink, shortId } from './timeline.js';

/** The longest message and reason the server takes (contract section 11). */
const MAX_TEXT = 8192;

/** The message box, pause and unpause of a live run. */
export class OperatorControls {
  /** `onMessage(text)`, `onPause(reason)` and `onUnpause()` return
   * promises that reject with an ApiError. */
  constructor({ onMessage, onPause, onUnpause }) {
    this.onMessage = onMessage;
    this.onPause = onPause;
    this.onUnpause = onUnpause;
    this.busy = false;
    this.status = null;
    this.input = h('textarea', { id: 'steer-input', 'data-testid': 'steer-input', rows: 2, maxlength: MAX_TEXT,
      placeholder: 'e.g. Use the staging database, not production', 'aria-describedby': 'steer-hint' });
    this.send = h('button', { type: 'submit', 'data-testid': 'steer-button' }, 'Send to the agent');
    this.reason = h('input', { id: 'pause-reason', 'data-testid': 'pause-reason', type: 'text', maxlength: MAX_TEXT,
      autocomplete: 'off', placeholder: 'why (optional, kept in the journal)', 'aria-label': 'Reason for pausing' });
    this.pauseButton = h('button', { type: 'button', class: 'secondary', 'data-testid': 'pause-button',
      title: 'Work in flight finishes; nothing new starts until the run is unpaused', onclick: () => this.pause() }, 'Pause');
    this.unpauseButton = h('button', { type: 'button', 'data-testid': 'unpause-button', hidden: true,
      title: 'The run goes on where it stopped', onclick: () => this.unpause() }, 'Unpause');
    this.message = h('p', { class: 'message', role: 'status', 'data-testid': 'operator-message' });
    this.node = h('section', { class: 'operator', 'data-testid': 'operator-controls', 'aria-labelledby': 'operator-title', hidden: true },
      h('h3', { id: 'operator-title' }, 'Steer the run'),
      h('form', { class: 'steer', onsubmit: (submit) => { submit.preventDefault(); this.steer(); } },
        h('label', { for: 'steer-input' }, 'Message to the agent'),
        this.input,
        h('p', { id: 'steer-hint', class: 'hint' }, 'The agent reads it before its next model call (after the decision, when an approval waits). Ctrl+Enter sends.'),
        h('div', { class: 'buttons' }, this.send)),
      h('div', { class: 'pause-row' }, this.reason, this.pauseButton, this.unpauseButton),
      this.message);
    this.input.addEventListener('keydown', (key) => {
      if (key.key === 'Enter' && (key.ctrlKey || key.metaKey)) {
        key.preventDefault();
        this.steer();
      }
    });
  }

  /** Shows what applies to `run` now: nothing once it is over, pause or
   * unpause by its status. */
  update(run) {
    this.status = run.status;
    const finished = TERMINAL_STATUSES.has(run.status);
    this.node.hidden = finished;
    const paused = run.status === 'paused';
    this.pauseButton.hidden = paused;
    this.reason.hidden = paused;
    this.unpauseButton.hidden = !paused;
    this.setBusy(this.busy);
  }

  setBusy(busy) {
    this.busy = busy;
    this.send.disabled = this.pauseButton.disabled = this.unpauseButton.disabled = busy;
  }

  say(text, isError = false) {
    setText(this.message, text);
    this.message.classList.toggle('error', isError);
  }

  /** Runs `action`, showing `doing` meanwhile, then `done` or the refusal. */
  async act(doing, action, done) {
    if (this.busy) return false;
    this.setBusy(true);
    this.say(doing);
    try {
      await action();
      this.say(done);
      return true;
    } catch (error) {
      this.say(refusal(error), true);
      return false;
    } finally {
      this.setBusy(false);
    }
  }

  async steer() {
    const text = this.input.value.trim();
    if (!text) {
      this.say('Write a message first.', true);
      this.input.focus();
      return;
    }
    if (await this.act('Sending…', () => this.onMessage(text), 'Sent: the agent reads it before its next model call.')) {
      this.input.value = '';
    }
  }

  async pause() {
    const reason = this.reason.value.trim();
    if (await this.act('Pausing…', () => this.onPause(reason), 'Paused: work in flight finishes, nothing new starts.')) {
      this.reason.value = '';
      this.unpauseButton.focus();
    }
  }

  async unpause() {
    if (await this.act('Unpausing…', () => this.onUnpause(), 'Unpaused: the run goes on.')) this.pauseButton.focus();
  }
}

/** The sentence for a refusal of the server. */
function refusal(error) {
  switch (error.code) {
    case 'already_finished':
      return 'The run has already finished.';
    case 'conflict':
      return `Not done: ${error.message}`;
    case 'forbidden':
      return `Not allowed: ${error.message}`;
    default:
      return `The server refused: ${error.message}`;
  }
}

/** The dialog a timeline entry's fork button opens: an optional message for
 * the new run, then fork or keep things as they are. */
export class ForkDialog {
  /** `onFork(seq, message)` returns a promise of the new run, or rejects
   * with an ApiError (shown in the dialog, which stays open). */
  constructor({ onFork }) {
    this.onFork = onFork;
    this.seq = null;
    this.opener = null;
    this.title = h('h3', { id: 'fork-title' }, 'Fork this run');
    this.explain = h('p', {});
    this.input = h('textarea', { id: 'fork-message', 'data-testid': 'fork-message', rows: 3, maxlength: MAX_TEXT,
      placeholder: 'e.g. Try it without deleting anything this time' });
    this.confirm = h('button', { type: 'submit', 'data-testid': 'fork-confirm' }, 'Fork');
    this.error = h('p', { class: 'error', role: 'alert', 'data-testid': 'fork-error', hidden: true });
    this.node = h('dialog', { class: 'fork-dialog', 'data-testid': 'fork-dialog', 'aria-labelledby': 'fork-title' },
      h('form', { method: 'dialog', onsubmit: (submit) => { submit.preventDefault(); this.fork(); } },
        this.title,
        this.explain,
        h('label', { for: 'fork-message' }, 'Message to the new run\'s agent (optional)'),
        this.input,
        this.error,
        h('div', { class: 'buttons' },
          this.confirm,
          h('button', { type: 'button', class: 'secondary', 'data-testid': 'fork-keep', onclick: () => this.node.close() }, 'Do not fork'))));
    this.node.addEventListener('close', () => this.opener?.focus());
  }

  /** Opens the dialog for a fork at entry `seq` (`type` names it). */
  open(seq, type) {
    if (this.node.open) return;
    this.seq = seq;
    this.opener = document.activeElement;
    setText(this.title, `Fork this run at #${seq}`);
    setText(this.explain, `A new run starts with copies of entries 1 to ${seq} (up to this ${type}) and goes on from there; what they record is not done again. The forks share the workspace.`);
    this.input.value = '';
    this.error.hidden = true;
    this.confirm.disabled = false;
    this.node.showModal();
    this.input.focus();
  }

  async fork() {
    if (this.seq === null || this.confirm.disabled) return;
    this.confirm.disabled = true;
    this.error.hidden = true;
    try {
      await this.onFork(this.seq, this.input.value.trim());
      this.opener = null;
      this.node.close();
    } catch (error) {
      setText(this.error, `Not forked: ${error.message}`);
      this.error.hidden = false;
      this.confirm.disabled = false;
    }
  }
}

/**
 * Fills `node` (the `lineage` hook) with where `run` stands among forks:
 * the run it was forked from and the entry it was taken at
 * (`run.forked_from`), and `forks`, the runs forked from it (`[{run_id,
 * seq}]`, by seq), each a link. Hidden when there is neither.
 */
export function renderLineage(node, run, forks) {
  const from = run.forked_from && typeof run.forked_from.run_id === 'string' ? run.forked_from : null;
  const key = JSON.stringify([from, forks]);
  if (node.dataset.key === key) return;
  node.dataset.key = key;
  node.hidden = !from && forks.length === 0;
  replaceChildren(
    node,
    h('h3', { id: 'lineage-title' }, 'Forks'),
    from
      ? h('p', { class: 'forked-from', 'data-testid': 'forked-from', 'data-run-id': from.run_id, 'data-seq': from.seq },
        'Forked from ',
        h('a', { href: runLink(from.run_id, from.seq), title: `Run ${from.run_id}, entry #${from.seq}` },
          `run ${shortId(from.run_id)} at #${from.seq}`))
      : null,
    forks.length
      ? h('ul', { class: 'fork-tree', 'data-testid': 'fork-list', 'aria-label': 'Runs forked from this one' },
        h('li', { class: 'fork-root' }, h('span', {}, from ? 'this fork' : 'this run'),
          h('ul', {}, forks.map((fork) =>
            h('li', { class: 'fork-item', 'data-testid': 'fork-item', 'data-run-id': fork.run_id, 'data-seq': fork.seq },
              h('a', { href: runLink(fork.run_id), title: `Run ${fork.run_id}` }, `run ${shortId(fork.run_id)}`),
              ' ',
              h('a', { class: 'fork-at', href: runLink(run.id, fork.seq), title: `The entry the fork was taken at` }, `from #${fork.seq}`))))))
      : null,
  );
}
