"""Rolling-origin evaluation: per cut-off reports, averages, averaged paired intervals, checks, cache, plots."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from notify_core.embeddings.embedder import HashingEmbedder
from notify_core.errors import ValidationError
from notify_core.evaluation.methods import NOTIFY
from notify_core.evaluation.rolling import evaluate_rolling, write_rolling_reports

CUTOFFS = (date(2011, 7, 1), date(2011, 8, 1))
HELD_OUT = date(2011, 9, 1)


def test_rolling_report_cache_and_plots(retail_source: Path, tmp_path: Path) -> None:
    seen: list[str] = []
    report = evaluate_rolling(retail_source, embedder=HashingEmbedder(), cutoffs=CUTOFFS, held_out=HELD_OUT,
                              sample_users=60, cache_dir=tmp_path / "cache",
                              on_report=lambda r: seen.append(r.settings["cutoff"]))
    assert seen == ["2011-07-01", "2011-08-01", "2011-09-01"]
    assert report.held_out is not None and report.held_out.ranker["fitted_before"] == "2011-09-01"
    assert [r.ranker["fitted_before"] for r in report.reports] == ["2011-07-01", "2011-08-01"]
    notify = next(a for a in report.averages if a["method"] == NOTIFY)
    assert notify["hr10"] == pytest.approx(sum(r.row(NOTIFY).hr10 for r in report.reports) / 2, abs=1e-4)
    assert len(notify["hr_curve"]) == 20
    peers = {i["method"] for i in report.intervals}
    assert {"repeat-buy", "repeat-buy, summed orders", "item-kNN BM25", "item-kNN BM25 + popularity fill",
            "implicit ALS"} <= peers
    # two HR@10 rows (repeat-buy, summed repeat-buy) and one new-items row per cut-off (2 + held out), then
    # 2 + 3 averaged interval claims
    # (fourth design) plus one distinct-products HR@10 row and one new-items row per cut-off, and 1 + 2 averaged
    assert len(report.checks) == 3 * 5 + 8
    assert all(isinstance(c["holds"], bool) for c in report.checks)

    again = evaluate_rolling(retail_source, embedder=HashingEmbedder(), cutoffs=CUTOFFS, held_out=HELD_OUT,
                             sample_users=60, cache_dir=tmp_path / "cache")  # every cut-off from the cache
    assert again.as_dict(timings=False) == report.as_dict(timings=False)
    cached = list((tmp_path / "cache").glob("report-*.pickle"))
    assert len(cached) == 3 and all(p.stat().st_mode & 0o777 == 0o600 for p in cached)
    cached[0].chmod(0o666)  # a file someone else could have written is never unpickled: recomputed instead
    assert evaluate_rolling(retail_source, embedder=HashingEmbedder(), cutoffs=CUTOFFS[:1], held_out=None,
                            sample_users=60, cache_dir=tmp_path / "cache").reports[0].settings["sample_users"] == 60

    paths = write_rolling_reports(report, tmp_path / "out")
    page = paths[1].read_text()
    assert page.count("data:image/png;base64,") == 3 and "Checks (issue 17)" in page
    written = json.loads(paths[2].read_text())
    assert written["settings"]["held_out"] == "2011-09-01" and len(written["cutoffs"]) == 2


def test_held_out_must_come_after_the_rolling_cutoffs(retail_source: Path) -> None:
    with pytest.raises(ValidationError, match="held-out"):
        evaluate_rolling(retail_source, embedder=HashingEmbedder(), cutoffs=CUTOFFS, held_out=date(2011, 7, 15))
