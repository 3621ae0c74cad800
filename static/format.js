// format.js: how times, durations and JSON are shown to people. Pure
// functions, no DOM, so the same wording appears in every view.

/** Milliseconds since the epoch for an RFC 3339 string, or NaN. */
export function millis(text) {
  return typeof text === 'string' ? Date.parse(text) : NaN;
}

/** A duration for a human: "850 ms", "2.4 s", "3 min 05 s", "2 h 10 min". */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return '';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${String(seconds % 60).padStart(2, '0')} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${String(minutes % 60).padStart(2, '0')} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** How long ago `at` was, coarse: "just now", "12 s ago", "5 min ago". */
export function age(at, now = Date.now()) {
  const ms = now - millis(at);
  if (!Number.isFinite(ms)) return '';
  if (ms < 5000) return 'just now';
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** The time left until `at`, as a countdown: "71 h 59 min" or "4 min 05 s". */
export function countdown(at, now = Date.now()) {
  const ms = millis(at) - now;
  if (!Number.isFinite(ms)) return '';
  if (ms <= 0) return 'expired';
  return `expires in ${duration(Math.ceil(ms / 1000) * 1000)}`;
}

/** A local date and time, for tooltips and `title`s. */
export function localTime(at) {
  const ms = millis(at);
  return Number.isFinite(ms) ? new Date(ms).toLocaleString() : '';
}

/** JSON for reading: indented, never throws. */
export function pretty(value) {
  try {
    return JSON.stringify(value, null, 2) ?? 'null';
  } catch {
    return String(value);
  }
}

/** JSON on one line, cut to `max` characters. */
export function compact(value, max = 120) {
  let text;
  try {
    text = JSON.stringify(value) ?? 'null';
  } catch {
    text = String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** A number of tokens with thousands separators. */
export function count(n) {
  return Number.isFinite(n) ? n.toLocaleString('en-US') : '0';
}

/** The Grafana Explore URL showing trace `traceId` in the Tempo data source
 * the stack provisions (uid `tempo`), or null without a Grafana URL or a
 * well-formed trace id. The time range starts a little before the run, so
 * Tempo searches where the trace is even when the run is old. */
export function traceUrl(grafanaUrl, traceId, createdAt) {
  if (!/^https?:\/\/\S+$/.test(grafanaUrl || '') || !/^[0-9a-f]{32}$/.test(traceId || '')) return null;
  const started = Date.parse(createdAt);
  const from = Number.isNaN(started) ? 'now-7d' : String(started - 5 * 60 * 1000);
  const panes = {
    trace: {
      datasource: 'tempo',
      queries: [{ refId: 'A', datasource: { type: 'tempo', uid: 'tempo' }, queryType: 'traceql', query: traceId }],
      range: { from, to: 'now' },
    },
  };
  const base = grafanaUrl.replace(/\/+$/, '');
  return `${base}/explore?schemaVersion=1&orgId=1&panes=${encodeURIComponent(JSON.stringify(panes))}`;
}

/** Tick spacings for a time axis, in ms: round numbers a reader sums in
 * their head. */
const TICK_STEPS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500,
  1000, 2000, 5000, 10_000, 15_000, 30_000,
  60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000,
  3_600_000, 7_200_000, 21_600_000, 43_200_000, 86_400_000,
];

/** Ticks for an axis `width` ms long: `[{at, label}]`, at most about
 * `most` + 1 of them, starting at 0 and `step` apart. */
export function axisTicks(width, most = 5) {
  if (!Number.isFinite(width) || width <= 0) return [{ at: 0, label: '0' }];
  const step = TICK_STEPS.find((s) => width / s <= most) ?? Math.ceil(width / most / 86_400_000) * 86_400_000;
  const ticks = [];
  for (let at = 0; at <= width + 1e-9; at += step) ticks.push({ at, label: tickLabel(at) });
  return ticks;
}

/** A tick's label: "0", "500 ms", "1.5 s", "30 s", "2 min", "1 h 30 min". */
export function tickLabel(ms) {
  if (ms === 0) return '0';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))} s`;
  const seconds = Math.round(ms / 1000);
  if (seconds < 3600) return seconds % 60 ? `${Math.floor(seconds / 60)} min ${seconds % 60} s` : `${seconds / 60} min`;
  const minutes = Math.round(seconds / 60);
  return minutes % 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} min` : `${minutes / 60} h`;
}

/** An amount in US dollars: cents for large sums, four decimals for the
 * small ones model calls cost (without trailing zeros past the cents),
 * and two significant digits below a cent (a call of a cheap model costs
 * millionths). */
export function usd(amount) {
  if (!Number.isFinite(amount)) return '';
  if (amount >= 1 || amount === 0) return `$${amount.toFixed(2)}`;
  if (amount >= 0.01) return `$${amount.toFixed(4).replace(/(\.\d\d\d*?)0+$/, '$1')}`;
  const decimals = Math.min(12, 1 - Math.floor(Math.log10(Math.abs(amount))));
  return `$${amount.toFixed(decimals)}`;
}
