"""The Paceline page: summary tiles and the four charts, one self-contained HTML document.

No script, no stylesheet or font from elsewhere: the page works on a machine without internet and
inside the Airflow UI's iframe. Each section is rendered on its own, so a section whose source
fails says so and the others still show.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from html import escape
from typing import Any

from paceline.ui import charts

log = logging.getLogger(__name__)

STYLE = """
:root { color-scheme: light; }
body { margin: 0; padding: 20px 28px 40px; background: #f6f7f9; color: #1f2937;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 22px; margin: 0 0 2px; } h1 span { color: #6b7280; font-weight: 400; font-size: 14px; margin-left: 8px; }
h2 { font-size: 16px; margin: 0 0 4px; }
section { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; padding: 16px 18px; margin: 16px 0; }
.about { color: #6b7280; font-size: 12.5px; margin: 0 0 12px; max-width: 900px; }
.tiles { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 14px; }
.tile { background: #fff; border: 1px solid #e5e7eb; border-radius: 10px; padding: 10px 16px; min-width: 170px; }
.tile b { display: block; font-size: 24px; } .tile small { color: #6b7280; }
.tile.good b { color: #16a34a; } .tile.warn b { color: #d97706; } .tile.bad b { color: #dc2626; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; }
.card { border: 1px solid #e5e7eb; border-radius: 8px; padding: 10px 12px; width: 300px; }
.card svg { display: block; margin: 4px 0 6px; }
.card-head { display: flex; align-items: center; gap: 8px; }
.card-title { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.provider { font-size: 11px; border-radius: 4px; padding: 1px 6px; background: #e0e7ff; color: #3730a3; }
.provider.haku { background: #fce7f3; color: #9d174d; } .provider.racing_api { background: #dcfce7; color: #166534; }
.sub { color: #6b7280; font-size: 11.5px; margin-top: 2px; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; color: #4b5563; margin: 6px 0 10px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.scroll { overflow-x: auto; }
.error { color: #b91c1c; }
"""


def _section(title: str, about: str, body: str, section_id: str) -> str:
    return f'<section id="{section_id}"><h2>{escape(title)}</h2><p class="about">{about}</p>{body}</section>'


def _safe(name: str, fetch: Callable[[], Any]) -> tuple[Any, str | None]:
    try:
        return fetch(), None
    except Exception as exc:  # one broken source must not take the page down
        log.exception("Paceline view: %s failed", name)
        return None, f"{name}: {type(exc).__name__}: {str(exc)[:300]}"


def _tile(value: str, label: str, tone: str = "") -> str:
    return f'<div class="tile {tone}"><b>{escape(value)}</b><small>{escape(label)}</small></div>'


def render(
    quota: dict[str, Any] | None,
    freshness: dict[str, Any] | None,
    racing: dict[str, Any] | None,
    nba: dict[str, Any] | None,
    *,
    errors: dict[str, str] | None = None,
    now: dt.datetime | None = None,
) -> str:
    """The whole page from the four datasets (None: that source failed, see `errors`)."""
    errors = errors or {}
    now = now or dt.datetime.now(dt.UTC)
    tiles = []

    if quota is not None:
        creds = quota["credentials"]
        fullest = max(
            (c["window"]["calls"] / c["window"]["limit"] for c in creds if c.get("window") and c["window"]["limit"]),
            default=0.0,
        )
        tiles.append(_tile(f"{fullest:.0%}", "fullest quota window", "bad" if fullest >= 0.95 else "warn" if fullest >= 0.7 else "good"))
        cards = "".join(charts.quota_card(c) for c in creds) or charts.message("quota", "no credentials registered")
        quota_body = (
            charts.legend([(charts.BLUE, "scheduled"), (charts.PURPLE, "background (" + ", ".join(quota["background_dags"]) + ")")])
            + f'<div class="cards">{cards}</div>'
        )
    else:
        quota_body = f'<p class="error">{escape(errors.get("quota", "unavailable"))}</p>' + charts.message("quota", "quota data unavailable")

    if freshness is not None:
        rows = freshness["integrations"]
        events = sum(r["events"] for r in rows)
        fresh = sum(r["fresh"] for r in rows)
        share = fresh / events if events else 0.0
        tiles.append(_tile(f"{fresh} / {events}", "events synced within target", "good" if share >= 0.9 else "warn" if share >= 0.5 else "bad"))
        tiers = ", ".join(
            f"within {t['within_days']} d: every {charts.human_duration(t['every_s'])}" if t["within_days"] is not None
            else f"further: every {charts.human_duration(t['every_s'])}"
            for t in freshness["tiers"]
        )
        fresh_body = (
            charts.legend([(charts.FRESHNESS_COLOURS[s], s) for s in ("fresh", "late", "stale", "never")])
            + f'<div class="scroll">{charts.freshness_chart(freshness)}</div>'
            + f'<p class="sub">Targets by proximity tier: {escape(tiers)}. Late: within twice the target.</p>'
        )
    else:
        fresh_body = f'<p class="error">{escape(errors.get("freshness", "unavailable"))}</p>' + charts.message("freshness", "freshness unavailable")

    if racing is not None:
        counts = racing["counts"]
        past = len(racing["days"])
        done = past - counts.get("not_loaded", 0)
        tiles.append(_tile(f"{done / past:.0%}" if past else "–", f"racing days loaded since {racing['start'][:4]}", "good" if done == past else "warn"))
        racing_body = (
            charts.legend([(charts.CALENDAR_COLOURS[s], f"{charts.CALENDAR_LABELS[s]} ({counts.get(s, 0)})") for s in charts.CALENDAR_COLOURS])
            + f'<div class="scroll">{charts.racing_calendar_chart(racing)}</div>'
        )
    else:
        racing_body = f'<p class="error">{escape(errors.get("racing", "unavailable"))}</p>' + charts.message("racing", "racing coverage unavailable")

    if nba is not None and not nba.get("error"):
        low, high = nba["band"]
        inside = sum(1 for d in nba["days"] if low <= d["null_share"] <= high)
        if nba["days"]:
            tiles.append(_tile(f"{inside} / {len(nba['days'])}", "NBA game days within the band", "good" if inside == len(nba["days"]) else "warn"))
    nba_body = (
        charts.legend([(charts.GREEN, "within the band"), (charts.AMBER, "outside the band"), (charts.RED, "above the day limit")])
        + f'<div class="scroll">{charts.nba_chart(nba or {"error": errors.get("nba", "unavailable"), "days": []})}</div>'
    )

    sections = [
        _section(
            "Quota per credential",
            "Each card is one API credential. The gauges show its current window from the shared limiter's log "
            "(live; the pace gauge counts background calls only). The bars show calls per hour from the audit "
            "of every unit of work, each unit's calls spread over the hours it ran.",
            quota_body,
            "quota",
        ),
        _section(
            "Freshness of every integration",
            "Every event of an integration counted by the age of its last sync against its proximity tier's target "
            "(the watermark the planners read). The racing feed's target is one day.",
            fresh_body,
            "freshness",
        ),
        _section(
            "Racing coverage",
            "One cell per day from 2015 to today, from the racing tables and the load audit (hover a cell for its counts).",
            racing_body,
            "racing",
        ),
        _section(
            "NBA: NULL minutes share per game day",
            "Share of player_game_summary rows without minutes_played, per game day, from BigQuery; the green band is "
            "the range check's band, the dashed line the day check's parser-failure limit.",
            nba_body,
            "nba",
        ),
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Paceline</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body>"
        f'<h1>Paceline<span>updated {now.strftime("%Y-%m-%d %H:%M")} UTC · reload for fresh figures · '
        '<a href="api/summary">JSON</a></span></h1>'
        f'<div class="tiles">{"".join(tiles)}</div>'
        + "".join(sections)
        + "</body></html>"
    )


def collect(dsn: str | None, *, bigquery_client: Any = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Every dataset of the page (None for a source that failed) and the errors by source."""
    from paceline.ui import queries

    errors: dict[str, str] = {}
    data: dict[str, Any] = {}
    if dsn is None:
        from paceline.db.warehouse import dsn_from_airflow

        dsn, error = _safe("warehouse connection", dsn_from_airflow)
        if error:
            errors.update(quota=error, freshness=error, racing=error)
    for name, fetch in (
        ("quota", lambda: queries.quota(dsn)),
        ("freshness", lambda: queries.freshness(dsn)),
        ("racing", lambda: queries.racing_calendar(dsn)),
    ):
        if name in errors:
            data[name] = None
            continue
        data[name], error = _safe(name, fetch)
        if error:
            errors[name] = error
    data["nba"] = queries.nba_null_share(bigquery_client)
    return data, errors
