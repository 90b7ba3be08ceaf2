#!/bin/bash
cd /work/main
for i in 1 2; do
  for side in none thr max0; do
    case $side in
      none) unset GLIBC_TUNABLES;;
      thr) export GLIBC_TUNABLES=glibc.malloc.trim_threshold=2147483647:glibc.malloc.mmap_threshold=33554432;;
      max0) export GLIBC_TUNABLES=glibc.malloc.trim_threshold=2147483647:glibc.malloc.mmap_threshold=33554432:glibc.malloc.mmap_max=0;;
    esac
    /work/main/.venv/bin/python /work/main/bench/results/session53/e2e_10m_ab.py 2000000 $side 2>/dev/null | tail -1 | /work/main/.venv/bin/python -c "
import json,sys; d=json.loads(sys.stdin.read()); p=d['processes']
print(d['tag'], 'e2e %.1f' % d['end_to_end_s'], 'plan_cpu %.1f' % p['planning']['cpu_s'], 'writer_cpu %.1f' % p['writer']['cpu_s'], 'writer_busy %.1f' % p['writer']['busy_s'], 'gen %.1f' % d['generate_vectors_s'], 'rss %.0f' % p['planning']['peak_rss_mb'], p['writer']['peak_rss_mb'], 'load', d['load'], flush=True)"
  done
done
