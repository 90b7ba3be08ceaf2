"""The spec's whole peak in one sitting (``make bench-peak``): each path's benchmark in turn, then one table.

Absolute figures on 2 shared cores move with the load, so a README table stitched from runs on different
days says little. This runs the four peak paths (recommendations, stream, delivery, scheduling: the 10M run
and the day's plan as the asset makes it) one after another, nothing else started by us in between, records
the load average before and after each, and gathers what each benchmark measured *beside* its figure
(``limits`` in its JSON: the raw operation the path is built on, measured in the same run) into
``bench/results/peak.{json,md}``, with the commit it measured; a full sitting is also kept in
``bench/results/sitting_<when>/`` for ``bench.sittings`` to put beside the others.

    .venv/bin/python -m bench.peak              # the full sitting (~45 min: 10M scheduling alone ~20)
    .venv/bin/python -m bench.peak --quick      # each benchmark's --quick mode
    .venv/bin/python -m bench.peak --only stream,delivery
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS, load_average


@dataclass(frozen=True, kw_only=True)
class Step:
    """One benchmark of the sitting: how to run it (full and quick) and the result files it writes."""

    name: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    results: tuple[str, ...]


_KAFKA_LINGER_25 = ("--skip-drain", "--backends", "kafka", "--skip-kafka-floor", "--kafka-linger-ms", "25")

STEPS = (
    Step(name="recommend-real", args=("bench.bench_recommend_real",),
         quick_args=("bench.bench_recommend_real", "--quick"), results=("recommend_real",)),
    Step(name="recommend-synthetic", args=("bench.bench_recommend", "--quick"),
         quick_args=("bench.bench_recommend", "--quick"), results=("recommend_quick",)),
    Step(name="stream", args=("bench.bench_stream",), quick_args=("bench.bench_stream", "--quick"),
         results=("stream",)),
    # Kafka at the peak with the producers' linger a deployment at that rate sets (NOTIFY_KAFKA_LINGER_MS=25:
    # message sets ~5x larger, the broker's CPU a third), and what it costs a capture request beside it
    Step(name="stream-kafka-linger-25",
         args=("bench.bench_stream", *_KAFKA_LINGER_25, "--tag", "linger25"),
         quick_args=("bench.bench_stream", "--quick", *_KAFKA_LINGER_25, "--tag", "linger25",
                     "--output", "bench/results/stream_linger25_quick.json"),
         results=("stream_linger25",)),
    Step(name="delivery", args=("bench.bench_delivery",), quick_args=("bench.bench_delivery", "--quick"),
         results=("delivery",)),
    # the same burst with `notify worker` started twice on the one Store: a second process, its own GIL
    Step(name="delivery-2-processes", args=("bench.bench_delivery", "--shapes", "burst", "--processes", "2"),
         quick_args=("bench.bench_delivery", "--quick", "--shapes", "burst", "--processes", "2"),
         results=("delivery_p2",)),
    Step(name="schedule", args=("bench.bench_schedule", "--only", "e2e"),
         quick_args=("bench.bench_schedule", "--quick"), results=("schedule",)),
    # the day's plan as the asset makes it: the recommender's candidates, on the demo's real users
    Step(name="daily-plan", args=("bench.bench_daily_plan",), quick_args=("bench.bench_daily_plan", "--quick"),
         results=("daily_plan",)),
)


def run_step(step: Step, *, quick: bool) -> dict[str, Any]:
    """Run one benchmark as its own process (a fresh interpreter, as a user would) and read its limits back."""
    before = load_average()
    started = time.perf_counter()
    args = step.quick_args if quick else step.args
    completed = subprocess.run([sys.executable, "-m", *args], check=False)
    seconds = time.perf_counter() - started
    limits: list[dict[str, Any]] = []
    for name in step.results:
        path = RESULTS / f"{name}{'_quick' if quick and not name.endswith('_quick') else ''}.json"
        if path.exists():
            limits.extend(json.loads(path.read_text()).get("limits") or [])
    return {"name": step.name, "command": " ".join(["python -m", *args]), "exit_code": completed.returncode,
            "seconds": round(seconds, 1), "loadavg_before": before, "loadavg_after": load_average(),
            "limits": limits}


def format_number(value: float) -> str:
    """Whole numbers with thousands separators, others to two decimals (a target of 1,358.05, not 1358.0547...)."""
    if float(value).is_integer() or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:,.2f}"


def code_revision() -> str:
    """The commit the sitting measures, ``-dirty`` when tracked files differ from it: a figure is the code's."""
    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
        except OSError:  # no git on this box: the sitting still runs
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def markdown(sitting: dict[str, Any]) -> str:
    """The README's table: one row per measured path, its limit beside it, the ratio, the target, the load."""
    lines = [f"Sitting of {sitting['when']} ({'quick' if sitting['quick'] else 'full'}), "
             f"{sitting['seconds']:.0f} s in all, code {sitting.get('code', 'unknown')}.", "",
             "| path | figure | limit measured beside it | ratio | spec target | met | load before / after |",
             "|---|---|---|---|---|---|---|"]
    for step in sitting["steps"]:
        load = f"{step['loadavg_before'][0]:.1f} / {step['loadavg_after'][0]:.1f}"
        if step["exit_code"] != 0:
            lines.append(f"| {step['name']} | failed (exit {step['exit_code']}) | | | | | {load} |")
        for item in step["limits"]:
            unit = item["unit"]
            lines.append(f"| {item['path']} | {format_number(item['figure'])} {unit} | "
                         f"{format_number(item['limit'])} {unit} | "
                         f"{item['ratio']:.3f} | {format_number(item['target'])} {unit} | "
                         f"{'yes' if item['met'] else '**no**'} | {load} |")
    return "\n".join(lines) + "\n"


def keep_sitting(sitting: dict[str, Any], *, results: Path = RESULTS) -> Path:
    """Copy a full sitting's files into ``sitting_<when>/`` beside them, where the next sitting cannot overwrite them.

    ``bench.sittings`` reads those folders side by side; the top-level files are always the latest sitting's.
    """
    folder = results / ("sitting_" + datetime.fromisoformat(sitting["when"]).strftime("%Y-%m-%dT%H%M"))
    folder.mkdir(parents=True, exist_ok=True)
    ran = {step["name"] for step in sitting["steps"]}
    names = [name for step in STEPS if step.name in ran for name in step.results] + ["peak"]
    for name in names:
        for path in (results / f"{name}.json", results / f"{name}.md"):
            if path.exists():
                shutil.copy2(path, folder / path.name)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each benchmark's --quick mode")
    parser.add_argument("--only", default="", help="comma-separated step names: " + ",".join(s.name for s in STEPS))
    args = parser.parse_args()
    wanted = {name for name in args.only.split(",") if name}
    started = time.perf_counter()
    when = datetime.now(UTC).isoformat(timespec="seconds")
    code = code_revision()
    steps = [run_step(step, quick=args.quick) for step in STEPS if not wanted or step.name in wanted]
    sitting = {"when": when, "code": code, "quick": args.quick, "seconds": time.perf_counter() - started,
               "steps": steps}
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"peak{suffix}.json").write_text(json.dumps(sitting, indent=2))
    text = markdown(sitting)
    (RESULTS / f"peak{suffix}.md").write_text(text)
    print(text)
    if not args.quick and not wanted:
        print(f"kept in {keep_sitting(sitting)}")
    if any(step["exit_code"] != 0 for step in steps):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
