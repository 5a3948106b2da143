"""Horizontal bar chart PNG of the top probabilities (matplotlib, Agg: no display, thread-safe)."""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence

MAX_BARS = 10
_LABEL_WIDTH = 28  # characters per label line


def probability_chart_png(
    scores: Sequence[tuple[str, float]], title: str | None = None, max_bars: int = MAX_BARS
) -> bytes:
    """PNG bytes: one bar per `(label, probability)`, highest at the top, with percentages.

    Uses the object-oriented `Figure` API (not `pyplot`), so nothing global is touched and charts
    can be drawn from several threads at once.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = sorted(scores, key=lambda item: -item[1])[:max_bars]
    labels = [textwrap.shorten(str(label), 60, placeholder="…") for label, _ in shown]
    wrapped = ["\n".join(textwrap.wrap(label, _LABEL_WIDTH)) or " " for label in labels]
    values = [min(1.0, max(0.0, float(p))) for _, p in shown]

    height = 0.9 + 0.45 * max(1, len(shown)) + (0.3 if title else 0.0)
    figure = Figure(figsize=(6.4, height), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = list(range(len(shown)))[::-1]  # first (highest) bar at the top
    axes.barh(positions, values, color="#3b82f6", height=0.6)
    axes.set_yticks(positions, wrapped, fontsize=9)
    axes.set_xlim(0, 1.12)
    axes.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0%", "25%", "50%", "75%", "100%"], fontsize=8)
    for position, value in zip(positions, values, strict=True):
        axes.text(value + 0.01, position, f"{value:.1%}", va="center", fontsize=8)
    axes.spines[["top", "right"]].set_visible(False)
    if title:
        axes.set_title(title, fontsize=10, loc="left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
