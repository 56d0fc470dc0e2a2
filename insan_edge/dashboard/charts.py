"""SVG charts drawn on the box: plain bars with a title and a text summary for screen readers."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H, PAD_L, PAD_B, PAD_T = 640, 200, 40, 24, 10


def bars(
    title: str,
    values: Sequence[float | None],
    labels: Sequence[str],
    *,
    top: float | None = None,
    fmt: str = "{:g}",
    every: int = 1,
) -> str:
    """A bar chart; ``labels`` under every ``every``-th bar; None draws no bar ("not measured")."""
    known = [v for v in values if v is not None]
    peak = top if top is not None else max([*known, 1.0])
    n = max(len(values), 1)
    plot_w, plot_h = W - PAD_L - 8, H - PAD_B - PAD_T
    step = plot_w / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet"><title>{escape(title)}</title>',
        f'<line x1="{PAD_L}" y1="{PAD_T + plot_h}" x2="{W - 8}" y2="{PAD_T + plot_h}" class="axis"/>',
        f'<text x="{PAD_L - 6}" y="{PAD_T + 8}" class="tick" text-anchor="end">{escape(fmt.format(peak))}</text>',
        f'<text x="{PAD_L - 6}" y="{PAD_T + plot_h}" class="tick" text-anchor="end">0</text>',
    ]
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        x = PAD_L + i * step
        if value is not None and peak > 0:
            h = max(plot_h * min(value, peak) / peak, 1.0 if value > 0 else 0.0)
            parts.append(
                f'<rect x="{x + step * 0.15:.1f}" y="{PAD_T + plot_h - h:.1f}" '
                f'width="{step * 0.7:.1f}" height="{h:.1f}" class="bar">'
                f"<title>{escape(label)}: {escape(fmt.format(value))}</title></rect>"
            )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{H - 6}" class="tick" text-anchor="middle">'
                f"{escape(label)}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)
