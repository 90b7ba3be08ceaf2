"""Ranker design experiments (issue 17, phase 2): dump per-window features, then compare model variants.

Design choices are made on the DEVELOPMENT window only (scored from 2011-05-01, window ends 2011-06-30,
before the first rolling cut-off 2011-07-01); the fit for a scored window at C uses labels [C-60d, C) and
features before C-60d, exactly as :func:`notify_core.evaluation.nested.fit_ranker`.

    .venv/bin/python -m bench.ranker_design dump 2011-05-01        # features of the fit and scored splits
    .venv/bin/python -m bench.ranker_design compare 2011-05-01     # every variant, fitted before, scored at
"""

from __future__ import annotations

import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from notify_core.embeddings.embedder import SentenceTransformerEmbedder
from notify_core.evaluation import CachedEmbedder
from notify_core.evaluation.methods import Signals, als_scores, ranker_candidates
from notify_core.evaluation.split import load_tables, make_split, raw_before
from notify_core.sources.online_retail import map_online_retail

SOURCE = Path("../shared/data/online_retail/online_retail.parquet")
CACHE = Path(".notify/evaluation-cache")
OUT = Path(".notify/ranker-design")


def dump_split(signals: Signals, path: Path) -> None:
    s = signals.split
    feats = signals.ranker_features()
    als = als_scores(signals)
    np.savez_compressed(
        path, features=feats.astype(np.float32), candidates=ranker_candidates(signals), truth=s.truth,
        eligible=s.eligible, bought=s.bought_before, bm25=signals.bm25().astype(np.float32),
        als=np.where(np.isfinite(als), als, 0).astype(np.float32), popularity=signals.popularity().astype(np.float32))


def dump(cutoff: date) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    embedder = CachedEmbedder(SentenceTransformerEmbedder(), CACHE)
    raw, full = load_tables(SOURCE)
    t = time.perf_counter()
    scored = make_split(raw, full, cutoff=cutoff)
    dump_split(Signals(scored, embedder), OUT / f"scored-{cutoff}.npz")
    print("scored", cutoff, round(time.perf_counter() - t, 1), "s", flush=True)
    history = raw_before(raw, cutoff)
    fit = make_split(history, map_online_retail(history), cutoff=cutoff - timedelta(days=60))
    dump_split(Signals(fit, embedder), OUT / f"fit-{cutoff}.npz")
    print("fit", cutoff, round(time.perf_counter() - t, 1), "s", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        for day in sys.argv[2:]:
            dump(date.fromisoformat(day))


# -- compare -------------------------------------------------------------------------------------------

def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def metrics(d: dict[str, np.ndarray], scores: np.ndarray) -> tuple[float, float]:
    """(HR@10, new-items HR@10) as run.py computes them (ineligible never ranked)."""
    scores = np.where(d["eligible"], scores, -np.inf)
    truth, bought = d["truth"], d["bought"]
    valid = truth.any(axis=1)

    def hr(s: np.ndarray, t: np.ndarray) -> float:
        top = np.argsort(-s, axis=1, kind="stable")[:, :10]
        ok = np.isfinite(np.take_along_axis(s, top, axis=1))
        return float((np.take_along_axis(t, top, axis=1) & ok).any(axis=1).mean())

    new_truth = truth & ~bought
    new_valid = new_truth.any(axis=1)
    return hr(scores[valid], truth[valid]), hr(np.where(bought, -np.inf, scores)[new_valid], new_truth[new_valid])


def design(d: dict[str, np.ndarray], variant: str) -> np.ndarray:
    """users x campaigns x features of a variant."""
    f = d["features"].astype(np.float64)
    bought = (f[..., 0] > 0)[..., None].astype(np.float64)
    if variant == "base":
        return f
    if variant == "base+share":
        top = f[..., 0].max(axis=1, keepdims=True)
        share = np.where(top > 0, f[..., 0] / np.where(top > 0, top, 1.0), 0.0)[..., None]
        return np.concatenate([f, share], axis=-1)
    if variant == "base+bought":
        return np.concatenate([f, bought], axis=-1)
    seg = np.concatenate([f, bought, bought * f[..., 2:]], axis=-1)
    if variant == "segmented":
        return seg
    bm25 = np.log1p(np.maximum(d["bm25"], 0))[..., None]
    if variant == "segmented+bm25":
        return np.concatenate([seg, bm25, bought * bm25], axis=-1)
    als = d["als"][..., None].astype(np.float64)
    if variant == "segmented+bm25+als":
        return np.concatenate([seg, bm25, bought * bm25, als, bought * als], axis=-1)
    raise ValueError(variant)


def training_rows(d: dict[str, np.ndarray], x: np.ndarray, seed: int = 0):
    usable = d["candidates"] & d["eligible"]
    labels = d["truth"]
    rng = np.random.default_rng(seed)
    pos, neg = usable & labels, usable & ~labels
    rate = min(1.0, 20 * max(1, int(pos.sum())) / max(1, int(neg.sum())))
    keep = pos | (neg & (rng.random(labels.shape) < rate))
    return x[keep], labels[keep], np.where(labels[keep], 1.0, 1.0 / rate), keep


def top_mask(values: np.ndarray, k: int) -> np.ndarray:
    top = np.argsort(-values, axis=1, kind="stable")[:, :k]
    mask = np.zeros(values.shape, dtype=bool)
    np.put_along_axis(mask, top, True, axis=1)
    return mask & (values > 0)


def with_candidates(d: dict[str, np.ndarray], spec: str) -> dict[str, np.ndarray]:
    """Candidate sets rebuilt from the features: ann/co-purchase/popular top-k, plus bought."""
    if spec == "serving":
        return d
    f = d["features"].astype(np.float64)
    if spec == "all":
        return {**d, "candidates": np.ones(f.shape[:2], dtype=bool)}
    ann, co, pop = (int(x) for x in spec.split("/"))
    keep = (f[..., 0] > 0) | top_mask(f[..., 3] + 2.0, ann) | top_mask(f[..., 2], co)
    keep |= top_mask(f[..., 4], pop)
    return {**d, "candidates": keep}


def fit_predict(fit: dict[str, np.ndarray], scored: dict[str, np.ndarray], variant: str, model: str) -> np.ndarray:
    from notify_core.recommend import scoring

    xf, xs = design(fit, variant), design(scored, variant)
    x, y, w, keep = training_rows(fit, xf)
    if model == "logistic":
        coef, icpt = scoring.fit_logistic(x, y, sample_weight=w)
        score = xs @ coef + icpt
    else:
        import lightgbm as lgb

        params = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 50,
                  "subsample": 1.0, "colsample_bytree": 1.0, "random_state": 0, "n_jobs": 2, "verbose": -1,
                  "deterministic": True, "force_row_wise": True}
        if model == "lgb-binary":
            booster = lgb.LGBMClassifier(**params).fit(x, y, sample_weight=w)
            score = booster.predict_proba(xs.reshape(-1, xs.shape[-1]))[:, 1].reshape(xs.shape[:2])
        else:  # lambdarank, one query per user, candidates only (all rows of users with a positive)
            usable = fit["candidates"] & fit["eligible"]
            users = np.flatnonzero((usable & fit["truth"]).any(axis=1))
            rows = [np.flatnonzero(usable[u]) for u in users]
            xq = np.concatenate([xf[u, r] for u, r in zip(users, rows, strict=True)])
            yq = np.concatenate([fit["truth"][u, r] for u, r in zip(users, rows, strict=True)]).astype(int)
            ranker = lgb.LGBMRanker(objective="lambdarank", lambdarank_truncation_level=20,
                                    eval_at=[10], **params)
            ranker.fit(xq, yq, group=[len(r) for r in rows])
            score = ranker.predict(xs.reshape(-1, xs.shape[-1])).reshape(xs.shape[:2])
    return np.where(scored["candidates"], score, -np.inf)


def compare(cutoff: date) -> None:
    fit, scored = load(OUT / f"fit-{cutoff}.npz"), load(OUT / f"scored-{cutoff}.npz")
    f = scored["features"].astype(np.float64)
    pop = scored["features"][..., 4].astype(np.float64)
    peers = {"repeat-buy": np.expm1(f[..., 0]) + 0.999 * pop, "bm25": scored["bm25"].astype(np.float64),
             "bm25+fill": scored["bm25"] + 1e-9 * pop, "als": scored["als"].astype(np.float64)}
    for name, s in peers.items():
        print(f"{cutoff} {name:32s} HR@10 {metrics(scored, s)[0]:.4f} new {metrics(scored, s)[1]:.4f}", flush=True)
    # candidate recall: share of users with a hit whose hits are all outside the candidate set
    valid = scored["truth"].any(axis=1)
    reach = (scored["truth"] & scored["candidates"] & scored["eligible"]).any(axis=1)
    new_t = scored["truth"] & ~scored["bought"]
    new_reach = (new_t & scored["candidates"] & scored["eligible"]).any(axis=1)
    print(f"{cutoff} candidate recall (users with a hit reachable): {reach[valid].mean():.4f}; new items: "
          f"{new_reach[new_t.any(axis=1)].mean():.4f}; mean candidates {scored['candidates'].sum(1).mean():.0f}")
    for spec in sys.argv[3:]:
        variant, model, cands = spec.split(":")
        if True:
            t = time.perf_counter()
            f2, s2 = with_candidates(fit, cands), with_candidates(scored, cands)
            if variant == "base":
                valid = s2["truth"].any(axis=1)
                reach = (s2["truth"] & s2["candidates"] & s2["eligible"]).any(axis=1)[valid].mean()
                nt = s2["truth"] & ~s2["bought"]
                nreach = (nt & s2["candidates"] & s2["eligible"]).any(axis=1)[nt.any(axis=1)].mean()
                print(f"   {cands}: recall {reach:.4f} new {nreach:.4f} n {s2['candidates'].sum(1).mean():.0f}")
            hr, new = metrics(scored, fit_predict(f2, s2, variant, model))
            variant = spec
            print(f"{cutoff} {variant + ' ' + model:32s} HR@10 {hr:.4f} new {new:.4f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__" and sys.argv[1] == "compare":
    compare(date.fromisoformat(sys.argv[2]))


# -- third design (notes/p17basket.md): campaign-level aggregation and basket vectors ------------------
# Extra per-window arrays beside the dumps (computed from the same splits, no vectors needed), then the
# variants, fitted before and scored at each development window exactly as ``compare`` does:
#     .venv/bin/python -m bench.ranker_design extras 2011-04-01 2011-05-01
#     .venv/bin/python -m bench.ranker_design third 2011-04-01 2011-05-01

def basket_cosine(split: object, *, dim: int = 64) -> np.ndarray:
    """users x campaigns cosine of behaviour vectors: item vectors = truncated SVD (``dim``) of the PPMI of
    products bought by the same customers; user = log1p(orders)-weighted sum; campaign = sum of its
    products' vectors (item2vec-like, deterministic: fixed start vector)."""
    from scipy import sparse
    from scipy.sparse.linalg import svds

    binary = sparse.csr_matrix(split.train_matrix, dtype=np.float64, copy=True)  # type: ignore[attr-defined]
    binary.data[:] = 1.0
    co = sparse.csr_matrix(binary.T @ binary)
    co.setdiag(0)
    co.eliminate_zeros()
    total, rows = co.sum(), np.asarray(co.sum(axis=1)).ravel()
    coo = co.tocoo()
    pmi = np.log(coo.data * total / (rows[coo.row] * rows[coo.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])), shape=co.shape)
    u, s, _ = svds(ppmi, k=dim, v0=np.ones(ppmi.shape[0]))
    items = u * np.sqrt(s)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    items = unit(items)
    profile = sparse.csr_matrix(split.user_train_matrix(), dtype=np.float64, copy=True)  # type: ignore[attr-defined]
    profile.data = np.log1p(profile.data)
    campaigns = unit(np.asarray(sparse.csc_matrix(split.incidence, dtype=np.float64).T @ items))  # type: ignore[attr-defined]
    return unit(np.asarray(profile @ items)) @ campaigns.T


def extras(cutoff: date) -> None:
    from notify_core.recommend import scoring

    raw, full = load_tables(SOURCE)
    history = raw_before(raw, cutoff)
    splits = {"scored": make_split(raw, full, cutoff=cutoff),
              "fit": make_split(history, map_online_retail(history), cutoff=cutoff - timedelta(days=60))}
    for name, split in splits.items():
        np.savez_compressed(OUT / f"extra-{name}-{cutoff}.npz",
                            total=scoring.campaign_orders(split.user_train_matrix(), split.incidence),
                            basket=basket_cosine(split).astype(np.float32))
        print("extras", name, cutoff, flush=True)


def third_design(d: dict[str, np.ndarray], e: dict[str, np.ndarray], variant: str) -> np.ndarray:
    """The second design's features; ``sum``: frequency from the campaign's summed orders (adopted);
    ``+basket``: the basket cosine and its repeat slope; ``blend``: similarity = (text + basket) / 2."""
    f = d["features"].astype(np.float64).copy()
    if "sum" in variant:
        f[..., 0] = np.log1p(e["total"])
    basket = e["basket"].astype(np.float64)
    if "blend" in variant:
        f[..., 3] = 0.5 * f[..., 3] + 0.5 * basket
    bought = (f[..., 0] > 0)[..., None].astype(np.float64)
    bm25 = np.log1p(np.maximum(d["bm25"], 0))[..., None]
    parts = [f, bought, bought * f[..., 2:], bm25, bought * bm25]
    if "+basket" in variant:
        parts += [basket[..., None], bought * basket[..., None]]
    return np.concatenate(parts, axis=-1)


def third(cutoff: date) -> None:
    from notify_core.recommend import scoring

    fit, scored = load(OUT / f"fit-{cutoff}.npz"), load(OUT / f"scored-{cutoff}.npz")
    ef, es = load(OUT / f"extra-fit-{cutoff}.npz"), load(OUT / f"extra-scored-{cutoff}.npz")
    pop = scored["features"][..., 4].astype(np.float64)
    peers = {"repeat-buy (max)": np.expm1(scored["features"][..., 0].astype(np.float64)) + 0.999 * pop,
             "repeat-buy by summed orders": es["total"] + 0.999 * pop, "basket cosine alone": es["basket"]}
    for name, s in peers.items():
        hr, new = metrics(scored, s.astype(np.float64))
        print(f"{cutoff} {name:36s} HR@10 {hr:.4f} new {new:.4f}", flush=True)
    for variant in ("second", "sum", "sum+basket", "sum blend"):
        x, y, w, _ = training_rows(fit, third_design(fit, ef, variant))
        coef, icpt = scoring.fit_logistic(x, y, sample_weight=w)
        s = np.where(scored["candidates"], third_design(scored, es, variant) @ coef + icpt, -np.inf)
        hr, new = metrics(scored, s)
        print(f"{cutoff} {variant:36s} HR@10 {hr:.4f} new {new:.4f}", flush=True)


if __name__ == "__main__" and sys.argv[1] in ("extras", "third"):
    for day in sys.argv[2:]:
        (extras if sys.argv[1] == "extras" else third)(date.fromisoformat(day))


def head_to_head(truth: np.ndarray, valid: np.ndarray, peer: np.ndarray,
                 mine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both methods' top 10, and the users only the peer hits (``lost``) and only ``mine`` hits (``won``)."""
    top_r = np.argsort(-peer, axis=1, kind="stable")[:, :10]
    top_n = np.argsort(-mine, axis=1, kind="stable")[:, :10]
    hit_r = np.take_along_axis(truth, top_r, axis=1).any(axis=1)
    hit_n = np.take_along_axis(truth, top_n, axis=1).any(axis=1)
    return top_r, top_n, valid & hit_r & ~hit_n, valid & hit_n & ~hit_r


def failures(cutoff: date) -> None:
    """Per-user failure analysis: the users repeat-buy hits and the second design misses, and what took
    the hit's place in the top 10 (a bought campaign or a new one, and with which features)."""
    fit, scored = load(OUT / f"fit-{cutoff}.npz"), load(OUT / f"scored-{cutoff}.npz")
    f = scored["features"].astype(np.float64)
    truth, bought, valid = scored["truth"], scored["bought"], scored["truth"].any(axis=1)
    repeat = np.where(scored["eligible"], np.expm1(f[..., 0]) + 0.999 * f[..., 4], -np.inf)
    notify = np.where(scored["eligible"], fit_predict(fit, scored, "segmented+bm25", "logistic"), -np.inf)
    top_r, top_n, lost, won = head_to_head(truth, valid, repeat, notify)
    print(f"{cutoff}: {valid.sum()} users; repeat-buy only {lost.sum()}, second design only {won.sum()}; bought "
          f"campaigns a user: median {np.median(bought.sum(axis=1)[valid]):.0f}, >= 10 for "
          f"{(bought.sum(axis=1) >= 10)[valid].mean():.1%}")
    print(f"  bought share of the top 10: repeat-buy {np.take_along_axis(bought, top_r, axis=1)[valid].mean():.3f}, "
          f"second design {np.take_along_axis(bought, top_n, axis=1)[valid].mean():.3f}, in the lost users "
          f"{np.take_along_axis(bought, top_n, axis=1)[lost].mean():.3f}")
    print(f"  repeat-buy's hit in the second design's ranking: median rank "
          f"{displaced(lost, notify, top_r, top_n, truth, f, names=FAILURE_FEATURES, label=''):.0f}")


FAILURE_FEATURES = ("log1p orders (best product)", "recency", "co-purchase", "similarity", "popularity", "priority")


def displaced(lost: np.ndarray, mine: np.ndarray, top_r: np.ndarray, top_n: np.ndarray, truth: np.ndarray,
              features: np.ndarray, *, names: tuple[str, ...], label: str) -> float:
    """For the users a peer hits and ``mine`` misses: print each feature's mean on the peer's first hit
    (the one ``mine`` displaced) and on what ``mine`` showed instead; return the hit's median rank in ``mine``."""
    ranks, hits = [], []
    for u in np.flatnonzero(lost):
        order = np.argsort(-mine[u], kind="stable")
        first = next(c for c in top_r[u] if truth[u, c])
        ranks.append(int(np.flatnonzero(order == first)[0]) + 1)
        hits.append(features[u, first])
    shown = features[np.repeat(np.flatnonzero(lost), 10), top_n[lost].ravel()]
    for i, name in enumerate(names):
        lost_mean = np.mean([h[i] for h in hits])
        print(f"  {label}{name:28s} displaced hit {lost_mean:.3f}   what was shown {shown[:, i].mean():.3f}")
    return float(np.median(ranks)) if ranks else 0.0


if __name__ == "__main__" and sys.argv[1] == "failures":
    for day in sys.argv[2:]:
        failures(date.fromisoformat(day))


# -- fourth design (docs/recommendation-quality.md, Phase 4): why the learned blend ranks below summed repeat-buy ----
# On the development windows only (the dumps and extras above):
#     .venv/bin/python -m bench.ranker_design fourth 2011-04-01 2011-05-01      # failures vs summed repeat-buy
#     .venv/bin/python -m bench.ranker_design incidence 2011-04-01 2011-05-01   # campaigns' products per window
#     .venv/bin/python -m bench.ranker_design distinct 2011-04-01 2011-05-01    # lists with distinct products

def pairwise_rows(d: dict[str, np.ndarray], x: np.ndarray, *, per_positive: int = 20,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Within-user pairs: each positive candidate against up to ``per_positive`` of the SAME user's negative
    candidates (seeded), as feature differences, both orientations (label 1 for positive - negative)."""
    usable = d["candidates"] & d["eligible"]
    rng = np.random.default_rng(seed)
    diffs = []
    for u in np.flatnonzero((usable & d["truth"]).any(axis=1)):
        pos = np.flatnonzero(usable[u] & d["truth"][u])
        neg = np.flatnonzero(usable[u] & ~d["truth"][u])
        if not len(neg):
            continue
        for p in pos:
            pick = rng.choice(neg, size=min(per_positive, len(neg)), replace=False)
            diffs.append(x[u, p] - x[u, pick])
    diff = np.concatenate(diffs)
    return np.concatenate([diff, -diff]), np.concatenate([np.ones(len(diff), bool), np.zeros(len(diff), bool)])


def fourth(cutoff: date) -> None:
    from notify_core.recommend import scoring

    fit, scored = load(OUT / f"fit-{cutoff}.npz"), load(OUT / f"scored-{cutoff}.npz")
    ef, es = load(OUT / f"extra-fit-{cutoff}.npz"), load(OUT / f"extra-scored-{cutoff}.npz")
    pop = scored["features"][..., 4].astype(np.float64)
    summed = es["total"] + 0.999 * pop
    hr, new = metrics(scored, summed)
    print(f"{cutoff} {'repeat-buy, summed orders':36s} HR@10 {hr:.4f} new {new:.4f}", flush=True)
    xf, xs = third_design(fit, ef, "sum"), third_design(scored, es, "sum")
    x, y, w, _ = training_rows(fit, xf)
    coef, icpt = scoring.fit_logistic(x, y, sample_weight=w)
    third_s = np.where(scored["candidates"], xs @ coef + icpt, -np.inf)
    print(f"{cutoff} {'third (pointwise logistic)':36s} HR@10 {metrics(scored, third_s)[0]:.4f} "
          f"new {metrics(scored, third_s)[1]:.4f}", flush=True)
    xp, yp = pairwise_rows(fit, xf)
    pcoef, _ = scoring.fit_logistic(xp, yp)
    pair_s = np.where(scored["candidates"], xs @ pcoef, -np.inf)
    print(f"{cutoff} {'pairwise logistic (within user)':36s} HR@10 {metrics(scored, pair_s)[0]:.4f} "
          f"new {metrics(scored, pair_s)[1]:.4f}", flush=True)
    print("   pointwise coef", np.round(coef, 3), "\n   pairwise coef ", np.round(pcoef, 3))
    failures_against(scored, es, summed, third_s, "third")
    failures_against(scored, es, summed, pair_s, "pairwise")


def failures_against(scored: dict[str, np.ndarray], es: dict[str, np.ndarray], peer: np.ndarray,
                     mine: np.ndarray, label: str) -> None:
    """Users the summed repeat-buy peer hits and ``mine`` misses: what took the hit's place in the top 10."""
    f = scored["features"].astype(np.float64)
    truth, bought, valid = scored["truth"], scored["bought"], scored["truth"].any(axis=1)
    peer = np.where(scored["eligible"], peer, -np.inf)
    mine = np.where(scored["eligible"], mine, -np.inf)
    top_r, top_n, lost, won = head_to_head(truth, valid, peer, mine)
    print(f"  [{label}] {valid.sum()} users; summed peer only {lost.sum()}, {label} only {won.sum()}; bought share "
          f"of top 10: peer {np.take_along_axis(bought, top_r, axis=1)[valid].mean():.3f}, {label} "
          f"{np.take_along_axis(bought, top_n, axis=1)[valid].mean():.3f}, lost users "
          f"{np.take_along_axis(bought, top_n, axis=1)[lost].mean():.3f}")
    features = np.concatenate([np.log1p(es["total"])[..., None], f[..., 1:]], axis=-1)
    names = ("log1p summed orders", "recency", "co-purchase", "similarity", "popularity", "priority")
    rank = displaced(lost, mine, top_r, top_n, truth, features, names=names, label=f"[{label}] ")
    print(f"  [{label}] the peer's lost hit: median rank {rank:.0f}")


if __name__ == "__main__" and sys.argv[1] == "fourth":
    for day in sys.argv[2:]:
        fourth(date.fromisoformat(day))


def incidence(cutoff: date) -> None:
    """The scored split's products x campaigns incidence beside the dumps (same split, same column order)."""
    from scipy import sparse

    raw, full = load_tables(SOURCE)
    split = make_split(raw, full, cutoff=cutoff)
    sparse.save_npz(OUT / f"incidence-scored-{cutoff}.npz", sparse.csr_matrix(split.incidence))
    print("incidence", cutoff, split.incidence.shape, flush=True)


def distinct(cutoff: date) -> None:
    """Every peer and the third design, lists by score alone and with distinct products (the fourth design's
    list construction, notify_core/recommend/distinct.py), fitted before and scored at a development window."""
    from scipy import sparse

    from notify_core.recommend import scoring
    from notify_core.recommend.distinct import distinct_products_scores

    fit, scored = load(OUT / f"fit-{cutoff}.npz"), load(OUT / f"scored-{cutoff}.npz")
    ef, es = load(OUT / f"extra-fit-{cutoff}.npz"), load(OUT / f"extra-scored-{cutoff}.npz")
    inc = sparse.csc_matrix(sparse.load_npz(OUT / f"incidence-scored-{cutoff}.npz"))
    products = [frozenset(inc.indices[inc.indptr[c]:inc.indptr[c + 1]].tolist()) for c in range(inc.shape[1])]
    pop = scored["features"][..., 4].astype(np.float64)
    xf, xs = third_design(fit, ef, "sum"), third_design(scored, es, "sum")
    x, y, w, _ = training_rows(fit, xf)
    coef, icpt = scoring.fit_logistic(x, y, sample_weight=w)
    methods = {"repeat-buy": np.expm1(scored["features"][..., 0].astype(np.float64)) + 0.999 * pop,
               "repeat-buy, summed orders": es["total"] + 0.999 * pop,
               "BM25 + fill": scored["bm25"].astype(np.float64) + 1e-9 * pop, "ALS": scored["als"].astype(np.float64),
               "third design": np.where(scored["candidates"], xs @ coef + icpt, -np.inf)}
    for name, raw_scores in methods.items():
        hr, new = metrics(scored, raw_scores)
        shown = np.where(scored["eligible"], raw_scores, -np.inf)
        hr_d = metrics(scored, distinct_products_scores(shown, products, limit=10))[0]
        new_d = metrics(scored, distinct_products_scores(np.where(scored["bought"], -np.inf, shown), products,
                                                         limit=10))[1]
        print(f"{cutoff} {name:28s} HR@10 {hr:.4f} new {new:.4f} | distinct products: HR@10 {hr_d:.4f} "
              f"new {new_d:.4f}", flush=True)


if __name__ == "__main__" and sys.argv[1] in ("incidence", "distinct"):
    for day in sys.argv[2:]:
        (incidence if sys.argv[1] == "incidence" else distinct)(date.fromisoformat(day))
