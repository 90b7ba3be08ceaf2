"""One evaluation run: split, score every method, measure, replay; and the report in three formats.

What is measured is documented in README ("Offline relevance evaluation"); in short, per method on the
same split: HR@5/10 and NDCG@5/10 over the users whose test purchases hit at least one campaign,
catalogue coverage of the top 10, the "new" variant (campaigns promoting something the user already
bought removed from list and truth) and the planner replay's would-have-converted rate.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from notify_core.embeddings.embedder import Embedder, Progress
from notify_core.evaluation.bootstrap import paired_bootstrap
from notify_core.evaluation.methods import Method, Signals, default_methods
from notify_core.evaluation.metrics import coverage, hit_rate, ndcg, top_k, user_hits
from notify_core.evaluation.nested import fit_ranker
from notify_core.evaluation.replay import DEFAULT_WINDOW_DAYS, replay
from notify_core.evaluation.split import DEFAULT_CUTOFF, DEFAULT_HORIZON_DAYS, load_tables, make_split, raw_before
from notify_core.sources.online_retail import SourceTables

KS = (5, 10)
CURVE_K = 20
METRICS = ("hr10", "new_hr10")  # the per-user hits kept for the paired bootstrap
COLUMNS = ("method", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "coverage@10", "new HR@10", "new NDCG@10",
           "would-have-converted", "converted in horizon", "seconds")


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One row of the table (rates in [0, 1]); ``seconds`` is the only non-deterministic field."""

    method: str
    kind: str
    description: str
    hr5: float
    hr10: float
    ndcg5: float
    ndcg10: float
    coverage10: float
    new_hr10: float
    new_ndcg10: float
    converted: float
    converted_horizon: float
    notifications: int
    seconds: float
    hr_curve: tuple[float, ...] = ()  # HR@1..HR@CURVE_K (issue 17: the report's HR@k curves)

    def cells(self) -> list[str]:
        return [self.method, *(f"{v:.3f}" for v in (self.hr5, self.hr10, self.ndcg5, self.ndcg10, self.coverage10,
                                                    self.new_hr10, self.new_ndcg10, self.converted,
                                                    self.converted_horizon)),
                f"{self.seconds:.1f}"]


@dataclass(frozen=True, slots=True)
class Report:
    settings: dict[str, Any]
    results: list[MethodResult]
    gains: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # issue 17, additive: each method's paired-bootstrap difference to Notify (``bootstrap.paired_bootstrap``)
    intervals: list[dict[str, Any]] = field(default_factory=list)
    # per method, per metric in METRICS: per-user hits (not serialised; what the intervals resample)
    hits: dict[str, dict[str, npt.NDArray[np.bool_]]] = field(default_factory=dict)
    ranker: dict[str, Any] = field(default_factory=dict)

    def row(self, method: str) -> MethodResult:
        return next(r for r in self.results if r.method == method)

    def as_dict(self, *, timings: bool = True) -> dict[str, Any]:
        """JSON-able; ``timings=False`` drops the wall-clock fields (what determinism compares)."""
        results = [asdict(r) for r in self.results]
        if not timings:
            for r in results:
                r.pop("seconds")
        out: dict[str, Any] = {"settings": self.settings, "results": results, "gains": self.gains,
                               "intervals": self.intervals, "ranker": self.ranker}
        if timings:
            out["seconds"] = round(self.seconds, 2)
        return out


def _measure(method: Method, signals: Signals, *, window_days: int) -> tuple[MethodResult, dict[str, Any]]:
    split = signals.split
    started = time.perf_counter()
    raw_scores = method.score(signals)
    lists = method.lists or (lambda _signals, values: values)
    scores = lists(signals, raw_scores)
    valid = split.truth.any(axis=1)
    ranked = top_k(scores, max(max(KS), CURVE_K))
    new_truth = split.truth & ~split.bought_before
    new_valid = new_truth.any(axis=1)
    new_ranked = top_k(lists(signals, np.where(split.bought_before, -np.inf, raw_scores))[new_valid], 10)
    played = replay(split, scores, window_days=window_days)
    hits = {"hr10": user_hits(ranked[valid], split.truth[valid], 10),
            "new_hr10": user_hits(new_ranked, new_truth[new_valid], 10)}
    result = MethodResult(
        method=method.name, kind=method.kind, description=method.description,
        hr5=hit_rate(ranked[valid], split.truth[valid], 5), hr10=hit_rate(ranked[valid], split.truth[valid], 10),
        ndcg5=ndcg(ranked[valid], split.truth[valid], 5), ndcg10=ndcg(ranked[valid], split.truth[valid], 10),
        coverage10=coverage(ranked[:, :10], len(split.campaign_ids)),
        new_hr10=hit_rate(new_ranked, new_truth[new_valid], 10), new_ndcg10=ndcg(new_ranked, new_truth[new_valid], 10),
        converted=played.rate, converted_horizon=played.rate_horizon, notifications=played.sent,
        seconds=time.perf_counter() - started,
        hr_curve=tuple(round(hit_rate(ranked[valid], split.truth[valid], k), 4) for k in range(1, CURVE_K + 1)),
    )
    return result, hits


def intervals_to_notify(hits: Sequence[dict[str, dict[str, Any]]], *, notify: str,
                        seed: int = 0) -> list[dict[str, Any]]:
    """Every other method's paired-bootstrap difference to ``notify`` on HR@10 and new-items HR@10,
    averaged over the cut-offs whose per-user hits are given (one mapping method -> hits per cut-off)."""
    if not hits or any(notify not in h for h in hits):
        return []
    out = []
    for method in hits[0]:
        if method == notify:
            continue
        row: dict[str, Any] = {"method": method}
        for metric in METRICS:
            row[metric] = paired_bootstrap([h[notify][metric] for h in hits], [h[method][metric] for h in hits],
                                           seed=seed)
        out.append(row)
    return out


def _gains(results: Sequence[MethodResult]) -> list[dict[str, Any]]:
    """Each Notify row against the one before it (the ablation ladder), on HR@10, NDCG@10 and new HR@10."""
    ladder = [r for r in results if r.kind in ("ablation", "notify")]
    return [{"from": a.method, "to": b.method,
             **{m: round(getattr(b, m) - getattr(a, m), 4) for m in ("hr10", "ndcg10", "new_hr10", "converted")}}
            for a, b in zip(ladder, ladder[1:], strict=False)]


def evaluate(
    source: Path | str, *, embedder: Embedder, cutoff: date = DEFAULT_CUTOFF,
    horizon_days: int = DEFAULT_HORIZON_DAYS, seed: int = 0, sample_users: int | None = None,
    window_days: int = DEFAULT_WINDOW_DAYS, methods: Sequence[Method] | None = None,
    progress: Progress | None = None, on_result: Callable[[MethodResult], None] | None = None,
    cache_dir: Path | None = None, columns: Mapping[str, str] | None = None,
    tables: tuple[pl.DataFrame, SourceTables] | None = None,
) -> Report:
    """Run every method on one split of ``source`` and measure them; deterministic for a given seed.

    Notify's ranker is fitted by :func:`nested.fit_ranker` on the rows before ``cutoff`` only (nested
    temporal validation), then scored on the window after it. ``tables``: an already loaded
    (raw, mapping) pair, so a rolling evaluation reads the export once.
    """
    started = time.perf_counter()
    raw, full = tables if tables is not None else load_tables(source, columns=columns)
    split = make_split(raw, full, cutoff=cutoff, horizon_days=horizon_days, seed=seed, sample_users=sample_users)
    ranker = None
    if methods is None:
        ranker = fit_ranker(raw_before(raw, cutoff), scoring_start=cutoff, embedder=embedder,
                            horizon_days=horizon_days, seed=seed, sample_users=sample_users, cache_dir=cache_dir,
                            progress=progress)
    signals = Signals(split, embedder, progress=progress)
    results = []
    hits: dict[str, dict[str, Any]] = {}
    for method in methods if methods is not None else default_methods(ranker):
        result, hits[method.name] = _measure(method, signals, window_days=window_days)
        results.append(result)
        if on_result is not None:
            on_result(result)
    valid = split.truth.any(axis=1)
    settings = {
        "source": str(source), "cutoff": cutoff.isoformat(), "horizon_days": horizon_days, "seed": seed,
        "sample_users": sample_users, "embedder": embedder.model_id, "replay_window_days": window_days,
        "train_purchase_lines": split.train.purchases.height, "train_users": len(split.train_users),
        "products": len(split.products), "campaigns": len(split.campaign_ids),
        "users_active_both_sides": len(split.users), "users_with_a_converting_campaign": int(valid.sum()),
        "users_with_a_new_converting_campaign": int((split.truth & ~split.bought_before).any(axis=1).sum()),
        "mean_converting_campaigns_per_user": round(float(split.truth[valid].sum(axis=1).mean()), 3)
        if valid.any() else 0.0,
    }
    notify = next((r.method for r in results if r.kind == "notify"), None)
    intervals = intervals_to_notify([hits], notify=notify, seed=seed) if notify else []
    return Report(settings=settings, results=results, gains=_gains(results), seconds=time.perf_counter() - started,
                  intervals=intervals, hits=hits, ranker=ranker.as_dict() if ranker is not None else {})


def interval_lines(intervals: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown table rows of :func:`intervals_to_notify`."""
    def cell(v: dict[str, float]) -> str:
        return f"{v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]"
    return ["| method | Notify - method, HR@10 [95 %] | Notify - method, new HR@10 [95 %] |", "|---|---|---|",
            *(f"| {i['method']} | {cell(i['hr10'])} | {cell(i['new_hr10'])} |" for i in intervals)]


def to_markdown(report: Report) -> str:
    s = report.settings
    lines = [
        "# Offline relevance evaluation", "",
        f"Source `{s['source']}`; train before {s['cutoff']}, test the following {s['horizon_days']} days; "
        f"seed {s['seed']}; embedder `{s['embedder']}`.",
        f"{s['users_with_a_converting_campaign']} of {s['users_active_both_sides']} users active on both sides "
        f"bought a product of at least one of the {s['campaigns']} campaigns (mean "
        f"{s['mean_converting_campaigns_per_user']} converting campaigns each); "
        f"{s['users_with_a_new_converting_campaign']} did so for a campaign promoting nothing they had bought.",
        f"Would-have-converted: planner replay of the first test day, conversion = purchase of a promoted product "
        f"within {s['replay_window_days']} days.", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(r.cells()) + " |" for r in report.results), "",
        "## Ablation gains (each Notify row minus the row before it)", "",
        "| from | to | HR@10 | NDCG@10 | new HR@10 | would-have-converted |", "|---|---|---|---|---|---|",
        *(f"| {g['from']} | {g['to']} | {g['hr10']:+.3f} | {g['ndcg10']:+.3f} | {g['new_hr10']:+.3f} | "
          f"{g['converted']:+.3f} |" for g in report.gains), "",
        "## Paired bootstrap: Notify minus each method (95 % interval, users resampled)", "",
        *interval_lines(report.intervals), "",
        "## Methods", "", *(f"- **{r.method}**: {r.description}" for r in report.results), "",
        f"Run time {report.seconds:.1f} s.", "",
    ]
    return "\n".join(lines)


def to_html(report: Report) -> str:
    from notify_core.reports.evaluation import evaluation_figures_html

    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r.cells()) + "</tr>" for r in report.results)
    settings = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in report.settings.items())
    gains = "".join(
        f"<tr><td>{html.escape(g['from'])}</td><td>{html.escape(g['to'])}</td><td>{g['hr10']:+.3f}</td>"
        f"<td>{g['ndcg10']:+.3f}</td><td>{g['new_hr10']:+.3f}</td><td>{g['converted']:+.3f}</td></tr>"
        for g in report.gains)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Notify offline evaluation</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"<h1>Offline relevance evaluation</h1><ul>{settings}</ul><table><tr>{head}</tr>{rows}</table>"
            "<h2>Ablation gains</h2><table><tr><th>from</th><th>to</th><th>HR@10</th><th>NDCG@10</th>"
            f"<th>new HR@10</th><th>would-have-converted</th></tr>{gains}</table>"
            f"{evaluation_figures_html(report)}"
            f"<p>Run time {report.seconds:.1f} s.</p></body></html>")


def write_reports(report: Report, output_dir: Path) -> list[Path]:
    """report.md, report.html and report.json under ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = [output_dir / "report.md", output_dir / "report.html", output_dir / "report.json"]
    paths[0].write_text(to_markdown(report))
    from notify_core.evaluation.plots import report_plots_html  # matplotlib only when a report is written

    paths[1].write_text(to_html(report).replace("</body>", f"<h2>Plots</h2>{report_plots_html(report)}</body>"))
    paths[2].write_text(json.dumps(report.as_dict(), indent=2))
    return paths
