"""Plain-text tables of what status, quota and integrations return (the CLI's default output)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """A short human duration: 45s, 12m, 3.5h, 2.1d."""
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def render_status(report: dict[str, Any]) -> str:
    rows = []
    for i in report["integrations"]:
        last_error = next((r["last_error"] for r in i["runs"] if r["failed"]), None)
        rows.append([
            i["integration_id"], i["provider"], "yes" if i["enabled"] else "no", i["state"],
            (i["last_success_at"] or "never")[:19], duration(i["age_s"]), duration(i["target_s"]),
            f"{i['failed_runs']}/{len(i['runs'])}", (last_error or "")[:60],
        ])  # fmt: skip
    out = [
        "Integrations (freshness against the proximity tier's target; failed runs of the last runs)",
        _table(["integration", "provider", "enabled", "state", "last success", "age", "target", "failed", "last error"], rows),
        "",
        "Backfills",
    ]
    backfill_rows = []
    for b in report["backfills"]:
        if b["name"] == "racing_events":
            done = f"{b['days_done']}/{b['days_total']} days, {b['months_done']}/{b['months_total']} months"
            pace = f"{b['days_per_hour']} days/h"
        else:
            done = (f"{b['registrations_done']}/{b['registrations_estimated']} registrations, "
                    f"{b['events_done']} events ({b['events_failed']} failed)")  # fmt: skip
            pace = f"{b['registrations_per_hour']} reg/h"
        share = f"{b['done_share']:.1%}" if b.get("done_share") is not None else "-"
        eta = "done" if b.get("eta_hours") == 0 else (b["eta"][:16] if b.get("eta") else "no progress in the last hour")
        backfill_rows.append([b["name"], share, done, pace, eta])
    out.append(_table(["backfill", "done", "progress", "pace", "ETA"], backfill_rows))
    return "\n".join(out)


def _lock(lock: dict[str, Any] | None) -> str:
    if not lock or not lock["held"]:
        return "free"
    holder = lock["holder"]
    who = holder.get("application_name") or f"pid {holder['pid']}"
    queued = f" (+{lock['queued']} queued)" if lock["queued"] else ""
    done = f", done ~{holder['expects_done_at'][11:16]}" if holder.get("expects_done_at") else ""
    return f"{who} since {(holder.get('since') or '')[11:19]}{done}{queued}"


def render_quota(snapshot: Sequence[dict[str, Any]]) -> str:
    rows = []
    for c in snapshot:
        label = f"{c['provider']}:{c['credential']}"
        if c.get("error"):
            rows.append([label, c["error"], "", "", "", "", ""])
            continue
        windows = ", ".join(f"{w['calls']}/{w['limit']} per {duration(w['window_s'])}" for w in c["windows"])
        recent = c.get("recent")
        shares = f"{recent['scheduled']} sched / {recent['background']} bg per {duration(recent['window_s'])}" if recent else "-"
        next_free = "now" if not c["next_free_in_s"] else f"in {duration(c['next_free_in_s'])}"
        rows.append([label, windows, shares, next_free, _lock(c["waiting_room"]), _lock(c["background_room"]), _lock(c["lane"])])
    return _table(["credential", "calls in window", "recent calls", "next call", "waiting room", "background room", "lane"], rows)


def render_integrations(rows: Sequence[dict[str, Any]]) -> str:
    return _table(
        ["integration", "provider", "partner", "organization", "connection", "enabled", "calls/h", "source"],
        [[r["integration_id"], r["provider"], f"{r['timing_partner_id']} {r['timing_partner_name']}", r["organization"],
          r["conn_id"], "yes" if r["enabled"] else "no", r["calls_per_hour"] or "default", r["source"]] for r in rows],
    )  # fmt: skip
