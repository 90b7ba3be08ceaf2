"""Fourth-round ranker variants tried on the development windows only (issue 17,
docs/recommendation-quality.md Phase 4), none adopted: the repeat candidates' own slopes restricted, and the
user-relative frequency. Reads the dumps and extras
``bench.ranker_design`` writes; fitted before and scored at each window exactly as ``ranker_design third``.

    .venv/bin/python -m bench.ranker_design_variants 2011-04-01 2011-05-01
"""

from __future__ import annotations

import sys
from datetime import date

import numpy as np

from bench.ranker_design import OUT, load, metrics, third_design, training_rows
from notify_core.recommend import scoring

# third_design(..., "sum") columns: 0 frequency, 1 recency, 2 co-purchase, 3 similarity, 4 popularity,
# 5 priority, 6 repeat, 7-10 repeat x (co-purchase, similarity, popularity, priority), 11 bm25, 12 repeat x bm25
VARIANTS = ("third", "repeat side: frequency, recency, popularity, priority",
            "repeat side: + similarity", "third + frequency share of the user's best", "third + 1 / frequency rank")


def variant(x: np.ndarray, name: str) -> np.ndarray:
    repeat = x[..., 6:7]
    new = 1.0 - repeat
    if name == "third":
        return x
    if name == "repeat side: frequency, recency, popularity, priority":  # no co-purchase/similarity/bm25 slope
        return np.concatenate([x[..., :2], new * x[..., 2:4], x[..., 4:7], x[..., 9:11], new * x[..., 11:12]], axis=-1)
    if name == "repeat side: + similarity":
        return np.concatenate([x[..., :2], new * x[..., 2:3], x[..., 3:7], x[..., 8:11], new * x[..., 11:12]], axis=-1)
    if name == "third + frequency share of the user's best":
        top = x[..., 0].max(axis=1, keepdims=True)
        share = np.where(top > 0, x[..., 0] / np.where(top > 0, top, 1.0), 0.0)[..., None]
        return np.concatenate([x, share], axis=-1)
    if name == "third + 1 / frequency rank":
        order = np.argsort(-x[..., 0], axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(order.shape[1]), order.shape), axis=1)
        return np.concatenate([x, (repeat[..., 0] / (1.0 + rank))[..., None]], axis=-1)
    raise ValueError(name)


def main(cutoff: date) -> None:
    fit, scored = load(OUT / f"fit-{cutoff}.npz"), load(OUT / f"scored-{cutoff}.npz")
    ef, es = load(OUT / f"extra-fit-{cutoff}.npz"), load(OUT / f"extra-scored-{cutoff}.npz")
    base_fit, base_scored = third_design(fit, ef, "sum"), third_design(scored, es, "sum")
    for name in VARIANTS:
        xf, xs = variant(base_fit, name), variant(base_scored, name)
        x, y, w, _ = training_rows(fit, xf)
        coef, icpt = scoring.fit_logistic(x, y, sample_weight=w)
        hr, new = metrics(scored, np.where(scored["candidates"], xs @ coef + icpt, -np.inf))
        print(f"{cutoff} {name:55s} HR@10 {hr:.4f} new {new:.4f}", flush=True)


if __name__ == "__main__":
    for day in sys.argv[1:]:
        main(date.fromisoformat(day))
