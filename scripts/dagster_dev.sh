#!/usr/bin/env bash
# `make dev`: the Dagster UI and daemon over the repo's instance (the same storage `make demo` writes to).
# - DAGSTER_HOME is .notify/dagster_home unless set (its dagster.yaml is a link to the repo's), so the
#   folders the webserver creates in DAGSTER_HOME (logs/, .logs_queue/) land under .notify/, not in the
#   repo root.
# - `dagster dev` ignores SIGTERM (and its webserver may not stop on SIGINT): on SIGTERM or SIGINT this
#   script interrupts the whole process group, waits up to STOP_GRACE_S seconds, then kills what is left.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${DAGSTER_HOME:-}" ]; then  # an explicit DAGSTER_HOME (tests, your own instance) wins
  home=.notify/dagster_home
  mkdir -p "$home"
  chmod 700 .notify "$home"
  ln -sfn ../../dagster.yaml "$home/dagster.yaml"
  export DAGSTER_HOME="$PWD/$home"
fi
grace="${STOP_GRACE_S:-10}"
set -m  # job control: the child gets its own process group and keeps SIGINT (background jobs ignore it otherwise)
.venv/bin/dagster dev "$@" &
child=$!
stop() {
  trap - TERM INT
  kill -INT -- "-$child" 2>/dev/null || true
  for _ in $(seq 1 "$grace"); do
    kill -0 "$child" 2>/dev/null || break
    sleep 1
  done
  kill -KILL -- "-$child" 2>/dev/null || true
}
trap stop TERM INT
wait "$child" || true
