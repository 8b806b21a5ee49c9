"""Quality gate of nba_analytics.player_game_summary: the old system's acceptance, as settings.

Each rule is a query under ``sql/checks/`` over ``[@start_date, @end_date]``; ``checks/figures.sql``
counts every rule's findings in one job, and a rule's own query (its offending rows) runs only when
its count is not zero, so a passing gate costs one query. A rule ends in one of:

- ``pass``;
- ``warn``: the old system's "investigate but do not block" (a NULL-minutes share between the
  pass band and the failure ceiling): the gate passes, and the note goes to the log and to the
  Asset event's ``extra``;
- ``fail``: the gate raises :class:`DataQualityError`, naming the rule, the figure and up to 10
  offending rows; the day task that emits the Asset is the check task, so bad data never
  triggers a downstream consumer;
- ``info``: a figure shown with the others that never blocks (the exact zone identities: real
  play-by-play has gaps, which ``zone_coverage`` judges instead).

Thresholds come from :class:`paceline.nba.settings.NbaSettings` (docs/nba.md lists them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from paceline.nba import sql_text
from paceline.nba.settings import DEFAULTS, FULL_RANGE, NbaSettings

if TYPE_CHECKING:
    from paceline.providers.bigquery import BigQueryClient

PASS, WARN, FAIL, INFO = "pass", "warn", "fail", "info"
DEFAULT_BAND: tuple[float, float] = DEFAULTS.null_share_band
DAY_MAX_NULL_SHARE = DEFAULTS.null_share_fail_above
MAX_ROWS_SHOWN = 10


@dataclass(frozen=True)
class Rule:
    name: str
    sql_file: str
    statement: str  # what must hold, in words, for the message
    severity: str = FAIL  # what a violation is: FAIL, or INFO for a figure that never blocks


# Rules whose query returns the offending rows (first 10) with offending_rows / checked_rows.
ROW_RULES: tuple[Rule, ...] = (
    Rule("zone_sum", "checks/zone_sum.sql",
         "paint_fga + midrange_fga + three_fga = fga (and the same for makes)", INFO),
    Rule("three_equals_fg3", "checks/three_equals_fg3.sql", "three_fga = fg3a and three_fgm = fg3m", INFO),
    Rule("points_identity", "checks/points_identity.sql", "2*(fgm - fg3m) + 3*fg3m + ftm = points"),
    Rule("null_minutes_with_stats", "checks/null_minutes_with_stats.sql",
         "a player with points, field-goal or free-throw attempts has minutes_played"),
    Rule("completeness", "checks/completeness.sql",
         "each game day has one summary row per box-score player"),
)
NULL_SHARE_RULE = Rule("null_minutes_share", "checks/null_minutes_by_day.sql",
                       "share of NULL minutes_played within bounds")
ZONE_COVERAGE_RULE = Rule("zone_coverage", "checks/zone_coverage_by_day.sql",
                          "share of field-goal attempts placed in a shot zone")
ROW_COUNT_RULE = "row_count"
# Every rule's count in one job (a passing gate costs one query); detail queries only on a finding.
FIGURES_SQL = "checks/figures.sql"


@dataclass(frozen=True)
class CheckResult:
    rule: str
    status: str
    figure: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    value: float | None = None

    @property
    def passed(self) -> bool:
        """False only for a failure: a warning or an informational figure passes."""
        return self.status != FAIL

    def describe(self) -> str:
        label = {PASS: "passed", WARN: "WARNING", FAIL: "FAILED", INFO: "info"}[self.status]
        head = f"rule {self.rule}: {label}: {self.figure}"
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


def _query(client: BigQueryClient, sql_file: str, start: dt.date, end: dt.date) -> list[dict[str, Any]]:
    return client.query(sql_text(sql_file), {"start_date": start, "end_date": end}).rows


def _row_rule(client: BigQueryClient, rule: Rule, start: dt.date, end: dt.date, count: int) -> CheckResult:
    if not count:
        return CheckResult(rule.name, PASS, f"{rule.statement}: holds")
    rows = _query(client, rule.sql_file, start, end)
    if not rows:
        return CheckResult(rule.name, PASS, f"{rule.statement}: holds")
    offending, checked = rows[0]["offending_rows"], rows[0]["checked_rows"]
    unit = "game days" if rule.name == "completeness" else "rows"
    return CheckResult(
        rule.name, rule.severity, f"{rule.statement}: violated by {offending} of {checked} {unit}", rows, offending
    )


def _null_share_rule(
    client: BigQueryClient, start: dt.date, end: dt.date, settings: NbaSettings, single_day: bool,
    figures: dict[str, Any],
) -> tuple[CheckResult, int]:
    total, nulls = figures["total_rows"], figures["null_rows"]
    name = NULL_SHARE_RULE.name
    if not total:
        if not single_day:  # a range with nothing in it cannot be vouched for
            return CheckResult(name, FAIL, "no rows in player_game_summary for the range"), 0
        return CheckResult(name, PASS, "no rows (no games)"), 0
    share = nulls / total
    low, high = settings.null_share_band
    ceiling = settings.null_share_fail_above
    figure = f"NULL minutes_played share {share:.1%} ({nulls} of {total} rows)"
    if share > ceiling:
        status, verdict = FAIL, f"above {ceiling:.0%}: the minutes parser is broken"
    elif share > high:
        status, verdict = WARN, f"above the pass band {low:.0%}-{high:.0%}, at most {ceiling:.0%}: proceed with notes"
    elif share < low:
        status, verdict = WARN, f"below the pass band {low:.0%}-{high:.0%}: proceed with notes"
    else:
        status, verdict = PASS, f"within the pass band {low:.0%}-{high:.0%}"
    rows: list[dict[str, Any]] = []
    if status != PASS and not single_day:
        rows = _query(client, NULL_SHARE_RULE.sql_file, start, end)
        rows = sorted(rows, key=lambda r: r["null_share"], reverse=share > high)[:MAX_ROWS_SHOWN]
    return CheckResult(name, status, f"{figure}, {verdict}", rows, share), total


def _zone_coverage_rule(
    client: BigQueryClient, start: dt.date, end: dt.date, settings: NbaSettings, figures: dict[str, Any]
) -> CheckResult:
    fga, zoned = figures["fga"], figures["zoned_fga"]
    name, minimum = ZONE_COVERAGE_RULE.name, settings.min_zone_coverage
    if not fga:
        return CheckResult(name, PASS, "no field-goal attempts")
    coverage = zoned / fga
    figure = f"{coverage:.1%} of {fga} field-goal attempts placed in a shot zone"
    if coverage >= minimum:
        return CheckResult(name, PASS, f"{figure}, at least {minimum:.0%}", value=coverage)
    days = _query(client, ZONE_COVERAGE_RULE.sql_file, start, end)
    worst = sorted(days, key=lambda d: d["zoned_fga"] / d["fga"])[:MAX_ROWS_SHOWN]
    rows = [{**d, "coverage": round(d["zoned_fga"] / d["fga"], 4)} for d in worst]
    return CheckResult(name, FAIL, f"{figure}, below {minimum:.0%}", rows, coverage)


def _row_count_rule(total: int, expected: tuple[int, int]) -> CheckResult:
    low, high = expected
    figure = f"{total:,} rows, expected {low:,}-{high:,}"
    return CheckResult(ROW_COUNT_RULE, PASS if low <= total <= high else FAIL, figure, value=float(total))


def run_checks(
    client: BigQueryClient,
    start: dt.date,
    end: dt.date,
    *,
    settings: NbaSettings = DEFAULTS,
    single_day: bool = False,
    expected_rows: tuple[int, int] | None = None,
) -> list[CheckResult]:
    """Run every rule over ``[start, end]`` and return all results (no raising)."""
    (figures,) = _query(client, FIGURES_SQL, start, end)
    share, total = _null_share_rule(client, start, end, settings, single_day, figures)
    results = [share, _zone_coverage_rule(client, start, end, settings, figures)]
    results += [_row_rule(client, rule, start, end, figures[rule.name]) for rule in ROW_RULES]
    if expected_rows is not None:
        results.append(_row_count_rule(total, expected_rows))
    return results


def _raise_on_failure(start: dt.date, end: dt.date, results: list[CheckResult]) -> list[CheckResult]:
    failures = [result for result in results if not result.passed]
    if failures:
        raise DataQualityError(start, end, failures)
    return results


def warnings(results: Sequence[CheckResult]) -> list[str]:
    """The notes of a passing gate: each warning, as a line for the log and the Asset event."""
    return [f"{r.rule}: {r.figure}" for r in results if r.status == WARN]


def check_day(
    client: BigQueryClient, day: dt.date, *, settings: NbaSettings = DEFAULTS, end: dt.date | None = None
) -> list[CheckResult]:
    """The per-run gate over ``day`` (through ``end`` when a run rebuilt several days).

    Raises :class:`DataQualityError` naming every failing rule; a day (or span) without rows passes.
    """
    end = end or day
    return _raise_on_failure(day, end, run_checks(client, day, end, settings=settings, single_day=True))


def check_range(
    client: BigQueryClient,
    start: dt.date,
    end: dt.date,
    band: tuple[float, float] | None = None,
    *,
    settings: NbaSettings = DEFAULTS,
    expected_rows: tuple[int, int] | None = None,
) -> list[CheckResult]:
    """The range gate (end of a backfill, on demand); raises :class:`DataQualityError`.

    ``band`` overrides the settings' pass band. The row count is checked against
    ``expected_rows``, or against the settings' range when ``[start, end]`` is the old system's
    validation window (2021-10-01..2024-05-01).
    """
    if start > end:
        raise ValueError(f"start {start} is after end {end}")
    if band is not None:
        low, high = band
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {band}")
        settings = replace(settings, null_share_pass_low=low, null_share_pass_high=high,
                           null_share_fail_above=max(high, settings.null_share_fail_above))
    if expected_rows is None and (start, end) == FULL_RANGE:
        expected_rows = settings.row_count_range
    results = run_checks(client, start, end, settings=settings, expected_rows=expected_rows)
    return _raise_on_failure(start, end, results)
