#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a real SLURM dev cluster (installed
# from Debian's packages and started on this machine when missing; needs root), then the
# reliability suite (faults injected under load on that cluster). The three run one after
# another: the SLURM suites measure detection times in seconds and share one cluster.
# Installs what the tests need and a fresh Debian machine lacks: pnpm and the dependencies
# (scripts/bootstrap.sh), Chromium for the dashboard test, slurm-wlm and munge.
# Arguments are passed to each vitest run (e.g. -t "preempt").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

# Chromium drives the dashboard test (packages/admin/test/dashboard.test.ts).
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: $CHROMIUM is missing; run as root to install it (apt-get install chromium) or set CHROMIUM_PATH" >&2
    exit 1
  fi
  echo "==> installing chromium (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -q </dev/null >&2
  timeout 900 apt-get install -y -q --no-install-recommends chromium </dev/null >&2
fi

# The SLURM dev cluster (install when missing, start, wait for idle nodes): done here rather
# than in the integration project's global setup alone, so a failed install stops the run
# before any test and names the cause. A cluster this script started is stopped at the end
# (ES_KEEP_DEV_CLUSTER=1 keeps it).
if ! bash scripts/slurm-dev-cluster.sh status >/dev/null 2>&1 && [ "${ES_KEEP_DEV_CLUSTER:-}" != 1 ]; then
  trap 'bash scripts/slurm-dev-cluster.sh down >/dev/null 2>&1 || true' EXIT
fi
eval "$(bash scripts/slurm-dev-cluster.sh up)"

status=0
for project in unit integration reliability; do
  echo "==> vitest --project $project"
  pnpm exec vitest run --project "$project" "$@" || status=1
done
exit $status
