"""The README's measured figures are the committed results, not a copy that drifts from them.

The project's rule: a speed or quality figure in the README comes from a benchmark whose results are in
bench/results/. These tests read both and fail when a result moves (a new sitting, a new run) and the
README still shows the old figure, or when the README is edited by hand away from the results.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _table(text: str, header: str) -> dict[str, list[str]]:
    """The markdown table that starts with ``header``: first cell -> the other cells (bold marks removed)."""
    start = text.index(header)
    rows: dict[str, list[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_the_peak_table_is_the_sitting_in_bench_results() -> None:
    """Every row of bench/results/peak.md (the latest `make bench-peak`) appears in the README, with its
    sitting's date and commit."""
    peak = (RESULTS / "peak.md").read_text()
    readme = _readme()
    missing = [line for line in peak.splitlines() if line.startswith("| ") and line not in readme]
    assert missing == []
    sitting = re.search(r"Sitting of (\S+) \(full\), (\d+) s in all, code ([0-9a-f]{40})", peak)
    assert sitting is not None and sitting.group(0) in readme


def test_the_simulation_table_is_bench_results_simulation_json() -> None:
    result = json.loads((RESULTS / "simulation.json").read_text())
    options = result["options"]
    readme = _readme()
    assert (f"{options['users']} users x {options['days']} days, {options['campaigns']} campaigns, cap "
            f"{options['daily_cap']}, seed {options['seed']}") in readme
    rows = _table(readme, "| policy | delivered | clicks | CTR | users who opted out | failed |")
    names = {"notify": f"Notify (exploration {options['exploration_share']})",
             "cap_and_drop": "frequency cap and drop (most popular up to the cap)",
             "random": "no personalisation (random eligible)"}
    for policy, row in names.items():
        totals = result["policies"][policy]["totals"]
        assert rows[row] == [f"{totals['delivered']:,}", f"{totals['clicks']:,}", f"{100 * totals['ctr']:.2f} %",
                             f"{100 * totals['opt_out_rate']:.1f} %", f"{totals['failed']:,}"], policy
    ratio = result["policies"]["notify"]["totals"]["ctr"] / result["policies"]["cap_and_drop"]["totals"]["ctr"]
    assert f"Notify's CTR is {ratio:.1f}x cap-and-drop's" in readme


def test_the_rolling_evaluation_table_is_bench_results_evaluation_rolling() -> None:
    results = _table((RESULTS / "evaluation_rolling.md").read_text(),
                     "| method | 2011-07-01 | 2011-08-01 | 2011-09-01 | 2011-10-01 (held out) |")
    readme = _table(_readme(), "| method | 2011-07-01 | 2011-08-01 | 2011-09-01 | 2011-10-01 (held out) |")
    names = {
        "most popular": "most popular", "implicit ALS": "implicit ALS", "repeat-buy": "repeat-buy",
        "repeat-buy, orders summed over the campaign's products": "repeat-buy, summed orders",
        "item-kNN BM25 + popularity fill": "item-kNN BM25 + popularity fill",
        "Notify, third design (the same ranker, lists by score alone)":
            "notify: learned ranker, scores only (third design)",
        "Notify, fourth design (distinct products)": "notify: learned ranker, distinct products (fourth design)",
        "Notify (serving: fifth design)": "notify: learned ranker (serving)",
        "*like-for-like: repeat-buy, summed orders, distinct products*":
            "repeat-buy, summed orders, distinct products",
        "*like-for-like: item-kNN BM25 + popularity fill, distinct products*":
            "item-kNN BM25 + popularity fill, distinct products",
    }
    assert set(names) <= set(readme), set(names) - set(readme)
    for row, method in names.items():
        assert readme[row] == [c.replace("0.", ".") for c in results[method]], row


def _rows(name: str) -> dict[str, list[Any]]:
    data = json.loads((RESULTS / f"{name}.json").read_text())
    return {str(row[0]): list(row[1:]) for row in data["rows"]}


def test_the_other_benchmarks_rows_are_their_results() -> None:
    readme = _readme()
    ingest = _rows("ingest")
    rows, seconds, per_s = ingest["ingest (empty store): all"]
    assert f"{rows:,} rows ingested in {seconds:.1f} s ({float(per_s) / 1000:.0f}k rows/s" in readme
    assert f"re-ingest {float(ingest['re-ingest (no changes): all'][1]):.2f} s, 0 rows written" in readme
    embeddings = _rows("embeddings")
    batch64 = float(embeddings["embed 1024 product texts, batch 64"][1])
    full = float(embeddings["full run (empty store)"][0])
    assert f"MiniLM {batch64:.0f} texts/s (batch 64)" in readme and f"full run {full:.1f} s" in readme


def test_the_days_plan_costs_are_bench_daily_plan() -> None:
    """Scheduling: "~0.55 ms of CPU a real demo user here against 0.018 ms for the bare ANN top 20"."""
    plan = _rows("daily_plan")
    ranked = float(plan["rank_many alone, median of 3 (CPU)"][1])
    bare = float(plan["bare ANN top 20 alone, median of 3 (CPU)"][1])
    assert f"~{ranked:.2f} ms of CPU a real demo user here against {bare:.3f} ms" in _readme()


def test_the_disaster_recovery_figures_are_bench_dr() -> None:
    readme = _readme()
    [demo, _lost] = json.loads((RESULTS / "dr.json").read_text())["drills"]
    assert f"RTO {demo['rto_api_s']:.1f} s to the API, {demo['rto_worker_s']:.1f} s to the first delivery" in readme
    drills = json.loads((RESULTS / "dr_1m.json").read_text())["drills"]  # stream retained, stream lost
    assert demo["lost_acked"] == 0 and {d["lost_acked"] for d in drills} == {0}  # "RPO 0 acknowledged events"
    restore = sorted(f"{d['restore_s']:.0f}" for d in drills)
    rto = sorted({f"{d['rto_api_s']:.0f}" for d in drills})
    assert f"restore {restore[0]}-{restore[-1]} s, RTO {'-'.join(rto)} s" in readme


def test_the_ann_figures_are_bench_recommend() -> None:
    """Real-time recommendation: IVF against HNSW on the 1M x 200k benchmark data."""
    result = json.loads((RESULTS / "recommend.json").read_text())
    ivf, hnsw = result["ann_sweeps"]["ivf"]["16"], result["ann_sweeps"]["hnsw"]
    readme = _readme()
    assert f"IVF reaches {ivf['recall']:.3f} probing 16 of 894 lists at a p99 of ~{ivf['p99']:.1f} ms" in readme
    assert f"builds in {result['ivf_build_s']:.1f} s against HNSW's {result['hnsw_build_s']:.1f} s" in readme
    assert (f"recall@10 {hnsw['128']['recall']:.2f} at ef 128 and {hnsw['512']['recall']:.3f} at ef 512\n"
            f"(p99 {hnsw['512']['p99']:.1f} ms") in readme
