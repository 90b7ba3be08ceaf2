"""Nested temporal validation: the ranker cannot see the window it is scored on (issue 17)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from notify_core.embeddings.embedder import HashingEmbedder
from notify_core.errors import ValidationError
from notify_core.evaluation import run
from notify_core.evaluation.methods import Signals, ranker_scores
from notify_core.evaluation.nested import fit_ranker
from notify_core.evaluation.split import load_tables, make_split, raw_before
from notify_core.recommend import scoring

CUTOFF = date(2011, 9, 1)


@pytest.fixture(scope="module")
def tables(retail_source: Path):
    return load_tables(retail_source)


def test_fit_refuses_rows_of_the_scored_window(tables) -> None:
    raw, _ = tables
    with pytest.raises(ValidationError, match="inside the scored window"):
        fit_ranker(raw, scoring_start=CUTOFF, embedder=HashingEmbedder(), sample_users=50)
    with pytest.raises(ValidationError, match="inside the scored window"):  # one row is enough
        fit_ranker(raw_before(raw, date(2011, 9, 2)), scoring_start=CUTOFF, embedder=HashingEmbedder(),
                   sample_users=50)


def test_evaluate_hands_the_fit_only_rows_before_the_cutoff(tables, retail_source, monkeypatch) -> None:
    seen: list[object] = []
    real = run.fit_ranker

    def spy(history: pl.DataFrame, **kwargs: object) -> scoring.LinearRanker:
        seen.append(history["InvoiceDate"].max())
        return real(history, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(run, "fit_ranker", spy)
    report = run.evaluate(retail_source, embedder=HashingEmbedder(), cutoff=CUTOFF, sample_users=60, tables=tables)
    assert len(seen) == 1 and seen[0] < datetime(2011, 9, 1)  # type: ignore[operator]
    assert report.ranker["fitted_before"] == "2011-09-01"


def test_changing_the_scored_window_cannot_change_the_ranker(tables) -> None:
    """Poison every row on or after the cut-off (other customers, other products): same coefficients."""
    raw, _ = tables
    poisoned = raw.with_columns(
        pl.when(pl.col("InvoiceDate") >= np.datetime64("2011-09-01"))
        .then(pl.col("StockCode").shuffle(seed=7)).otherwise(pl.col("StockCode")).alias("StockCode"))
    assert not poisoned.equals(raw)
    fits = [fit_ranker(raw_before(r, CUTOFF), scoring_start=CUTOFF, embedder=HashingEmbedder(), sample_users=80)
            for r in (raw, poisoned)]
    assert fits[0] == fits[1] and fits[0].fitted_before == "2011-09-01"


def test_a_ranker_fitted_after_the_window_may_not_score_it(tables) -> None:
    raw, full = tables
    split = make_split(raw, full, cutoff=date(2011, 6, 1), sample_users=20)
    late = scoring.LinearRanker(coefficients=(1.0,) * len(scoring.RANKER_FEATURES), fitted_before="2011-07-01")
    with pytest.raises(ValidationError, match="cannot score the window"):
        ranker_scores(Signals(split, HashingEmbedder()), late)
    ranker_scores(Signals(split, HashingEmbedder()), replace(late, fitted_before="2011-06-01"))


def test_fits_are_cached_by_content(tables, tmp_path) -> None:
    history = raw_before(tables[0], date(2011, 5, 1))
    first = fit_ranker(history, scoring_start=date(2011, 5, 1), embedder=HashingEmbedder(), sample_users=40,
                       cache_dir=tmp_path)
    assert len(list(tmp_path.glob("ranker-*.json"))) == 1
    again = fit_ranker(history, scoring_start=date(2011, 5, 1), embedder=HashingEmbedder(), sample_users=40,
                       cache_dir=tmp_path)
    assert again == first


def test_a_cached_fit_is_not_reused_after_the_features_arithmetic_changes(tables, tmp_path, monkeypatch) -> None:
    """The fit cache is keyed by scoring.py's code, not only the feature names: the third design changed
    what ``frequency`` means under the same name, and a stale fit must be refitted, not reused."""
    from notify_core.evaluation import nested

    history = raw_before(tables[0], date(2011, 5, 1))
    settings = {"scoring_start": date(2011, 5, 1), "horizon_days": 60, "seed": 0, "sample_users": 40, "model": "m"}
    key = nested._cache_key(history, **settings)
    assert nested._cache_key(history, **settings) == key
    changed = tmp_path / "scoring.py"
    changed.write_bytes(Path(scoring.__file__).read_bytes() + b"\n# what a feature means changed\n")
    monkeypatch.setattr(scoring, "__file__", str(changed))
    assert nested._cache_key(history, **settings) != key
