"""Sittings side by side: the headline figures of several ``make bench-peak`` sittings in one table.

A sitting's table (``bench/results/peak.md``) is read against the limits measured beside it, because the
2 shared cores change speed from one day to the next. Read across sittings, two things matter: did a
figure move, and did the machine (its limits) move with it. This prints one column per sitting, one row
per headline path, each cell ``figure (ratio to its limit)``, and a row of each sitting's raw speed, so a
figure that went down on a machine that went down too is told apart from a regression.

    .venv/bin/python -m bench.sittings bench/results/sitting_*/peak.json bench/results/peak.json

Paths are matched by the start of their name: a benchmark that renamed a row (the stream's "persisted" row
became "persisted within 5 s, per second offered" in session 21) still lines up.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peak import format_number


@dataclass(frozen=True, kw_only=True)
class Headline:
    """One row of the comparison: the first measured path whose name starts with ``prefix``."""

    label: str
    prefix: str
    show: str = "figure"  # or "limit": the raw operation itself, a measure of the machine


HEADLINES = (
    Headline(label="machine: trivial HTTP route (req/s)",
             prefix="recommendations over HTTP, real demo data (closed loop)", show="limit"),
    Headline(label="machine: raw SQLite executemany (rows/s)",
             prefix="consumer alone, 1,000,000 events / raw executemany", show="limit"),
    Headline(label="recommendations, closed loop (req/s)",
             prefix="recommendations over HTTP, real demo data (closed loop)"),
    Headline(label="recommendations, open loop p99 (ms)", prefix="recommendations p99 over HTTP, open loop"),
    Headline(label="consumer alone (ev/s)", prefix="consumer alone, 1,000,000 events / raw executemany"),
    Headline(label="local log at 49k/s offered: p99 (ms)", prefix="local 49k/s: p99"),
    Headline(label="local log at 49k/s: share within 5 s", prefix="local 49k/s: share within 5 s"),
    Headline(label="kafka at 49k/s offered: persisted (ev/s)",
             prefix="kafka 49k/s offered: persisted"),
    Headline(label="kafka at 49k/s, linger 25 ms: persisted (ev/s)",
             prefix="kafka 49k/s, linger 25 ms offered: persisted"),
    Headline(label="kafka at 49k/s, linger 25 ms: p99 (ms)", prefix="kafka 49k/s, linger 25 ms: p99"),
    Headline(label="delivery burst, one process (deliveries/s)",
             prefix="burst: deliveries/s vs the webhook sender floor"),
    Headline(label="delivery burst: worker CPU a delivery (ms)",
             prefix="burst: worker CPU ms per delivery vs the sender floor"),
    Headline(label="delivery spread minute: p99 lateness (s)", prefix="spread: p99 lateness"),
    Headline(label="10M users end to end (s)", prefix="end to end 10,000,000 users"),
)


def _rows(sitting: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for step in sitting["steps"] for item in step["limits"]]


def cell(sitting: dict[str, Any], headline: Headline) -> str:
    """``figure (ratio)`` of the headline's path in this sitting, or an em dash where it was not measured."""
    for item in _rows(sitting):
        if item["path"].startswith(headline.prefix):
            if headline.show == "limit":
                return format_number(item["limit"])
            return f"{format_number(item['figure'])} ({item['ratio']:.3f})"
    return "—"


def _load(sitting: dict[str, Any]) -> str:
    loads = [load for step in sitting["steps"] for load in (step["loadavg_before"][0], step["loadavg_after"][0])]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "—"


def table(sittings: list[dict[str, Any]]) -> str:
    """The comparison as markdown: one column per sitting, in the order given."""
    header = ["sitting"] + [s["when"][:16].replace("T", " ") for s in sittings]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             "| code | " + " | ".join(s.get("code", "—")[:10] for s in sittings) + " |",
             "| load (1 min) | " + " | ".join(_load(s) for s in sittings) + " |",
             "| minutes | " + " | ".join(f"{s['seconds'] / 60:.1f}" for s in sittings) + " |"]
    lines += ["| " + headline.label + " | " + " | ".join(cell(s, headline) for s in sittings) + " |"
              for headline in HEADLINES]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sittings", nargs="+", type=Path, help="peak.json files, oldest first")
    args = parser.parse_args()
    sittings = sorted((json.loads(path.read_text()) for path in args.sittings), key=lambda s: s["when"])
    print(table([s for s in sittings if not s["quick"]]), end="")


if __name__ == "__main__":
    main()
