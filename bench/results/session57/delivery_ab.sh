#!/bin/bash
# interleaved delivery burst A/B: base (/work/base57) vs new (/work/main)
for i in 1 2 3 4; do
  for side in base new; do
    if [ $side = base ]; then d=/work/base57; else d=/work/main; fi
    cd $d; r=$(PYTHONPATH=. /work/main/.venv/bin/python bench/results/session57/delivery_burst.py 30000 2>&1 | tr -d '\n')
    echo "$i $side $(date +%T) $(cat /proc/loadavg | cut -d' ' -f1) $r"
  done
done
