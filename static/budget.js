// budget.js: a run's budget (contract section 11): the bars under the
// run's clock showing tokens and US dollars used of their limits, and the
// card of a run that reached its budget (`pending_approval.kind` =
// `budget`), on which an approver raises it (tokens and dollars to add)
// or stops the run, which then fails with `budget_exceeded`.
//
// The card has the approval card's hooks (`approval-card`, `approval-tool`,
// `approval-args`, `approve-button`, `reject-button`), so whoever decides
// approvals finds it where they find tool approvals; like a tool approval,
// the decision names what was shown (`args_sha256` of the figures).

import { h, replaceChildren, setText, classSafe } from './dom.js';
import { count, localTime, usd } from './format.js';
import { argsSha256 } from './canonical.js';

/** Who may decide, for everyone who may not. */
const WHO_DECIDES = 'Waiting for an approver: a token with the approver or admin role raises the budget or stops the run.';

const isLimit = (value) => typeof value === 'number' && Number.isFinite(value);

/** How much of `max` `used` is, in percent (0 without a limit). */
function share(used, max) {
  return isLimit(max) && max > 0 ? (Math.max(0, Number(used) || 0) / max) * 100 : 0;
}

/** One bar: `what` used of its limit, `format` writing amounts. */
function barRow(testId, label, used, max, format) {
  const percent = share(used, max);
  const fill = h('span', { class: 'budget-fill' });
  fill.style.width = `${Math.min(percent, 100)}%`;
  const over = isLimit(max) && used >= max;
  return h('div', {
    class: `budget-row${over ? ' over' : ''}`,
    'data-testid': testId,
    'data-used': String(used ?? 0),
    'data-max': isLimit(max) ? String(max) : '',
    'data-over': String(over),
  },
  h('span', { class: 'budget-label' }, label),
  h('span', {
    class: 'budget-track',
    role: 'meter',
    'aria-label': `${label} used`,
    'aria-valuemin': '0',
    'aria-valuemax': isLimit(max) ? String(max) : null,
    'aria-valuenow': String(used ?? 0),
  }, isLimit(max) ? fill : null),
  h('span', { class: 'budget-text' },
    isLimit(max)
      ? `${format(used ?? 0)} of ${format(max)}${over ? ' (reached)' : ` (${Math.round(percent)}%)`}`
      : `${format(used ?? 0)}, no limit`));
}

/** Fills `node` (the `budget` hook) from `budget` (the run's, or null:
 * then it is hidden). Returns nothing; rebuilds only on change. */
export function renderBudget(node, budget) {
  const key = budget ? JSON.stringify([budget.used_tokens, budget.max_tokens, budget.used_cost_usd, budget.max_cost_usd]) : '';
  if (node.dataset.key === key) return;
  node.dataset.key = key;
  node.hidden = !budget;
  if (!budget) {
    replaceChildren(node);
    return;
  }
  replaceChildren(
    node,
    h('span', { class: 'budget-title' }, 'Budget'),
    barRow('budget-tokens', 'tokens', budget.used_tokens, budget.max_tokens, count),
    barRow('budget-cost', 'USD', budget.used_cost_usd, budget.max_cost_usd, usd),
  );
}

/** What the figures of a budget approval say, in a sentence. */
function reachedText(args) {
  const parts = [];
  if (isLimit(args.max_tokens)) parts.push(`${count(args.used_tokens)} of ${count(args.max_tokens)} tokens`);
  else parts.push(`${count(args.used_tokens)} tokens (no token limit)`);
  if (isLimit(args.max_cost_usd)) parts.push(`${usd(args.used_cost_usd ?? 0)} of ${usd(args.max_cost_usd)}`);
  else parts.push(`${usd(args.used_cost_usd ?? 0)} (no USD limit)`);
  return parts.join(' and ');
}

/**
 * The card of run `runId` waiting for a budget raise (`pending`, its
 * `pending_approval` of kind `budget`): `{node, countdown}`, as
 * `approvalCard` returns. `onDecide(runId, approvalId, {decision,
 * argsSha256, addTokens, addCostUsd})` returns a promise that rejects with
 * an ApiError.
 */
export function budgetCard({ runId, pending, canDecide, onDecide }) {
  const shown = structuredClone(pending.args ?? {});
  const countdownNode = h('time', { 'data-testid': 'approval-countdown', datetime: pending.expires_at, title: `expires ${localTime(pending.expires_at)}` });
  const card = h('section', {
    class: 'approval-card budget-card',
    'data-testid': 'approval-card',
    'data-kind': 'budget',
    'data-approval-id': pending.approval_id,
    'aria-labelledby': 'approval-title',
  },
  h('h3', { id: 'approval-title' }, 'Budget reached'),
  h('p', { class: 'approval-tool', 'data-testid': 'approval-tool' },
    'The run reached its budget: ',
    h('span', { class: `agent agent-${classSafe(pending.agent)}` }, pending.agent ?? 'its agent'),
    '\'s next model call waits until someone raises it.'),
  h('p', { class: 'approval-args budget-reached', 'data-testid': 'approval-args' }, `Used ${reachedText(shown)}.`),
  h('p', { class: 'countdown' }, countdownNode));
  const hashing = argsSha256(shown);
  hashing.then((hash) => { card.dataset.argsSha256 = hash; }, () => {});
  if (canDecide) addDecision({ card, runId, pending, shown, hashing, onDecide });
  else card.append(h('p', { class: 'who-decides', 'data-testid': 'approval-who-decides' }, WHO_DECIDES));
  return { node: card, countdown: countdownNode };
}

/** The approver's half: how much to add, raise, stop, and what came of it. */
function addDecision({ card, runId, pending, shown, hashing, onDecide }) {
  const addTokens = h('input', { id: 'budget-add-tokens', 'data-testid': 'budget-add-tokens', type: 'number', min: 1, step: 1,
    inputmode: 'numeric', placeholder: isLimit(shown.max_tokens) ? `e.g. ${shown.max_tokens}` : 'none' });
  const addUsd = h('input', { id: 'budget-add-usd', 'data-testid': 'budget-add-usd', type: 'number', min: 0, step: 'any',
    inputmode: 'decimal', placeholder: isLimit(shown.max_cost_usd) ? `e.g. ${shown.max_cost_usd}` : 'none' });
  const message = h('p', { class: 'message', role: 'status', 'data-testid': 'approval-message' });
  const approve = h('button', { type: 'button', class: 'approve', 'data-testid': 'approve-button', onclick: () => decide('approved') }, 'Raise the budget');
  const reject = h('button', { type: 'button', class: 'danger', 'data-testid': 'reject-button', onclick: () => decide('rejected') }, 'Stop the run');
  const say = (text, isError = false) => {
    setText(message, text);
    message.classList.toggle('error', isError);
  };
  const setBusy = (busy) => {
    approve.disabled = reject.disabled = addTokens.disabled = addUsd.disabled = busy;
  };
  const decide = async (decision) => {
    const raise = {};
    if (decision === 'approved') {
      const tokens = addTokens.value.trim();
      const dollars = addUsd.value.trim();
      if (tokens !== '') {
        const value = Number(tokens);
        if (!Number.isInteger(value) || value < 1) {
          say('Tokens to add must be a whole number of at least 1.', true);
          addTokens.focus();
          return;
        }
        raise.addTokens = value;
      }
      if (dollars !== '') {
        const value = Number(dollars);
        if (!Number.isFinite(value) || value <= 0) {
          say('Dollars to add must be more than 0.', true);
          addUsd.focus();
          return;
        }
        raise.addCostUsd = value;
      }
      if (raise.addTokens === undefined && raise.addCostUsd === undefined) {
        say('Say how many tokens or dollars to add first.', true);
        addTokens.focus();
        return;
      }
    }
    setBusy(true);
    say(decision === 'approved' ? 'Raising the budget…' : 'Stopping the run…');
    try {
      await onDecide(runId, pending.approval_id, { decision, argsSha256: await hashing, ...raise });
      say(decision === 'approved' ? 'Raised; waiting for the run to go on…' : 'Stopped; the run fails with budget_exceeded.');
    } catch (error) {
      switch (error.code) {
        case 'already_decided':
        case 'no_pending_approval':
          say('This was already decided elsewhere.');
          return;
        case 'forbidden':
          say(`Not allowed: ${error.message}`, true);
          break;
        case 'invalid_request':
          say(`The server refused this: ${error.message}`, true);
          break;
        default:
          say(`Could not send the decision: ${error.message}`, true);
          break;
      }
      setBusy(false);
    }
  };
  card.append(
    h('div', { class: 'budget-raise' },
      h('label', { for: 'budget-add-tokens' }, 'Tokens to add'),
      addTokens,
      h('label', { for: 'budget-add-usd' }, 'USD to add'),
      addUsd),
    h('div', { class: 'buttons' }, approve, reject),
    message,
  );
}
