#!/usr/bin/env bash
# Starts the scheduler serving an OpenAI-compatible /v1 on http://127.0.0.1:8780.
# Without arguments: the embedded default — local worker processes and the mock engine, no
# SLURM or GPU needed. Any arguments are passed to the scheduler (`scripts/es-scheduler --help`
# lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if [ $# -eq 0 ]; then
  set -- --backend local --engine mock --model mock-model --max-nodes 2 --tensor-parallel-size 4
fi
exec node apps/scheduler/dist/cli.mjs "$@"
