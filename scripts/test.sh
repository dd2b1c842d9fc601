#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a real SLURM dev cluster (installed
# from Debian's packages and started on this machine when missing; needs root), then the
# reliability suite (faults injected under load on that cluster). The three run one after
# another: the SLURM suites measure detection times in seconds and share one cluster.
# Arguments are passed to each vitest run (e.g. -t "preempt").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
status=0
for project in unit integration reliability; do
  echo "==> vitest --project $project"
  pnpm exec vitest run --project "$project" "$@" || status=1
done
exit $status
