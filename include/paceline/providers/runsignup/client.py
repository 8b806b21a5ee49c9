"""RunSignUp REST calls Paceline makes, with the paging and envelopes the real API uses.

- races: ``/races`` with ``only_partner_races=T`` and ``events=T``, 1,000 per page, until a
  short page (there is no total);
- race detail: ``/race/{id}`` (every event, past ones included);
- participants: ``/race/{id}/participants`` for one event, ``sort=registration_id ASC`` and the
  ``after_registration_id`` keyset, 2,500 per page, optionally ``modified_after_timestamp``
  (inclusive); the answer is an array with one element per event (``participants`` at the top of
  each element) or, in older answers, one object;
- removed participants: ``/race/{id}/removed-participants``, same paging, records inside
  ``event.participants``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from paceline.http.session import ApiError, ApiSession
from paceline.providers.runsignup.hook import error_of

RACES_PER_PAGE = 1000
PARTICIPANTS_PER_PAGE = 2500
# Errors an incremental call may get that a full sync (no modified_after_timestamp) avoids:
# 3 invalid parameters, 9 invalid date.
FIXABLE_BY_FULL_SYNC = frozenset({3, 9})


class EnvelopeError(ApiError):
    """An answer whose shape is not any RunSignUp envelope we know."""


def error_code(exc: ApiError) -> int | None:
    """The RunSignUp error code behind an ApiError, when its body carries one."""
    body = exc.body
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    found = error_of(body)
    return found[0] if found else None


def _event_id(element: dict[str, Any]) -> int | None:
    event = element.get("event")
    if isinstance(event, dict) and event.get("event_id") is not None:
        try:
            return int(event["event_id"])
        except (TypeError, ValueError):
            return None
    return None


class AmbiguousAnswer(EnvelopeError):
    """An answer for several events whose elements do not say which event they belong to."""


def participants_of(body: Any, event_id: int, *, removed: bool = False, several: bool = False) -> list[Any]:
    """The records of `event_id` in a participants or removed-participants answer.

    Accepts the array-of-events form and the single-object form; records sit in the element's
    top-level ``participants`` (participants) or in ``event.participants`` (removed ones), and
    whichever list is non-empty is taken, since the documentation and real answers disagree.
    With `several` (the call asked for several events), an element without an event id cannot be
    attributed: AmbiguousAnswer, rather than copying its records into every event.
    """
    if isinstance(body, dict):
        elements = [body]
    elif isinstance(body, list):
        elements = body
    else:
        raise EnvelopeError(f"participants answer is {type(body).__name__}, expected a list or an object")
    records: list[Any] = []
    for element in elements:
        if not isinstance(element, dict):
            raise EnvelopeError(f"participants answer holds a {type(element).__name__}, expected objects")
        found = _event_id(element)
        if found is None and several:
            raise AmbiguousAnswer("an answer for several events holds an element without an event id")
        if found is not None and found != event_id:
            continue
        top = element.get("participants")
        inner = (element.get("event") or {}).get("participants") if isinstance(element.get("event"), dict) else None
        chosen = (inner or top) if removed else (top or inner)
        if chosen is None:
            continue
        if not isinstance(chosen, list):
            raise EnvelopeError(f"participants is {type(chosen).__name__}, expected a list")
        records.extend(chosen)
    return records


def _max_registration_id(records: list[Any]) -> int | None:
    ids = []
    for rec in records:
        if isinstance(rec, dict):
            try:
                ids.append(int(rec.get("registration_id")))
            except (TypeError, ValueError):
                continue
    return max(ids) if ids else None


class RunSignUpClient:
    """The calls of a sync; every one goes through the session's limiter and retries."""

    def __init__(self, session: ApiSession) -> None:
        self.session = session

    @property
    def calls(self) -> int:
        return self.session.stats.calls

    def close(self) -> None:
        self.session.close()

    def races(self, *, events: bool = True, per_page: int = RACES_PER_PAGE) -> list[dict[str, Any]]:
        """The key's own races (with their current events), every page."""
        races: list[dict[str, Any]] = []
        page = 1
        while True:
            body = self.session.get_json(
                "races",
                {
                    "only_partner_races": "T",
                    "events": "T" if events else "F",
                    "page": page,
                    "results_per_page": per_page,
                    "sort": "date ASC",
                },
            )
            if not isinstance(body, dict) or not isinstance(body.get("races"), list):
                raise EnvelopeError("races answer has no races list")
            batch = [item.get("race", item) for item in body["races"] if isinstance(item, dict)]
            races.extend(batch)
            if len(body["races"]) < per_page:
                return races
            page += 1

    def race(self, race_id: int, *, future_events_only: bool = False) -> dict[str, Any]:
        body = self.session.get_json(f"race/{int(race_id)}", {"future_events_only": "T" if future_events_only else "F"})
        if not isinstance(body, dict) or not isinstance(body.get("race"), dict):
            raise EnvelopeError(f"race {race_id} answer has no race object")
        return body["race"]

    def _pages(
        self, path: str, event_id: int, modified_after: int | None, per_page: int, removed: bool
    ) -> Iterator[list[Any]]:
        for page in self._multi_pages(path, [event_id], modified_after, per_page, removed):
            yield page[int(event_id)]

    def _multi_pages(
        self, path: str, event_ids: list[int], modified_after: int | None, per_page: int, removed: bool
    ) -> Iterator[dict[int, list[Any]]]:
        """Pages of several events of one race in one call each (``event_id`` is a CSV list).

        Paging is per event on the provider's side: an event whose page came back short is
        complete and leaves the request; the others continue after the lowest last id among
        them, so records between are read twice (the upsert dedupes them) and none is skipped.
        """
        pending = sorted({int(e) for e in event_ids})
        after: int | None = None
        while pending:
            params: dict[str, Any] = {
                "event_id": ",".join(map(str, pending)),
                "sort": "registration_id ASC",
                "results_per_page": per_page,
            }
            if after is not None:
                params["after_registration_id"] = after
            if modified_after is not None:
                params["modified_after_timestamp"] = int(modified_after)
            body = self.session.get_json(path, params)
            several = len(pending) > 1
            page = {event_id: participants_of(body, event_id, removed=removed, several=several) for event_id in pending}
            yield page
            full = [event_id for event_id in pending if len(page[event_id]) >= per_page]
            if not full:
                return
            lasts = [_max_registration_id(page[event_id]) for event_id in full]
            if any(last is None for last in lasts) or (after is not None and min(lasts) <= after):
                raise EnvelopeError(f"{path}: a full page without a usable registration_id; cannot page on")
            pending, after = full, min(lasts)

    def participants_of_events(
        self, race_id: int, event_ids: list[int], *, modified_after: int | None = None,
        per_page: int = PARTICIPANTS_PER_PAGE, removed: bool = False,
    ) -> dict[int, list[Any]]:
        """Participants (or removed participants) of several events of one race, by event id."""
        path = f"race/{int(race_id)}/{'removed-participants' if removed else 'participants'}"
        out: dict[int, list[Any]] = {int(e): [] for e in event_ids}
        for page in self._multi_pages(path, list(out), modified_after, per_page, removed):
            for event_id, records in page.items():
                out[event_id].extend(records)
        return out

    def participants(
        self, race_id: int, event_id: int, *, modified_after: int | None = None, per_page: int = PARTICIPANTS_PER_PAGE
    ) -> list[Any]:
        """Every participant record of one event (modified at or after `modified_after` when given)."""
        out: list[Any] = []
        for page in self._pages(f"race/{int(race_id)}/participants", event_id, modified_after, per_page, False):
            out.extend(page)
        return out

    def removed_participants(
        self, race_id: int, event_id: int, *, modified_after: int | None = None, per_page: int = PARTICIPANTS_PER_PAGE
    ) -> list[Any]:
        """Every removed registration of one event (removed at or after `modified_after` when given)."""
        out: list[Any] = []
        for page in self._pages(f"race/{int(race_id)}/removed-participants", event_id, modified_after, per_page, True):
            out.extend(page)
        return out
