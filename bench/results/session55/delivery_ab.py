"""One delivery burst of the tree in the current directory, its worker logging as ``notify worker`` does (the
base tree's benchmark did not configure it, so this script does, for both sides). Run from a tree's root:
``python <this file> 30000`` (due at once; an optional second argument: worker processes)."""

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.getcwd())

from bench.bench_delivery import run_once  # noqa: E402

if __name__ == "__main__":
    from notify_core.observability import configure_logging

    configure_logging(path=Path(tempfile.mkdtemp()) / "delivery.jsonl")
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    run = run_once(int(sys.argv[1]), 0.0, concurrency=16, processes=processes)
    keep = ("delivered", "duplicates", "per_s", "worker_cpu_ms_per_delivery")
    print(json.dumps({k: round(run[k], 4) if isinstance(run[k], float) else run[k] for k in keep}))
