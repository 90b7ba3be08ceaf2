"""Offline relevance evaluation (issue 8): a time split of real purchases, baselines, Notify's scoring.

No Dagster here: ``notify evaluate`` and ``bench/bench_evaluation.py`` call :func:`evaluate`.
"""

from __future__ import annotations

from notify_core.evaluation.bootstrap import paired_bootstrap
from notify_core.evaluation.cache import CachedEmbedder
from notify_core.evaluation.methods import Method, Signals, default_methods
from notify_core.evaluation.metrics import coverage, hit_rate, ndcg, top_k
from notify_core.evaluation.nested import fit_ranker
from notify_core.evaluation.replay import Replay, replay
from notify_core.evaluation.rolling import RollingReport, evaluate_rolling, write_rolling_reports
from notify_core.evaluation.run import MethodResult, Report, evaluate, to_html, to_markdown, write_reports
from notify_core.evaluation.split import DEFAULT_CUTOFF, DEFAULT_HORIZON_DAYS, Split, load_tables, make_split

__all__ = [
    "DEFAULT_CUTOFF", "DEFAULT_HORIZON_DAYS", "CachedEmbedder", "Method", "MethodResult", "Replay", "Report",
    "Signals", "Split", "coverage", "default_methods", "evaluate", "hit_rate", "load_tables", "make_split",
    "ndcg", "replay", "to_html", "to_markdown", "top_k", "write_reports",
    "RollingReport", "evaluate_rolling", "fit_ranker", "paired_bootstrap", "write_rolling_reports",
]
