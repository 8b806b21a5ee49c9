"""Quality gate of nba_analytics.player_game_summary.

Each rule is a query under ``sql/checks/`` over ``[@start_date, @end_date]``. A failing rule
fails its task with :class:`DataQualityError`, whose message names the rule, the figure and up
to 10 offending rows; because the day task that emits the Asset is the check task, bad data
never triggers a downstream consumer.

Day check (after each run): the identities, completeness, and only the parser's failure mode
for minutes (a NULL share above ``max_null_share``, or NULL minutes on a player with stats).
Range check (end of a backfill, on demand): the same, plus the NULL share within ``band``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.cloud import bigquery

from paceline.nba import sql_text

DEFAULT_BAND: tuple[float, float] = (0.35, 0.45)
# The old system's broken parser left 99.5% NULL; above 60% it called the parser broken.
DAY_MAX_NULL_SHARE = 0.60
MAX_ROWS_SHOWN = 10


class _HasClient(Protocol):
    def get_client(self, *args: Any, **kwargs: Any) -> bigquery.Client: ...


ClientLike = bigquery.Client | _HasClient


@dataclass(frozen=True)
class Rule:
    name: str
    sql_file: str
    statement: str  # what must hold, in words, for the message


# Rules whose query returns the offending rows (first 10) with offending_rows / checked_rows.
ROW_RULES: tuple[Rule, ...] = (
    Rule("zone_sum", "checks/zone_sum.sql",
         "paint_fga + midrange_fga + three_fga = fga (and the same for makes)"),
    Rule("three_equals_fg3", "checks/three_equals_fg3.sql", "three_fga = fg3a and three_fgm = fg3m"),
    Rule("points_identity", "checks/points_identity.sql", "2*(fgm - fg3m) + 3*fg3m + ftm = points"),
    Rule("null_minutes_with_stats", "checks/null_minutes_with_stats.sql",
         "a player with points, field-goal or free-throw attempts has minutes_played"),
    Rule("completeness", "checks/completeness.sql",
         "each game day has one summary row per box-score player"),
)
NULL_SHARE_RULE = Rule("null_minutes_share", "checks/null_minutes_share.sql",
                       "share of NULL minutes_played within bounds")


@dataclass(frozen=True)
class CheckResult:
    rule: str
    passed: bool
    figure: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    value: float | None = None

    def describe(self) -> str:
        head = f"rule {self.rule}: {'passed' if self.passed else 'FAILED'}: {self.figure}"
        if not self.rows:
            return head
        shown = "\n".join(f"    {_format_row(row)}" for row in self.rows[:MAX_ROWS_SHOWN])
        return f"{head}\n  offending rows (first {min(len(self.rows), MAX_ROWS_SHOWN)}):\n{shown}"


class DataQualityError(Exception):
    """Raised when at least one rule fails; ``failures`` holds the failing results."""

    def __init__(self, start: dt.date, end: dt.date, failures: Sequence[CheckResult]) -> None:
        self.start, self.end, self.failures = start, end, list(failures)
        span = start.isoformat() if start == end else f"{start.isoformat()}..{end.isoformat()}"
        body = "\n".join(result.describe() for result in self.failures)
        super().__init__(
            f"player_game_summary quality check failed for {span}: "
            f"{len(self.failures)} rule(s) failed ({', '.join(r.rule for r in self.failures)})\n{body}"
        )


def _format_row(row: dict[str, Any]) -> str:
    return ", ".join(
        f"{key}={value.isoformat() if isinstance(value, dt.date) else value}"
        for key, value in row.items()
        if key not in ("offending_rows", "checked_rows")
    )


def as_client(hook_or_client: ClientLike) -> bigquery.Client:
    """A BigQuery client from a client, or from a hook with ``get_client()`` (BigQueryHook)."""
    if isinstance(hook_or_client, bigquery.Client):
        return hook_or_client
    # BigQueryHook.get_client() does not fall back to the connection's project by itself.
    return hook_or_client.get_client(project_id=getattr(hook_or_client, "project_id", None))


def _query(client: bigquery.Client, sql_file: str, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("start_date", "DATE", start),
            bigquery.ScalarQueryParameter("end_date", "DATE", end),
        ],
        use_legacy_sql=False,
    )
    return [dict(row.items()) for row in client.query(sql_text(sql_file), job_config=config).result()]


def _row_rule(client: bigquery.Client, rule: Rule, start: dt.date, end: dt.date) -> CheckResult:
    rows = _query(client, rule.sql_file, start, end)
    if not rows:
        return CheckResult(rule.name, True, f"{rule.statement}: holds")
    offending, checked = rows[0]["offending_rows"], rows[0]["checked_rows"]
    unit = "game days" if rule.name == "completeness" else "rows"
    return CheckResult(
        rule.name, False, f"{rule.statement}: violated by {offending} of {checked} {unit}", rows, offending
    )


def _null_share_rule(
    client: bigquery.Client,
    start: dt.date,
    end: dt.date,
    band: tuple[float, float] | None,
    max_null_share: float | None,
) -> CheckResult:
    (row,) = _query(client, NULL_SHARE_RULE.sql_file, start, end)
    total, nulls, share = row["total_rows"], row["null_rows"], row["null_share"]
    name = NULL_SHARE_RULE.name
    if not total:
        if band is not None:  # a range with nothing in it cannot be vouched for
            return CheckResult(name, False, "no rows in player_game_summary for the range")
        return CheckResult(name, True, "no rows (no games)")
    figure = f"NULL minutes_played share {share:.1%} ({nulls} of {total} rows)"
    low, high = band if band is not None else (0.0, max_null_share if max_null_share is not None else 1.0)
    passed = low <= share <= high
    bounds = f"band {low:.0%}-{high:.0%}" if band is not None else f"parser failure above {high:.0%}"
    rows: list[dict[str, Any]] = []
    if not passed and start != end:
        rows = _query(client, "checks/null_minutes_by_day.sql", start, end)
        rows = sorted(rows, key=lambda r: r["null_share"], reverse=share > high)[:MAX_ROWS_SHOWN]
    return CheckResult(name, passed, f"{figure}, {bounds}", rows, share)


def run_checks(
    hook_or_client: ClientLike,
    start: dt.date,
    end: dt.date,
    *,
    band: tuple[float, float] | None = None,
    max_null_share: float | None = DAY_MAX_NULL_SHARE,
) -> list[CheckResult]:
    """Run every rule over ``[start, end]`` and return all results (no raising)."""
    client = as_client(hook_or_client)
    results = [_null_share_rule(client, start, end, band, max_null_share)]
    results += [_row_rule(client, rule, start, end) for rule in ROW_RULES]
    return results


def _raise_on_failure(start: dt.date, end: dt.date, results: list[CheckResult]) -> list[CheckResult]:
    failures = [result for result in results if not result.passed]
    if failures:
        raise DataQualityError(start, end, failures)
    return results


def check_day(
    hook_or_client: ClientLike, day: dt.date, *, max_null_share: float = DAY_MAX_NULL_SHARE
) -> list[CheckResult]:
    """The per-run gate: raises :class:`DataQualityError` naming every failing rule."""
    return _raise_on_failure(day, day, run_checks(hook_or_client, day, day, max_null_share=max_null_share))


def check_range(
    hook_or_client: ClientLike,
    start: dt.date,
    end: dt.date,
    band: tuple[float, float] = DEFAULT_BAND,
) -> list[CheckResult]:
    """The range gate (end of a backfill, on demand); raises :class:`DataQualityError`."""
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    low, high = band
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {band}")
    return _raise_on_failure(start, end, run_checks(hook_or_client, start, end, band=band, max_null_share=None))
