"""Fifth-round ranker variants (issue 17, docs/recommendation-quality.md Phase 5), development windows only.

The question: does a *structural* change to the learned ranker's order close the like-for-like gap to
"repeat-buy, summed orders, distinct products" (both lists built by notify_core/recommend/distinct.py)?
Every variant is fitted before and scored at each development cut-off exactly as ``ranker_design third``
(the serving design), then its lists are made distinct; per-user hits are compared with the summed peer's,
paired, pooled over the windows (a stratified bootstrap: users resampled within each window, the windows'
means averaged).

Only cut-offs whose 60-day scored window ends by the first rolling cut-off (2011-07-01) are accepted: nothing
at or after it may inform a choice (the check below refuses anything later).

    .venv/bin/python -m bench.ranker_design dump 2011-03-01 2011-04-15          # + extras, incidence
    .venv/bin/python -m bench.ranker_design_fifth 2011-03-01 2011-04-01 2011-04-15 2011-05-01
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from scipy import sparse

from bench.ranker_design import OUT, load, third_design, training_rows
from notify_core.evaluation.rolling import DEVELOPMENT_CUTOFFS, ROLLING_CUTOFFS
from notify_core.recommend import scoring
from notify_core.recommend.distinct import distinct_products_scores
from notify_core.recommend.repeat_order import repeats_in_frequency_order

FIRST_ROLLING_CUTOFF = ROLLING_CUTOFFS[0]
HORIZON_DAYS = 60
RESULTS = Path("bench/results/ranker_design_fifth.json")
Window = dict[str, np.ndarray]
FOURTH = "fourth design (serving)"


def check_development(cutoff: date) -> None:
    """Refuse a cut-off whose scored window reaches the first rolling cut-off (the rolling/held-out data)."""
    if cutoff + timedelta(days=HORIZON_DAYS) > FIRST_ROLLING_CUTOFF:
        raise SystemExit(f"{cutoff}: its scored window ends {cutoff + timedelta(days=HORIZON_DAYS)}, after the first "
                         f"rolling cut-off {FIRST_ROLLING_CUTOFF}; not a development window")


def user_hits(d: Window, scores: np.ndarray, products: list[frozenset[int]]) -> np.ndarray:
    """Per evaluated user (truth not empty): hit in the distinct-products top 10 (as run.py measures)."""
    valid = d["truth"].any(axis=1)
    shown = np.where(d["eligible"], scores, -np.inf)[valid]
    shown = distinct_products_scores(shown, products, limit=10)
    top = np.argsort(-shown, axis=1, kind="stable")[:, :10]
    ok = np.isfinite(np.take_along_axis(shown, top, axis=1))
    return (np.take_along_axis(d["truth"][valid], top, axis=1) & ok).any(axis=1)


def repeats_by_summed(ranker: np.ndarray, total: np.ndarray, bought: np.ndarray) -> np.ndarray:
    """Keep the places the ranker gives to bought campaigns, but fill them in summed-orders order
    (ties by the ranker): the shared function serving and the evaluation call (fifth design)."""
    return repeats_in_frequency_order(ranker, np.where(bought, total, 0.0))


def repeats_first(ranker: np.ndarray, total: np.ndarray, bought: np.ndarray) -> np.ndarray:
    """Lexicographic: bought campaigns first by summed orders (the peer's order), then the ranker's new items."""
    finite = np.isfinite(ranker)
    big = np.nanmax(np.where(finite, np.abs(ranker), 0)) + 1.0
    rep = np.log1p(total) * 1e3 + np.where(finite, ranker, 0) / (big * 10)
    return np.where(bought & finite, 10 * big + rep, ranker)


def variants(fit: Window, scored: Window, ef: Window, es: Window) -> dict[str, np.ndarray]:
    pop = scored["features"][..., 4].astype(np.float64)
    total, bought = es["total"].astype(np.float64), es["total"] > 0
    xf, xs = third_design(fit, ef, "sum"), third_design(scored, es, "sum")

    def fitted(x_fit: np.ndarray, x_scored: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        d = fit if labels is None else {**fit, "truth": labels}
        x, y, w, _ = training_rows(d, x_fit)
        coef, icpt = scoring.fit_logistic(x, y, sample_weight=w)
        return np.where(scored["candidates"], x_scored @ coef + icpt, -np.inf)

    ranker = np.where(scored["eligible"], fitted(xf, xs), -np.inf)  # eligibility first, as ranker_scores does
    n_bought = bought.sum(axis=1, keepdims=True)
    heavy = n_bought >= 10
    # the frequency rank inside the user's bought campaigns (0 = most ordered), monotone by construction
    order = np.argsort(-np.where(bought, total, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
    fo = np.argsort(-np.where(fit["features"][..., 0] > 0, ef["total"], -1), axis=1, kind="stable")
    frank = np.empty_like(fo)
    np.put_along_axis(frank, fo, np.broadcast_to(np.arange(fo.shape[1]), fo.shape), axis=1)

    def with_rank(x: np.ndarray, r: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([x, (b / (1.0 + r))[..., None], (b * np.log1p(r))[..., None]], axis=-1)

    fit_bought = (ef["total"] > 0).astype(np.float64)
    return {
        "repeat-buy, summed orders (peer)": total + 0.999 * pop,
        FOURTH: ranker,
        "A repeats refilled in summed-orders order": repeats_by_summed(ranker, total, bought),
        "B repeats first by summed orders, then ranker": repeats_first(ranker, total, bought),
        "C per segment: >=10 bought -> A, else ranker": np.where(heavy, repeats_by_summed(ranker, total, bought),
                                                                  ranker),
        "D per segment: >=10 bought -> B, else ranker": np.where(heavy, repeats_first(ranker, total, bought), ranker),
        "E + frequency-rank features (1/(1+r), log1p r)": fitted(with_rank(xf, frank, fit_bought),
                                                                 with_rank(xs, rank, bought.astype(np.float64))),
    }


def window(cutoff: date) -> dict[str, np.ndarray]:
    check_development(cutoff)
    if cutoff not in DEVELOPMENT_CUTOFFS:
        raise SystemExit(f"{cutoff} is not in rolling.DEVELOPMENT_CUTOFFS (the windows reports say were used)")
    fit, scored = load(OUT / f"fit-{cutoff}.npz"), load(OUT / f"scored-{cutoff}.npz")
    ef, es = load(OUT / f"extra-fit-{cutoff}.npz"), load(OUT / f"extra-scored-{cutoff}.npz")
    inc = sparse.csc_matrix(sparse.load_npz(OUT / f"incidence-scored-{cutoff}.npz"))
    products = [frozenset(inc.indices[inc.indptr[c]:inc.indptr[c + 1]].tolist()) for c in range(inc.shape[1])]
    return {name: user_hits(scored, s, products) for name, s in variants(fit, scored, ef, es).items()}


def paired(per_window: list[tuple[np.ndarray, np.ndarray]], *, draws: int = 2000, seed: int = 0
           ) -> tuple[float, float, float]:
    """Mean over windows of (a - b), and a stratified paired bootstrap 95 % interval."""
    rng = np.random.default_rng(seed)
    diffs = [a.astype(np.float64) - b.astype(np.float64) for a, b in per_window]
    point = float(np.mean([d.mean() for d in diffs]))
    boot = np.zeros(draws)
    for d in diffs:
        boot += d[rng.integers(0, len(d), size=(draws, len(d)))].mean(axis=1)
    boot /= len(diffs)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return point, float(lo), float(hi)


def main(cutoffs: list[date], summarise: Callable[[str], None] = print) -> None:
    peer = "repeat-buy, summed orders (peer)"
    hits = {c: window(c) for c in cutoffs}
    names = list(next(iter(hits.values())))
    rows = []
    for name in names:
        per = [f"{hits[c][name].mean():.4f}" for c in cutoffs]
        point, lo, hi = paired([(hits[c][name], hits[c][peer]) for c in cutoffs])
        ahead = int(sum(hits[c][name].mean() >= hits[c][peer].mean() for c in cutoffs))
        vs_fourth = paired([(hits[c][name], hits[c][FOURTH]) for c in cutoffs])
        rows.append({"variant": name, "hr10": dict(zip(map(str, cutoffs), map(float, per), strict=True)),
                     "minus_peer": [point, lo, hi], "windows_level_or_ahead": ahead,
                     "minus_fourth": list(vs_fourth)})
        summarise(f"| {name} | {' | '.join(per)} | {point:+.4f} [{lo:+.4f}, {hi:+.4f}] | {ahead}/{len(cutoffs)} | "
                  f"{vs_fourth[0]:+.4f} [{vs_fourth[1]:+.4f}, {vs_fourth[2]:+.4f}] |")
    users = {str(c): int(len(hits[c][peer])) for c in cutoffs}
    summarise(f"users per window: {users}")
    RESULTS.write_text(json.dumps({"cutoffs": list(map(str, cutoffs)), "users": users, "rows": rows}, indent=1))


if __name__ == "__main__":
    main([date.fromisoformat(day) for day in sys.argv[1:]])
