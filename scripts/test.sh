#!/usr/bin/env bash
# Runs every test: unit tests, then integration tests against a real SLURM dev cluster
# (installed from Debian's packages and started on this machine when missing; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec pnpm exec vitest run "$@"
