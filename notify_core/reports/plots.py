"""Figures to embeddable images, without pyplot: ``Figure`` objects own their canvas, so rendering needs no
display, no global state, and is safe from several threads (Dagster, the gateway)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any, Literal

PALETTE = ("#1f6feb", "#d4731b", "#2da44e", "#8250df", "#cf222e", "#6e7781")


def new_figure(*, width: float = 6.4, height: float = 3.2) -> Any:
    """A matplotlib ``Figure`` (imported here: ``import notify_core`` stays light)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def data_uri(fig: Any, *, fmt: Literal["png", "svg"] = "png") -> str:
    """The figure as a ``data:`` URI (PNG for Markdown viewers and Dagster; SVG stays sharp in HTML)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    mime = "image/svg+xml" if fmt == "svg" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def img(fig: Any, *, alt: str, fmt: Literal["png", "svg"] = "png") -> str:
    return f"<img alt='{html.escape(alt, quote=True)}' src='{data_uri(fig, fmt=fmt)}'>"


def bars(ax: Any, labels: Sequence[str], series: dict[str, Sequence[float]], *, ylabel: str) -> None:
    """Grouped vertical bars: one group per label, one bar per series."""
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        xs = [x + (i - (n - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, list(values), width=width, label=name, color=PALETTE[i % len(PALETTE)])
    ax.set_xticks(range(len(labels)), list(labels), rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.1)
    if len(series) > 1:  # beside the plot, never over a bar
        ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))


def hbars(ax: Any, labels: Sequence[str], series: dict[str, Sequence[float]], *, xlabel: str) -> None:
    """Grouped horizontal bars: for long labels (``a → b``), read left to right, first label on top."""
    n = max(len(series), 1)
    height = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        ys = [y + (i - (n - 1) / 2) * height for y in range(len(labels))]
        ax.barh(ys, list(values), height=height, label=name, color=PALETTE[i % len(PALETTE)])
    ax.set_yticks(range(len(labels)), list(labels))
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.axvline(0, color="#444", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
