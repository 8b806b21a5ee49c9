"""Haku payloads, parsed defensively (docs/providers.md, Haku).

Haku publishes no schema, so every field is read with care: a record whose identity or change
stamp cannot be read raises :class:`ParseError` (the caller keeps it in the rejected-records
table), while optional fields that are missing or oddly typed simply become ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

# Formats the only public integrator accepts; ISO 8601 with offsets is tried first.
_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%d")


class ParseError(ValueError):
    """A Haku record that cannot be used; the message says why."""


def parse_datetime(value: Any, field: str = "timestamp") -> datetime | None:
    """A timezone-aware UTC datetime, None for null/empty; ParseError for anything unreadable."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ParseError(f"{field} is not a string: {value!r}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
        for fmt in _DATETIME_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            raise ParseError(f"{field} is not a date-time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_date(value: Any, field: str = "date") -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise ParseError(f"{field} is not a date: {value!r}")


def format_ts(value: datetime) -> str:
    """The canonical text form of a cursor (UTC, second precision, like Haku's own stamps)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _key(record: Any, what: str) -> str:
    if not isinstance(record, dict):
        raise ParseError(f"{what} is not an object: {type(record).__name__}")
    number = _text(record.get("registration_number"))
    if number is None:
        raise ParseError(f"{what} has no registration_number")
    return number


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    raise ParseError(f"{field} is not a boolean: {value!r}")


def registration_number_of(record: Any) -> str | None:
    """The registration number of a raw record when it can be read at all (for reject keys)."""
    if isinstance(record, dict):
        return _text(record.get("registration_number"))
    return None


@dataclass(frozen=True)
class HakuEvent:
    event_id: str
    name: str | None
    event_date: date | None
    raw: dict[str, Any]


def parse_event(record: Any) -> HakuEvent:
    if not isinstance(record, dict):
        raise ParseError(f"event is not an object: {type(record).__name__}")
    event_id = _text(record.get("id") if record.get("id") is not None else record.get("event_id"))
    if event_id is None:
        raise ParseError("event has no id")
    try:
        event_date = parse_date(record.get("event_date"), "event_date")
    except ParseError:
        event_date = None  # an event without a readable date is still an event; proximity treats it as far
    return HakuEvent(event_id=event_id, name=_text(record.get("name")), event_date=event_date, raw=record)


@dataclass(frozen=True)
class ParticipantSummary:
    """One row of /events/{id}/participants: enough to tell whether the detail must be fetched."""

    registration_number: str
    updated_at: datetime | None
    is_cancelled: bool


def parse_summary(record: Any) -> ParticipantSummary:
    number = _key(record, "participant summary")
    return ParticipantSummary(
        registration_number=number,
        updated_at=parse_datetime(record.get("updated_at"), "updated_at"),
        is_cancelled=_bool(record.get("is_cancelled"), "is_cancelled"),
    )


@dataclass(frozen=True)
class Registration:
    """A registration detail, shaped as a row of registrations.haku_participants."""

    registration_number: str
    first_name: str | None
    last_name: str | None
    email: str | None
    is_cancelled: bool
    updated_at: datetime
    raw: dict[str, Any]

    def row(self, event_id: str, timing_partner_id: int) -> dict[str, Any]:
        return {
            "event_id": event_id,
            "participant_id": self.registration_number,
            "timing_partner_id": timing_partner_id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "is_cancelled": self.is_cancelled,
            "updated_at": self.updated_at,
            "raw": self.raw,
        }


def parse_registration(record: Any) -> Registration:
    number = _key(record, "registration")
    updated_at = parse_datetime(record.get("updated_at"), "updated_at")
    if updated_at is None:
        raise ParseError("registration has no updated_at")
    person = record.get("participant")
    if person is None:
        person = {}
    if not isinstance(person, dict):
        raise ParseError(f"participant is not an object: {type(person).__name__}")
    cancelled = _bool(record.get("is_cancelled"), "is_cancelled")
    if not cancelled and record.get("cancelled_at"):
        cancelled = True  # a cancellation stamp without the flag still means cancelled
    return Registration(
        registration_number=number,
        first_name=_text(person.get("first_name")),
        last_name=_text(person.get("last_name")),
        email=_text(person.get("email")),
        is_cancelled=cancelled,
        updated_at=updated_at,
        raw=record,
    )
