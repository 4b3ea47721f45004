#!/usr/bin/env python3
"""Offline checks of deploy/helm/campaign-os with Helm's own engine (no cluster, no helm binary).

1. `helm lint` through helm-sdkpy (the PyPI package that embeds Helm as a shared library), and a
   strict lint through helm-python-sdk for several value sets.
2. Renders the chart (helm-python-sdk `Chart.render`, i.e. `helm template`) for several value
   sets into --out/<scenario>.yaml, for yamllint and checkov.
3. Validates the rendered objects against the Kubernetes OpenAPI schemas (kubernetes-validate)
   and checks what the mesh relies on: probes, security context, `serve <name>` args, ports,
   NetworkPolicies, hooks, known COS_* variables, PromQL that parses.
4. Value sets that must be rejected are rejected.

Exit status 0 when everything passes; every failure is printed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "campaign-os"
KUBE_VERSION = "1.31.0"
NAMESPACE = "campaign-os"
RELEASE = "prod"

ALL_SERVICES = ["gateway", "identity", "billing", "campaigns", "segmentation", "automation",
                "analytics", "engines", "publishing", "storage"]

# Every variable the chart may set. COS_* keys come from libs/config (common settings) and the
# per-service settings the brief defines; a variable outside this list is almost always a typo,
# which the binary would report as an unknown key.
COMMON_VARS = {
    "COS_ENV", "COS_TELEMETRY__LOG_FORMAT", "RUST_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT",
    "COS_DATABASE__URL", "COS_DATABASE__MAX_CONNECTIONS", "COS_DATABASE__APP_ROLE",
    "COS_DATABASE__ACQUIRE_TIMEOUT_SECS", "COS_AMQP__URL", "COS_AMQP__EXCHANGE", "COS_AMQP__DELIVERY_QUEUE",
    "COS_REDIS__URL", "COS_REDIS__KEY_PREFIX", "COS_CRYPTO__KEYS", "COS_CRYPTO__ACTIVE_KEY_ID",
    "COS_AUTH__ISSUER", "COS_AUTH__AUDIENCE", "COS_AUTH__ACCESS_TTL_SECS",
    "COS_AUTH__REFRESH_TTL_SECS", "COS_AUTH__JWKS_REFRESH_SECS", "COS_AUTH__SERVICE_SECRET",
    # downward API / OpenTelemetry resource (not COS_*, never read as configuration)
    "K8S_POD_NAME", "K8S_NAMESPACE", "K8S_NODE_NAME", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
}
GATEWAY_VARS = {
    "COS_GATEWAY__HTTP_ADDR", "COS_GATEWAY__ADMIN_ADDR", "COS_GATEWAY__BODY_LIMIT_BYTES",
    "COS_GATEWAY__CORS_ORIGINS", "COS_GATEWAY__RATE_LIMIT__PER_IP_PER_MINUTE",
    "COS_GATEWAY__RATE_LIMIT__PER_TENANT_PER_MINUTE", "COS_GATEWAY__RATE_LIMIT__AUTH_PER_IP_PER_MINUTE",
    "COS_GATEWAY__TRUST_FORWARDED_FOR", "COS_GATEWAY__UPSTREAM_TIMEOUT_SECS", "COS_GATEWAY__PUBLIC_URL",
    "COS_GATEWAY__IMPORT_MAX_BYTES",
} | {f"COS_GATEWAY__{s.upper()}_URL" for s in ALL_SERVICES if s != "gateway"}


# Keys each service in the binary reads (services/<name>/src/config.rs), listeners aside. A peer
# URL outside this list (e.g. a dependsOn the code does not know) stops the binary at start-up.
BUILT_SERVICE_KEYS = {
    "identity": {"API_KEY_TOKEN_TTL_SECS", "BILLING_URL", "ENTITLEMENTS_CACHE_TTL_SECS"},
    "billing": {"IDENTITY_URL", "APP_URL", "CACHE_TTL_SECS", "CHECKOUT_EXPIRY_SECS", "GRACE_DAYS",
                "STRIPE_API_BASE", "STRIPE_SECRET_KEY", "STRIPE_TIMEOUT_SECS", "TRIAL_DAYS"},
    "segmentation": {"IDENTITY_URL", "BILLING_URL", "DIRTY_BATCH", "IMPORT_MAX_BYTES",
                     "IMPORT_STALE_AFTER_SECS", "WORKER_POLL_MS"},
    "campaigns": {"IDENTITY_URL", "SEGMENTATION_URL", "BILLING_URL", "PUBLISHING_URL",
                  "PUBLISHING_TIMEOUT_MS", "FANOUT_BATCH_SIZE", "FANOUT_CONCURRENCY",
                  "RUNNER_INTERVAL_MS", "SCHEDULE_MIN_LEAD_SECS", "SEGMENTATION_TIMEOUT_MS"},
    "publishing": {"IDENTITY_URL", "SEGMENTATION_URL", "PUBLIC_URL", "WORKERS", "SEND_CONCURRENCY",
                   "DEFAULT_RATE_PER_SECOND", "MAX_ATTEMPTS", "RETRY_BASE_MS", "RETRY_CAP_SECS",
                   "CLAIM_LEASE_SECS", "SEND_TIMEOUT_SECS", "ALLOW_PRIVATE_WEBHOOK_TARGETS"},
}


def service_vars(name: str) -> set[str]:
    if name == "gateway":
        return GATEWAY_VARS
    up = name.upper()
    listeners = {f"COS_{up}__GRPC_ADDR", f"COS_{up}__ADMIN_ADDR"}
    if name in BUILT_SERVICE_KEYS:
        return listeners | {f"COS_{up}__{k}" for k in BUILT_SERVICE_KEYS[name]}
    # Not built yet: any peer URL.
    return listeners | {f"COS_{up}__{d.upper()}_URL" for d in ALL_SERVICES if d not in ("gateway", name)}


def expected_public_url(values: dict) -> str | None:
    """COS_PUBLISHING__PUBLIC_URL the chart should derive (see campaign-os.publicUrl)."""
    if values.get("gateway", {}).get("publicUrl"):
        return values["gateway"]["publicUrl"].rstrip("/")
    ing = values.get("ingress", {})
    if ing.get("enabled") and ing.get("hosts"):
        host = ing["hosts"][0]["host"]
        tls = any(host in (t.get("hosts") or []) for t in ing.get("tls") or [])
        return f"{'https' if tls else 'http'}://{host}"
    issuer = values.get("config", {}).get("auth", {}).get("issuer", "https://api.example.com")
    return issuer.rstrip("/") if re.match(r"^https?://.", issuer) else None


SCENARIOS: dict[str, dict] = {
    # What `helm install` with the chart's defaults produces.
    "default": {},
    # Every service on, ingress with TLS, image by digest, OTLP, narrowed egress, CORS, tuning.
    "full": {
        "image": {"digest": "sha256:" + "0" * 64},
        "services": {**{s: {"enabled": True} for s in ALL_SERVICES},
                     "identity": {"enabled": True, "env": {"COS_IDENTITY__API_KEY_TOKEN_TTL_SECS": 300}},
                     "campaigns": {"enabled": True, "env": {"COS_CAMPAIGNS__FANOUT_BATCH_SIZE": 1000}},
                     "publishing": {"enabled": True, "env": {"COS_PUBLISHING__WORKERS": 4,
                                                             "COS_PUBLISHING__ALLOW_PRIVATE_WEBHOOK_TARGETS": "false"}}},
        "ingress": {"enabled": True, "className": "nginx",
                    "hosts": [{"host": "api.campaign-os.example", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "api-tls", "hosts": ["api.campaign-os.example"]}]},
        "config": {"otel": {"endpoint": "http://otel-collector.monitoring.svc:4317"},
                   "auth": {"jwksRefreshSecs": 30},
                   "database": {"appRole": "cos_app"}},
        "gateway": {"corsOrigins": ["https://app.campaign-os.example"], "publicUrl": "https://api.campaign-os.example"},
        "networkPolicy": {"egress": {"postgres": {"to": [{"ipBlock": {"cidr": "10.40.0.0/16"}}],
                                                  "ports": [{"port": 5432, "protocol": "TCP"}]}}},
        "prometheusRule": {"docsBaseUrl": "https://git.example.com/campaign-os/blob/main/docs"},
        "extraVolumes": [{"name": "rds-ca", "configMap": {"name": "rds-ca-bundle"}}],
        "extraVolumeMounts": [{"name": "rds-ca", "mountPath": "/etc/campaign-os/tls", "readOnly": True}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/campaign-os-app"}},
    },
    # Smallest footprint: no CRDs, no autoscaling, no policies, no hook.
    "minimal": {
        "serviceDefaults": {"autoscaling": {"enabled": False}, "pdb": {"enabled": False}, "replicaCount": 1},
        "networkPolicy": {"enabled": False},
        "serviceMonitor": {"enabled": False},
        "prometheusRule": {"enabled": False},
        "dashboards": {"enabled": False},
        "migrations": {"enabled": False},
        "config": {"env": "dev", "crypto": {"activeKeyId": ""}},
    },
}

# Value sets the chart must refuse (helm install would fail before touching the cluster).
MUST_FAIL: dict[str, dict] = {
    "production-without-active-key": {"config": {"crypto": {"activeKeyId": ""}}},
    "no-existing-secret": {"secrets": {"existingSecret": ""}},
    "unknown-dependency": {"services": {"billing": {"enabled": True, "dependsOn": ["nope"]}}},
    # automation needs campaigns, disabled here
    "dependency-disabled": {"services": {"automation": {"enabled": True}, "campaigns": {"enabled": False}}},
    # campaigns launches through publishing (and billing), so neither can be switched off alone
    "campaigns-without-publishing": {"services": {"publishing": {"enabled": False}}},
    "campaigns-without-billing": {"services": {"billing": {"enabled": False},
                                               "segmentation": {"enabled": True, "dependsOn": ["identity"]}}},
    # unsubscribe links would point at the binary's http://127.0.0.1:8080
    "publishing-without-public-url": {"config": {"auth": {"issuer": "campaign-os"}}},
    "private-webhook-targets-in-production": {
        "services": {"publishing": {"enabled": True,
                                    "env": {"COS_PUBLISHING__ALLOW_PRIVATE_WEBHOOK_TARGETS": "true"}}}},
    "private-webhook-targets-in-production-extra-env": {
        "config": {"extraEnv": {"COS_PUBLISHING__ALLOW_PRIVATE_WEBHOOK_TARGETS": "true"}}},
    "bad-kind": {"services": {"identity": {"kind": "http"}}},
    "access-ttl-too-long": {"config": {"auth": {"accessTtlSecs": 100000}}},
}

errors: list[str] = []


def fail(msg: str) -> None:
    errors.append(msg)
    print(f"  FAIL {msg}")


def lint_with_helm_sdkpy() -> None:
    import helm_sdkpy

    result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(str(CHART)))
    msgs = result.get("Messages") or []
    for m in msgs:
        sev = m.get("Severity", 0)
        text = m.get("Err") or m.get("Error") or ""
        print(f"  helm-sdkpy lint: severity {sev} {m.get('Path')}: {text}")
        if sev >= 2:
            fail(f"helm-sdkpy lint reported severity {sev} in {m.get('Path')}: {text}")
    if result.get("Errors"):
        fail(f"helm-sdkpy lint errors: {result['Errors']}")


def lint_strict(values: dict, label: str) -> None:
    import helm_python as hp

    report = hp.lint(str(CHART), values or None, strict=True, namespace=NAMESPACE,
                     kube_version=f"v{KUBE_VERSION}")
    for m in report.get("messages", []):
        if m["severity"] >= 2:
            fail(f"strict lint [{label}] severity {m['severity']} {m['path']}: {m['error']}")
    for e in report.get("errors", []):
        fail(f"strict lint [{label}]: {e}")


def render(values: dict) -> dict[str, str]:
    import helm_python as hp

    with hp.Chart.load(str(CHART)) as chart:
        return chart.render(values or None, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(manifests: dict[str, str]) -> tuple[str, list[dict]]:
    text_parts, docs = [], []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        body = manifests[path]
        for doc in re.split(r"^---\s*$", body, flags=re.M):
            if not doc.strip() or not yaml.safe_load(doc):
                continue
            text_parts.append(f"---\n# Source: {path}\n{doc.strip()}\n")
            docs.append(yaml.safe_load(doc))
    return "".join(text_parts), docs


def promql_ok(expr: str, where: str) -> None:
    import promql_parser

    # Grafana variables -> something Prometheus would receive.
    e = (expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
         .replace("$namespace", ".*").replace("$service", ".*"))
    try:
        promql_parser.parse(e)
    except Exception as exc:  # noqa: BLE001 - the parser raises plain exceptions
        fail(f"PromQL does not parse in {where}: {exc}\n      {expr}")


def validate_k8s(docs: list[dict], scenario: str) -> None:
    import kubernetes_validate

    for d in docs:
        kind = d.get("kind")
        if d.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            continue  # CRDs: checked structurally below
        try:
            kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            fail(f"[{scenario}] {kind}/{d['metadata']['name']} is not a valid {KUBE_VERSION} object: {exc.message} at {list(exc.path)}")
        except Exception as exc:  # noqa: BLE001 - unknown schema etc.
            fail(f"[{scenario}] {kind}/{d['metadata']['name']}: {exc}")


def check_semantics(docs: list[dict], scenario: str, values: dict) -> None:
    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        if d["metadata"].get("namespace") != NAMESPACE and d["kind"] != "ConfigMap":
            fail(f"[{scenario}] {d['kind']}/{d['metadata']['name']} has no explicit namespace")

    config_maps = {c["metadata"]["name"]: c.get("data") or {} for c in by_kind.get("ConfigMap", [])}
    deployments = by_kind.get("Deployment", [])
    if not deployments:
        fail(f"[{scenario}] no Deployment rendered")
    # campaigns publishes to the delivery work queue and publishing consumes it: one shared name.
    queue = config_maps.get(f"{RELEASE}-campaign-os-config", {}).get("COS_AMQP__DELIVERY_QUEUE")
    if queue != "publishing.deliveries":
        fail(f"[{scenario}] COS_AMQP__DELIVERY_QUEUE is {queue!r}")
    deployed = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments}

    def peer(s: str) -> str:
        return f"http://{RELEASE}-campaign-os-{s}:50051"

    for dep in deployments:
        name = dep["metadata"]["name"]
        svc = dep["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if c.get("args") != ["serve", svc]:
            fail(f"[{scenario}] {name}: args {c.get('args')} != ['serve', '{svc}']")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            p = c.get(probe, {}).get("httpGet", {})
            if p.get("path") != path or p.get("port") != "admin":
                fail(f"[{scenario}] {name}: {probe} must GET {path} on the admin port, got {p}")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        want = {"admin": 9100, "http": 8080} if svc == "gateway" else {"admin": 9100, "grpc": 50051}
        if ports != want:
            fail(f"[{scenario}] {name}: ports {ports} != {want}")
        sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
        checks = {
            "runAsNonRoot": psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is True,
            "uid 10001": psc.get("runAsUser") == 10001,
            "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
            "allowPrivilegeEscalation false": sc.get("allowPrivilegeEscalation") is False,
            "drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
            "seccomp RuntimeDefault": psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
            "no service account token": pod.get("automountServiceAccountToken") is False,
            "resources": bool(c.get("resources", {}).get("requests")) and bool(c.get("resources", {}).get("limits")),
        }
        for what, ok in checks.items():
            if not ok:
                fail(f"[{scenario}] {name}: pod security: {what}")
        # Variables: ConfigMaps it loads + explicit env.
        names = {e["name"] for e in c.get("env", [])}
        for ef in c.get("envFrom", []):
            cm = ef.get("configMapRef", {}).get("name")
            if cm not in config_maps:
                fail(f"[{scenario}] {name}: envFrom ConfigMap {cm} is not rendered")
            names |= set(config_maps.get(cm, {}))
        allowed = COMMON_VARS | service_vars(svc)
        for unknown in sorted(names - allowed):
            fail(f"[{scenario}] {name}: unexpected variable {unknown} (typo? add it to check_chart.py if intended)")
        required = {"COS_REDIS__URL", "COS_ENV"}
        if svc == "gateway":
            # Least privilege: the gateway has no database, broker or key ring of its own.
            for forbidden in ("COS_DATABASE__URL", "COS_AMQP__URL", "COS_CRYPTO__KEYS"):
                if forbidden in names:
                    fail(f"[{scenario}] {name}: the gateway must not get {forbidden}")
        else:
            # Every service that runs background jobs calling internal RPCs needs the mesh
            # secret; publishing refuses to start without it.
            required |= {"COS_DATABASE__URL", "COS_AMQP__URL", "COS_CRYPTO__KEYS", "COS_AUTH__SERVICE_SECRET"}
        for var in sorted(required - names):
            fail(f"[{scenario}] {name}: {var} is not set")
        if svc == "gateway":
            data = config_maps.get(f"{RELEASE}-campaign-os-gateway-config", {})
            for s in sorted(deployed & {"identity", "billing", "segmentation", "campaigns", "publishing"}):
                url = data.get(f"COS_GATEWAY__{s.upper()}_URL")
                if url != peer(s):
                    fail(f"[{scenario}] COS_GATEWAY__{s.upper()}_URL is {url!r}")
        else:
            data = config_maps.get(f"{RELEASE}-campaign-os-{svc}-config", {})
            if data.get(f"COS_{svc.upper()}__GRPC_ADDR") != "0.0.0.0:50051":
                fail(f"[{scenario}] COS_{svc.upper()}__GRPC_ADDR is {data.get(f'COS_{svc.upper()}__GRPC_ADDR')!r}")
            wants = {"campaigns": ("identity", "segmentation", "billing", "publishing"),
                     "publishing": ("identity", "segmentation")}.get(svc, ())
            for s in wants:
                url = data.get(f"COS_{svc.upper()}__{s.upper()}_URL")
                if url != peer(s):
                    fail(f"[{scenario}] COS_{svc.upper()}__{s.upper()}_URL is {url!r}")
            if svc == "publishing":
                url = data.get("COS_PUBLISHING__PUBLIC_URL")
                if url != expected_public_url(values):
                    fail(f"[{scenario}] COS_PUBLISHING__PUBLIC_URL is {url!r}, expected {expected_public_url(values)!r}")

    # Services: ClusterIP only; gateway the only thing behind an Ingress.
    for s in by_kind.get("Service", []):
        if s["spec"].get("type", "ClusterIP") != "ClusterIP":
            fail(f"[{scenario}] Service {s['metadata']['name']} is {s['spec']['type']}")
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"]["rules"]:
            for p in rule["http"]["paths"]:
                backend = p["backend"]["service"]["name"]
                if not backend.endswith("-gateway"):
                    fail(f"[{scenario}] Ingress routes to {backend}, only the gateway may be exposed")

    # NetworkPolicies.
    if values.get("networkPolicy", {}).get("enabled", True):
        nps = {n["metadata"]["name"]: n for n in by_kind.get("NetworkPolicy", [])}
        deny = nps.get(f"{RELEASE}-campaign-os-default-deny")
        if not deny or deny["spec"].get("ingress") or deny["spec"].get("egress") \
                or sorted(deny["spec"]["policyTypes"]) != ["Egress", "Ingress"]:
            fail(f"[{scenario}] default-deny NetworkPolicy missing or not denying")
        for dep in deployments:
            svc = dep["metadata"]["labels"]["app.kubernetes.io/component"]
            np = nps.get(f"{RELEASE}-campaign-os-{svc}")
            if not np:
                fail(f"[{scenario}] no NetworkPolicy for {svc}")
                continue
            ports = {p["port"] for r in np["spec"]["ingress"] for p in r.get("ports", [])}
            want = {8080, 9100} if svc == "gateway" else {50051, 9100}
            if ports != want:
                fail(f"[{scenario}] NetworkPolicy {svc} admits ports {ports}, expected {want}")
            if svc != "gateway":
                for r in np["spec"]["ingress"]:
                    if any(p["port"] == 50051 for p in r["ports"]):
                        peers = r.get("from") or []
                        if not peers or any("namespaceSelector" in p or "ipBlock" in p for p in peers):
                            fail(f"[{scenario}] {svc} gRPC must only admit pods of the release, got {peers}")
        egress = nps.get(f"{RELEASE}-campaign-os-egress")
        eports = {p["port"] for r in (egress or {}).get("spec", {}).get("egress", []) for p in r.get("ports", [])}
        for port in (53, 5432, 5672, 6379, 4317, 50051):
            if port not in eports:
                fail(f"[{scenario}] egress NetworkPolicy does not allow port {port}")

    # Migration hook.
    if values.get("migrations", {}).get("enabled", True):
        jobs = by_kind.get("Job", [])
        if len(jobs) != 1:
            fail(f"[{scenario}] expected one migration Job, got {len(jobs)}")
        for j in jobs:
            ann = j["metadata"].get("annotations", {})
            if ann.get("helm.sh/hook") != "pre-install,pre-upgrade":
                fail(f"[{scenario}] migration Job hook annotation is {ann.get('helm.sh/hook')!r}")
            c = j["spec"]["template"]["spec"]["containers"][0]
            jnames = {e["name"] for e in c.get("env", [])}
            for var in ("COS_DATABASE__URL", "COS_AMQP__URL", "COS_REDIS__URL", "COS_CRYPTO__KEYS", "COS_ENV"):
                if var not in jnames:
                    fail(f"[{scenario}] migration Job lacks {var}")
            if c.get("args") != ["migrate"]:
                fail(f"[{scenario}] migration Job args {c.get('args')}")
            if any("configMapRef" in e for e in c.get("envFrom", [])):
                fail(f"[{scenario}] migration Job must not depend on a ConfigMap (hooks run before it exists)")
            sa = j["spec"]["template"]["spec"]["serviceAccountName"]
            hook_sas = [s for s in by_kind.get("ServiceAccount", [])
                        if s["metadata"]["name"] == sa and "helm.sh/hook" in s["metadata"].get("annotations", {})]
            if not hook_sas:
                fail(f"[{scenario}] migration Job uses ServiceAccount {sa}, which is not created as a hook")

    # Monitoring objects.
    for r in by_kind.get("PrometheusRule", []):
        names = []
        for g in r["spec"]["groups"]:
            for rule in g["rules"]:
                names.append(rule["alert"])
                promql_ok(rule["expr"], f"alert {rule['alert']}")
                if "runbook" not in rule.get("annotations", {}):
                    fail(f"[{scenario}] alert {rule['alert']} has no runbook annotation")
                if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    fail(f"[{scenario}] alert {rule['alert']} has no severity")
        for needed in ("CampaignOSGatewayHigh5xxRatio", "CampaignOSGrpcHighErrorRatio", "CampaignOSGrpcHighLatencyP99",
                       "CampaignOSOutboxBacklog", "CampaignOSEventsDeadLettered", "CampaignOSPodRestarting",
                       "CampaignOSPodNotReady"):
            if needed not in names:
                fail(f"[{scenario}] PrometheusRule lacks {needed}")
    for sm in by_kind.get("ServiceMonitor", []):
        ep = sm["spec"]["endpoints"][0]
        if ep.get("port") != "admin" or ep.get("path") != "/metrics" or ep.get("honorLabels") is not True:
            fail(f"[{scenario}] ServiceMonitor endpoint {ep}")
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"]["name"].endswith("-dashboards"):
            if cm["metadata"]["labels"].get("grafana_dashboard") != "1":
                fail(f"[{scenario}] dashboards ConfigMap lacks the grafana_dashboard label")
            if len(cm.get("data") or {}) < 3:
                fail(f"[{scenario}] dashboards ConfigMap holds {len(cm.get('data') or {})} dashboards")


def check_dashboards() -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    if not files:
        fail("no dashboards in deploy/helm/campaign-os/dashboards")
    uids = set()
    for f in files:
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            fail(f"{f.name}: invalid JSON: {exc}")
            continue
        if not d.get("uid") or d["uid"] in uids:
            fail(f"{f.name}: missing or duplicate uid")
        uids.add(d.get("uid"))
        ids = [p["id"] for p in d.get("panels", [])]
        if len(ids) != len(set(ids)):
            fail(f"{f.name}: duplicate panel ids")
        for p in d.get("panels", []):
            for t in p.get("targets", []):
                promql_ok(t["expr"], f"{f.name} panel {p['title']!r}")


def check_public_url() -> None:
    """COS_PUBLISHING__PUBLIC_URL from the ingress (https only for a host under tls) and overrides."""
    ingress = {"enabled": True, "hosts": [{"host": "mail.example.org", "paths": [{"path": "/"}]}]}
    cases = {
        "ingress with tls": ({"ingress": {**ingress, "tls": [{"secretName": "t", "hosts": ["mail.example.org"]}]}},
                             "https://mail.example.org"),
        "ingress without tls": ({"ingress": ingress}, "http://mail.example.org"),
        "gateway.publicUrl wins": ({"ingress": ingress, "gateway": {"publicUrl": "https://links.example.org/"}},
                                   "https://links.example.org"),
        "env override": ({"services": {"publishing": {"enabled": True, "kind": "grpc",
                                                      "env": {"COS_PUBLISHING__PUBLIC_URL": "https://u.example.org"}}}},
                         "https://u.example.org"),
    }
    for label, (values, want) in cases.items():
        try:
            _, docs = documents(render(values))
        except Exception as exc:  # noqa: BLE001
            fail(f"public URL [{label}]: render failed: {exc}")
            continue
        data = next((d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"] == f"{RELEASE}-campaign-os-publishing-config"), {})
        got = data.get("COS_PUBLISHING__PUBLIC_URL")
        print(f"  {'ok' if got == want else 'FAIL'}: {label}: {got}")
        if got != want:
            fail(f"public URL [{label}]: COS_PUBLISHING__PUBLIC_URL is {got!r}, expected {want!r}")


def check_rejections() -> None:
    import helm_python as hp

    for label, values in MUST_FAIL.items():
        try:
            with hp.Chart.load(str(CHART)) as chart:
                chart.validate_schema(values)
                chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except Exception as exc:  # noqa: BLE001 - HelmRenderError / HelmValuesError
            print(f"  ok: {label} rejected: {str(exc).splitlines()[0][:140]}")
            continue
        fail(f"values {label!r} were accepted but must be rejected")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="directory for the rendered manifests")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    print("== helm lint (helm-sdkpy)")
    lint_with_helm_sdkpy()
    for label, values in SCENARIOS.items():
        print(f"== helm lint --strict ({label})")
        lint_strict(values, label)
    for label, values in SCENARIOS.items():
        print(f"== render ({label})")
        try:
            manifests = render(values)
        except Exception as exc:  # noqa: BLE001
            fail(f"render [{label}]: {exc}")
            continue
        text, docs = documents(manifests)
        out = args.out / f"{label}.yaml"
        out.write_text(text)
        kinds: dict[str, int] = {}
        for d in docs:
            kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
        print(f"  {out}: {len(docs)} objects {dict(sorted(kinds.items()))}")
        validate_k8s(docs, label)
        check_semantics(docs, label, values)
    print("== dashboards")
    check_dashboards()
    print("== publishing public URL")
    check_public_url()
    print("== values that must be rejected")
    check_rejections()
    if errors:
        print(f"\nchart checks: {len(errors)} problem(s)")
        return 1
    print("\nchart checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
