#!/usr/bin/env bash
# Starts the Elastic Serving scheduler (apps/scheduler/dist/cli.mjs) with its log directory and
# the project root set, and waits until it serves.
#
#   scripts/launch-scheduler.sh [--foreground] [es-scheduler flags ...]
#
# Every flag except --foreground goes to es-scheduler unchanged (see `--help`). Without
# --foreground the scheduler runs in the background (immune to hang-ups) and this script
# returns once it answers, printing its URL; with --foreground it replaces this shell, which
# is what the SLURM launcher (launch-scheduler.slurm) uses.
#
# Files in the log directory (--log-dir, else $ES_LOG_DIR, else <project root>/logs):
#   scheduler.log   the scheduler's JSON log lines (appended across restarts)
#   scheduler.pid   its process id: stop it with `kill "$(cat <log dir>/scheduler.pid)"`
#   scheduler-url   its URL (http://host:port), written once it serves; workers and
#                   launch-worker.slurm read it. A wildcard listen address (0.0.0.0, ::) is
#                   written as $ES_SCHEDULER_HOST, else this machine's host name.
#   secret          the shared worker secret (created by the scheduler)
#
# Environment: ES_PROJECT_ROOT (default: this script's repository), ES_LOG_DIR,
# ES_SCHEDULER_HOST, ES_START_TIMEOUT (seconds to wait for the URL, default 120), NODE (the
# node binary, default `node`).
set -euo pipefail
# Owner-only: the log directory this makes (the scheduler refuses one open to other users),
# scheduler.log and scheduler.pid.
umask 077

foreground=0
if [ "${1:-}" = "--foreground" ]; then
  foreground=1
  shift
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${ES_PROJECT_ROOT:-$(cd "$here/.." && pwd)}"
export ES_PROJECT_ROOT="$root"
node_bin="${NODE:-node}"
cli="$root/apps/scheduler/dist/cli.mjs"
if [ ! -f "$cli" ]; then
  echo "launch-scheduler: $cli is missing; run 'pnpm install && pnpm build' in $root first" >&2
  exit 1
fi

for arg in "$@"; do
  case "$arg" in
    -h | --help) exec "$node_bin" "$cli" --help ;;
  esac
done

# The log directory: the one given with --log-dir wins; otherwise pass ours explicitly.
log_dir=""
previous=""
for arg in "$@"; do
  case "$arg" in
    --log-dir=*) log_dir="${arg#--log-dir=}" ;;
  esac
  if [ "$previous" = "--log-dir" ]; then log_dir="$arg"; fi
  previous="$arg"
done
if [ -z "$log_dir" ]; then
  log_dir="${ES_LOG_DIR:-$root/logs}"
  set -- "$@" --log-dir "$log_dir"
fi
mkdir -p "$log_dir"
log_dir="$(cd "$log_dir" && pwd)"
log_file="$log_dir/scheduler.log"
pid_file="$log_dir/scheduler.pid"
url_file="$log_dir/scheduler-url"
timeout="${ES_START_TIMEOUT:-120}"

running_pid() {
  local pid
  pid="$(cat "$pid_file" 2>/dev/null || true)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'scheduler/dist/cli.mjs'; then
    echo "$pid"
  fi
}

existing="$(running_pid)"
if [ -n "$existing" ] && [ "$existing" != "$$" ]; then
  echo "launch-scheduler: a scheduler already runs with log dir $log_dir (pid $existing);" \
    "stop it with 'kill $existing' or pass another --log-dir" >&2
  exit 1
fi
# A stale URL would send users and workers to a scheduler that is gone.
rm -f "$url_file"

if [ "$foreground" -eq 0 ]; then
  setsid nohup bash "$here/launch-scheduler.sh" --foreground "$@" </dev/null >>"$log_file" 2>&1 &
  child=$!
  deadline=$((SECONDS + timeout))
  until [ -s "$url_file" ]; do
    if ! kill -0 "$child" 2>/dev/null; then
      echo "launch-scheduler: the scheduler exited before serving; last lines of $log_file:" >&2
      tail -n 20 "$log_file" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "launch-scheduler: no URL after ${timeout}s (still running as pid $child); see $log_file" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "scheduler $(cat "$url_file") (pid $child, log $log_file)"
  exit 0
fi

echo "$$" >"$pid_file"
scheduler_pid="$$"
(
  # The scheduler writes its URL file once it serves (the URL its workers use: a wildcard
  # listen address becomes $ES_SCHEDULER_HOST, else the host name).
  deadline=$((SECONDS + timeout))
  while kill -0 "$scheduler_pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    if [ -s "$url_file" ]; then
      echo "launch-scheduler: serving at $(head -n 1 "$url_file") (log $log_file)" >&2
      exit 0
    fi
    sleep 0.2
  done
) &
echo "launch-scheduler: starting es-scheduler $* (pid $$, log $log_file)" >&2
# stdout (the JSON log) goes to the log; stderr (flag and config errors) stays where the
# caller sees it: the terminal, the SLURM job output, or the log in background mode.
exec "$node_bin" "$cli" "$@" >>"$log_file"
