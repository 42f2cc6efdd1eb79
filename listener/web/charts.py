"""The dashboard's pictures (SPEC §18) as inline SVG drawn on the server: no script library, no CDN, nothing for
the browser to compute. Every value and label passes through markupsafe's escape; colours come from classes in
static/dashboard.css (CSP allows no inline style). Each bar and point carries its number as `data-value` (with
`data-minute`, `data-channel`, `data-kind`, `data-series`, `data-stage` saying which), so tests — and anyone
reading the page — can check the picture against GET /api/timeseries and report.funnel; a `<title>` in each gives
the number on hover.

- `throughput`: touches sent and failed per minute, one small bar chart per channel, failed stacked on sent, one
  scale shared by the channels (so their heights compare);
- `latency`: due-to-provider latency p50 and p99 per minute, two lines with a point per minute that has sends;
- `funnel`: one campaign step's touches sent → delivered → replied → positive → booked, and unsubscribed, as bars
  whose length is the share of sent."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape


@dataclass(frozen=True)
class Frame:
    """A chart's size in SVG units (the browser scales the whole picture to its box) and its plot area."""

    width: int
    height: int
    left: int = 46
    right: int = 6
    top: int = 10
    bottom: int = 18

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom

    @property
    def base(self) -> int:
        return self.top + self.plot_h


SMALL = Frame(360, 110)  # one per channel, side by side
WIDE = Frame(720, 150)  # the latency lines

FUNNEL_STAGES: tuple[str, ...] = ("sent", "delivered", "replied", "positive", "booked", "unsubscribed")
FUNNEL_W, FUNNEL_ROW, FUNNEL_LABEL, FUNNEL_BAR = 300, 20, 84, 130


def _num(value: float) -> str:
    """A coordinate: at most 2 decimals, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _attrs(attrs: Mapping[str, Any]) -> str:
    """`class_` → class, `data_value` → data-value; every value escaped; None leaves the attribute out."""
    return " ".join(f'{k.rstrip("_").replace("_", "-")}="{escape(v)}"' for k, v in attrs.items() if v is not None)


def _el(tag: str, body: str = "", **attrs: Any) -> str:
    return f"<{tag} {_attrs(attrs)}>{body}</{tag}>" if body or tag in ("text", "title", "g") \
        else f"<{tag} {_attrs(attrs)}/>"


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def nice_max(value: float) -> float:
    """The axis top: the value rounded up to 1, 2 or 5 × 10^k (1 when there is nothing)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)  # pragma: no cover (the loop ends at 10)


def _fmt(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


def _tick(value: float, unit: str) -> str:
    if unit == " ms" and value >= 1000:
        return f"{value / 1000:g} s"
    return f"{_fmt(value)}{unit}"


def _hhmm(minute: str) -> str:
    return minute[11:16]


def _svg(body: Iterable[str], *, label: str, width: int, height: int, **attrs: Any) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'{_attrs({"aria_label": label, **attrs})}>' + "".join(body) + "</svg>")


def _axes(f: Frame, series: Sequence[Mapping[str, Any]], top: float, unit: str) -> list[str]:
    parts = [_el("line", class_="grid", x1=f.left, x2=f.width - f.right, y1=f.top, y2=f.top),
             _el("line", class_="axis", x1=f.left, x2=f.width - f.right, y1=f.base, y2=f.base),
             _el("text", escape(_tick(top, unit)), class_="tick", x=f.left - 4, y=f.top + 4, text_anchor="end"),
             _el("text", "0", class_="tick", x=f.left - 4, y=f.base, text_anchor="end")]
    if series:
        parts += [_el("text", escape(_hhmm(series[0]["minute"])), class_="tick", x=f.left, y=f.height - 4),
                  _el("text", escape(_hhmm(series[-1]["minute"]) + " UTC"), class_="tick", x=f.width - f.right,
                      y=f.height - 4, text_anchor="end")]
    return parts


def throughput(series: Sequence[Mapping[str, Any]], channels: Sequence[str]) -> Markup:
    """One small chart per channel: per minute a bar of touches sent with the failed ones stacked on it."""
    f = SMALL
    n = max(len(series), 1)
    slot = f.plot_w / n
    width = max(slot * 0.8, 0.5)
    top = nice_max(max((m["sent"].get(c, 0) + m["failed"].get(c, 0) for m in series for c in channels), default=0))
    scale = f.plot_h / top
    figures = []
    for channel in channels:
        sent_total = sum(m["sent"].get(channel, 0) for m in series)
        failed_total = sum(m["failed"].get(channel, 0) for m in series)
        parts = _axes(f, series, top, "")
        for i, m in enumerate(series):
            x = f.left + i * slot + (slot - width) / 2
            sent, failed = m["sent"].get(channel, 0), m["failed"].get(channel, 0)
            y: float = f.base
            for kind, value in (("sent", sent), ("failed", failed)):
                if not value:
                    continue
                h = value * scale
                y -= h
                parts.append(_el("rect", _title(f"{_hhmm(m['minute'])} UTC · {channel}: {value} {kind}"),
                                 class_=f"bar {kind}", x=_num(x), y=_num(y), width=_num(width), height=_num(h),
                                 data_minute=m["minute"], data_channel=channel, data_kind=kind, data_value=value))
        caption = (f'<figcaption><b>{escape(channel)}</b> <span class="good">{sent_total} sent</span> · '
                   f'<span class="{"bad" if failed_total else "dim"}">{failed_total} failed</span></figcaption>')
        svg = _svg(parts, label=f"{channel}: touches sent and failed per minute", width=f.width, height=f.height,
                   class_="chart throughput",
                   data_channel=channel, data_max=_fmt(top), data_scale=f"{scale:.6g}")
        figures.append(f'<figure class="chart" data-chart="throughput" data-channel="{escape(channel)}">'
                       f"{caption}{svg}</figure>")
    return Markup("".join(figures))


def latency(series: Sequence[Mapping[str, Any]]) -> Markup:
    """p50 and p99 of the due-to-provider latency per minute: a line each (broken where a minute sent nothing)
    and a point per minute with sends."""
    f = WIDE
    n = max(len(series), 1)
    slot = f.plot_w / n
    top = nice_max(max((m["latency_p99_ms"] or 0 for m in series), default=0))
    scale = f.plot_h / top
    parts = _axes(f, series, top, " ms")
    for key, name in (("latency_p99_ms", "p99"), ("latency_p50_ms", "p50")):
        segment: list[str] = []
        points: list[str] = []
        segments: list[list[str]] = []
        for i, m in enumerate(series):
            value = m[key]
            if value is None:
                if segment:
                    segments.append(segment)
                segment = []
                continue
            x, y = f.left + (i + 0.5) * slot, f.base - value * scale
            segment.append(f"{_num(x)},{_num(y)}")
            points.append(_el("circle", _title(f"{_hhmm(m['minute'])} UTC · {name} {value:g} ms"),
                              class_=f"point {name}", cx=_num(x), cy=_num(y), r=2.2, data_minute=m["minute"],
                              data_series=name, data_value=f"{value:g}"))
        if segment:
            segments.append(segment)
        parts += [_el("polyline", class_=f"line {name}", points=" ".join(s)) for s in segments if len(s) > 1]
        parts += points
    parts += [_el("text", "p50", class_="legend p50", x=f.left + 6, y=f.top + 12),
              _el("text", "p99", class_="legend p99", x=f.left + 34, y=f.top + 12)]
    svg = _svg(parts, label="due-to-provider latency p50 and p99 per minute", width=f.width, height=f.height,
               class_="chart latency",
               data_max=_fmt(top), data_scale=f"{scale:.6g}")
    return Markup(f'<figure class="chart wide" data-chart="latency">{svg}</figure>')


def funnel(step: Mapping[str, Any]) -> Markup:
    """One step of report.funnel: a bar per stage, its length the stage's share of the touches sent."""
    sent = int(step["sent"])
    height = FUNNEL_ROW * len(FUNNEL_STAGES) + 6
    parts = []
    for i, stage in enumerate(FUNNEL_STAGES):
        value = int(step[stage])
        share = value / sent if sent else 0.0
        y = 3 + i * FUNNEL_ROW
        w = FUNNEL_BAR * share
        rate = f" · {share:.1%}" if sent and stage != "sent" else ""
        parts.append(_el("text", escape(stage), class_="label", x=FUNNEL_LABEL - 6, y=y + 13, text_anchor="end"))
        parts.append(_el("rect", class_="track", x=FUNNEL_LABEL, y=y + 2, width=FUNNEL_BAR, height=FUNNEL_ROW - 6))
        parts.append(_el("rect", _title(f"step {step['step']} · {stage}: {value}{rate}"),
                         class_=f"bar stage-{stage}", x=FUNNEL_LABEL, y=y + 2, width=_num(w),
                         height=FUNNEL_ROW - 6, data_step=step["step"], data_stage=stage, data_value=value))
        parts.append(_el("text", escape(f"{value}{rate}"), class_="value", x=FUNNEL_LABEL + FUNNEL_BAR + 6,
                         y=y + 13))
    label = f"step {step['step']}: sent, delivered, replied, positive, booked, unsubscribed"
    return Markup(_svg(parts, label=label, width=FUNNEL_W, height=height, class_="chart funnel",
                       data_step=step["step"]))
