// app.js: the dashboard's entry point. It wires the session, the store, the
// REST client, the WebSocket and the views together, and owns the run list
// with its filters and search (kept in the URL's query, `?status=&q=&agent=
// &created_by=`, beside the hash `#/runs/{id}` that keeps the selected run,
// or `#/runs/{id}/events/{seq}` that also points at one of its entries, so
// both survive a reload and can be shared), the inbox of every approval
// waiting across runs (its count also in the tab's title), the new-run
// form (with an optional budget), and the connection indicator.
//
// Nothing runs until the page is signed in (session.js): then the list, the
// selected run and the WebSocket start; signed out, they all stop, and the
// WebSocket is not reconnected. What the token's roles do not allow is not
// offered: no new-run form without operator or admin (runview.js does the
// same for cancel and for decisions).
//
// The live instances (instances.js) are fetched every few seconds while
// signed in and after every reconnection; the run view names the instance
// driving the selected run, which the list marks.
//
// Live data comes from the WebSocket. While it is down the page polls the
// REST API instead, so it never freezes, and every event goes through the
// same once-only, in-order path (Store) whichever way it came.

import { api, newKey, onUnauthorized } from './api.js';
import { Live } from './live.js';
import { Store, TERMINAL_EVENTS, TERMINAL_STATUSES, driverOf } from './store.js';
import { RunView } from './runview.js';
import { InstancesPanel } from './instances.js';
import { Session, permissions, hasTokenFragment } from './session.js';
import { h, setText, classSafe } from './dom.js';
import { age } from './format.js';

/** How often to poll the REST API while the WebSocket is down. */
const POLL_MS = 2500;
/** How often to reload the run list while connected: a safety net should a
 * `run` frame be lost, cheap enough at one small request per half minute. */
const LIST_REFRESH_MS = 30_000;
/** Runs fetched per page of the list. */
const PAGE_SIZE = 50;
/** Waiting runs fetched per page for the inbox, and the pages read at most:
 * more waiting runs than this is a backlog no page lists usefully. */
const INBOX_PAGE_SIZE = 200;
const INBOX_PAGES = 5;
/** How long typing must pause before a search is sent. */
const TYPING_MS = 300;
/** Where the selected run comes above the list (style.css). */
const NARROW = '(max-width: 700px)';
/** The list's filters, as they appear in the URL's query. */
const FILTERS = ['status', 'q', 'agent', 'created_by'];

const store = new Store();
const byId = (id) => document.getElementById(id);
const els = {
  connection: byId('connection'),
  app: byId('app'),
  side: byId('side'),
  form: byId('run-form'),
  task: byId('task-input'),
  agent: byId('agent-select'),
  maxTokens: byId('budget-tokens-input'),
  maxUsd: byId('budget-usd-input'),
  submit: byId('submit-run'),
  formError: byId('form-error'),
  filter: byId('status-filter'),
  search: byId('search-input'),
  agentFilter: byId('agent-filter'),
  createdByFilter: byId('created-by-filter'),
  inbox: byId('inbox-list'),
  inboxCount: byId('inbox-count'),
  inboxEmpty: byId('inbox-empty'),
  list: byId('run-list'),
  listEmpty: byId('list-empty'),
  loadMore: byId('load-more'),
  main: byId('main'),
  runView: byId('run-view'),
  announcer: byId('announcer'),
  instances: byId('instances'),
  instancesNote: byId('instances-note'),
  instancesCount: byId('instances-count'),
};

/** The signed-in token's `{name, roles}`; null while signed out. */
let me = null;
/** What those roles allow (`permissions` in session.js). */
let can = permissions([]);
let selectedId = null;
/** The entry of the selected run the URL points at, revealed once the
 * timeline shows it; null when none or once done. */
let wantedSeq = null;
/** The list's filters (`FILTERS`); empty strings filter nothing. */
let filters = filtersFromUrl();
/** The cursor for older runs under the current filter; null at the end. */
let olderCursor = null;
/** Whether older runs were loaded under this filter: then the cursor has
 * moved past the first page and a refresh must not reset it. */
let olderCursorLoaded = false;
/** The key of the run being created, kept until it succeeds so a retry of
 * the same form (after a network error) can never create a second run. */
let creating = null;

const runView = new RunView(els.runView, {
  onCancel: async (id, reason) => {
    const run = await api.cancel(id, reason);
    store.putSummary(run);
    scheduleRender();
  },
  onDecide: async (id, approvalId, { decision, feedback, argsSha256, args, addTokens, addCostUsd }) => {
    try {
      await api.resume(id, { approvalId, decision, feedback, argsSha256, args, addTokens, addCostUsd });
    } finally {
      // The card goes when the run says the approval is decided; ask now
      // rather than wait for the next frame or poll.
      refreshRun(id, { events: !live.connected });
    }
  },
  onMessage: async (id, text) => {
    store.putSummary(await api.sendMessage(id, text));
    if (!live.connected) refreshRun(id, { events: true });
    scheduleRender();
  },
  onPause: async (id, reason) => {
    store.putSummary(await api.pause(id, reason));
    if (!live.connected) refreshRun(id, { events: true });
    scheduleRender();
  },
  onUnpause: async (id) => {
    store.putSummary(await api.unpause(id));
    if (!live.connected) refreshRun(id, { events: true });
    scheduleRender();
  },
  onFork: async (id, seq, message) => {
    const fork = await api.fork(id, seq, message);
    store.putSummary(fork);
    store.addFork(id, { run_id: fork.id, seq });
    // The source's own account of its forks, for the page and any other.
    refreshRun(id, { events: false });
    location.hash = `#/runs/${encodeURIComponent(fork.id)}`;
    return fork;
  },
  announce: (text) => setText(els.announcer, text),
});

const instances = new InstancesPanel({
  list: els.instances,
  note: els.instancesNote,
  count: els.instancesCount,
  onRefreshed: checkDriver,
});

const live = new Live({
  onFrame,
  onState: showConnection,
  // The server closed the feed because the session ended or the token was
  // revoked: the sign-in form comes back at once.
  onSignedOut: () => session.ended(),
  onConnected: () => {
    for (const journal of store.journals.values()) journal.forgetStreaming();
    refreshList();
    refreshInbox();
    instances.refresh();
    if (selectedId) refreshRun(selectedId, { events: false });
  },
});

// ----- rendering ---------------------------------------------------------

let renderTimer = null;

/** Renders soon, once for any number of changes. A timer rather than
 * requestAnimationFrame, which never fires in a hidden tab. */
function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(render, 16);
}

function render() {
  renderTimer = null;
  if (!me) return;
  renderList();
  const waiting = renderInbox();
  // The tab says how many approvals wait, so a page in the background
  // still tells someone who may decide.
  const count = waiting ? `(${waiting}) ` : '';
  els.app.dataset.selected = selectedId ? 'true' : 'false';
  if (selectedId) {
    const run = store.effectiveRun(selectedId);
    if (run) {
      runView.render(run, store.journal(selectedId), store.forksOf(selectedId));
      if (wantedSeq !== null && runView.shows(wantedSeq)) {
        runView.reveal(wantedSeq);
        wantedSeq = null;
      }
      instances.markDriver(driverOf(run).owner);
      document.title = `${count}${run.status} · ${String(run.task ?? '').slice(0, 40)} · agent-server`;
    } else {
      document.title = `${count}agent-server`;
    }
  } else {
    instances.markDriver(null);
    document.title = `${count}agent-server`;
  }
}

/** Inbox entries by run id, kept like the list's items. */
const inboxItems = new Map();

/** The inbox: every run this tab knows to be waiting for an approval,
 * oldest request first, each leading to its run. The runs come from
 * `GET /api/runs?status=waiting_approval` and stay current through the
 * WebSocket's run summaries and the journal of the open run. Returns how
 * many wait. */
function renderInbox() {
  const runs = store.listed({ status: 'waiting_approval' });
  const requested = (run) => Date.parse(run.pending_approval?.requested_at ?? run.updated_at) || 0;
  runs.sort((a, b) => requested(a) - requested(b) || (a.id < b.id ? -1 : 1));
  const wanted = new Set(runs.map((run) => run.id));
  for (const [id, item] of inboxItems) {
    if (!wanted.has(id)) {
      item.remove();
      inboxItems.delete(id);
    }
  }
  runs.forEach((run, index) => {
    let item = inboxItems.get(run.id);
    if (!item) {
      item = h('li', { class: 'inbox-item', 'data-testid': 'inbox-item', 'data-run-id': run.id },
        h('a', { href: `#/runs/${encodeURIComponent(run.id)}` },
          h('span', { class: 'inbox-what' }),
          h('span', { class: 'age' }),
          h('span', { class: 'task' })));
      inboxItems.set(run.id, item);
    }
    const [what, when, task] = item.firstChild.children;
    const pending = run.pending_approval;
    const kind = pending?.kind === 'budget' ? 'a budget raise' : pending?.tool ? pending.tool : 'a decision';
    setText(what, `${pending?.agent ?? run.agent} wants ${kind}`);
    setText(when, pending?.requested_at ? age(pending.requested_at) : '');
    setText(task, run.task ?? '');
    item.dataset.approvalId = pending?.approval_id ?? '';
    const link = item.firstChild;
    if (run.id === selectedId) link.setAttribute('aria-current', 'true');
    else link.removeAttribute('aria-current');
    const here = els.inbox.children[index];
    if (here !== item) els.inbox.insertBefore(item, here ?? null);
  });
  setText(els.inboxCount, String(runs.length));
  els.inboxEmpty.hidden = runs.length > 0;
  return runs.length;
}

/** Items by run id, so updates touch the existing nodes (and keyboard focus
 * stays where it was). */
const items = new Map();

function renderList() {
  const runs = store.listed(filters);
  const wanted = new Set(runs.map((run) => run.id));
  for (const [id, item] of items) {
    if (!wanted.has(id)) {
      item.remove();
      items.delete(id);
    }
  }
  runs.forEach((run, index) => {
    let item = items.get(run.id);
    if (!item) {
      item = listItem(run.id);
      items.set(run.id, item);
    }
    updateItem(item, run);
    const here = els.list.children[index];
    if (here !== item) els.list.insertBefore(item, here ?? null);
  });
  els.listEmpty.hidden = runs.length > 0;
  const filtered = FILTERS.some((name) => filters[name]);
  setText(els.listEmpty, filtered ? 'No runs match.' : can.operate ? 'No runs yet. Start one above.' : 'No runs yet.');
  els.loadMore.hidden = !olderCursor;
}

function listItem(id) {
  return h('li', { class: 'run-item', 'data-testid': 'run-item', 'data-run-id': id },
    h('a', { class: 'run-link', href: `#/runs/${encodeURIComponent(id)}` },
      h('span', { class: 'status' }),
      h('span', { class: 'agent' }),
      h('span', { class: 'by', 'data-testid': 'run-item-created-by' }),
      h('span', { class: 'age' }),
      h('span', { class: 'task' })));
}

function updateItem(item, run) {
  const [status, agent, by, when, task] = item.firstChild.children;
  if (item.dataset.status !== run.status) item.dataset.status = run.status;
  status.className = `status status-${classSafe(run.status)}`;
  setText(status, run.status);
  agent.className = `agent agent-${classSafe(run.agent)}`;
  setText(agent, run.agent);
  setText(by, run.created_by ? `by ${run.created_by}` : '');
  by.title = run.created_by ? `created by ${run.created_by}` : '';
  setText(when, age(run.created_at));
  when.title = new Date(Date.parse(run.created_at)).toLocaleString();
  setText(task, run.task);
  const link = item.firstChild;
  if (run.id === selectedId) link.setAttribute('aria-current', 'true');
  else link.removeAttribute('aria-current');
}

function showConnection(state) {
  els.connection.dataset.state = state;
  setText(els.connection, state === 'signed-out' ? 'signed out' : state);
  els.connection.title = state === 'connected'
    ? 'Live updates over a WebSocket'
    : state === 'signed-out'
      ? 'No live updates until you sign in'
      : 'The live connection is down; the page polls the server and reconnects by itself';
}

// ----- data --------------------------------------------------------------

function onFrame(frame) {
  switch (frame.type) {
    case 'event':
      if (typeof frame.run_id === 'string') applyEvent(frame.run_id, frame.event);
      break;
    case 'run':
      if (store.putSummary(frame.run)) scheduleRender();
      break;
    case 'delta':
      if (frame.run_id === selectedId) {
        store.journal(frame.run_id).addDelta(frame.agent, frame.text);
        scheduleRender();
      }
      break;
    case 'error':
      console.warn(`agent-server: ${frame.code}: ${frame.message}`);
      break;
    default:
      // `subscribed`, `pong`, and anything a newer server may add.
      break;
  }
}

const filling = new Set();

function applyEvent(runId, event) {
  const journal = store.journal(runId);
  const applied = journal.offer(event);
  if (journal.hasGap() && !filling.has(runId)) {
    // Something between our last seq and this one never reached us (a
    // subscription switched mid-stream); the REST API has it.
    filling.add(runId);
    fetchEvents(runId).catch(() => {}).finally(() => filling.delete(runId));
  }
  if (applied.length) {
    scheduleRender();
    // A finished run's final summary (result, usage) is worth fetching when
    // the WebSocket did not send it along.
    if (applied.some((e) => TERMINAL_EVENTS.has(e.type)) && !live.connected) refreshRun(runId, { events: false });
  }
}

async function fetchEvents(runId) {
  const events = await api.eventsAfter(runId, store.journal(runId).lastSeq);
  for (const event of events) applyEvent(runId, event);
}

async function refreshRun(id, { events }) {
  try {
    store.putSummary(await api.getRun(id));
    if (events) await fetchEvents(id);
  } catch (error) {
    if (error.status === 404 && id === selectedId) {
      runView.showMissing(id, 'There is no run with this id.');
    }
    // Otherwise the server is unreachable: the poll or the reconnect retries.
  }
  scheduleRender();
}

/** After each refresh of the instances: a run's owner changes without a
 * `run` frame when its instance stops or dies and another takes it over
 * (no summary changes then), so the selected run is fetched again while it
 * is active and no live instance is known to drive it. */
function checkDriver(liveIds) {
  if (!selectedId) return;
  const run = store.effectiveRun(selectedId);
  if (!run || TERMINAL_STATUSES.has(run.status)) return;
  const { state, owner } = driverOf(run);
  if (state === 'unclaimed' || (state === 'driven' && !liveIds.has(owner))) {
    refreshRun(selectedId, { events: false });
  }
}

/** A page of the list under the current filters, filtered by the server. */
function listPage(asked, before) {
  return api.listRuns({ ...asked, limit: PAGE_SIZE, before });
}

async function refreshList() {
  const asked = { ...filters };
  try {
    const page = await listPage(asked);
    for (const run of page.runs) store.putSummary(run);
    if (sameFilters(asked, filters) && !olderCursorLoaded) olderCursor = page.next_before;
    scheduleRender();
  } catch {
    // Unreachable or refused: keep what we have; the next poll retries.
  }
}

/** Every run waiting for an approval, for the inbox. */
async function refreshInbox() {
  try {
    let before;
    for (let pages = 0; pages < INBOX_PAGES; pages++) {
      const page = await api.listRuns({ status: 'waiting_approval', limit: INBOX_PAGE_SIZE, before });
      for (const run of page.runs) store.putSummary(run);
      before = page.next_before;
      if (!before) break;
    }
    scheduleRender();
  } catch {
    // As for the list: the next refresh retries.
  }
}

async function loadOlder() {
  if (!olderCursor) return;
  els.loadMore.disabled = true;
  const asked = { ...filters };
  try {
    const page = await listPage(asked, olderCursor);
    if (!sameFilters(asked, filters)) return;
    for (const run of page.runs) store.putSummary(run);
    olderCursor = page.next_before;
    olderCursorLoaded = true;
    scheduleRender();
  } catch {
    // Leave the button for another try.
  } finally {
    els.loadMore.disabled = false;
  }
}

// ----- selection (the URL hash) -----------------------------------------

/** The run the URL names and the entry of it, if any: `{id, seq}`, or
 * null. */
function runInHash() {
  const match = /^#\/runs\/([^/?#]+)(?:\/events\/(\d{1,12}))?$/.exec(location.hash);
  return match ? { id: decodeURIComponent(match[1]), seq: match[2] ? Number(match[2]) : null } : null;
}

function selectFromHash() {
  // A sign-in link is session.js's; signed out, the hash waits for sign-in.
  if (!me || hasTokenFragment()) return;
  const wanted = runInHash();
  wantedSeq = wanted?.seq ?? null;
  select(wanted?.id ?? null);
  scheduleRender();
}

function select(id) {
  if (id === selectedId) return;
  if (selectedId) live.unfollow(selectedId);
  selectedId = id;
  if (!id) {
    runView.clear();
    scheduleRender();
    return;
  }
  runView.show(id);
  // On a narrow screen the run comes above the list (style.css): a run
  // picked far down the list would otherwise appear out of sight.
  els.app.dataset.selected = 'true';
  if (window.matchMedia(NARROW).matches && els.main.getBoundingClientRect().top < 0) {
    els.main.scrollIntoView({ block: 'start' });
  }
  live.follow(id, () => store.journal(id).lastSeq);
  // Over the WebSocket the subscription replays the journal; without it,
  // the REST API does.
  refreshRun(id, { events: !live.connected });
  scheduleRender();
}

// ----- the form and the controls ----------------------------------------

els.form.addEventListener('submit', async (submitEvent) => {
  submitEvent.preventDefault();
  const task = els.task.value;
  const agent = els.agent.value;
  els.formError.hidden = true;
  if (!task.trim()) {
    showFormError('Write a task for the agent first.');
    els.task.focus();
    return;
  }
  const budget = budgetFromForm();
  if (budget === null) return;
  const signature = `${agent}\n${task}\n${JSON.stringify(budget)}`;
  if (!creating || creating.signature !== signature) creating = { signature, key: newKey() };
  els.submit.disabled = true;
  try {
    const run = await api.createRun({ task, agent, idempotencyKey: creating.key, budget });
    creating = null;
    store.putSummary(run);
    els.task.value = '';
    els.maxTokens.value = '';
    els.maxUsd.value = '';
    location.hash = `#/runs/${encodeURIComponent(run.id)}`;
  } catch (error) {
    showFormError(`The run was not created: ${error.message}`);
  } finally {
    els.submit.disabled = false;
  }
});

els.task.addEventListener('keydown', (key) => {
  if (key.key === 'Enter' && (key.ctrlKey || key.metaKey)) {
    key.preventDefault();
    els.form.requestSubmit();
  }
});

/** Puts the new-run form on the page, or takes it off: a token that may not
 * create runs is not offered the form at all. */
function offerRunForm(offer) {
  if (offer && !els.form.isConnected) els.side.prepend(els.form);
  if (!offer && els.form.isConnected) els.form.remove();
}

/** The budget the form asks for (`{max_tokens?, max_cost_usd?}`, empty
 * for none), or null after saying what is wrong with it. */
function budgetFromForm() {
  const budget = {};
  const tokens = els.maxTokens.value.trim();
  const dollars = els.maxUsd.value.trim();
  if (tokens !== '') {
    const value = Number(tokens);
    if (!Number.isInteger(value) || value < 1) {
      showFormError('Max tokens must be a whole number of at least 1, or empty for no limit.');
      els.maxTokens.focus();
      return null;
    }
    budget.max_tokens = value;
  }
  if (dollars !== '') {
    const value = Number(dollars);
    if (!Number.isFinite(value) || value <= 0) {
      showFormError('Max USD must be more than 0, or empty for no limit.');
      els.maxUsd.focus();
      return null;
    }
    budget.max_cost_usd = value;
  }
  return budget;
}

function showFormError(text) {
  setText(els.formError, text);
  els.formError.hidden = false;
}

// ----- filters and search (the URL's query) ------------------------------

/** The filters the URL's query names. */
function filtersFromUrl() {
  const query = new URLSearchParams(location.search);
  return Object.fromEntries(FILTERS.map((name) => [name, (query.get(name) ?? '').trim()]));
}

function sameFilters(a, b) {
  return FILTERS.every((name) => (a[name] ?? '') === (b[name] ?? ''));
}

/** Shows the filters in the controls (at start, and on back and forward). */
function showFilters() {
  els.filter.value = filters.status;
  if (els.filter.value !== filters.status) filters.status = '';
  els.search.value = filters.q;
  els.agentFilter.value = filters.agent;
  if (els.agentFilter.value !== filters.agent) filters.agent = '';
  els.createdByFilter.value = filters.created_by;
}

/** Takes the controls' filters: into the URL's query (the hash, the
 * selected run, stays), then the list from its first page. */
function applyFilters() {
  const next = {
    status: els.filter.value,
    q: els.search.value.trim(),
    agent: els.agentFilter.value,
    created_by: els.createdByFilter.value.trim(),
  };
  if (sameFilters(next, filters)) return;
  filters = next;
  const query = new URLSearchParams();
  for (const name of FILTERS) if (filters[name]) query.set(name, filters[name]);
  const search = query.toString();
  history.replaceState(history.state, '', `${location.pathname}${search ? `?${search}` : ''}${location.hash}`);
  olderCursor = null;
  olderCursorLoaded = false;
  scheduleRender();
  refreshList();
}

let typing = null;
/** Typing waits for a pause, so each keystroke is not a request. */
function applyFiltersSoon() {
  clearTimeout(typing);
  typing = setTimeout(applyFilters, TYPING_MS);
}

els.filter.addEventListener('change', applyFilters);
els.agentFilter.addEventListener('change', applyFilters);
els.search.addEventListener('input', applyFiltersSoon);
els.createdByFilter.addEventListener('input', applyFiltersSoon);
for (const input of [els.search, els.createdByFilter]) {
  input.addEventListener('keydown', (key) => {
    if (key.key === 'Enter') {
      clearTimeout(typing);
      applyFilters();
    }
  });
}
showFilters();

els.loadMore.addEventListener('click', loadOlder);
window.addEventListener('hashchange', selectFromHash);

// ----- timers and start ---------------------------------------------------

let polls = 0;
setInterval(() => {
  if (!me) return;
  polls += 1;
  if (!live.connected) {
    refreshList();
    refreshInbox();
    if (selectedId) refreshRun(selectedId, { events: true });
  } else if (polls % Math.round(LIST_REFRESH_MS / POLL_MS) === 0) {
    refreshList();
    refreshInbox();
  }
}, POLL_MS);

setInterval(() => {
  if (!me) return;
  runView.tick();
  instances.tick();
  renderList(); // ages
  renderInbox();
}, 1000);

// ----- signing in and out -------------------------------------------------

/** Signed in: offer what the roles allow, then load and go live. */
function startApp(identity) {
  me = identity;
  can = permissions(identity.roles);
  offerRunForm(can.operate);
  runView.setPermissions(can);
  els.app.hidden = false;
  showConnection('connecting');
  selectFromHash();
  refreshList();
  refreshInbox();
  instances.start();
  live.start();
  scheduleRender();
}

/** Signed out (or the session ended): stop polling and the WebSocket, and
 * show nothing of the runs. The URL keeps `#/runs/{id}` for the next
 * sign-in. */
function stopApp() {
  me = null;
  live.stop();
  instances.stop();
  showConnection('signed-out');
  if (selectedId) live.unfollow(selectedId);
  selectedId = null;
  creating = null;
  runView.clear();
  for (const item of inboxItems.values()) item.remove();
  inboxItems.clear();
  els.app.hidden = true;
  document.title = 'agent-server';
}

const session = new Session({ onSignedIn: startApp, onSignedOut: stopApp });
onUnauthorized(() => session.ended());
showConnection('connecting');
session.start();
