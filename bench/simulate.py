"""The closed-loop simulation as a benchmark: Notify vs frequency-cap-and-drop vs random (issue 19).

Writes bench/results/simulation.json (options, totals, per-day rows) and bench/results/simulation.md
(the totals table). The response model and its assumptions: :mod:`notify_core.simulation.closed_loop`.

    .venv/bin/python -m bench.simulate [--users 2000] [--days 30] [--source PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS
from notify_core.simulation import SimOptions, simulate
from notify_core.simulation.closed_loop import markdown_table, write_report

DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "../shared/data/online_retail/online_retail.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--campaigns", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    options = SimOptions(users=args.users, days=args.days, campaigns=args.campaigns, seed=args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="notify-sim-") as tmp:
        report = simulate(args.source, workdir=Path(tmp), options=options, progress=print)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, RESULTS / "simulation.json")
    table = markdown_table(report)
    (RESULTS / "simulation.md").write_text(table + "\n")
    print(table)
    print(f"{report['seconds']} s; results in {RESULTS / 'simulation.json'}")


if __name__ == "__main__":
    main()
