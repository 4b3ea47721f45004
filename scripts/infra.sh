#!/usr/bin/env bash
# Makes sure PostgreSQL (5432), RabbitMQ (5672) and Redis (6379) listen on localhost: starts the
# machine's own services if they are installed, otherwise the compose stack where a Docker engine
# runs. Waits until all three accept connections. Exits non-zero, saying which one, if it can't.
set -euo pipefail
cd "$(dirname "$0")/.."

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_local() {
  case "$1" in
    postgres)
      if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
        for v in /etc/postgresql/*; do pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true; done
        return 0
      fi ;;
    rabbitmq)
      if command -v rabbitmq-server >/dev/null 2>&1; then rabbitmq-server -detached || true; return 0; fi ;;
    redis)
      if command -v redis-server >/dev/null 2>&1; then
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
          --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/campaign-os-redis.log" || true
        return 0
      fi ;;
  esac
  return 1
}

need_compose=0
for svc in postgres:5432 rabbitmq:5672 redis:6379; do
  name=${svc%%:*}; port=${svc##*:}
  if ! listening "$port"; then
    echo "infra: $name is not listening on $port; starting it" >&2
    start_local "$name" || need_compose=1
  fi
done

if [ "$need_compose" = 1 ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    docker compose -f docker/compose.yaml up -d postgres rabbitmq redis
  else
    echo "infra: cannot start the missing services: install PostgreSQL, RabbitMQ and Redis locally, or run a Docker engine (docker compose -f docker/compose.yaml up -d)" >&2
  fi
fi

for svc in postgres:5432 rabbitmq:5672 redis:6379; do
  name=${svc%%:*}; port=${svc##*:}
  for _ in $(seq 1 90); do listening "$port" && break; sleep 1; done
  if ! listening "$port"; then echo "infra: $name is still not listening on 127.0.0.1:$port" >&2; exit 1; fi
done
# RabbitMQ accepts TCP before it accepts AMQP; give it a moment to finish booting.
if command -v rabbitmqctl >/dev/null 2>&1; then
  timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
fi
echo "infra: PostgreSQL, RabbitMQ and Redis are up" >&2
