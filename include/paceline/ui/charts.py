"""Server-rendered SVG charts of the Paceline view: no JavaScript, nothing fetched by the browser.

Each function takes the dicts of :mod:`paceline.ui.queries` and returns one ``<svg>`` string;
every SVG carries ``data-chart`` (and a few ``data-*`` figures) so that tests can find it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape
from typing import Any

BLUE, PURPLE = "#3b82f6", "#a855f7"
GREEN, AMBER, RED, GREY = "#16a34a", "#f59e0b", "#dc2626", "#e5e7eb"
INK, MUTED = "#1f2937", "#6b7280"
FRESHNESS_COLOURS = {"fresh": GREEN, "late": AMBER, "stale": RED, "never": "#cbd5e1"}
CALENDAR_COLOURS = {
    "loaded": GREEN,
    "no_racing": "#bbf7d0",
    "no_meetings": AMBER,
    "runners_missing": RED,
    "not_loaded": GREY,
}
CALENDAR_LABELS = {
    "loaded": "loaded",
    "no_racing": "no racing expected",
    "no_meetings": "loaded, no meetings",
    "runners_missing": "races without runners",
    "not_loaded": "not loaded",
}


def _svg(width: float, height: float, body: str, chart: str, **data: Any) -> str:
    attrs = "".join(f' data-{k.replace("_", "-")}="{escape(str(v))}"' for k, v in data.items())
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{chart}"{attrs} '
        f'viewBox="0 0 {width:g} {height:g}" width="{width:g}" height="{height:g}" role="img">{body}</svg>'
    )


def _text(x: float, y: float, text: str, *, size: int = 11, fill: str = MUTED, anchor: str = "start", weight: str = "") -> str:
    w = f' font-weight="{weight}"' if weight else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}"{w}>{escape(text)}</text>'


def _ago(iso: str | None, now: dt.datetime) -> str:
    if not iso:
        return "never"
    seconds = (now - dt.datetime.fromisoformat(iso)).total_seconds()
    return f"{human_duration(seconds)} ago"


def human_duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def message(chart: str, text: str, width: int = 640, height: int = 60) -> str:
    """A chart-sized box that says why there is no chart (e.g. BigQuery unreachable)."""
    body = (
        f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" rx="8" fill="#f9fafb" stroke="{GREY}"/>'
        + _text(width / 2, height / 2 + 4, text, size=13, anchor="middle")
    )
    return _svg(width, height, body, chart, empty="true")


# ---------------------------------------------------------------------------------------------
# Quota


def gauge(used: int, limit: int, label: str, *, width: int = 300, colour: str | None = None) -> str:
    """A horizontal bar: `used` of `limit`, coloured by how full it is."""
    share = used / limit if limit else 0.0
    fill = colour or (GREEN if share < 0.7 else AMBER if share < 0.95 else RED)
    bar_w = width - 2
    body = (
        _text(0, 12, label, size=11)
        + _text(width, 12, f"{used} / {limit}", size=11, fill=INK, anchor="end", weight="600")
        + f'<rect x="1" y="18" width="{bar_w}" height="10" rx="5" fill="{GREY}"/>'
        + f'<rect class="gauge-fill" x="1" y="18" width="{bar_w * min(share, 1.0):.1f}" height="10" rx="5" fill="{fill}"/>'
    )
    return _svg(width, 30, body, "gauge", used=used, limit=limit)


def hourly_bars(hours: Sequence[dict[str, Any]], hourly_limit: int | None, *, width: int = 300, height: int = 110) -> str:
    """Calls per hour, scheduled (blue) under background (purple), with the hourly quota if in scale."""
    left, bottom, top = 30, 16, 8
    plot_w, plot_h = width - left - 2, height - bottom - top
    totals = [h["scheduled"] + h["background"] for h in hours]
    peak = max(totals, default=0.0)
    show_limit = bool(hourly_limit) and hourly_limit <= max(peak, 1.0) * 1.6
    ymax = max(peak, float(hourly_limit) if show_limit and hourly_limit else 0.0, 1.0) * 1.1
    step = plot_w / max(len(hours), 1)
    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 2}" y2="{top + plot_h}" stroke="{GREY}"/>',
        _text(left - 4, top + 8, f"{ymax / 1.1:.0f}", size=9, anchor="end"),
        _text(left - 4, top + plot_h, "0", size=9, anchor="end"),
    ]
    for i, h in enumerate(hours):
        x = left + i * step + step * 0.12
        w = step * 0.76
        sched_h = plot_h * h["scheduled"] / ymax
        back_h = plot_h * h["background"] / ymax
        y = top + plot_h - sched_h
        title = f"<title>{escape(h['hour'][:16].replace('T', ' '))} UTC: {h['scheduled']:.0f} scheduled, {h['background']:.0f} background</title>"
        if sched_h > 0:
            parts.append(f'<rect class="bar scheduled" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{sched_h:.1f}" fill="{BLUE}">{title}</rect>')
        if back_h > 0:
            parts.append(f'<rect class="bar background" x="{x:.1f}" y="{y - back_h:.1f}" width="{w:.1f}" height="{back_h:.1f}" fill="{PURPLE}">{title}</rect>')
        if i % 6 == 0:
            parts.append(_text(x + w / 2, height - 3, h["hour"][11:16], size=9, anchor="middle"))
    if show_limit and hourly_limit:
        y = top + plot_h - plot_h * hourly_limit / ymax
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - 2}" y2="{y:.1f}" stroke="{RED}" stroke-dasharray="4 3"/>')
        parts.append(_text(width - 4, y - 3, f"quota {hourly_limit}/h", size=9, fill=RED, anchor="end"))
    return _svg(width, height, "".join(parts), "quota-hours", total=f"{sum(totals):.0f}")


def minute_bars(per_minute: Sequence[int], *, width: int = 300, height: int = 36) -> str:
    """The limiter's log: calls per minute over the last hour (oldest left), all calls together."""
    peak = max(per_minute, default=0) or 1
    step = width / max(len(per_minute), 1)
    parts = [f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" stroke="{GREY}"/>']
    for i, n in enumerate(per_minute):
        if n:
            h = (height - 4) * n / peak
            parts.append(
                f'<rect class="bar minute" x="{i * step + 0.5:.1f}" y="{height - h:.1f}" width="{max(step - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="#64748b"><title>{59 - i} min ago: {n} calls</title></rect>'
            )
    return _svg(width, height, "".join(parts), "quota-minutes", total=sum(per_minute))


def quota_card(cred: dict[str, Any]) -> str:
    """One credential: gauges of its windows, calls per hour, the limiter's last hour."""
    integrations = ", ".join(cred["integrations"])
    conn_ids = ", ".join(cred["conn_ids"])
    head = (
        f'<div class="card-head"><span class="provider {escape(cred["provider"])}">{escape(cred["provider"])}</span>'
        f'<span class="card-title">{escape(integrations)}</span></div>'
        f'<div class="sub">connection {escape(conn_ids)} · bucket {escape(cred["id"][:11])}…</div>'
    )
    if cred.get("error"):
        return (
            f'<div class="card quota-card">{head}<p class="sub error">{escape(cred["error"])}</p>'
            f'{message("gauge", "no limiter data", 300, 40)}</div>'
        )
    parts = [head]
    window = cred.get("window")
    if window:
        parts.append(gauge(window["calls"], window["limit"], f"calls in the quota window ({human_duration(window['per_seconds'])})"))
    back = cred.get("background_window")
    if back:
        parts.append(
            gauge(back["calls"], back["limit"], f"background calls in the pace window ({human_duration(back['per_seconds'])})", colour=PURPLE)
        )
    parts.append(f'<div class="sub">calls per hour, last {len(cred["hours"])} h (UTC)</div>')
    parts.append(hourly_bars(cred["hours"], cred.get("hourly_limit")))
    parts.append('<div class="sub">limiter log, calls per minute over the last hour</div>')
    parts.append(minute_bars(cred["per_minute"]))
    return f'<div class="card quota-card">{"".join(parts)}</div>'


# ---------------------------------------------------------------------------------------------
# Freshness


def freshness_chart(data: dict[str, Any], *, width: int = 900) -> str:
    """One row per integration: its events split by freshness against their tier's target."""
    rows = data["integrations"]
    if not rows:
        return message("freshness", "no integrations registered", width)
    now = dt.datetime.fromisoformat(data["now"])
    label_w, info_w, row_h = 190, 250, 26
    bar_w = width - label_w - info_w - 20
    parts = []
    for i, row in enumerate(rows):
        y = i * row_h + 4
        label = row["integration_id"] + ("" if row["enabled"] else " (disabled)")
        parts.append(_text(0, y + 14, label, size=12, fill=INK if row["enabled"] else MUTED, weight="600"))
        parts.append(_text(label_w - 8, y + 14, row["provider"], size=10, anchor="end"))
        total = row["events"]
        x = float(label_w)
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="16" rx="4" fill="#f3f4f6"/>')
        for state in ("fresh", "late", "stale", "never"):
            n = row[state]
            if not n or not total:
                continue
            w = bar_w * n / total
            parts.append(
                f'<rect class="seg {state}" x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="16" fill="{FRESHNESS_COLOURS[state]}">'
                f"<title>{escape(row['integration_id'])}: {n} of {total} events {state}</title></rect>"
            )
            if w > 26:
                parts.append(_text(x + w / 2, y + 15, str(n), size=10, fill="#fff", anchor="middle", weight="600"))
            x += w
        if not total:
            parts.append(_text(label_w + 8, y + 15, "no events yet", size=10))
        target = f"target {human_duration(row['target_s'])}" if row["target_s"] else "no target"
        info = f"last sync {_ago(row['last_success'], now)} · {target}"
        if row["failures_24h"]:
            info += f" · {row['failures_24h']} failed"
        parts.append(_text(width - info_w + 4, y + 15, info, size=11, fill=RED if row["failures_24h"] else MUTED))
    height = len(rows) * row_h + 8
    return _svg(width, height, "".join(parts), "freshness", rows=len(rows))


# ---------------------------------------------------------------------------------------------
# Racing calendar


def racing_calendar_chart(data: dict[str, Any], *, cell: int = 8, gap: int = 1, columns: int = 2) -> str:
    """A GitHub-style calendar: one grid per year (weeks across, weekdays down), one cell per day."""
    days = data["days"]
    if not days:
        return message("racing", "no days in range")
    pitch = cell + gap
    year_w, year_h = 54 * pitch + 40, 7 * pitch + 26
    by_year: dict[int, list[dict[str, Any]]] = {}
    for d in days:
        by_year.setdefault(int(d["day"][:4]), []).append(d)
    years = sorted(by_year)
    parts = []
    for index, year in enumerate(years):
        ox = (index % columns) * (year_w + 24)
        oy = (index // columns) * year_h
        parts.append(_text(ox, oy + 20 + 3 * pitch, str(year), size=12, fill=INK, weight="600"))
        first = dt.date(year, 1, 1)
        offset = first.weekday()  # Monday = row 0
        for month in range(1, 13):
            week = ((dt.date(year, month, 1) - first).days + offset) // 7
            parts.append(_text(ox + 40 + week * pitch, oy + 9, dt.date(year, month, 1).strftime("%b"), size=8))
        for d in by_year[year]:
            day = dt.date.fromisoformat(d["day"])
            n = (day - first).days + offset
            x, y = ox + 40 + (n // 7) * pitch, oy + 13 + (n % 7) * pitch
            tip = f"{d['day']}: {CALENDAR_LABELS[d['state']]}, {d['races']} races, {d['runners']} runners"
            parts.append(
                f'<rect class="day {d["state"]}" x="{x}" y="{y}" width="{cell}" height="{cell}" rx="1.5" '
                f'fill="{CALENDAR_COLOURS[d["state"]]}"><title>{tip}</title></rect>'
            )
    rows = (len(years) + columns - 1) // columns
    width = min(len(years), columns) * (year_w + 24)
    return _svg(width, rows * year_h, "".join(parts), "racing", days=len(days))


def legend(items: Sequence[tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{colour}"></i>{escape(label)}</span>' for colour, label in items
    ) + "</div>"


# ---------------------------------------------------------------------------------------------
# NBA


def nba_chart(data: dict[str, Any], *, width: int = 900, height: int = 220) -> str:
    """NULL minutes share per game day (dots), the quality band (shaded) and the day limit (dashed)."""
    if data.get("error"):
        return message("nba", data["error"], width, 70)
    days = data["days"]
    if not days:
        return message("nba", "no rows in nba_analytics.player_game_summary yet", width, 70)
    left, right, top, bottom = 40, 10, 10, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = data["band"]
    first = dt.date.fromisoformat(days[0]["day"])
    last = dt.date.fromisoformat(days[-1]["day"])
    span = max((last - first).days, 1)

    def xof(day: str) -> float:
        return left + plot_w * ((dt.date.fromisoformat(day) - first).days / span if len(days) > 1 else 0.5)

    def yof(share: float) -> float:
        return top + plot_h * (1 - share)

    parts = [
        f'<rect x="{left}" y="{yof(high):.1f}" width="{plot_w}" height="{yof(low) - yof(high):.1f}" fill="#dcfce7"/>',
        _text(left + plot_w - 4, yof(high) - 3, f"band {low:.0%}–{high:.0%}", size=9, fill=GREEN, anchor="end"),
        f'<line x1="{left}" y1="{yof(data["day_max"]):.1f}" x2="{left + plot_w}" y2="{yof(data["day_max"]):.1f}" '
        f'stroke="{RED}" stroke-dasharray="4 3"/>',
        _text(left + plot_w - 4, yof(data["day_max"]) - 3, f"parser failure above {data['day_max']:.0%}", size=9, fill=RED, anchor="end"),
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" y1="{yof(tick):.1f}" x2="{left + plot_w}" y2="{yof(tick):.1f}" stroke="#f3f4f6"/>')
        parts.append(_text(left - 4, yof(tick) + 3, f"{tick:.0%}", size=9, anchor="end"))
    ticks = sorted({days[round(i * (len(days) - 1) / 5)]["day"] for i in range(6)})
    for i, day in enumerate(ticks):
        anchor = "start" if i == 0 else "end" if i == len(ticks) - 1 and len(ticks) > 1 else "middle"
        parts.append(_text(xof(day), height - 4, day, size=9, anchor=anchor))
    radius = 3.5 if len(days) < 200 else 2
    for d in days:
        share = d["null_share"]
        colour = RED if share > data["day_max"] else GREEN if low <= share <= high else AMBER
        parts.append(
            f'<circle class="gameday" cx="{xof(d["day"]):.1f}" cy="{yof(share):.1f}" r="{radius}" fill="{colour}">'
            f"<title>{d['day']}: {share:.1%} NULL minutes ({d['null_rows']} of {d['rows']} rows)</title></circle>"
        )
    return _svg(width, height, "".join(parts), "nba", days=len(days))
