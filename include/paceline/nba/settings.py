"""Settings of the NBA pipeline: the gate's thresholds and the schedule's waits, with defaults.

Every key can be overridden by the Airflow Variable ``paceline_nba`` (a JSON object with any of
the keys of :data:`DEFAULTS`), read when a task starts, so a threshold changes without a deploy.
``paceline nba check`` takes the same figures as options. docs/nba.md lists them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, fields, replace
from typing import Any
from zoneinfo import ZoneInfo

VARIABLE = "paceline_nba"
LEAGUE_TZ = ZoneInfo("America/New_York")
# The old system's validation window and its row-count range.
FULL_RANGE = (dt.date(2021, 10, 1), dt.date(2024, 5, 1))


class SettingsError(ValueError):
    """A setting with an unknown name or a value out of range."""


@dataclass(frozen=True)
class NbaSettings:
    # NULL minutes_played share (players who did not play): pass inside [low, high]; warn outside
    # it up to fail_above (the old system's "proceed with notes"); fail above (a broken parser).
    null_share_pass_low: float = 0.35
    null_share_pass_high: float = 0.45
    null_share_fail_above: float = 0.60
    # Share of the box score's field-goal attempts that the play-by-play places in a zone.
    min_zone_coverage: float = 0.85
    # Rows expected over FULL_RANGE (checked when a range check covers exactly that range).
    row_count_min: int = 110_000
    row_count_max: int = 160_000
    # A game day D is built no earlier than this time of D+1 in the league's time zone (the last
    # West-coast games end around 01:00 ET); earlier, the task waits up for reschedule.
    ready_at: str = "06:00"
    # A scheduled run also rebuilds the days before its own, for late games and stat corrections.
    reread_days: int = 2

    @property
    def null_share_band(self) -> tuple[float, float]:
        return (self.null_share_pass_low, self.null_share_pass_high)

    @property
    def row_count_range(self) -> tuple[int, int]:
        return (self.row_count_min, self.row_count_max)

    def ready_time(self) -> dt.time:
        return dt.time.fromisoformat(self.ready_at)

    def validate(self) -> NbaSettings:
        low, high, fail = self.null_share_pass_low, self.null_share_pass_high, self.null_share_fail_above
        if not 0.0 <= low <= high <= fail <= 1.0:
            raise SettingsError(
                "need 0 <= null_share_pass_low <= null_share_pass_high <= null_share_fail_above <= 1, "
                f"got {low}, {high}, {fail}"
            )
        if not 0.0 <= self.min_zone_coverage <= 1.0:
            raise SettingsError(f"min_zone_coverage must be within 0..1, got {self.min_zone_coverage}")
        if not 0 <= self.row_count_min <= self.row_count_max:
            raise SettingsError(f"need 0 <= row_count_min <= row_count_max, got {self.row_count_range}")
        if not 0 <= self.reread_days <= 14:
            raise SettingsError(f"reread_days must be within 0..14, got {self.reread_days}")
        try:
            self.ready_time()
        except ValueError as exc:
            raise SettingsError(f"ready_at must be HH:MM, got {self.ready_at!r}") from exc
        return self

    def with_overrides(self, overrides: dict[str, Any] | None) -> NbaSettings:
        """These settings with ``overrides`` applied (unknown keys are refused, naming the valid ones)."""
        if not overrides:
            return self.validate()
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise SettingsError(f"unknown NBA setting(s) {unknown}; valid: {sorted(known)}")
        cast = {"float": float, "int": int, "str": str}
        try:
            values = {key: cast[known[key]](value) for key, value in overrides.items()}
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"bad NBA setting value in {overrides}: {exc}") from exc
        return replace(self, **values).validate()


DEFAULTS = NbaSettings()


def from_json(text: str | None) -> NbaSettings:
    """Settings from the Variable's JSON text (None or empty: the defaults)."""
    if not text or not text.strip():
        return DEFAULTS
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"Variable {VARIABLE} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise SettingsError(f"Variable {VARIABLE} must be a JSON object, got {type(value).__name__}")
    return DEFAULTS.with_overrides(value)


def load() -> NbaSettings:
    """Settings for a running task: the defaults overridden by the Variable ``paceline_nba``."""
    from airflow.sdk import Variable

    return from_json(Variable.get(VARIABLE, default=None))
