"""A CI-sized evaluation on the real data (200 sampled users, HashingEmbedder), through the CLI too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from notify_cli.main import app
from notify_core.evaluation import Report
from tests.evaluation.conftest import SAMPLE

METHODS = ["random", "most popular", "implicit ALS", "repeat-buy", "repeat-buy, summed orders",
           "item-kNN BM25", "item-kNN BM25 + popularity fill",
           "repeat-buy, summed orders, distinct products", "item-kNN BM25 + popularity fill, distinct products",
           "implicit ALS, distinct products",
           "notify: content only", "notify: + repeat affinity", "notify: + co-purchase", "notify: hand-tuned blend",
           "notify: learned ranker, scores only (third design)",
           "notify: learned ranker, distinct products (fourth design)", "notify: learned ranker (serving)"]
RATES = ("hr5", "hr10", "ndcg5", "ndcg10", "coverage10", "new_hr10", "new_ndcg10", "converted", "converted_horizon")


def test_every_method_has_a_row_with_rates_in_range(sample_report: Report) -> None:
    assert [r.method for r in sample_report.results] == METHODS
    for row in sample_report.results:
        for name in RATES:
            assert 0.0 <= getattr(row, name) <= 1.0, (row.method, name)
        assert row.hr5 <= row.hr10 and row.notifications > 0
    assert sample_report.settings["users_active_both_sides"] == SAMPLE
    assert len(sample_report.gains) == 6  # the ablation ladder, now with the fourth design as a step
    assert sample_report.row("notify: learned ranker (serving)").kind == "notify"
    assert len(sample_report.row("random").hr_curve) == 20


def test_every_method_has_a_paired_interval_to_notify(sample_report: Report) -> None:
    others = [m for m in METHODS if m != "notify: learned ranker (serving)"]
    assert [i["method"] for i in sample_report.intervals] == others
    for row in sample_report.intervals:
        for metric in ("hr10", "new_hr10"):
            i = row[metric]
            assert i["low"] <= i["diff"] <= i["high"], row
    random = next(i for i in sample_report.intervals if i["method"] == "random")
    assert random["hr10"]["low"] > 0  # the learned ranker is far ahead of random even on 200 users


def test_the_signals_order_as_measured_on_the_full_data(sample_report: Report) -> None:
    """Coarse sanity (not the full-data numbers): random is worst, repeat affinity beats text alone."""
    random, serving = sample_report.row("random"), sample_report.row("notify: + repeat affinity")
    assert serving.hr10 > random.hr10 and serving.ndcg10 > sample_report.row("notify: content only").ndcg10
    assert sample_report.row("most popular").coverage10 < 0.2


def test_cli_writes_the_three_reports_and_is_deterministic(
    sample_report: Report, retail_source: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "evaluate", "--source", str(retail_source), "--sample-users", str(SAMPLE), "--seed", "0", "--hashing",
        "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
    ])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"report.md", "report.html", "report.json"}
    written = json.loads((out / "report.json").read_text())
    written.pop("seconds")
    for row in written["results"]:
        row.pop("seconds")
    # same seed, same data: the CLI run (cold vector cache) equals the fixture's run, field for field
    assert written == json.loads(json.dumps(sample_report.as_dict(timings=False)))
    markdown = (out / "report.md").read_text()
    assert all(f"| {m} |" in markdown for m in METHODS)
    page = (out / "report.html").read_text()
    assert "<table>" in page and page.count("data:image/png;base64,") == 3  # HR@k curves + two interval bars


def test_another_seed_changes_the_sample(sample_report: Report, retail_source: Path) -> None:
    from tests.evaluation.conftest import run_sample

    other = run_sample(seed=1)
    assert other.as_dict(timings=False) != sample_report.as_dict(timings=False)
    assert [r.method for r in other.results] == METHODS


@pytest.mark.parametrize("bad", [["--horizon-days", "0"], ["--cutoff", "2009-01-01"]])
def test_cli_rejects_impossible_splits(retail_source: Path, tmp_path: Path, bad: list[str]) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--source", str(retail_source), "--hashing",
                                      "--output-dir", str(tmp_path), *bad])
    assert result.exit_code != 0
