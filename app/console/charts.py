"""Charts as server-rendered SVG (no script, no library): stacked bars per day."""
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 240
LEFT, BOTTOM, TOP = 44, 28, 10
SERIES = 6  # colours in console.css (.s0 .. .s5); more groups share the last, "other"


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    series: int
    label: str
    value: int


def nice_max(value):
    """The smallest of 1, 2, 5 × 10^n at or above ``value`` (at least 1): the top of the axis."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= value:
                return top * step
        top *= 10


def stacked_bars(days, groups, values):
    """Geometry of a stacked bar chart: ``days`` (labels, x axis), ``groups`` (series, bottom
    first), ``values[(day, group)]`` (missing: 0). Returns a dict the template draws."""
    totals = [sum(values.get((d, g), 0) for g in groups) for d in days]
    top = nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(days), 1)
    width = max(2.0, slot * 0.7)
    bars = []
    for i, day in enumerate(days):
        y = TOP + plot_h
        for s, group in enumerate(groups):
            value = values.get((day, group), 0)
            if not value:
                continue
            h = plot_h * value / top
            y -= h
            bars.append(Bar(round(LEFT + i * slot + (slot - width) / 2, 2), round(y, 2), round(width, 2),
                            round(h, 2), min(s, SERIES - 1), f"{day} · {group}: {value}", value))
    marks = (0, top // 2, top) if top >= 2 else (0, top)
    ticks = [(round(TOP + plot_h - plot_h * v / top, 2), v) for v in marks]
    every = max(1, len(days) // 7)  # at most ~8 day labels under the axis
    labels = [(round(LEFT + i * slot + slot / 2, 2), day[5:]) for i, day in enumerate(days) if i % every == 0]
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "ticks": ticks, "labels": labels,
            "left": LEFT, "base": TOP + plot_h, "totals": dict(zip(days, totals))}
