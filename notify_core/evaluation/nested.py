"""Nested temporal validation: the learned ranker is fitted only on data before the window it scores.

The rule is enforced by the API, not by care: :func:`fit_ranker` receives the export's rows *before*
the scored window's start and refuses any row on or after it; inside, it cuts its own training split at
``scoring_start - horizon_days`` and takes its labels from ``[that, scoring_start)``, so the features,
the labels and the fitted coefficients are all computed from data the scored window never contains.
:func:`notify_core.evaluation.methods.ranker_scores` refuses a ranker fitted after the window it scores.

What was chosen before any rolling or held-out window was scored with it (README): the feature set
(:data:`scoring.RANKER_FEATURES`, second design, chosen on the development windows of
``rolling.DEVELOPMENT_CUTOFFS``), the model family (L2 logistic regression, ``l2 = 1``), the candidate set
and the negative sampling below. Only the coefficients are learned, per scored window. The fourth design
changes how a list is built from the scores (distinct products, :mod:`notify_core.recommend.distinct`),
not the fit: chosen on the same development windows, no parameter.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from notify_core.embeddings.embedder import Embedder, Progress
from notify_core.errors import ValidationError
from notify_core.evaluation.methods import Signals, ranker_candidates
from notify_core.evaluation.split import make_split
from notify_core.recommend import scoring
from notify_core.sources.online_retail import map_online_retail, normalise_columns

NEGATIVES_PER_POSITIVE = 20  # negatives sampled (seeded, re-weighted) so the fit stays small in memory


@dataclass(frozen=True, slots=True)
class FitWindow:
    """Where a fit's features end and its labels start and end (labels end = the scored window's start)."""

    features_before: date
    labels_until: date


def fit_window(scoring_start: date, *, horizon_days: int) -> FitWindow:
    return FitWindow(features_before=scoring_start - timedelta(days=horizon_days), labels_until=scoring_start)


def fit_ranker(history: pl.DataFrame, *, scoring_start: date, embedder: Embedder, horizon_days: int = 60,
               seed: int = 0, sample_users: int | None = None, cache_dir: Path | None = None,
               progress: Progress | None = None) -> scoring.LinearRanker:
    """Fit :class:`scoring.LinearRanker` on ``history`` (export rows strictly before ``scoring_start``).

    Raises :class:`ValidationError` if any row is on or after ``scoring_start`` (the scored window): the
    caller passes ``split.raw_before(raw, scoring_start)``. Cached in ``cache_dir`` by a hash of the
    history's rows and every setting, so re-running an evaluation does not re-fit.
    """
    history = normalise_columns(history)
    start = datetime.combine(scoring_start, datetime.min.time())
    latest = history["InvoiceDate"].max()
    if isinstance(latest, datetime) and latest >= start:
        raise ValidationError(f"the ranker's training data reaches {latest}, inside the scored window "
                              f"starting {scoring_start}: pass only rows before it")
    window = fit_window(scoring_start, horizon_days=horizon_days)
    key = _cache_key(history, scoring_start=scoring_start, horizon_days=horizon_days, seed=seed,
                     sample_users=sample_users, model=embedder.model_id)
    cached = cache_dir / f"ranker-{key}.json" if cache_dir is not None else None
    if cached is not None and cached.exists():
        data = json.loads(cached.read_text())
        return scoring.LinearRanker(coefficients=tuple(data["coefficients"]), intercept=data["intercept"],
                                    fitted_before=data["fitted_before"])
    split = make_split(history, map_online_retail(history), cutoff=window.features_before,
                       horizon_days=horizon_days, seed=seed, sample_users=sample_users)
    signals = Signals(split, embedder, progress=progress)
    features = signals.ranker_features()
    usable = ranker_candidates(signals) & split.eligible
    labels = split.truth
    rng = np.random.default_rng(seed)
    positives = usable & labels
    negatives = usable & ~labels
    rate = min(1.0, NEGATIVES_PER_POSITIVE * max(1, int(positives.sum())) / max(1, int(negatives.sum())))
    keep = positives | (negatives & (rng.random(labels.shape) < rate))
    weights = np.where(labels[keep], 1.0, 1.0 / rate)
    coefficients, intercept = scoring.fit_logistic(features[keep], labels[keep], sample_weight=weights)
    # rounded: threaded BLAS sums in another order from run to run (1e-9 noise); a report must not change
    ranker = scoring.LinearRanker(coefficients=tuple(round(float(c), 6) for c in coefficients),
                                  intercept=round(intercept, 6), fitted_before=window.labels_until.isoformat())
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(ranker.as_dict()))
        tmp.replace(cached)
    return ranker


def _cache_key(history: pl.DataFrame, **settings: object) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(json.dumps({k: str(v) for k, v in sorted(settings.items())}).encode())
    digest.update(json.dumps(list(scoring.RANKER_FEATURES)).encode())
    # the features' arithmetic, not only their names: a fit cached before a change of what a feature
    # means (the third design's summed campaign orders) must not be reused
    digest.update(Path(scoring.__file__).read_bytes())
    digest.update(str(history.height).encode())
    digest.update(str(int(history.hash_rows(seed=0).sum())).encode())
    return digest.hexdigest()
