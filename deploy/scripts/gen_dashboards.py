#!/usr/bin/env python3
"""Generates the Grafana dashboards in deploy/helm/campaign-os/dashboards/.

The JSON files are committed (the chart ships them as a ConfigMap, docker/compose.yaml mounts
them into the local Grafana); edit this script and rerun it rather than editing the JSON by hand:

    python3 deploy/scripts/gen_dashboards.py            # rewrite the files
    python3 deploy/scripts/gen_dashboards.py --check    # exit 1 if the files are stale (CI)

Metric contract (see docs/operations.md, "Metrics"):
    cos_grpc_server_requests_total{service,method,code}      counter
    cos_grpc_server_duration_seconds_bucket{service,method,le} histogram
    cos_http_requests_total{route,method,status}               counter (gateway)
    cos_http_request_duration_seconds_bucket{route,method,le}  histogram (gateway)
    cos_gateway_rate_limited_total{scope}                      counter
    cos_outbox_pending{schema}                                 gauge
    cos_outbox_published_total{schema}                         counter
    cos_events_dead_lettered_total{queue}                      counter
    cos_campaigns_launched_total                               counter
    cos_campaigns_fanout_recipients_total                      counter
    cos_publishing_deliveries_total{status,kind}               counter (sent|failed|transient_error; live|sandbox)
    cos_publishing_batches_total{outcome}                      counter (done|parked|dropped|requeued)
    cos_publishing_batch_seconds{quantile}                     summary (per process: not a *_duration_seconds
                                                               histogram, so no buckets; use _sum/_count)
    cos_publishing_batches_parked_total                        counter
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "helm" / "campaign-os" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace=~"$namespace"'
SVC = f'{NS}, service=~"$service"'
# Server-fault gRPC codes, as the telemetry layer spells them (tonic Code in SCREAMING_SNAKE).
FAULTS = 'code=~"UNKNOWN|DEADLINE_EXCEEDED|INTERNAL|UNAVAILABLE|DATA_LOSS"'
NS5 = NS + ', status=~"5.."'


class Layout:
    """Places panels left to right on a 24-column grid and hands out ids."""

    def __init__(self) -> None:
        self.panels: list[dict] = []
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "id": self._id(), "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_h
            self.x = 0
            self.row_h = 0

    def add(self, panel: dict, w: int, h: int) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, fmt: str = "time_series") -> dict:
    t = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref,
         "range": not instant, "instant": instant, "format": fmt}
    return t


def timeseries(title: str, targets: list[dict], unit: str = "short", desc: str = "",
               stack: bool = False, thresholds: list | None = None, max_: float | None = None) -> dict:
    defaults: dict = {
        "unit": unit,
        "min": 0,
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 30,
                   "showPoints": "never", "spanNulls": False,
                   "stacking": {"mode": "normal" if stack else "none", "group": "A"}},
        "color": {"mode": "palette-classic"},
    }
    if max_ is not None:
        defaults["max"] = max_
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
    return {"type": "timeseries", "title": title, "description": desc, "datasource": DS,
            "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["mean", "max", "lastNotNull"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, unit: str, steps: list, desc: str = "", decimals: int | None = None) -> dict:
    defaults: dict = {"unit": unit, "color": {"mode": "thresholds"},
                      "thresholds": {"mode": "absolute", "steps": steps}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": desc, "datasource": DS,
            "targets": [target(expr, instant=False)],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "value",
                        "justifyMode": "auto", "orientation": "auto"}}


def table(title: str, targets: list[dict], join: str, renames: dict, units: dict, desc: str = "") -> dict:
    overrides = [{"matcher": {"id": "byName", "options": name},
                  "properties": [{"id": "unit", "value": unit}]} for name, unit in units.items()]
    return {"type": "table", "title": title, "description": desc, "datasource": DS,
            "targets": targets,
            "transformations": [
                {"id": "joinByField", "options": {"byField": join, "mode": "outer"}},
                {"id": "organize", "options": {"excludeByName": {"Time": True, "Time 1": True, "Time 2": True,
                                                                 "Time 3": True, "Time 4": True},
                                               "renameByName": renames}},
                {"id": "sortBy", "options": {"sort": [{"field": list(renames.values())[0], "desc": True}]}},
            ],
            "fieldConfig": {"defaults": {"custom": {"align": "auto"}}, "overrides": overrides},
            "options": {"showHeader": True, "cellHeight": "sm"}}


GREEN, AMBER, RED = "green", "orange", "red"


def steps(amber: float, red: float) -> list:
    return [{"color": GREEN, "value": None}, {"color": AMBER, "value": amber}, {"color": RED, "value": red}]


def variables(with_service: bool) -> dict:
    v = [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
         "query": {"query": "label_values(cos_grpc_server_requests_total, namespace)", "refId": "ns"},
         "definition": "label_values(cos_grpc_server_requests_total, namespace)",
         "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0, "options": []},
    ]
    if with_service:
        q = f"label_values(cos_grpc_server_requests_total{{{NS}}}, service)"
        v.append({"name": "service", "label": "Service", "type": "query", "datasource": DS,
                  "query": {"query": q, "refId": "svc"}, "definition": q,
                  "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
                  "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "hide": 0,
                  "options": []})
    return {"list": v}


def dashboard(uid: str, title: str, desc: str, layout: Layout, with_service: bool, tags: list[str]) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": desc,
        "tags": ["campaign-os", *tags],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "Campaign OS", "type": "dashboards", "tags": ["campaign-os"], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "templating": variables(with_service),
        "panels": layout.panels,
    }


def rate(metric: str, sel: str) -> str:
    return f"rate({metric}{{{sel}}}[$__rate_interval])"


def overview() -> dict:
    L = Layout()
    L.row("Now")
    L.add(stat("Gateway requests/s", f"sum({rate('cos_http_requests_total', NS)})", "reqps",
               [{"color": "blue", "value": None}]), 4, 4)
    L.add(stat("Gateway 5xx ratio",
               f"sum({rate('cos_http_requests_total', NS5)}) / sum({rate('cos_http_requests_total', NS)})",
               "percentunit", steps(0.01, 0.05), "Share of gateway responses with a 5xx status.", 2), 4, 4)
    L.add(stat("Gateway p99",
               f"histogram_quantile(0.99, sum by (le) ({rate('cos_http_request_duration_seconds_bucket', NS)}))",
               "s", steps(0.75, 1.5)), 4, 4)
    L.add(stat("gRPC server-error ratio",
               f"sum({rate('cos_grpc_server_requests_total', NS + ', ' + FAULTS)}) / sum({rate('cos_grpc_server_requests_total', NS)})",
               "percentunit", steps(0.01, 0.05), "INTERNAL, UNAVAILABLE, UNKNOWN, DEADLINE_EXCEEDED, DATA_LOSS over all calls.", 2), 4, 4)
    L.add(stat("Outbox pending", f"sum(cos_outbox_pending{{{NS}}})", "short", steps(100, 1000),
               "Events written by services but not yet published to RabbitMQ."), 4, 4)
    L.add(stat("Dead-lettered (1h)", f"sum(increase(cos_events_dead_lettered_total{{{NS}}}[1h]))", "short",
               steps(1, 10), "Events that exhausted their retries in the last hour.", 0), 4, 4)
    L.row("Traffic")
    L.add(timeseries("Gateway responses/s by status class", [target(
        f'sum by (class) (label_replace({rate("cos_http_requests_total", NS)}, "class", "${{1}}xx", "status", "([0-9]).."))',
        "{{class}}")], "reqps", stack=True), 12, 8)
    L.add(timeseries("gRPC requests/s by service", [target(
        f"sum by (service) ({rate('cos_grpc_server_requests_total', NS)})", "{{service}}")], "reqps"), 12, 8)
    L.add(timeseries("gRPC server-error ratio by service", [target(
        f"sum by (service) ({rate('cos_grpc_server_requests_total', NS + ', ' + FAULTS)}) / sum by (service) ({rate('cos_grpc_server_requests_total', NS)})",
        "{{service}}")], "percentunit", thresholds=steps(0.01, 0.05)), 12, 8)
    L.add(timeseries("gRPC p99 by service", [target(
        f"histogram_quantile(0.99, sum by (service, le) ({rate('cos_grpc_server_duration_seconds_bucket', NS)}))",
        "{{service}}")], "s"), 12, 8)
    L.row("Events")
    L.add(timeseries("Outbox pending by schema", [target(
        f"sum by (schema) (cos_outbox_pending{{{NS}}})", "{{schema}}")], "short",
        thresholds=steps(100, 1000)), 12, 8)
    L.add(timeseries("Rate-limited requests/s", [target(
        f"sum by (scope) ({rate('cos_gateway_rate_limited_total', NS)})", "{{scope}}")], "reqps", stack=True), 12, 8)
    L.row("Campaign delivery")
    L.add(timeseries("Delivery attempts/s by status", [target(
        f"sum by (status, kind) ({rate('cos_publishing_deliveries_total', NS)})", "{{status}} ({{kind}})")],
        "ops", stack=True,
        desc="Send attempts by result; live = SMTP and webhooks, sandbox = rendered and stored only. "
             "transient_error attempts are retried with backoff up to COS_PUBLISHING__MAX_ATTEMPTS; "
             "failed ones carry the provider's reason (GET /v1/campaigns/{id}/deliveries?status=failed)."), 12, 8)
    L.add(timeseries("Delivery batches/s by outcome", [target(
        f"sum by (outcome) ({rate('cos_publishing_batches_total', NS)})", "{{outcome}}")], "ops", stack=True,
        desc="Work-queue batches handled by publishing. requeued: database trouble, the batch comes back "
             "after 1 s; parked: its campaign is paused; dropped: its job is cancelled, completed or unknown."),
          12, 8)
    L.add(timeseries("Batch processing time", [
        target(f"sum({rate('cos_publishing_batch_seconds_sum', NS)}) / sum({rate('cos_publishing_batch_seconds_count', NS)})",
               "mean", "A"),
        target(f'max(cos_publishing_batch_seconds{{{NS}, quantile="0.99"}})', "p99 (slowest pod)", "B"),
    ], "s", desc="cos_publishing_batch_seconds is a per-process summary: the mean is exact over all pods, "
                 "the p99 is the worst pod's recent p99."), 6, 8)
    L.add(timeseries("Batches parked", [target(
        f"sum(increase(cos_publishing_batches_parked_total{{{NS}}}[$__rate_interval]))", "parked")], "short",
        desc="Batches set aside because their campaign was paused; they are picked up again on resume."), 6, 8)
    L.add(timeseries("Campaigns launched", [target(
        f"sum(increase(cos_campaigns_launched_total{{{NS}}}[$__rate_interval]))", "launched")], "short"), 6, 8)
    L.add(timeseries("Fan-out recipients/s", [target(
        f"sum({rate('cos_campaigns_fanout_recipients_total', NS)})", "recipients")], "ops",
        desc="Recipients campaigns put on the delivery work queue."), 6, 8)
    return dashboard("campaign-os-overview", "Campaign OS / Overview",
                     "Health of the whole mesh at a glance: gateway, gRPC services, events, campaign delivery.", L, False,
                     ["overview"])


def services() -> dict:
    L = Layout()
    L.row("RED per service")
    L.add(timeseries("Requests/s", [target(
        f"sum by (service) ({rate('cos_grpc_server_requests_total', SVC)})", "{{service}}")], "reqps"), 8, 8)
    L.add(timeseries("Server errors/s by code", [target(
        f"sum by (service, code) ({rate('cos_grpc_server_requests_total', SVC + ', ' + FAULTS)})",
        "{{service}} {{code}}")], "reqps",
        desc="Server faults only. Client errors (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, ...) are in the next panel."), 8, 8)
    L.add(timeseries("Non-OK responses/s by code", [target(
        f"sum by (service, code) (rate(cos_grpc_server_requests_total{{{SVC}, code!=\"OK\"}}[$__rate_interval]))",
        "{{service}} {{code}}")], "reqps", stack=True), 8, 8)
    L.add(timeseries("Server-error ratio", [target(
        f"sum by (service) ({rate('cos_grpc_server_requests_total', SVC + ', ' + FAULTS)}) / sum by (service) ({rate('cos_grpc_server_requests_total', SVC)})",
        "{{service}}")], "percentunit", thresholds=steps(0.01, 0.05)), 8, 8)
    L.add(timeseries("Latency p50 / p95 / p99", [
        target(f"histogram_quantile(0.50, sum by (service, le) ({rate('cos_grpc_server_duration_seconds_bucket', SVC)}))", "{{service}} p50", "A"),
        target(f"histogram_quantile(0.95, sum by (service, le) ({rate('cos_grpc_server_duration_seconds_bucket', SVC)}))", "{{service}} p95", "B"),
        target(f"histogram_quantile(0.99, sum by (service, le) ({rate('cos_grpc_server_duration_seconds_bucket', SVC)}))", "{{service}} p99", "C"),
    ], "s"), 16, 8)
    L.row("Methods")
    L.add(timeseries("Requests/s by method (top 15)", [target(
        f"topk(15, sum by (service, method) ({rate('cos_grpc_server_requests_total', SVC)}))",
        "{{service}} {{method}}")], "reqps"), 12, 9)
    L.add(timeseries("p99 by method (top 15)", [target(
        f"topk(15, histogram_quantile(0.99, sum by (service, method, le) ({rate('cos_grpc_server_duration_seconds_bucket', SVC)})))",
        "{{service}} {{method}}")], "s"), 12, 9)
    L.add(table("Methods over the selected range", [
        target(f"sum by (service, method) (increase(cos_grpc_server_requests_total{{{SVC}}}[$__range]))", ref="A", instant=True, fmt="table"),
        target(f"sum by (service, method) (increase(cos_grpc_server_requests_total{{{SVC}, {FAULTS}}}[$__range])) / sum by (service, method) (increase(cos_grpc_server_requests_total{{{SVC}}}[$__range]))", ref="B", instant=True, fmt="table"),
        target(f"histogram_quantile(0.99, sum by (service, method, le) (increase(cos_grpc_server_duration_seconds_bucket{{{SVC}}}[$__range])))", ref="C", instant=True, fmt="table"),
    ], "method", {"Value #A": "Calls", "Value #B": "Server-error ratio", "Value #C": "p99"},
        {"Server-error ratio": "percentunit", "p99": "s", "Calls": "short"}), 24, 10)
    L.row("Outbox and events")
    L.add(timeseries("Outbox pending", [target(
        f"sum by (schema) (cos_outbox_pending{{{NS}}})", "{{schema}}")], "short",
        desc="Events committed with a state change and waiting for the relay, per service schema. Grows while RabbitMQ is unreachable; nothing is lost.",
        thresholds=steps(100, 1000)), 8, 8)
    L.add(timeseries("Outbox published/s by schema", [target(
        f"sum by (schema) ({rate('cos_outbox_published_total', NS)})", "{{schema}}")], "ops"), 8, 8)
    L.add(timeseries("Dead-lettered events by queue", [target(
        f"sum by (queue) (increase(cos_events_dead_lettered_total{{{NS}}}[$__rate_interval]))",
        "{{queue}}")], "short", stack=True), 8, 8)
    return dashboard("campaign-os-services", "Campaign OS / Services (RED)",
                     "Rate, errors and duration of every gRPC service, per method; outbox and dead letters.",
                     L, True, ["grpc", "red"])


def gateway() -> dict:
    G, G4, G5 = NS, NS + ', status=~"4.."', NS5
    L = Layout()
    L.row("Gateway")
    L.add(stat("Requests/s", f"sum({rate('cos_http_requests_total', G)})", "reqps",
               [{"color": "blue", "value": None}]), 6, 4)
    L.add(stat("5xx ratio", f"sum({rate('cos_http_requests_total', G5)}) / sum({rate('cos_http_requests_total', G)})",
               "percentunit", steps(0.01, 0.05), decimals=2), 6, 4)
    L.add(stat("p99", f"histogram_quantile(0.99, sum by (le) ({rate('cos_http_request_duration_seconds_bucket', G)}))",
               "s", steps(0.75, 1.5)), 6, 4)
    L.add(stat("Rate-limited/s", f"sum({rate('cos_gateway_rate_limited_total', G)})", "reqps",
               steps(1, 10), "429 answers from the per-IP, per-tenant and auth rate limits."), 6, 4)
    L.add(timeseries("Responses/s by status", [target(
        f"sum by (status) ({rate('cos_http_requests_total', G)})", "{{status}}")], "reqps", stack=True), 12, 8)
    L.add(timeseries("5xx ratio", [target(
        f"sum({rate('cos_http_requests_total', G5)}) / sum({rate('cos_http_requests_total', G)})",
        "5xx")], "percentunit", thresholds=steps(0.01, 0.05)), 12, 8)
    L.add(timeseries("Latency p50 / p95 / p99", [
        target(f"histogram_quantile(0.50, sum by (le) ({rate('cos_http_request_duration_seconds_bucket', G)}))", "p50", "A"),
        target(f"histogram_quantile(0.95, sum by (le) ({rate('cos_http_request_duration_seconds_bucket', G)}))", "p95", "B"),
        target(f"histogram_quantile(0.99, sum by (le) ({rate('cos_http_request_duration_seconds_bucket', G)}))", "p99", "C"),
    ], "s", thresholds=steps(0.75, 1.5)), 12, 8)
    L.add(timeseries("Rate-limited requests/s by scope", [target(
        f"sum by (scope) ({rate('cos_gateway_rate_limited_total', G)})", "{{scope}}")], "reqps", stack=True), 12, 8)
    L.row("Routes")
    L.add(timeseries("Requests/s by route (top 15)", [target(
        f"topk(15, sum by (route) ({rate('cos_http_requests_total', G)}))", "{{route}}")], "reqps"), 12, 9)
    L.add(timeseries("p99 by route (top 15)", [target(
        f"topk(15, histogram_quantile(0.99, sum by (route, le) ({rate('cos_http_request_duration_seconds_bucket', G)})))",
        "{{route}}")], "s"), 12, 9)
    L.add(timeseries("4xx/s by route and status", [target(
        f"topk(15, sum by (route, status) ({rate('cos_http_requests_total', G4)}))",
        "{{route}} {{status}}")], "reqps", stack=True), 12, 9)
    L.add(timeseries("5xx/s by route and status", [target(
        f"sum by (route, status) ({rate('cos_http_requests_total', G5)})",
        "{{route}} {{status}}")], "reqps", stack=True), 12, 9)
    L.add(table("Routes over the selected range", [
        target(f"sum by (route) (increase(cos_http_requests_total{{{G}}}[$__range]))", ref="A", instant=True, fmt="table"),
        target(f"sum by (route) (increase(cos_http_requests_total{{{G}, status=~\"5..\"}}[$__range])) / sum by (route) (increase(cos_http_requests_total{{{G}}}[$__range]))", ref="B", instant=True, fmt="table"),
        target(f"histogram_quantile(0.99, sum by (route, le) (increase(cos_http_request_duration_seconds_bucket{{{G}}}[$__range])))", ref="C", instant=True, fmt="table"),
    ], "route", {"Value #A": "Requests", "Value #B": "5xx ratio", "Value #C": "p99"},
        {"5xx ratio": "percentunit", "p99": "s", "Requests": "short"}), 24, 10)
    return dashboard("campaign-os-gateway", "Campaign OS / Gateway",
                     "REST gateway: traffic, status codes, latency per route, rate limiting.", L, False, ["gateway", "http"])


DASHBOARDS = {"overview.json": overview, "services.json": services, "gateway.json": gateway}


def render() -> dict[str, str]:
    return {name: json.dumps(fn(), indent=2, ensure_ascii=False) + "\n" for name, fn in DASHBOARDS.items()}


def main() -> int:
    check = "--check" in sys.argv[1:]
    stale = []
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("stale dashboards (run python3 deploy/scripts/gen_dashboards.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
