// instances.js: the panel of live instances (contract section 10): the
// agent-server processes sharing this database, as `GET /api/instances`
// lists them (those whose heartbeat is recent), with how many runs each
// drives now and how old its last heartbeat is.
//
// The list is fetched when the page signs in, every REFRESH_MS while it is
// signed in (with or without the WebSocket, which carries no instance
// news), and at once after every (re)connection; nothing is fetched while
// signed out. An answer that arrives after a newer request's, or after
// signing out, is dropped. A failed refresh keeps the last list and says
// since when it is stale. Entries are keyed by instance id and updated in
// place; the one driving the selected run is marked.

import { api } from './api.js';
import { h, setText } from './dom.js';
import { age, localTime } from './format.js';

/** How often the list is fetched while signed in. */
export const REFRESH_MS = 5000;

export class InstancesPanel {
  /** `list` is the `<ul data-testid="instances">`, `note` a status line,
   * `count` the heading's count; `onRefreshed(ids)` hears the ids of the
   * live instances after each successful refresh. */
  constructor({ list, note, count, onRefreshed = () => {} }) {
    this.list = list;
    this.note = note;
    this.count = count;
    this.onRefreshed = onRefreshed;
    /** id → `<li>`, in the server's order (oldest first). */
    this.items = new Map();
    /** The instances as last fetched. */
    this.instances = [];
    /** Requests sent, and the newest whose answer was applied. */
    this.asked = 0;
    this.applied = 0;
    /** When the list was last fetched successfully (ms), 0 before. */
    this.fetchedAt = 0;
    this.timer = null;
    this.running = false;
    /** The instance driving the selected run, marked in the list. */
    this.driver = null;
  }

  /** Signed in: fetch now and every REFRESH_MS. */
  start() {
    if (this.running) return;
    this.running = true;
    setText(this.note, 'Loading the instances…');
    this.note.hidden = false;
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  /** Signed out: stop fetching and show nothing. */
  stop() {
    this.running = false;
    clearInterval(this.timer);
    this.timer = null;
    this.applied = this.asked;
    this.instances = [];
    this.fetchedAt = 0;
    for (const item of this.items.values()) item.remove();
    this.items.clear();
    setText(this.count, '');
    setText(this.note, '');
    this.note.hidden = true;
  }

  /** Fetches the list now (after a reconnect, or on the timer). */
  async refresh() {
    if (!this.running) return;
    const request = ++this.asked;
    let answer;
    try {
      answer = await api.instances();
    } catch (error) {
      if (!this.running || request <= this.applied) return;
      // A 401 signs the page out (api.js); anything else keeps what we have.
      const since = this.fetchedAt ? ` The list is from ${new Date(this.fetchedAt).toLocaleTimeString()}.` : '';
      setText(this.note, `Could not refresh the instances: ${error.message}${since}`);
      this.note.hidden = false;
      this.list.dataset.stale = 'true';
      return;
    }
    if (!this.running || request <= this.applied) return;
    this.applied = request;
    this.fetchedAt = Date.now();
    this.instances = Array.isArray(answer?.instances) ? answer.instances.filter((i) => typeof i?.id === 'string') : [];
    delete this.list.dataset.stale;
    this.render();
    this.onRefreshed(new Set(this.instances.map((i) => i.id)));
  }

  /** Marks the instance driving the selected run (null: none). */
  markDriver(id) {
    if (id === this.driver) return;
    this.driver = id;
    for (const [itemId, item] of this.items) this.updateMark(item, itemId === id);
  }

  /** Once a second: heartbeat ages. */
  tick() {
    for (const instance of this.instances) {
      const item = this.items.get(instance.id);
      if (item) setText(item.querySelector('.instance-heartbeat'), heartbeatText(instance));
    }
  }

  render() {
    const wanted = new Set(this.instances.map((i) => i.id));
    for (const [id, item] of this.items) {
      if (!wanted.has(id)) {
        item.remove();
        this.items.delete(id);
      }
    }
    this.instances.forEach((instance, index) => {
      let item = this.items.get(instance.id);
      if (!item) {
        item = instanceItem(instance.id);
        this.items.set(instance.id, item);
        this.updateMark(item, instance.id === this.driver);
      }
      updateItem(item, instance);
      const here = this.list.children[index];
      if (here !== item) this.list.insertBefore(item, here ?? null);
    });
    const n = this.instances.length;
    setText(this.note, n === 0 ? 'No live instance: no process has sent a heartbeat lately.' : '');
    this.note.hidden = n > 0;
    setText(this.count, `(${n})`);
  }

  updateMark(item, drives) {
    const mark = item.querySelector('.instance-drives');
    if (drives) item.dataset.drivesSelected = 'true';
    else delete item.dataset.drivesSelected;
    mark.hidden = !drives;
  }
}

function instanceItem(id) {
  return h('li', { class: 'instance-item', 'data-testid': 'instance-item', 'data-instance-id': id },
    h('code', { class: 'instance-id' }, id),
    h('span', { class: 'instance-drives', hidden: true }, 'drives the selected run'),
    h('span', { class: 'instance-runs', 'data-testid': 'instance-runs' }),
    h('span', { class: 'instance-heartbeat', 'data-testid': 'instance-heartbeat' }));
}

function updateItem(item, instance) {
  const runs = Number.isInteger(instance.runs) ? instance.runs : 0;
  if (item.dataset.runs !== String(runs)) item.dataset.runs = String(runs);
  setText(item.querySelector('.instance-runs'), `${runs} ${runs === 1 ? 'run' : 'runs'} driven`);
  const heartbeat = item.querySelector('.instance-heartbeat');
  setText(heartbeat, heartbeatText(instance));
  heartbeat.title = `last heartbeat ${localTime(instance.heartbeat_at)}`;
  item.title = `started ${localTime(instance.started_at)}`;
}

function heartbeatText(instance) {
  return `heartbeat ${age(instance.heartbeat_at) || 'unknown'}`;
}
