"""deploy/grafana: every dashboard loads, and every PromQL query we ship names only series the server
exports (the dashboards' panels and variables, and the guide's prometheus-adapter rule for
components/queue-autoscaling). A typo in a query is caught: the negative cases below break a real
dashboard one way each.

How names are read out of a query (`metric_names`), and its limits. PromQL has no metric-name
syntax of its own: a metric is an identifier that is not a function (followed by `(`), a keyword
(`by`, `on`, `bool`, `offset`, `and`...), a label (inside `{...}` or a `by (...)`-style list) or part of a
string, number or duration. So the reader drops Grafana's `$variables`, strings, `{...}` matchers,
`[...]` ranges and the label lists of `by`, `without`, `on`, `ignoring`, `group_left` and
`group_right`, then takes every identifier left: those followed by `(` must be PromQL functions or
aggregations, the rest are metric names. A sample name is known when it is a counter's or gauge's
family, or a histogram family plus `_bucket`, `_sum` or `_count` (a histogram's bare name is no
series). Labels are checked too: a matcher's label must be one of its family's (or `le` on a
`_bucket`), and a label in `by (...)`-style lists or a panel's legend `{{...}}` one of the query's
families'; Prometheus's target labels (`TARGET_LABELS`) are allowed everywhere. Limits: a metric
chosen by `{__name__=~"..."}` cannot be checked and is refused; Grafana template queries other than
`label_values(...)` and `query_result(...)` are read as PromQL; labels made by `label_replace` or
`label_join` are not known, and a grouping label is checked against every family of the query
together, not against the one operand it applies to.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted(GRAFANA_DIR.glob("*.json"))
GUIDE = ROOT / "deploy" / "kubernetes" / "README.md"
QUEUE_AUTOSCALING = ROOT / "deploy" / "kubernetes" / "components" / "queue-autoscaling" / "kustomization.yaml"


@dataclass(frozen=True)
class Family:
    """One exported family: its Prometheus type (its `# TYPE` line) and its samples' label names."""

    kind: str
    labels: frozenset[str]


def _family(kind: str, *labels: str) -> Family:
    return Family(kind, frozenset(labels))


# Labels Prometheus adds to every scraped series (a PodMonitor's target labels; `job` and `instance` anywhere).
TARGET_LABELS = frozenset({"namespace", "pod", "container", "endpoint", "service", "job", "instance"})
# The labels the gateway adds to each TEI family it re-exports.
TEI_LABELS = ("model", "kind", "replica")


def exported_families() -> dict[str, Family]:
    """Every family the gateway's /metrics exports: name -> type and label names.

    The one source of the exported set for these tests. For now: the families issue 20 pins for the
    launcher and gateway, and TEI's te_* families as the TEI contract lists them (shared/tei-contract.md §10:
    TEI 1.9.3, every histogram rendered with buckets); the gateway re-exports each with the labels
    model, kind and replica. tests/test_gateway_metrics.py checks this list against a real gateway's
    answer (every series listed is there, with exactly these labels), so a rename there fails.
    """
    ours = {
        "embed_requests_total": _family("counter", "model", "route", "code"),
        # The issue pins no labels for the histogram; by model, as every panel of it asks.
        "embed_request_duration_seconds": _family("histogram", "model"),
        "embed_inputs_total": _family("counter", "model"),
        "embed_inflight_inputs": _family("gauge", "model", "replica"),
        "embed_gateway_waits_total": _family("counter", "model"),
        "embed_gateway_retries_total": _family("counter", "model"),
        "embed_batch_splits_total": _family("counter", "model"),
        "embed_replica_state": _family("gauge", "model", "replica", "state"),  # 1 for the current state
        "embed_replica_restarts_total": _family("counter", "model", "replica", "reason"),
        "embed_up": _family("gauge", "model"),
        "embed_build_info": _family("gauge", "version", "tei_version"),
        "embed_scrape_errors_total": _family("counter", "model"),
    }
    tei = {
        "te_queue_size": _family("gauge", *TEI_LABELS),
        # prometheus_client writes counters with `_total`: TEI's te_request_count is te_request_count_total
        "te_request_count_total": _family("counter", *TEI_LABELS, "method"),
        "te_request_success_total": _family("counter", *TEI_LABELS, "method"),  # as the stand-in counts it
        "te_request_failure_total": _family("counter", *TEI_LABELS, "err"),
        "te_request_duration": _family("histogram", *TEI_LABELS),
        "te_request_queue_duration": _family("histogram", *TEI_LABELS),
        "te_request_inference_duration": _family("histogram", *TEI_LABELS),
        "te_request_tokenization_duration": _family("histogram", *TEI_LABELS),
        "te_request_input_length": _family("histogram", *TEI_LABELS),
        "te_batch_next_size": _family("histogram", *TEI_LABELS),
        "te_batch_next_tokens": _family("histogram", *TEI_LABELS),
    }
    return ours | tei


# -- reading PromQL ------------------------------------------------------------------------------

# PromQL's functions and aggregation operators (Prometheus 3.x), the names that may precede `(`.
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg",
    "avg_over_time", "bottomk", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count",
    "count_over_time", "count_values", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "double_exponential_smoothing", "end", "exp", "floor", "group", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar",
    "histogram_sum", "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace",
    "last_over_time", "limitk", "limit_ratio", "ln", "log10", "log2", "mad_over_time", "max", "max_over_time",
    "min", "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time", "quantile",
    "quantile_over_time", "rad", "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort",
    "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "start", "stddev", "stddev_over_time", "stdvar",
    "stdvar_over_time", "sum", "sum_over_time", "tan", "tanh", "time", "timestamp", "topk", "vector", "year",
})
KEYWORDS = frozenset({"and", "or", "unless", "atan2", "bool", "offset", "by", "without", "on", "ignoring",
                      "group_left", "group_right", "inf", "nan", "Inf", "NaN"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# An identifier not glued to a number, a duration or another name (`5m`, `1e3`, `0.99`), and whether a call follows.
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, called names) of one PromQL expression; see the module's docstring."""
    text = _VARIABLE.sub(" ", expr)
    text = _STRING.sub('""', text)
    text = _MATCHERS.sub("{}", text)
    text = _RANGE.sub("[]", text)
    text = _LABEL_LIST.sub(" ", text)
    metrics, calls = set(), set()
    for match in _IDENTIFIER.finditer(text):
        ident, call = match.group(1), match.group(2)
        if call:
            calls.add(ident)
        elif ident not in KEYWORDS:
            metrics.add(ident)
    return metrics, calls


def sample_names(families: dict[str, Family]) -> dict[str, str]:
    """Each series name a scrape can hold -> its family."""
    names = {}
    for family, spec in families.items():
        if spec.kind in ("histogram", "summary"):
            names.update({family + suffix: family for suffix in HISTOGRAM_SUFFIXES})
        if spec.kind != "histogram":
            names[family] = family
    return names


def series_labels(series: str, families: dict[str, Family]) -> frozenset[str]:
    """The labels one series name can carry, Prometheus's target labels included."""
    family = sample_names(families)[series]
    return families[family].labels | TARGET_LABELS | ({"le"} if series.endswith("_bucket") else set())


_SELECTOR = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_LABEL_LIST_NAMES = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")


def label_problems(expr: str, families: dict[str, Family], legend: str = "") -> list[str]:
    """Labels a query matches, groups by or shows in its legend that its families do not have."""
    known = sample_names(families)
    text = _STRING.sub('""', _VARIABLE.sub(" ", expr))
    metrics = metric_names(expr)[0] & set(known)
    problems = []
    for series, matchers in _SELECTOR.findall(text):
        if series in known:
            have = series_labels(series, families)
            problems += [f"{series} has no label {label!r}" for label in _MATCHER.findall(matchers)
                         if label not in have]
    have = frozenset().union(*(series_labels(m, families) for m in metrics)) if metrics else frozenset()
    grouped = {label.strip() for names in _LABEL_LIST_NAMES.findall(text)
               for label in names.split(",") if label.strip()}
    shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
    problems += [f"no family of the query has the label {label!r} it groups by" for label in sorted(grouped - have)]
    problems += [f"the legend shows {{{{{label}}}}}, a label the result does not have"
                 for label in sorted(shown - have - grouped) if metrics]
    return problems


def query_problems(expr: str, families: dict[str, Family], legend: str = "") -> list[str]:
    """What in one query names no exported series or label, or cannot be checked."""
    known = sample_names(families)
    problems = []
    if "__name__" in expr:
        problems.append("selects metrics by __name__, which cannot be checked: name the family")
    metrics, calls = metric_names(expr)
    for call in sorted(calls - FUNCTIONS):
        problems.append(f"{call}() is not a PromQL function")
    for metric in sorted(metrics - set(known)):
        if metric in families and families[metric].kind == "histogram":
            problems.append(f"{metric} is a histogram: query {metric}_bucket, _sum or _count")
            continue
        close = difflib.get_close_matches(metric, list(known), n=1)
        problems.append(f"{metric} is not exported" + (f" (did you mean {close[0]}?)" if close else ""))
    if not metrics:
        problems.append("names no metric at all")
    return problems + label_problems(expr, families, legend)


def template_expr(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query; None when it names no series."""
    query = query.strip()
    for function in ("label_values", "query_result"):
        if query.startswith(function + "(") and query.endswith(")"):
            inner = query[len(function) + 1:-1]
            if function == "query_result":
                return inner
            selector, comma, _label = inner.rpartition(",")
            return selector if comma else None
    if query.startswith(("label_names(", "metrics(")):
        return None
    return query


# -- reading dashboards --------------------------------------------------------------------------

def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, PromQL, legend) for every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} {target.get('refId')}"
            yield where, target.get("expr", ""), target.get("legendFormat", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            expr = template_expr(text)
            if expr is not None:
                label = text.rstrip(")").rpartition(",")[2].strip() if text.startswith("label_values(") else ""
                yield f"variable ${variable['name']}", expr, f"{{{{{label}}}}}" if label else ""


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for where, expr, _ in targets(dashboard):
        yield where, expr


def dashboard_problems(dashboard: dict[str, Any], families: dict[str, Family]) -> list[str]:
    return [f"{where}: {problem}" for where, expr, legend in targets(dashboard)
            for problem in query_problems(expr, families, legend)]


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# -- the dashboards we ship ----------------------------------------------------------------------

def test_there_is_a_dashboard() -> None:
    assert [p.name for p in DASHBOARDS] == ["embed-launcher.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_dashboard_loads_and_is_importable(path: Path) -> None:
    """Valid JSON; the fields Grafana's import needs; unique panel ids; every query on the chosen data source."""
    dashboard = load(path)
    assert dashboard["title"] and dashboard["uid"] and isinstance(dashboard["schemaVersion"], int)
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def test_every_dashboard_query_names_exported_families(path: Path) -> None:
    dashboard = load(path)
    assert len(list(queries(dashboard))) >= 10
    assert dashboard_problems(dashboard, exported_families()) == []


def test_dashboard_shows_what_the_issue_asks() -> None:
    """Requests/s per model, p50/p99 latency, queue, inputs in flight per replica, restarts, state."""
    exprs = [expr for _, expr in queries(load(GRAFANA_DIR / "embed-launcher.json"))]

    def shown(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert shown(r"sum by \(model\) \(rate\(embed_requests_total\{")
    assert shown(r"histogram_quantile\(0\.5, sum by \(model, le\) \(rate\(embed_request_duration_seconds_bucket")
    assert shown(r"histogram_quantile\(0\.99, sum by \(model, le\) \(rate\(embed_request_duration_seconds_bucket")
    assert shown(r"\(te_queue_size\{")
    assert shown(r"by \([^)]*replica[^)]*\) \(embed_inflight_inputs\{")
    assert shown(r"increase\(embed_replica_restarts_total\{")
    assert shown(r"embed_replica_state\{[^}]*\} == 1")


# -- every way to break a query is caught --------------------------------------------------------

# (text in one of the shipped dashboard's strings: a query, a legend or a variable's query; its
# replacement; what it shows): each must break the check.
TYPOS: tuple[tuple[str, str, str], ...] = (
    ("rate(embed_requests_total{", "rate(embed_request_total{", "a family misspelt"),
    ("embed_request_duration_seconds_bucket{", "embed_request_duration_seconds{", "a histogram without _bucket"),
    ("embed_request_duration_seconds_bucket{", "embed_request_duration_seconds_buckets{", "a wrong suffix"),
    ("te_queue_size{", "tei_queue_size{", "TEI's prefix misspelt"),
    ("(embed_inflight_inputs{", "(embed_inflight_input{", "a gauge misspelt"),
    ("min by (model) (embed_up{namespace=~\"$namespace\", model=~\"$model\"})", "min by (model) (embed_upp)",
     "a bare name, no braces"),
    ("histogram_quantile(0.99,", "histogram_quantil(0.99,", "a function misspelt"),
    ("label_values(embed_up, namespace)", "label_values(embed_upp, namespace)", "a variable's metric misspelt"),
    ("(te_queue_size{", '({__name__="te_queue_size", ', "a name hidden in __name__"),
    ("(te_queue_size{", "(te_queue_size{} or te_embed_count{", "a stand-in family TEI's contract does not list"),
    ("sum by (model) (rate(embed_inputs_total{", "sum by (replica) (rate(embed_inputs_total{",
     "grouped by a label it lacks"),
    ('embed_requests_total{namespace=~"$namespace", model=~"$model"}', 'embed_requests_total{modle=~"$model"}',
     "a matcher's label misspelt"),
    ("{{model}} {{code}}", "{{model}} {{status}}", "a legend's label unknown"),
    ("label_values(embed_up, namespace)", "label_values(embed_up, namespaces)", "a variable's label misspelt"),
)


@pytest.mark.parametrize(("old", "new", "shows"), TYPOS, ids=[t[2] for t in TYPOS])
def test_a_typo_in_a_query_is_caught(old: str, new: str, shows: str) -> None:
    broken = load(GRAFANA_DIR / "embed-launcher.json")
    assert _replace_first(broken, old, new), f"the dashboard no longer has {old!r}: update this case"
    assert dashboard_problems(broken, exported_families()), f"not caught: {shows}"


def _replace_first(node: Any, old: str, new: str) -> bool:
    """Replace `old` by `new` in the first string value of the JSON tree that holds it."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        if isinstance(value, str) and old in value:
            node[key] = value.replace(old, new, 1)
            return True
        if _replace_first(value, old, new):
            return True
    return False


@pytest.mark.parametrize(("expr", "metrics"), [
    ('sum by (model, code) (rate(embed_requests_total{code=~"5..", model="a b"}[$__rate_interval]))',
     {"embed_requests_total"}),
    ("histogram_quantile(0.99, sum(rate(te_request_duration_bucket[5m])) by (le)) > 1e3",
     {"te_request_duration_bucket"}),
    ("embed_up * on (model) group_left (version) embed_build_info offset 5m and bool te_queue_size",
     {"embed_up", "embed_build_info", "te_queue_size"}),
    ("max_over_time(te_queue_size[1h:1m]) unless embed_inflight_inputs @ start()",
     {"te_queue_size", "embed_inflight_inputs"}),
    ('label_replace(embed_up, "dst", "$1", "model", "(.*)")', {"embed_up"}),
])
def test_metric_names_reads_what_promql_means(expr: str, metrics: set[str]) -> None:
    """The reader's rules on the forms the dashboard and the adapter use, and a few beyond them."""
    assert metric_names(expr)[0] == metrics


def test_a_copy_of_the_dashboard_is_not_changed_by_the_check() -> None:
    dashboard = load(GRAFANA_DIR / "embed-launcher.json")
    before = copy.deepcopy(dashboard)
    dashboard_problems(dashboard, exported_families())
    assert dashboard == before


# -- the queue-autoscaling adapter rule in the guide ---------------------------------------------

def _adapter_rule() -> dict[str, Any]:
    guide = GUIDE.read_text()
    start = guide.index("## Autoscaling on the queue")
    block = guide.index("```yaml\nrules:", start) + len("```yaml\n")
    (rule,) = yaml.safe_load(guide[block:guide.index("```", block)])["rules"]
    return dict(rule)


def test_adapter_rule_queries_exported_families_and_feeds_the_autoscaler() -> None:
    """The guide's prometheus-adapter rule reads exported series and serves the metric the HPA asks for."""
    rule = _adapter_rule()
    families = exported_families()
    assert query_problems(rule["seriesQuery"], families) == []
    (series,) = metric_names(rule["seriesQuery"])[0]
    expanded = (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", 'pod="p"')
                .replace("<<.GroupBy>>", "pod"))
    assert query_problems(expanded, families) == []
    assert re.fullmatch(rule["name"]["matches"], series)
    patch = yaml.safe_load(yaml.safe_load(QUEUE_AUTOSCALING.read_text())["patches"][0]["patch"])
    (metric,) = patch[0]["value"]
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    # Summed over models and replicas per pod (the guide says why), not the max of one TEI.
    assert expanded.startswith("sum(")


# -- the queries are PromQL, as Prometheus itself parses it ---------------------------------------

def _concrete(expr: str) -> str:
    """A dashboard query as Grafana sends it: its interval variables as durations, the others as `.*`."""
    return re.sub(r"\$\{?(\w+)\}?", lambda m: "1m" if m.group(1).startswith("__") else ".*", expr)


def promtool_problems(exprs: list[str], scratch: Path) -> str:
    """promtool's complaints about the expressions, as recording rules (empty when all parse)."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed, so the queries' PromQL syntax is not checked here "
                    "(Debian and Ubuntu: apt-get install prometheus, which ships promtool)")
    rules = {"groups": [{"name": "queries", "rules": [{"record": f"query:{i}", "expr": _concrete(e)}
                                                        for i, e in enumerate(exprs)]}]}
    path = scratch / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = subprocess.run([binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    return "" if proc.returncode == 0 else proc.stdout + proc.stderr


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    """Prometheus's own parser (promtool) accepts every dashboard query and the adapter's query."""
    exprs = [expr for path in DASHBOARDS for _, expr in queries(load(path))]
    rule = _adapter_rule()
    exprs.append(rule["metricsQuery"].replace("<<.Series>>", "te_queue_size")
                 .replace("<<.LabelMatchers>>", 'pod="p"').replace("<<.GroupBy>>", "pod"))
    assert promtool_problems(exprs, tmp_path) == ""


def test_promtool_catches_a_syntax_error(tmp_path: Path) -> None:
    assert "query:1" in promtool_problems(["embed_up", "sum by (model) (rate(embed_requests_total[1m])"], tmp_path)
