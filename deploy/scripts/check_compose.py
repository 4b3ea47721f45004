#!/usr/bin/env python3
"""Checks docker/compose.yaml beyond its schema (deploy/check.sh validates the schema):

- every long-running infrastructure service has a healthcheck; one-shot helpers exit ("no" restart)
- `docker compose up -d` (no profile) starts infrastructure only; the mesh is under profile `mesh`
- every published port is bound to 127.0.0.1 (development credentials)
- bind-mounted files exist; Grafana mounts the chart's dashboards
- the mesh service is built from docker/Dockerfile and points at the compose services
- postgres does not use trust authentication
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
INFRA = {"postgres", "rabbitmq", "redis", "minio", "otel-collector", "prometheus", "grafana"}


def main() -> int:
    problems: list[str] = []
    doc = yaml.safe_load(COMPOSE.read_text())
    services: dict = doc["services"]

    missing = INFRA - set(services)
    if missing:
        problems.append(f"infrastructure services missing: {sorted(missing)}")

    for name, svc in services.items():
        one_shot = str(svc.get("restart", "")) == "no"
        if not one_shot and "healthcheck" not in svc:
            problems.append(f"{name}: no healthcheck")
        if name in INFRA and svc.get("profiles"):
            problems.append(f"{name}: infrastructure must start without a profile")
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is not bound to 127.0.0.1")
        for vol in svc.get("volumes", []):
            src = str(vol).split(":", 1)[0]
            if src.startswith((".", "/")):
                path = (COMPOSE.parent / src).resolve()
                if not path.exists():
                    problems.append(f"{name}: bind mount source {src} does not exist ({path})")

    mesh = services.get("campaign-os", {})
    if mesh.get("profiles") != ["mesh"]:
        problems.append("campaign-os: must be under the `mesh` profile only")
    build = mesh.get("build", {})
    if build.get("dockerfile") != "docker/Dockerfile" or not (COMPOSE.parent / build.get("context", "")).resolve() == ROOT:
        problems.append(f"campaign-os: build must be docker/Dockerfile with the repository root as context, got {build}")
    env = mesh.get("environment", {})
    for var, host in (("COS_DATABASE__URL", "@postgres:5432/"), ("COS_AMQP__URL", "@rabbitmq:5672/"),
                      ("COS_REDIS__URL", "redis://redis:6379"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-collector:4317")):
        if host not in str(env.get(var, "")):
            problems.append(f"campaign-os: {var} should point at {host}, got {env.get(var)!r}")
    for dep in ("postgres", "rabbitmq", "redis"):
        cond = mesh.get("depends_on", {}).get(dep, {}).get("condition")
        if cond != "service_healthy":
            problems.append(f"campaign-os: depends_on {dep} must wait for service_healthy, got {cond}")

    pg_env = services.get("postgres", {}).get("environment", {})
    if pg_env.get("POSTGRES_HOST_AUTH_METHOD") == "trust" or not pg_env.get("POSTGRES_PASSWORD"):
        problems.append("postgres: trust authentication / no password")

    grafana_mounts = " ".join(map(str, services.get("grafana", {}).get("volumes", [])))
    if "deploy/helm/campaign-os/dashboards" not in grafana_mounts:
        problems.append("grafana: does not mount deploy/helm/campaign-os/dashboards")

    for p in problems:
        print(f"  FAIL {p}")
    print(f"compose checks: {'all passed' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
