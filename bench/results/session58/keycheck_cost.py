"""What one API key check costs (``KeyCheck.authorize``: the token's shape, its row from the 1 s cache, the
peppered HMAC, the key's state and scope, the rate bucket), CPU us a call, least of 7 rounds of 20,000.
Run from each code tree for an A/B (session 58):

    PYTHONPATH=. /work/main/.venv/bin/python bench/results/session58/keycheck_cost.py
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path

from notify_core.clock import SYSTEM_CLOCK
from notify_core.security.keys import KeyRing
from notify_core.store.sqlite import SqliteStore


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "store.sqlite")
        ring = KeyRing(store, pepper=secrets.token_bytes(32), clock=SYSTEM_CLOCK)
        _, token = ring.create(name="bench", scopes=("recommendations:read",), actor="bench", source="bench",
                               rate_per_minute=10_000_000)
        rounds = []
        for _ in range(7):
            started = time.process_time()
            for _ in range(20_000):
                ring.authorize(token, "recommendations:read")
            rounds.append((time.process_time() - started) / 20_000 * 1e6)
        print(f"authorize: least {min(rounds):.2f} us  rounds {[round(r, 2) for r in rounds]}")


if __name__ == "__main__":
    main()
