#!/bin/bash
# interleaved drain A/B: base (session 8's sitting code) vs main; 3 rounds
for i in 1 2 3; do
  for side in base main; do
    cd /work/$side
    PYTHONPATH=. /work/main/.venv/bin/python -m bench.bench_stream --rates "" --backends local --skip-capture --skip-kafka-floor --tag ab34_$side$i --output /tmp/drain_${side}_$i.json 2>&1 | grep -E "consumer alone [0-9]|CPU per event" | sed "s/^/$side $i: /"
  done
done
