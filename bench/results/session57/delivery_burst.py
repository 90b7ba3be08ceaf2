"""One delivery burst (30k due at once, one process, 16 senders) of the tree in the current directory, its worker
logging as ``notify worker`` does; ``delivery_ab.sh`` runs it interleaved in two trees."""

import json
import os
import sys

sys.path.insert(0, os.getcwd())

from bench.bench_delivery import run_once  # noqa: E402

if __name__ == "__main__":
    run = run_once(int(sys.argv[1]), 0.0, concurrency=16)
    print(json.dumps({k: v for k, v in run.items() if not isinstance(v, list | dict)}))
