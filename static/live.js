// live.js: the WebSocket half of the dashboard's link (contract section 5).
//
// One connection per tab. It reconnects by itself, with exponential backoff
// and jitter, after any close: the server restarting, a network blip, or the
// server dropping a slow reader (close code 4008). On every (re)connection it
// subscribes again to the run list and to each run it follows, each with
// `after` = the last seq this tab has applied, so the server replays exactly
// what was missed. A ping every PING_MS and a watchdog catch connections that
// died without a close (a laptop waking up, a proxy dropping the socket).
//
// The upgrade is authenticated by the session cookie, which the browser
// sends by itself to its own origin. Signed out, the page calls `stop()`:
// the socket closes and nothing reconnects until `start()` again. (A refused
// upgrade is invisible to scripts, so it is the REST calls' 401 that tells
// the page its session is over.)

/** First reconnect delay; doubled per failed attempt up to MAX_BACKOFF_MS. */
const BASE_BACKOFF_MS = 250;
/** Longest wait between attempts: a restarted server is seen within 5 s. */
const MAX_BACKOFF_MS = 5000;
/** A connection open this long counts as healthy and resets the backoff,
 * so a server that accepts and drops at once still gets backed off. */
const HEALTHY_AFTER_MS = 10_000;
/** How often to ping an idle connection. */
const PING_MS = 15_000;
/** Silence after which the connection is presumed dead: two missed pongs. */
const SILENCE_MS = 40_000;

/** The server's close code for a connection whose session ended or whose
 * token was revoked. */
const CLOSE_SIGNED_OUT = 4001;

export class Live {
  /**
   * `onFrame(frame)` gets every server message; `onState(state)` gets
   * `connecting` (first attempt), `connected` or `reconnecting`;
   * `onConnected()` runs after each successful (re)subscription;
   * `onSignedOut()` when the server closes the connection because its
   * session ended or its token was revoked (close code 4001): then nothing
   * reconnects until `start()` again.
   */
  constructor({ onFrame, onState, onConnected, onSignedOut }) {
    this.onFrame = onFrame;
    this.onState = onState;
    this.onConnected = onConnected;
    this.onSignedOut = onSignedOut;
    /** run id → function giving the seq to resume after. */
    this.followed = new Map();
    this.socket = null;
    this.state = 'connecting';
    this.attempt = 0;
    this.openedAt = 0;
    this.lastHeard = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    /** False until `start()` and after `stop()`: then nothing connects. */
    this.running = false;
    window.addEventListener('online', () => this.retryNow());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.retryNow();
    });
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.attempt = 0;
    this.state = 'connecting';
    this.connect();
  }

  /** Closes the connection, forgets the runs followed, and stays closed
   * (no retries, no pings) until `start()`. */
  stop() {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    clearInterval(this.pingTimer);
    this.followed.clear();
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try {
        socket.close(1000, 'signed out');
      } catch {
        // Already closing; it is gone either way.
      }
    }
    this.openedAt = 0;
    this.state = 'stopped';
  }

  get connected() {
    return this.state === 'connected';
  }

  /** Follows a run's journal from `afterSeq()` on, now and after reconnects. */
  follow(runId, afterSeq) {
    this.followed.set(runId, afterSeq);
    this.send({ op: 'subscribe', run_id: runId, after: afterSeq() });
  }

  unfollow(runId) {
    if (this.followed.delete(runId)) this.send({ op: 'unsubscribe', run_id: runId });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.onState(state);
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (!this.running) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/api/ws`);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.openedAt = Date.now();
      this.lastHeard = Date.now();
      this.send({ op: 'subscribe_runs' });
      for (const [runId, afterSeq] of this.followed) {
        this.send({ op: 'subscribe', run_id: runId, after: afterSeq() });
      }
      this.setState('connected');
      this.startPinging();
      this.onConnected();
    };
    socket.onmessage = (message) => {
      this.lastHeard = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame && typeof frame === 'object') this.onFrame(frame);
    };
    socket.onclose = (close) => {
      if (close.code === CLOSE_SIGNED_OUT) {
        this.stop();
        this.onSignedOut?.();
        return;
      }
      if (close.code === 4008) console.info('agent-server dropped this slow connection; reconnecting');
      this.lost(socket);
    };
    // An error is always followed by a close; the close does the work.
    socket.onerror = () => {};
  }

  /** Forgets a socket that closed or went silent, and plans the next try. */
  lost(socket) {
    if (socket !== this.socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close();
    } catch {
      // Closing a socket that never opened may throw; it is gone either way.
    }
    this.socket = null;
    clearInterval(this.pingTimer);
    if (this.openedAt && Date.now() - this.openedAt >= HEALTHY_AFTER_MS) this.attempt = 0;
    this.openedAt = 0;
    this.setState('reconnecting');
    this.scheduleRetry();
  }

  scheduleRetry() {
    if (this.retryTimer || !this.running) return;
    const ceiling = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** this.attempt);
    this.attempt += 1;
    // Full jitter between half and all of the ceiling, so tabs reopened by
    // one restart do not all knock at the same instant.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Tries at once when the browser says the network or the tab is back. */
  retryNow() {
    if (this.running && !this.socket && this.retryTimer) {
      this.attempt = 0;
      this.connect();
    }
  }

  startPinging() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (Date.now() - this.lastHeard > SILENCE_MS) {
        this.lost(this.socket);
        return;
      }
      this.send({ op: 'ping' });
    }, PING_MS);
  }
}
