"""RunSignUp records as the API gives them, turned into warehouse rows, defensively.

The API mixes formats (docs/providers.md, RunSignUp): ``registration_date`` is "9/7/2021 15:15"
on participants but "2021-09-07 15:20:36" on removed participants; ``last_modified`` is unix
seconds on participants, a date string on removed ones (whose unix form is ``last_modified_ts``);
``bib_num`` is an int, a string or null. Anything that cannot be made sense of raises
:class:`ParseError` naming the record and the field, so that the caller can reject that record
and keep the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

PARTICIPANT_TABLE = "registrations.runsignup_participants"
PARTICIPANT_KEY = ("timing_partner_id", "race_id", "event_id", "registration_id")
EVENT_TABLE = "registrations.runsignup_events"
EVENT_KEY = ("timing_partner_id", "race_id", "event_id")

RSU_DATETIME_FORMATS = ("%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S")


class ParseError(ValueError):
    """A record that cannot be turned into a row; `record_key` names it when it can be known."""

    def __init__(self, message: str, *, record_key: str | None = None) -> None:
        super().__init__(message)
        self.record_key = record_key


def _int(value: Any, name: str, key: str | None, *, required: bool = True) -> int | None:
    if value is None or value == "":
        if required:
            raise ParseError(f"{name} is missing", record_key=key)
        return None
    if isinstance(value, bool):
        raise ParseError(f"{name} is a boolean ({value!r}), expected an integer", record_key=key)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ParseError(f"{name} is {value!r}, expected an integer", record_key=key)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    raise ParseError(f"expected text, got {type(value).__name__}")


def parse_rsu_datetime(value: Any, name: str = "datetime", key: str | None = None) -> datetime | None:
    """'9/7/2021 15:15', '3/20/2019 09:00', '2021-09-07 15:20:36' (naive, as RunSignUp gives them)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParseError(f"{name} is {value!r}, expected a date-time string", record_key=key)
    text = value.strip()
    for fmt in RSU_DATETIME_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ParseError(f"{name} {value!r} is in no known RunSignUp format", record_key=key)


def parse_date(value: Any, name: str = "date", key: str | None = None) -> date | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParseError(f"{name} is {value!r}, expected YYYY-MM-DD", record_key=key)
    text = value.strip()
    for fmt in ("%Y-%m-%d", "%m/%d/%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ParseError(f"{name} {value!r} is not a date", record_key=key)


@dataclass(frozen=True)
class EventRef:
    """Where a record belongs: the partner and event it was fetched for."""

    timing_partner_id: int
    race_id: int
    event_id: int


def _user(raw: dict[str, Any], key: str | None) -> dict[str, Any]:
    user = raw.get("user")
    if user is None:
        raise ParseError("user is missing (null)", record_key=key)
    if not isinstance(user, dict):
        raise ParseError(f"user is {type(user).__name__}, expected an object", record_key=key)
    return user


def parse_participant(raw: Any, ref: EventRef, *, removed: bool = False) -> dict[str, Any]:
    """One participant (or removed participant) record → a runsignup_participants row."""
    if not isinstance(raw, dict):
        raise ParseError(f"record is {type(raw).__name__}, expected an object")
    key = str(raw["registration_id"]) if raw.get("registration_id") not in (None, "") else None
    registration_id = _int(raw.get("registration_id"), "registration_id", key)
    user = _user(raw, key)
    if removed:
        stamp = raw.get("last_modified_ts")
        last_modified = _int(stamp, "last_modified_ts", key, required=False)
        if last_modified is None:  # older answers only had the string form
            parsed = parse_rsu_datetime(raw.get("last_modified"), "last_modified", key)
            last_modified = int(parsed.timestamp()) if parsed else None
        reason = _text(raw.get("removed_reason")) or "removed"
    else:
        last_modified = _int(raw.get("last_modified"), "last_modified", key)
        reason = None
    try:
        names = {f: _text(user.get(f)) for f in ("first_name", "last_name", "email", "gender")}
        bib = _text(raw.get("bib_num"))
    except ParseError as exc:
        raise ParseError(f"user field: {exc}", record_key=key) from None
    return {
        "timing_partner_id": ref.timing_partner_id,
        "race_id": ref.race_id,
        "event_id": ref.event_id,
        "registration_id": registration_id,
        **names,
        "dob": parse_date(user.get("dob"), "dob", key),
        "bib_num": bib,
        "registration_date": parse_rsu_datetime(raw.get("registration_date"), "registration_date", key),
        "last_modified": last_modified,
        "removed_reason": reason,
        "raw": raw,
    }


def parse_event(race: dict[str, Any], event: dict[str, Any], *, timing_partner_id: int, integration_id: str) -> dict[str, Any]:
    """One event of a race → a runsignup_events row."""
    race_id = _int(race.get("race_id"), "race_id", None)
    event_id = _int(event.get("event_id"), "event_id", None)
    return {
        "timing_partner_id": timing_partner_id,
        "race_id": race_id,
        "event_id": event_id,
        "integration_id": integration_id,
        "race_name": _text(race.get("name")),
        "event_name": _text(event.get("name")),
        "start_time": parse_rsu_datetime(event.get("start_time"), "start_time", str(event_id)),
        "race_timezone": _text(race.get("timezone")),
        "race_last_modified": _text(race.get("last_modified")),
        "raw": event,
    }
