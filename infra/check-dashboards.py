#!/usr/bin/env python3
"""Run every PromQL expression of the Grafana dashboards against a Prometheus.

    infra/check-dashboards.py PROMETHEUS_URL DASHBOARDS_DIR [--require-data]
                              [--var NAME=VALUE ...] [--rate-interval 5m]
                              [--interval 1m] [--range 1h] [--verbose]

It reads every *.json file in DASHBOARDS_DIR (Grafana dashboard models), and
collects the PromQL it contains:
  - each panel target with an `expr` whose data source is Prometheus (panels
    nested in rows included; Tempo, Loki and other targets are skipped),
  - each templating variable of type `query` on a Prometheus data source
    (`label_values(expr, label)` and `query_result(expr)` are checked as
    `expr`; `label_values(label)` and `metrics(regex)` via the labels API).
Grafana's variables are replaced before running: $__rate_interval,
$__interval, $__range (and their _s/_ms forms) by the values of the options;
the dashboard's own variables by --var NAME=VALUE when given, else by their
current value (textbox, custom, constant, interval) or, for query variables,
their "All" value (`.*` unless allValue says otherwise).

Each expression goes to /api/v1/query; it fails when Prometheus does not
answer `status: success`, or, with --require-data, when the result has no
series. Exit status: 0 all good, 1 some expression failed (each failure is
listed on stderr), 2 bad usage, unreadable dashboards, or Prometheus
unreachable. Python 3 standard library only.
"""

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

# Data source types and uids/names that are certainly not Prometheus.
NON_PROMETHEUS_TYPES = {
    "tempo", "loki", "jaeger", "zipkin", "elasticsearch", "grafana-pyroscope-datasource",
    "grafana", "datasource", "__expr__", "testdata", "grafana-testdata-datasource",
}
NON_PROMETHEUS_NAMES = {"tempo", "loki", "-- grafana --", "-- dashboard --", "grafana"}
MIXED = {"-- mixed --"}


def parse_duration_seconds(text):
    """'5m' -> 300.0; accepts Prometheus units ms, s, m, h, d, w, y, combined."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, pos = 0.0, 0
    for match in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text):
        if match.start() != pos:
            raise ValueError(text)
        total += float(match.group(1)) * units[match.group(2)]
        pos = match.end()
    if pos != len(text) or pos == 0:
        raise ValueError(text)
    return total


class Expression:
    def __init__(self, where, promql, kind="query", label=None):
        self.where = where      # human-readable location
        self.promql = promql    # after variable substitution
        self.kind = kind        # "query", or "label" (check label values exist)
        self.label = label


def datasource_kind(ds):
    """'prometheus', 'other', 'mixed' or None (unspecified: the default, Prometheus here)."""
    if ds is None or ds == "":
        return None
    if isinstance(ds, dict):
        dtype = str(ds.get("type") or "").lower()
        uid = str(ds.get("uid") or "").lower()
        if uid in MIXED:
            return "mixed"
        if dtype == "prometheus":
            return "prometheus"
        if dtype in NON_PROMETHEUS_TYPES or uid in NON_PROMETHEUS_NAMES:
            return "other"
        return None if not dtype else "other"
    name = str(ds).lower()
    if name in MIXED:
        return "mixed"
    if name in NON_PROMETHEUS_NAMES:
        return "other"
    return "prometheus" if "prom" in name else None


def is_prometheus(target_ds, panel_ds):
    kind = datasource_kind(target_ds)
    if kind in (None, "mixed"):
        kind = datasource_kind(panel_ds)
    return kind in (None, "prometheus")


def walk_panels(panels):
    for panel in panels or []:
        yield panel
        # Rows (collapsed or not) and library-panel-like containers nest panels.
        yield from walk_panels(panel.get("panels"))


def variable_values(dashboard, overrides):
    """Name -> value for the dashboard's own variables."""
    values = {}
    for var in (dashboard.get("templating") or {}).get("list", []):
        name = var.get("name")
        if not name:
            continue
        vtype = var.get("type")
        value = None
        current = var.get("current") or {}
        cur = current.get("value")
        if isinstance(cur, list):
            cur = cur[0] if cur else None
        if vtype == "query":
            if cur not in (None, "", "$__all") and not var.get("includeAll"):
                value = cur
            else:
                value = var.get("allValue") or ".*"
        elif vtype in ("textbox", "constant", "custom", "interval"):
            if cur not in (None, "", "$__all"):
                value = cur
            elif vtype == "custom" and var.get("options"):
                value = var["options"][0].get("value")
            else:
                query = var.get("query")
                if isinstance(query, str) and query:
                    value = query.split(",")[0].strip()
            if value == "$__all" or value is None:
                value = var.get("allValue") or ".*"
        elif vtype == "datasource":
            continue
        else:
            value = cur if cur not in (None, "") else ".*"
        values[name] = str(value)
    values.update(overrides)
    return values


def substitute(text, values):
    """Replace $name, ${name}, ${name:format} and [[name]] (longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        value = values[name]
        esc = re.escape(name)
        text = re.sub(r"\$\{" + esc + r"(?::[^}]*)?\}", lambda _m: value, text)
        text = re.sub(r"\[\[" + esc + r"(?::[^\]]*)?\]\]", lambda _m: value, text)
        text = re.sub(r"\$" + esc + r"(?![A-Za-z0-9_])", lambda _m: value, text)
    return text


def builtin_values(args):
    rate = parse_duration_seconds(args.rate_interval)
    interval = parse_duration_seconds(args.interval)
    rng = parse_duration_seconds(args.range)
    return {
        "__rate_interval": args.rate_interval,
        "__rate_interval_ms": str(int(rate * 1000)),
        "__interval": args.interval,
        "__interval_ms": str(int(interval * 1000)),
        "__range": args.range,
        "__range_s": str(int(rng)),
        "__range_ms": str(int(rng * 1000)),
        "__auto": args.interval,
    }


def variable_query_expressions(where, query, values):
    """A Prometheus variable query -> list of Expression."""
    if isinstance(query, dict):
        query = query.get("query") or query.get("expr") or ""
    query = substitute(str(query).strip(), values)
    if not query:
        return []
    m = re.fullmatch(r"label_values\(\s*(.*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", query, re.S)
    if m:
        return [Expression(where, m.group(1).strip())]
    m = re.fullmatch(r"label_values\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)", query)
    if m:
        return [Expression(where, None, kind="label", label=m.group(1))]
    m = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if m:
        return [Expression(where, m.group(1).strip())]
    m = re.fullmatch(r"metrics\((.*)\)", query, re.S)
    if m:
        return [Expression(where, '{__name__=~"%s"}' % m.group(1).strip().replace('"', '\\"'))]
    m = re.fullmatch(r"label_names\(\s*\)", query)
    if m:
        return []
    return [Expression(where, query)]


def collect(path, args):
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    if "dashboard" in dashboard and "panels" not in dashboard:
        dashboard = dashboard["dashboard"]  # an API export wrapper
    title = dashboard.get("title") or os.path.basename(path)
    values = builtin_values(args)
    values.update(variable_values(dashboard, args.vars))
    found = []
    for var in (dashboard.get("templating") or {}).get("list", []):
        if var.get("type") != "query" or not is_prometheus(var.get("datasource"), None):
            continue
        where = "%s / variable $%s" % (title, var.get("name"))
        found.extend(variable_query_expressions(where, var.get("query") or var.get("definition"), values))
    for panel in walk_panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                continue
            if not is_prometheus(target.get("datasource"), panel.get("datasource")):
                continue
            where = "%s / panel %r / ref %s" % (title, panel.get("title", ""), target.get("refId", "?"))
            found.append(Expression(where, substitute(expr, values)))
    return found


def prometheus_get(base, path, params):
    url = base.rstrip("/") + path
    data = urllib.parse.urlencode(params).encode() if params is not None else None
    req = urllib.request.Request(url, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        # Prometheus answers 400/422 with a JSON error body for bad queries.
        try:
            return json.load(e)
        except Exception:
            return {"status": "error", "error": "HTTP %d" % e.code}


def check(expression, args):
    """None when fine, else a message."""
    leftover = re.search(r"\$\{?[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z_]", expression.promql or "")
    if leftover:
        return "unresolved variable %s (pass --var NAME=VALUE)" % leftover.group(0)
    if expression.kind == "label":
        answer = prometheus_get(args.url, "/api/v1/label/%s/values" % expression.label, None)
        if answer.get("status") != "success":
            return "label values: %s" % answer.get("error")
        if args.require_data and not answer.get("data"):
            return "no values for label %s" % expression.label
        return None
    params = {"query": expression.promql}
    if args.time:
        params["time"] = args.time
    answer = prometheus_get(args.url, "/api/v1/query", params)
    if answer.get("status") != "success":
        return "%s: %s" % (answer.get("errorType", "error"), answer.get("error", answer))
    if args.require_data:
        data = answer.get("data") or {}
        result = data.get("result")
        if data.get("resultType") in ("vector", "matrix") and not result:
            return "no data"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("dashboards", help="directory of Grafana dashboard JSON files")
    parser.add_argument("--require-data", action="store_true",
                        help="also fail when a query returns no series")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="value for a dashboard variable (repeatable)")
    parser.add_argument("--rate-interval", default="5m", help="value of $__rate_interval (5m)")
    parser.add_argument("--interval", default="1m", help="value of $__interval (1m)")
    parser.add_argument("--range", default="1h", help="value of $__range (1h)")
    parser.add_argument("--time", help="evaluation time (RFC 3339 or Unix seconds); default now")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every expression")
    args = parser.parse_args()

    args.vars = {}
    for item in args.var:
        if "=" not in item:
            parser.error("--var wants NAME=VALUE, got %r" % item)
        name, value = item.split("=", 1)
        args.vars[name.strip().lstrip("$")] = value
    for opt in ("rate_interval", "interval", "range"):
        try:
            parse_duration_seconds(getattr(args, opt))
        except ValueError:
            parser.error("--%s: not a duration: %r" % (opt.replace("_", "-"), getattr(args, opt)))

    if not os.path.isdir(args.dashboards):
        print("not a directory: %s" % args.dashboards, file=sys.stderr)
        return 2
    files = sorted(f for f in os.listdir(args.dashboards) if f.endswith(".json"))
    if not files:
        print("no *.json dashboards in %s" % args.dashboards, file=sys.stderr)
        return 2

    expressions = []
    for name in files:
        try:
            expressions.extend(collect(os.path.join(args.dashboards, name), args))
        except (OSError, ValueError) as e:
            print("%s: cannot read dashboard: %s" % (name, e), file=sys.stderr)
            return 2
    if not expressions:
        print("no PromQL expressions found in %s" % args.dashboards, file=sys.stderr)
        return 2

    try:
        probe = prometheus_get(args.url, "/api/v1/query", {"query": "1"})
    except (urllib.error.URLError, OSError) as e:
        print("Prometheus at %s unreachable: %s" % (args.url, e), file=sys.stderr)
        return 2
    if probe.get("status") != "success":
        print("Prometheus at %s does not answer queries: %s" % (args.url, probe), file=sys.stderr)
        return 2

    failures = 0
    cache = {}
    for expression in expressions:
        key = (expression.kind, expression.promql, expression.label)
        if key not in cache:
            try:
                cache[key] = check(expression, args)
            except (urllib.error.URLError, OSError) as e:
                cache[key] = "request failed: %s" % e
        problem = cache[key]
        shown = expression.promql if expression.kind == "query" else "label_values(%s)" % expression.label
        if problem:
            failures += 1
            print("FAIL %s\n     %s\n     %s" % (expression.where, shown, problem), file=sys.stderr)
        elif args.verbose:
            print("ok   %s\n     %s" % (expression.where, shown))
    total = len(expressions)
    print("%d expressions in %d dashboards: %d passed, %d failed%s"
          % (total, len(files), total - failures, failures,
             " (data required)" if args.require_data else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
