"""Haku API calls: events, participant summaries and registration details.

Pages are read until an EMPTY page, never until a short one: the server caps ``per_page``
without saying so (25 on staging), so a page shorter than what was asked proves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from paceline.http.session import ApiError, ApiSession

log = logging.getLogger(__name__)

DEFAULT_PER_PAGE = 25
MAX_PAGES = 100_000  # a server that ignored `page` would otherwise loop forever


def _items(body: Any, *keys: str) -> list[Any]:
    """A page as a list: bare arrays (what Haku sends) or a dict envelope (tolerated)."""
    if body is None:
        return []
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), list):
                return body[key]
    raise ApiError(f"unexpected page shape: {str(body)[:200]}")


class HakuClient:
    def __init__(self, session: ApiSession, per_page: int = DEFAULT_PER_PAGE) -> None:
        self.session = session
        self.per_page = per_page

    @property
    def calls(self) -> int:
        return self.session.stats.calls

    def _pages(
        self, path: str, params: dict[str, Any], keys: tuple[str, ...], per_page: int, start_page: int = 1
    ) -> Iterator[list[Any]]:
        previous: list[Any] | None = None
        for page in range(start_page, MAX_PAGES + 1):
            items = _items(self.session.get_json(path, {**params, "page": page, "per_page": per_page}), *keys)
            if not items:
                return
            if items == previous:
                raise ApiError(f"{path}: page {page} repeats page {page - 1}; the server ignores `page`")
            previous = items
            yield items
        raise ApiError(f"{path}: more than {MAX_PAGES} pages")

    def iter_events(self, show_inactive: bool = True) -> Iterator[Any]:
        params = {"sort_column": "event_date", "sort_direction": "desc", "show_inactive": str(show_inactive).lower()}
        for page in self._pages("/events", params, ("events", "data"), self.per_page):
            yield from page

    def participant_pages(
        self, event_id: str, per_page: int | None = None, start_page: int = 1
    ) -> Iterator[list[Any]]:
        """Summaries newest change first (updated_at desc), one list per page from `start_page`,
        until an empty page."""
        params = {"sort_column": "updated_at", "sort_direction": "desc"}
        yield from self._pages(
            f"/events/{quote(event_id, safe='')}/participants", params, ("participants", "data"),
            per_page or self.per_page, start_page,
        )

    def participant_page(self, event_id: str, page: int, per_page: int | None = None) -> list[Any]:
        params = {"sort_column": "updated_at", "sort_direction": "desc", "page": page, "per_page": per_page or self.per_page}
        return _items(self.session.get_json(f"/events/{quote(event_id, safe='')}/participants", params), "participants", "data")

    def registration(self, event_id: str, registration_number: str) -> Any:
        return self.session.get_json(
            f"/events/{quote(event_id, safe='')}/registrations/{quote(registration_number, safe='')}"
        )

    def estimate_participants(self, event_id: str, per_page: int = 100) -> int:
        """Count an event's registrations in O(log pages) calls: probe pages 1, 2, 4, ... then bisect.

        The first page tells the page size the server really uses (it may cap `per_page`); the
        count is exact while the event does not change during the probe, which is all an
        estimate needs. No detail call is made.
        """
        first = self.participant_page(event_id, 1, per_page)
        if not first:
            return 0
        size = len(first)
        lengths = {1: size}
        low, high = 1, 2  # low: known non-empty page; high: page to probe
        while True:
            items = self.participant_page(event_id, high, per_page)
            if not items:
                break
            lengths[high] = len(items)
            if len(items) < size:
                return (high - 1) * size + len(items)
            low, high = high, high * 2
        # the last non-empty page lies in [low, high)
        while high - low > 1:
            middle = (low + high) // 2
            items = self.participant_page(event_id, middle, per_page)
            if items:
                lengths[middle] = len(items)
                low = middle
            else:
                high = middle
        return (low - 1) * size + lengths[low]
