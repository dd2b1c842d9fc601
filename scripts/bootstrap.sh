#!/usr/bin/env bash
# Makes a fresh clone ready: pnpm (pinned), dependencies from the lockfile, a build.
# Sourced by scripts/run.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PNPM_VERSION=10.34.9
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version 2>/dev/null)" != "$PNPM_VERSION" ]; then
  echo "installing pnpm $PNPM_VERSION" >&2
  npm install -g "pnpm@$PNPM_VERSION" --no-fund --no-audit >&2
fi
pnpm install --frozen-lockfile --reporter=silent >&2
pnpm build --output-logs=errors-only >&2
