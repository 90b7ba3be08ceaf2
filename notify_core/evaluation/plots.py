"""The evaluation report's plots, as PNG images embedded in the HTML (no files beside it).

* HR@k curves per method (k = 1..20), averaged over the rolling cut-offs;
* per-cut-off bars of Notify's difference to each peer on HR@10 and new-items HR@10, with the paired
  bootstrap 95 % interval as error bars (rolling cut-offs and the held-out one).

Rendering only: it reads :class:`rolling.RollingReport` / :class:`run.Report` and never changes them.
matplotlib's Agg backend, so it works headless.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notify_core.evaluation.rolling import RollingReport
    from notify_core.evaluation.run import Report

PEERS_SHOWN = ("repeat-buy", "repeat-buy, summed orders", "item-kNN BM25",
               "item-kNN BM25 + popularity fill", "implicit ALS", "most popular")


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def hr_curves_png(curves: Sequence[tuple[str, Sequence[float]]], *, title: str) -> str:
    """One line per method: HR@k for k = 1..len(curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves:
        if curve:
            axis.plot(range(1, len(curve) + 1), curve, marker=".", label=name,
                      linewidth=2.5 if name.startswith("notify: learned") else 1.2)
    axis.set_xlabel("k")
    axis.set_ylabel("HR@k")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return _png(figure)


def difference_bars_png(reports: Sequence[tuple[str, Report]], *, metric: str, title: str) -> str:
    """Grouped bars: per cut-off, Notify minus each peer on ``metric``, with 95 % interval error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    peers = [p for p in PEERS_SHOWN if reports and any(i["method"] == p for i in reports[0][1].intervals)]
    width = 0.8 / max(1, len(peers))
    for j, peer in enumerate(peers):
        diffs, lows, highs = [], [], []
        for _, report in reports:
            found = next(i[metric] for i in report.intervals if i["method"] == peer)
            diffs.append(found["diff"])
            lows.append(found["diff"] - found["low"])
            highs.append(found["high"] - found["diff"])
        xs = [i + j * width for i in range(len(reports))]
        axis.bar(xs, diffs, width, yerr=[lows, highs], capsize=3, label=peer)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks([i + width * (len(peers) - 1) / 2 for i in range(len(reports))], [c for c, _ in reports])
    axis.set_ylabel(f"Notify - peer, {metric}")
    axis.set_title(title)
    axis.legend(fontsize=7)
    return _png(figure)


def _img(src: str, alt: str) -> str:
    return f"<p><img alt='{html.escape(alt)}' src='{src}'></p>"


def _markdown_table(lines: list[str]) -> str:
    """The markdown tables of the rolling report as HTML tables (one renderer for both formats)."""
    out, table = [], []
    for line in [*lines, ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                table.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        if table:
            head, *rows = table
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
            table = []
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "".join(out)


def rolling_html(report: RollingReport) -> str:
    """The rolling report's tables plus its plots, one self-contained HTML page."""
    from notify_core.evaluation.rolling import rolling_markdown

    curves = [(a["method"], a["hr_curve"]) for a in report.averages if a["method"] != "random"]
    labelled = [(r.settings["cutoff"], r) for r in report.reports]
    if report.held_out is not None:
        labelled.append((report.held_out.settings["cutoff"] + "\n(held out)", report.held_out))
    plots = [
        _img(hr_curves_png(curves, title="HR@k, averaged over the rolling cut-offs"), "HR@k curves"),
        _img(difference_bars_png(labelled, metric="hr10", title="Notify - peer, HR@10 (95 % paired bootstrap)"),
             "HR@10 differences"),
        _img(difference_bars_png(labelled, metric="new_hr10",
                                 title="Notify - peer, new-items HR@10 (95 % paired bootstrap)"),
             "new-items HR@10 differences"),
    ]
    body = _markdown_table(rolling_markdown(report).splitlines())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Notify rolling evaluation</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>"
            f"{body}<h2>Plots</h2>{''.join(plots)}</body></html>")


def report_plots_html(report: Report) -> str:
    """One cut-off's plots (HR@k curves, Notify - peer bars), for the single-split report page."""
    curves = [(r.method, r.hr_curve) for r in report.results if r.method != "random"]
    parts = [_img(hr_curves_png(curves, title=f"HR@k, cut-off {report.settings['cutoff']}"), "HR@k curves")]
    if report.intervals:
        one = [(report.settings["cutoff"], report)]
        parts.append(_img(difference_bars_png(one, metric="hr10", title="Notify - peer, HR@10 (95 %)"), "HR@10"))
        parts.append(_img(difference_bars_png(one, metric="new_hr10", title="Notify - peer, new HR@10 (95 %)"),
                          "new HR@10"))
    return "".join(parts)
