# Campaign OS. `make run` starts the whole mesh; `make test` is what CI runs.
CARGO ?= cargo

.PHONY: run test fmt-check lint nextest build infra migrate check-config bench-gateway check-deploy

## Run every service and the gateway in one process (gateway on http://127.0.0.1:8080).
run: infra
	$(CARGO) run --bin campaign-os -- up

## Format check, clippy with warnings as errors, then every test against real PostgreSQL,
## RabbitMQ and Redis.
test: infra fmt-check lint nextest

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

nextest:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --locked --profile ci; \
	else \
		echo "cargo-nextest not found; falling back to cargo test" >&2; \
		$(CARGO) test --workspace --locked; \
	fi

build:
	$(CARGO) build --workspace --all-targets --locked

infra:
	@scripts/infra.sh

migrate: infra
	$(CARGO) run --bin campaign-os -- migrate

check-config:
	$(CARGO) run --bin campaign-os -- check-config

## The gateway benchmark (release build; see docs/benchmarks.md).
bench-gateway: infra
	$(CARGO) run --release -p cos-bench -- gateway

## Static checks of the Helm chart and Terraform (see deploy/check.sh).
check-deploy:
	deploy/check.sh
