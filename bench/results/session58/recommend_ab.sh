#!/usr/bin/env bash
# Interleaved A/B of the recommendations handler's CPU a request (bench.recommend_cpu --quick), base tree vs
# this tree, PAIRS pairs: each run's cold / 8-at-a-time / warm medians and the stub edge, one line a run.
#   bash bench/results/session58/recommend_ab.sh BASE_TREE [PAIRS]
set -euo pipefail
base=$1; pairs=${2:-3}; here=$(pwd); py=$here/.venv/bin/python; data=$here/.notify/bench/demo
for i in $(seq "$pairs"); do
  for tree in "$base" "$here"; do
    (cd "$tree" && PYTHONPATH=. "$py" -m bench.recommend_cpu --data-dir "$data" --quick > /dev/null 2>&1)
    "$py" - "$tree" <<'PY'
import json, sys
r = json.load(open(f"{sys.argv[1]}/bench/results/recommend_cpu_quick.json"))
print(sys.argv[1], {k: v for k, v in r.items() if k.endswith("median") or k == "load"}, flush=True)
PY
  done
done
