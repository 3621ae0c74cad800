// approval.js: the approval card of a call waiting for a human (contract
// sections 7 and 9): who wants to run which tool, its arguments in full as
// plain text, the countdown to its expiry, and, for a token that may decide
// (approver or admin), feedback, approve, reject and an editor for the one
// argument a human may rewrite; anyone else is told who decides.
//
// A decision names the arguments the card shows: the card keeps one copy of
// `pending.args`, shows that copy, and sends `args_sha256` = the SHA-256 of
// its RFC 8785 canonical JSON (canonical.js) with every decision, whatever
// newer copy of the run arrives meanwhile. Approving with an edit sends the
// full arguments with the edited field as `args`, still with the hash of the
// arguments shown. The server's refusals (403 four eyes, 409 other
// arguments, 400 edited arguments that do not fit the tool) are shown here.

import { h, setText, classSafe } from './dom.js';
import { localTime, pretty } from './format.js';
import { argsSha256 } from './canonical.js';

/** Who may decide, for everyone who may not. */
const WHO_DECIDES = 'Waiting for an approver: a token with the approver or admin role decides this call.';

/**
 * The card for `pending` (a run's `pending_approval`) of run `runId`:
 * `{node, countdown}`, the countdown being the `time` element the caller
 * keeps up to date. `onDecide(runId, approvalId, {decision, feedback,
 * argsSha256, args})` returns a promise that rejects with an ApiError.
 */
export function approvalCard({ runId, pending, interrupted, canDecide, onDecide }) {
  // One copy of the arguments: the card shows it, and the decision sends
  // the hash of it, whatever newer copy of the run arrives meanwhile.
  const shown = structuredClone(pending.args);
  const args = argumentsView(pending.tool, shown);
  const countdownNode = h('time', { 'data-testid': 'approval-countdown', datetime: pending.expires_at, title: `expires ${localTime(pending.expires_at)}` });
  const card = h(
    'section',
    { class: 'approval-card', 'data-testid': 'approval-card', 'aria-labelledby': 'approval-title', 'data-approval-id': pending.approval_id },
    h('h3', { id: 'approval-title' }, 'Approval needed'),
    h('p', { class: 'approval-tool', 'data-testid': 'approval-tool' },
      h('span', { class: `agent agent-${classSafe(pending.agent)}` }, pending.agent ?? 'an agent'),
      ' wants to run ',
      h('code', {}, pending.tool)),
    interrupted
      ? h('p', { class: 'note' }, 'The server restarted while this call was running. It has not been run again: decide whether it should run once more.')
      : null,
    args,
    h('p', { class: 'countdown' }, countdownNode),
  );
  const hashing = argsSha256(shown);
  const mismatch = h('p', { class: 'note', role: 'alert', hidden: true });
  card.append(mismatch);
  hashing.then((hash) => {
    card.dataset.argsSha256 = hash;
    if (pending.args_sha256 && pending.args_sha256 !== hash) {
      setText(mismatch, 'These arguments do not match the ones the server holds for this call; the server will refuse a decision. Reload the page.');
      mismatch.hidden = false;
    }
  }, () => {});
  if (canDecide) {
    addDecision({ card, args, runId, pending, shown, hashing, onDecide });
  } else {
    card.append(h('p', { class: 'who-decides', 'data-testid': 'approval-who-decides' }, WHO_DECIDES));
  }
  return { node: card, countdown: countdownNode };
}

/** The approver's half of the card: feedback, the editor of the one
 * argument a human may rewrite, approve and reject, and what came of it. */
function addDecision({ card, args, runId, pending, shown, hashing, onDecide }) {
  const approvalId = pending.approval_id;
  const feedback = h('textarea', { id: 'feedback-input', 'data-testid': 'feedback-input', rows: 2, maxlength: 8192 });
  const message = h('p', { class: 'message', role: 'status', 'data-testid': 'approval-message' });
  const editor = argumentEditor(pending.tool, shown, args);
  const approveLabel = () => (editor?.editing() ? `Approve edited ${editor.noun}` : 'Approve');
  const approve = h('button', { type: 'button', class: 'approve', 'data-testid': 'approve-button', onclick: () => decide('approved') }, 'Approve');
  const reject = h('button', { type: 'button', class: 'danger', 'data-testid': 'reject-button', onclick: () => decide('rejected') }, 'Reject');
  const say = (text, isError = false) => {
    setText(message, text);
    message.classList.toggle('error', isError);
  };
  const setBusy = (busy) => {
    approve.disabled = reject.disabled = busy;
    if (editor) editor.button.disabled = busy;
  };
  if (editor) editor.onToggle = () => setText(approve, approveLabel());
  const decide = async (decision) => {
    setBusy(true);
    const edited = decision === 'approved' && editor ? editor.editedArgs() : undefined;
    say(decision === 'approved' ? (edited ? 'Approving the edited call…' : 'Approving…') : 'Rejecting…');
    let argsHash;
    try {
      argsHash = await hashing;
    } catch (error) {
      say(`Could not compute the fingerprint of the arguments: ${error.message}`, true);
      setBusy(false);
      return;
    }
    try {
      await onDecide(runId, approvalId, {
        decision,
        feedback: feedback.value.trim(),
        argsSha256: argsHash,
        args: edited,
      });
      say(`${decision === 'approved' ? 'Approved' : 'Rejected'}; waiting for the run to go on…`);
    } catch (error) {
      switch (error.code) {
        case 'already_decided':
        case 'no_pending_approval':
          say('This approval was already decided elsewhere.');
          return;
        case 'conflict':
          say(`Not decided: the arguments waiting on the server are not the ones shown here. ${error.message}`, true);
          break;
        case 'forbidden':
          say(`Not allowed: ${error.message}`, true);
          break;
        case 'invalid_request':
          say(`The server refused this decision: ${error.message}`, true);
          break;
        default:
          say(`Could not send the decision: ${error.message}`, true);
          break;
      }
      setBusy(false);
    }
  };
  // The edit control sits right under the arguments it edits.
  if (editor) args.after(h('div', { class: 'edit-bar' }, editor.button, editor.note));
  card.append(
    h('label', { for: 'feedback-input' }, 'Feedback for the model (optional; it reads it either way)'),
    feedback,
    h('div', { class: 'buttons' }, approve, reject),
    message,
  );
}

/** The arguments of a call waiting for approval, as plain text: the whole
 * command for `shell`, the path and the whole content for `write_file`. The
 * one argument an approver may edit has `data-field` naming it. */
function argumentsView(tool, args) {
  const a = args && typeof args === 'object' ? args : {};
  const body = [];
  if (tool === 'shell' && typeof a.command === 'string') {
    body.push(h('p', { class: 'arg-name' }, 'Command'), h('pre', { class: 'arg command', 'data-field': 'command' }, a.command));
    if (a.timeout_secs !== undefined) body.push(h('p', { class: 'arg-name' }, `Timeout: ${a.timeout_secs} s`));
  } else if (tool === 'write_file' && typeof a.path === 'string') {
    const content = typeof a.content === 'string' ? a.content : pretty(a.content);
    // A final newline ends the last line rather than starting another.
    const lines = content === '' ? 0 : content.split('\n').length - (content.endsWith('\n') ? 1 : 0);
    body.push(
      h('p', { class: 'arg-name' }, 'Path'),
      h('pre', { class: 'arg path' }, a.path),
      h('p', { class: 'arg-name' }, `Content (${lines} line${lines === 1 ? '' : 's'}, ${content.length} characters)`),
      h('pre', { class: 'arg content', 'data-field': typeof a.content === 'string' ? 'content' : null }, content),
    );
  } else {
    body.push(h('p', { class: 'arg-name' }, 'Arguments'), h('pre', { class: 'arg' }, pretty(args)));
  }
  return h('div', { class: 'approval-args', 'data-testid': 'approval-args' }, body);
}

/**
 * The "Edit" control of an approver's card (contract section 9, edited
 * arguments): it swaps the shown command (`shell`) or file content
 * (`write_file`) for a textarea holding the same text, and back. The other
 * arguments stay as shown, read-only. Null for a call with nothing to edit.
 *
 * `editedArgs()` is the full arguments object with the edited field, or
 * undefined when nothing is being edited or the text is unchanged (then the
 * call runs as the model asked, and the journal says no one edited it).
 */
function argumentEditor(tool, shown, argsView) {
  const shownText = argsView.querySelector('pre[data-field]');
  if (!shownText) return null;
  const field = shownText.dataset.field;
  const original = shown[field];
  const noun = field === 'command' ? 'command' : 'content';
  const input = h('textarea', {
    id: 'edit-args-input',
    'data-testid': 'edit-args-input',
    class: 'arg arg-edit',
    rows: Math.min(Math.max(original.split('\n').length + 1, 3), 20),
    spellcheck: 'false',
    'aria-label': field === 'command' ? 'Command to run instead' : 'File content to write instead',
  });
  input.value = original;
  const note = h('p', { class: 'note edit-note', hidden: true },
    'Approving runs your version; the model is told that a human changed its arguments, and sees them.');
  const button = h('button', {
    type: 'button',
    class: 'secondary',
    'data-testid': 'edit-args-button',
    'aria-pressed': 'false',
    'aria-controls': 'edit-args-input',
  }, `Edit ${noun}`);
  let editing = false;
  const editor = {
    button,
    note,
    noun,
    onToggle: () => {},
    editing: () => editing,
    editedArgs: () => (editing && input.value !== original ? { ...shown, [field]: input.value } : undefined),
  };
  button.addEventListener('click', () => {
    editing = !editing;
    if (editing) {
      shownText.replaceWith(input);
      input.focus();
    } else {
      input.replaceWith(shownText);
      input.value = original;
    }
    note.hidden = !editing;
    button.setAttribute('aria-pressed', String(editing));
    setText(button, editing ? 'Undo edit' : `Edit ${noun}`);
    editor.onToggle();
  });
  return editor;
}
