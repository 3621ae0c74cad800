// session.js: who the page is signed in as (contract section 9). It owns the
// sign-in form, the `#token=…` link, the name and roles in the header, and
// signing out.
//
// The token is traded for a session cookie (`POST /api/session`) that is
// `HttpOnly`: no script, this one included, can read it back, and the page
// keeps no copy of the token anywhere (no storage, no variable after the
// request). A link `/#token=…` has its fragment removed from the address bar
// before the request is even sent, so the token stays in no history entry.
//
// The app hears `onSignedIn({name, roles})` and `onSignedOut()`; any 401 an
// API call meets later (expired, signed out elsewhere, token revoked) comes
// here through `ended()` and brings the form back. The URL's `#/runs/{id}`
// is left alone throughout, so signing in again returns to the same run.

import { api } from './api.js';
import { setText } from './dom.js';

/** How soon to ask again when the server could not be reached at start. */
const RETRY_MS = 2500;
/** The fragment that signs the page in: `#token=<token>`. */
const TOKEN_FRAGMENT = /^#token=(.*)$/s;

/** What a token with `roles` may do on the page (the server checks anyway;
 * this only keeps controls that would be refused off the screen). */
export function permissions(roles) {
  const list = Array.isArray(roles) ? roles : [];
  const has = (role) => list.includes(role) || list.includes('admin');
  return { operate: has('operator'), decide: has('approver'), admin: list.includes('admin') };
}

/** Whether the address holds a token to sign in with. */
export function hasTokenFragment() {
  return TOKEN_FRAGMENT.test(location.hash);
}

/** Takes the token out of the address bar (replacing the history entry,
 * keeping path and query) and returns it; null when there is none. */
function takeTokenFragment() {
  const match = TOKEN_FRAGMENT.exec(location.hash);
  if (!match) return null;
  history.replaceState(history.state, '', `${location.pathname}${location.search}`);
  try {
    return decodeURIComponent(match[1]).trim();
  } catch {
    return match[1].trim();
  }
}

export class Session {
  constructor({ onSignedIn, onSignedOut }) {
    this.onSignedIn = onSignedIn;
    this.onSignedOut = onSignedOut;
    /** `checking`, `signed-in` or `signed-out`. */
    this.state = 'checking';
    this.identity = null;
    this.retryTimer = null;
    const byId = (id) => document.getElementById(id);
    this.els = {
      status: byId('session-status'),
      panel: byId('sign-in'),
      form: byId('sign-in-form'),
      input: byId('token-input'),
      button: byId('sign-in-button'),
      note: byId('sign-in-note'),
      error: byId('sign-in-error'),
      account: byId('account'),
      whoami: byId('whoami'),
      roles: byId('whoami-roles'),
      signOut: byId('sign-out'),
    };
  }

  /** Signs in from `#token=…` when the address has one, else asks the
   * server whether the cookie still holds a session. */
  start() {
    this.els.form.addEventListener('submit', (submit) => {
      submit.preventDefault();
      this.signInWithForm();
    });
    this.els.signOut.addEventListener('click', () => this.signOut());
    // A sign-in link pasted into an open page.
    window.addEventListener('hashchange', () => {
      if (hasTokenFragment()) this.signInFromFragment();
    });
    if (hasTokenFragment()) this.signInFromFragment();
    else this.check();
  }

  async signInFromFragment() {
    const token = takeTokenFragment();
    if (token === null) return;
    this.showChecking('Signing in…');
    if (!token) {
      this.showForm({ error: 'The link has no token after #token=. Paste a token below.' });
      return;
    }
    try {
      await api.signIn(token);
    } catch (error) {
      this.showForm({
        error: error.status === 401
          ? 'The token in the link is unknown or revoked. Paste a valid token below.'
          : `Could not sign in with the link: ${error.message}`,
      });
      return;
    }
    await this.check();
  }

  async signInWithForm() {
    const token = this.els.input.value.trim();
    this.hideMessages();
    if (!token) {
      this.showError('Paste a token first.');
      this.els.input.focus();
      return;
    }
    this.els.button.disabled = true;
    try {
      await api.signIn(token);
    } catch (error) {
      this.els.button.disabled = false;
      this.showError(
        error.status === 401
          ? 'That token is unknown or revoked. Check it and try again.'
          : `Could not sign in: ${error.message}`,
      );
      this.els.input.select();
      this.els.input.focus();
      return;
    }
    this.els.button.disabled = false;
    // The page keeps no copy of the token once it has the cookie.
    this.els.input.value = '';
    await this.check();
  }

  /** Asks who the cookie belongs to: signed in, the form, or (server
   * unreachable) another try soon. */
  async check() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    let me;
    try {
      me = await api.me();
    } catch (error) {
      if (error.status === 401) {
        this.showForm({});
      } else {
        this.showChecking(`${error.message} Trying again…`);
        this.retryTimer = setTimeout(() => this.check(), RETRY_MS);
      }
      return;
    }
    this.signedIn(me);
  }

  signedIn(me) {
    const name = typeof me?.name === 'string' ? me.name : '?';
    const roles = Array.isArray(me?.roles) ? me.roles.map(String) : [];
    const wasIn = this.state === 'signed-in';
    this.identity = { name, roles };
    this.state = 'signed-in';
    setText(this.els.whoami, name);
    setText(this.els.roles, roles.join(', '));
    this.els.whoami.title = `Signed in with the token “${name}”; roles: ${roles.join(', ') || 'none'}`;
    this.els.account.hidden = false;
    this.els.panel.hidden = true;
    this.els.status.hidden = true;
    this.hideMessages();
    // Signed in again (another token, from a link) while signed in: the
    // app starts over with the new roles.
    if (wasIn) this.onSignedOut();
    this.onSignedIn(this.identity);
  }

  /** A call met 401: the session is over. The form comes back; the URL,
   * and with it the selected run, stays. */
  ended() {
    if (this.state !== 'signed-in') return;
    this.showForm({ error: 'Your session has ended (it expired, was signed out elsewhere, or its token was revoked). Sign in again.' });
  }

  async signOut() {
    if (this.state !== 'signed-in') return;
    this.els.signOut.disabled = true;
    let failed = null;
    try {
      await api.signOut();
    } catch (error) {
      failed = error;
    }
    this.els.signOut.disabled = false;
    this.showForm(failed
      ? { error: `The server could not be told (${failed.message}); the session ends by itself when it expires.` }
      : { note: 'You are signed out.' });
  }

  /** Stops everything the signed-in page does (again, harmlessly, when
   * it was not signed in). */
  leave() {
    this.state = 'signed-out';
    this.identity = null;
    this.els.account.hidden = true;
    setText(this.els.whoami, '');
    setText(this.els.roles, '');
    this.onSignedOut();
  }

  showChecking(text) {
    setText(this.els.status, text);
    this.els.status.hidden = false;
    this.els.panel.hidden = true;
  }

  showForm({ note = '', error = '' }) {
    this.leave();
    this.els.status.hidden = true;
    this.els.panel.hidden = false;
    this.els.button.disabled = false;
    this.hideMessages();
    if (note) {
      setText(this.els.note, note);
      this.els.note.hidden = false;
    }
    if (error) this.showError(error);
    document.title = 'Sign in · agent-server';
    this.els.input.focus();
  }

  showError(text) {
    setText(this.els.error, text);
    this.els.error.hidden = false;
  }

  hideMessages() {
    this.els.note.hidden = true;
    this.els.error.hidden = true;
  }
}
