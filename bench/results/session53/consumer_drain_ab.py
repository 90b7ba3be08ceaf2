"""Session 53's consumer-alone A/B: one `drain_run` of the tree in the working directory.

Run from each tree in turn (interleaved), e.g. `cd <tree> && python consumer_drain_ab.py 500000 <side>`;
one JSON line per run (consumer_drain_ab.jsonl holds the session's 3 rounds a side).
"""

import json
import os
import sys

sys.path.insert(0, os.getcwd())

if __name__ == "__main__":
    from bench.bench_stream import drain_run

    result = drain_run(int(sys.argv[1]))
    result["side"] = sys.argv[2]
    result["load"] = os.getloadavg()[0]
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}))
