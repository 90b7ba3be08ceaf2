"""Charts of an offline evaluation :class:`~notify_core.evaluation.run.Report`, as an HTML fragment.

Kept apart from the report's tables (``evaluation.run.to_html`` calls :func:`evaluation_figures_html`) so
the methods and the charts change independently. Which method wins, by how much, and what each ablation
step adds are easier to see than to read off a table of 11 columns.
"""

from __future__ import annotations

from typing import Any

from notify_core.reports.plots import bars, hbars, img, new_figure


def evaluation_figures_html(report: Any) -> str:
    """Two figures: ranking quality per method, and the gains of each ablation step. Empty report: ''."""
    results = list(report.results)
    if not results:
        return ""
    names = [r.method for r in results]
    fig = new_figure(width=8, height=3.4)
    ax = fig.add_subplot()
    bars(ax, names, {"HR@10": [r.hr10 for r in results], "NDCG@10": [r.ndcg10 for r in results],
                     "new HR@10": [r.new_hr10 for r in results],
                     "would-have-converted": [r.converted for r in results]}, ylabel="rate")
    ax.set_title("Ranking quality per method (higher is better)")
    parts = ["<h2>Charts</h2>", img(fig, alt="HR@10, NDCG@10, new HR@10 and would-have-converted per method",
                                    fmt="svg")]
    if report.gains:
        labels = [f"{g['from']} → {g['to']}" for g in report.gains]
        fig = new_figure(width=8, height=1.2 + 0.6 * len(labels))
        ax = fig.add_subplot()
        hbars(ax, labels, {"HR@10": [g["hr10"] for g in report.gains], "NDCG@10": [g["ndcg10"] for g in report.gains]},
              xlabel="change")
        ax.set_title("What each ablation step adds")
        parts.append(img(fig, alt="HR@10 and NDCG@10 change per ablation step", fmt="svg"))
    return "".join(parts)
