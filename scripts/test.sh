#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against a real SLURM dev cluster (installed
# from Debian's packages and started on this machine when missing; needs root), then the
# reliability suite (faults injected under load on that cluster). The three run one after
# another: the SLURM suites measure detection times in seconds and share one cluster.
# Installs what the tests need and a fresh Debian machine lacks: pnpm and the dependencies
# (scripts/bootstrap.sh), Chromium for the dashboard test, nginx for the data-plane test,
# slurm-wlm and munge.
# Arguments are passed to each vitest run (e.g. -t "preempt").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

# apt_install <binary> <package> <variable>: install Debian's <package> (no recommends) when
# <binary> is missing. No service starts meanwhile: policy-rc.d refuses every start during
# the install (nginx's would take port 80).
apt_install() {
  local binary="$1" package="$2" variable="$3" policy=/usr/sbin/policy-rc.d status=0
  [ -x "$binary" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: $binary is missing; run as root to install it (apt-get install $package) or set $variable" >&2
    exit 1
  fi
  echo "==> installing $package (apt-get; no service started)" >&2
  [ -e "$policy" ] && mv "$policy" "$policy.es-test"
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q </dev/null >&2 || status=1
  [ "$status" = 1 ] || DEBIAN_FRONTEND=noninteractive timeout 900 \
    apt-get install -y -q --no-install-recommends "$package" </dev/null >&2 || status=1
  rm -f "$policy"
  [ -e "$policy.es-test" ] && mv "$policy.es-test" "$policy"
  if [ "$status" != 0 ]; then
    echo "test.sh: apt-get install $package failed" >&2
    exit 1
  fi
}

# Chromium drives the dashboard test (packages/admin/test/dashboard.test.ts).
apt_install "${CHROMIUM_PATH:-/usr/bin/chromium}" chromium CHROMIUM_PATH
# nginx runs in front of two es-proxy processes with examples/data-plane/nginx.conf
# (apps/scheduler/test/standalone-proxy.e2e.test.ts starts it itself, as its child).
apt_install "${NGINX_PATH:-/usr/sbin/nginx}" nginx-light NGINX_PATH

# The SLURM dev cluster (install when missing, start, wait for idle nodes): done here rather
# than in the integration project's global setup alone, so a failed install stops the run
# before any test and names the cause. A cluster this script started is stopped at the end
# (ES_KEEP_DEV_CLUSTER=1 keeps it).
if ! bash scripts/slurm-dev-cluster.sh status >/dev/null 2>&1 && [ "${ES_KEEP_DEV_CLUSTER:-}" != 1 ]; then
  trap 'bash scripts/slurm-dev-cluster.sh down >/dev/null 2>&1 || true' EXIT
fi
eval "$(bash scripts/slurm-dev-cluster.sh up)"

# Each project's output is also kept, so that the run ends with the names of what failed: a CI
# log is often read from its tail only.
logs="$(mktemp -d)"
failed=()
for project in unit integration reliability; do
  echo "==> vitest --project $project"
  pnpm exec vitest run --project "$project" "$@" 2>&1 | tee "$logs/$project.log" || failed+=("$project")
done
if [ "${#failed[@]}" != 0 ]; then
  echo
  echo "==> failed: ${failed[*]}"
  for project in "${failed[@]}"; do
    # vitest marks a failed file or test with FAIL or ×, then tells why in its "Failed Tests"
    # (or "Unhandled Errors") section: the names, then the first 80 lines of the reasons.
    sed 's/\x1b\[[0-9;]*m//g' "$logs/$project.log" >"$logs/$project.txt"
    grep -E '^ *(FAIL|×|✗) ' "$logs/$project.txt" | sort -u | head -n 40 | sed "s/^/[$project] /"
    awk '/(Failed Tests|Unhandled Error)/ { on = 1 } /^ *Test Files / { on = 0 } on' \
      "$logs/$project.txt" | grep -v '^ *$' | head -n 80 | sed "s/^/[$project] /"
  done
fi
rm -rf "$logs"
[ "${#failed[@]}" = 0 ]
