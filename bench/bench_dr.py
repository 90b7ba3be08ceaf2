"""Disaster-recovery drill at the demo size: RPO and RTO of losing the data directory.

The demo's data directory (``notify run --stage sources --stage ingestion`` on the full Online Retail
file: 526k purchase lines, users, products, campaigns in the Store, the lake and the landing files) is
copied to a scratch folder; then ``tests/backup/dr_harness.py`` runs the drill: ``notify backup``
(Litestream to a folder), ``notify serve``, ``notify consume`` and ``notify worker`` run while a client
posts click events and notifications fall due; everything is killed with ``kill -9`` and the data
directory deleted; ``notify restore``, the services again, and the consumer replays.

Two scenarios: the stream log on its own volume (retained; Kafka behaves the same), and the log inside
the lost directory (restored from its own replica). Goals: RPO 0 acknowledged events with the stream
retained, <= 5 min without it; RTO <= 60 s.

``--data DIR`` reuses an existing demo data directory; otherwise one is built first (about a minute).

``--users N`` runs the drill on a synthetic data directory of N users instead (profile, tomorrow's plan
and schedule entry per user: 3 Store rows each, ``tests/backup/dr_scale.py``), with the backup primed by
``notify backup --once`` first (the initial upload of a GB-sized Store is measured apart); results in
``bench/results/dr_<N>.json`` (``dr_1m.json`` for 1,000,000)::

    .venv/bin/python -m bench.bench_dr --users 1000000            # both scenarios, ~10 min here
    .venv/bin/python -m bench.bench_dr --users 1000000 --retained-only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report
from tests.backup.dr_harness import run_drill

ROOT = Path(__file__).resolve().parents[1]


def build_demo(data: Path) -> None:
    env = {**os.environ, "NOTIFY_ENV": "local", "DAGSTER_HOME": str(data.parent / "dagster-home")}
    Path(env["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "notify_cli.main", "run", "--data-dir", str(data), "--stage", "sources",
                    "--stage", "ingestion"], cwd=ROOT, env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="an existing demo data directory to start from")
    parser.add_argument("--quick", action="store_true", help="a small Store instead of the demo data")
    parser.add_argument("--run-s", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--users", type=int, help="a synthetic data directory of this many users")
    parser.add_argument("--retained-only", action="store_true", help="only the stream-retained scenario")
    args = parser.parse_args()
    rows = []
    results = []
    generate_s = 0.0
    with tempfile.TemporaryDirectory(prefix="notify-dr-") as tmp:
        seed = None
        if args.users:
            from notify_core.clock import SYSTEM_CLOCK
            from tests.backup.dr_scale import seed_users_dir

            started = time.monotonic()
            seed = seed_users_dir(Path(tmp) / "users", users=args.users, clock=SYSTEM_CLOCK)
            generate_s = round(time.monotonic() - started, 1)
            print(f"generated {args.users:,} users in {generate_s} s")
        elif not args.quick:
            seed = args.data or Path(tmp) / "demo"
            if args.data is None:
                build_demo(seed)
        for retained in (True,) if args.retained_only else (True, False):
            drill = run_drill(Path(tmp) / f"drill-{retained}", retained=retained, seed_dir=seed, rate=args.rate,
                              run_s=args.run_s, after_s=5.0, notifications=400, prime_backup=bool(args.users))
            results.append(drill)
            rows.append([drill.scenario, f"{drill.seed_rows:,}", f"{drill.store_bytes / 1e6:.0f} MB", drill.acked,
                         drill.lost_acked, drill.lost_window_s, sum(drill.table_rows_lost.values()),
                         drill.restore_s, drill.rto_api_s, drill.rto_worker_s, drill.duplicate_deliveries])
            if args.users:
                rows[-1].append(drill.initial_backup_s)
    columns = ["scenario", "Store rows", "Store size", "acked events", "RPO: acked lost", "RPO: lost window s",
               "Store rows lost", "restore s", "RTO API s", "RTO worker s", "re-sent deliveries"]
    if args.users:
        name = "dr_1m" if args.users == 1_000_000 else f"dr_{args.users}"
        report(name, f"DR drill at {args.users:,} users: lose the data directory while events flow, restore, replay",
               [*columns, "initial backup s"], rows,
               {"users": args.users, "generate_s": generate_s, "drills": [vars(r) for r in results],
                "goals": {"rpo_acked_retained": 0, "rto_s_spec": 900}})
        return
    report("dr", "DR drill: lose the data directory while events flow, restore, replay", columns,
           rows, {"drills": [vars(r) for r in results], "goals": {"rpo_acked_retained": 0, "rto_s": 60}})


if __name__ == "__main__":
    main()
