"""Offline relevance on the full Online Retail data (issue 8): every method on one time split.

    .venv/bin/python -m bench.bench_evaluation                 # full data, MiniLM (cached vectors)
    .venv/bin/python -m bench.bench_evaluation --sample-users 200 --hashing   # CI-sized

Saves bench/results/evaluation.json (bench.common.report: the table plus machine facts and the full
report) and bench/results/evaluation.md (the Markdown report). Product and campaign vectors are cached
under .notify/evaluation-cache by content hash, so only the first run pays the ~30-120 s of embedding.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # implicit's ALS: BLAS threads fight its own loop

from bench.common import RESULTS, report  # noqa: E402
from notify_core.embeddings.embedder import HashingEmbedder, SentenceTransformerEmbedder  # noqa: E402
from notify_core.evaluation import CachedEmbedder, evaluate, to_markdown  # noqa: E402
from notify_core.evaluation.run import COLUMNS  # noqa: E402

DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "../shared/data/online_retail/online_retail.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--sample-users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hashing", action="store_true", help="HashingEmbedder instead of MiniLM (fast, no semantics)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".notify/evaluation-cache"))
    args = parser.parse_args()
    inner = HashingEmbedder() if args.hashing else SentenceTransformerEmbedder()
    result = evaluate(args.source, embedder=CachedEmbedder(inner, args.cache_dir), seed=args.seed,
                      sample_users=args.sample_users)
    name = "evaluation" if args.sample_users is None and not args.hashing else "evaluation_quick"
    rows: list[list[object]] = [[r.method, r.hr5, r.hr10, r.ndcg5, r.ndcg10, r.coverage10, r.new_hr10, r.new_ndcg10,
                                 r.converted, r.converted_horizon, round(r.seconds, 2)] for r in result.results]
    report(name, "Offline relevance (campaign level), one row per method", list(COLUMNS), rows,
           result.as_dict())
    path = RESULTS / f"{name}.md"
    path.write_text(to_markdown(result))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
