"""Local stand-in for the Haku partner API and its Cognito token endpoint (docs/providers.md, Haku).

What it reproduces, deliberately:

- ``POST /oauth2/token`` (same server): HTTP Basic ``client_id:client_secret`` (or the pair in
  the form body) with ``grant_type=client_credentials`` -> ``{"access_token", "expires_in",
  "token_type": "Bearer"}``; errors are HTTP 400 ``{"error": "invalid_client" | ...}``;
- API calls carry the token in ``Authorization``, raw or as ``Bearer <token>``; a missing,
  unknown or expired token gets 401 ``{"message": "Unauthorized"}``; tokens live
  ``knobs.token_lifetime_s`` seconds of :attr:`clock` and, when ``knobs.token_uses`` is set,
  answer that many API calls (tests expire tokens by count, not by waiting);
- API Gateway defaults: unknown route 403 ``{"message": "Missing Authentication Token"}``,
  quota (``knobs.per_hour``, default 500 per client, scaled by ``knobs.time_scale``) 429
  ``{"message": "Limit Exceeded"}``, rate (``knobs.per_second``) 429
  ``{"message": "Too Many Requests"}``, never a ``Retry-After`` header;
- bare JSON arrays, ``page`` + ``per_page`` with ``per_page`` silently capped at
  ``knobs.max_per_page`` (default 25), a page past the end is ``[]``, no totals;
- participants sorted by ``updated_at`` desc (ties by registration number), summaries
  without ids other than ``registration_number``; the detail object of section 2.7;
- cancellations are soft: ``is_cancelled`` + ``cancelled_at``, and ``updated_at`` moves;
- ``/events`` hides inactive (past) events unless ``show_inactive=true``.

Registrations are generated per event on first access from (seed, event id) and kept in a
small LRU cache; mutations live in per-event overlays.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from paceline.sandbox import registration_data as rd
from paceline.sandbox.base import Knobs, Request, Response, StandIn, Throttled

CACHE_EVENTS = 32
ADDED_NUMBER_START = 9_000_000
MUTABLE_FIELDS = ("email", "phone", "tag_number", "last_name", "shirt_size")
SHIRTS = [
    ("Unisex Small", "US"),
    ("Unisex Medium", "UM"),
    ("Unisex Large", "UL"),
    ("Women's Medium", "WM"),
    ("Unisex XL", "UXL"),
]
RELATIONSHIPS = ["Spouse", "Parent", "Friend", "Sibling", "Partner"]

# small scale: (owner index, name, city, state, day offset, registrations, categories)
SMALL_EVENTS: list[tuple[int, str, str, str, int, int, list[str]]] = [
    (0, "Lakeshore Marathon Weekend", "Chicago", "IL", 40, 1200, ["Marathon", "Half Marathon", "10K"]),
    (0, "Lakeshore Winter Dash", "Chicago", "IL", 100, 0, ["5K"]),
    (0, "Lakeshore Turkey Trot", "Evanston", "IL", -15, 35, ["5K", "10K"]),
    (1, "Pacific Coast 10K", "Seattle", "WA", 10, 60, ["10K"]),
    (1, "Harbor Lights 5K", "Portland", "OR", 1, 5, ["5K"]),
]
EVENT_KINDS = [
    "Turkey Trot",
    "Half Marathon",
    "10K",
    "Color Run",
    "Trail Race",
    "Marathon",
    "Triathlon",
    "Jingle Bell Run",
]
CATEGORY_SETS = [
    ["5K"],
    ["10K"],
    ["5K", "10K"],
    ["Marathon", "Half Marathon"],
    ["Half Marathon", "10K", "5K"],
    ["Sprint", "Olympic"],
]


def default_knobs(**overrides: Any) -> Knobs:
    """Haku defaults: 500 calls per (scaled) hour per client, pages capped at 25, 1 h tokens."""
    knobs = Knobs(per_hour=500, max_per_page=25, token_lifetime_s=3600.0)
    knobs.update(overrides)
    return knobs


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class HakuEventSpec:
    event_id: str
    index: int
    owner: str  # client_id
    name: str
    city: str
    state: str
    event_date: date
    categories: list[tuple[int, str]]
    count: int  # generated registrations, cancelled ones included
    cancelled: int  # generated cancelled registrations
    base_price: int
    created_at: float
    updated_at: float
    timestamp: float  # start of the event day (08:00 UTC), unix


@dataclass
class EventOverlay:
    modified: dict[str, dict[str, Any]] = field(default_factory=dict)  # registration_number -> detail
    added: list[dict[str, Any]] = field(default_factory=list)
    cancelled: set[str] = field(default_factory=set)  # cancelled by mutations


@dataclass
class EventBase:
    records: list[dict[str, Any]]
    by_number: dict[str, dict[str, Any]]


class HakuStandIn(StandIn):
    name = "haku"
    token_path = "/oauth2/token"

    def __init__(
        self, scale: str = "small", seed: int = 7, knobs: Knobs | None = None, today: date | None = None
    ) -> None:
        super().__init__(knobs or default_knobs(seed=seed))
        rd.check_scale(scale)
        self.scale = scale
        self.seed = seed
        self.anchor = rd.anchor_for(today)
        self.today = self.anchor.date()
        self._integrations = rd.integrations(scale, seed, "haku")
        self._secrets = {i.login: i.password for i in self._integrations}
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (client_id, expiry on self.clock)
        self._uses_left: dict[str, int] = {}  # token -> API calls it may still answer (knobs.token_uses)
        self.tokens_issued: dict[str, int] = {}
        self.unauthorized = 0
        self.events: dict[str, HakuEventSpec] = {}
        self._cache: OrderedDict[str, EventBase] = OrderedDict()
        self._overlays: dict[str, EventOverlay] = {}
        self._next_added = ADDED_NUMBER_START
        self._mutation_rng = rd.entity_rng(seed, "haku-mutations")
        self._local = threading.local()
        if scale == "small":
            self._plan_small()
        else:
            self._plan_seed()
        self.route("POST", self.token_path, self._post_token, "token")
        self.route("GET", "/events", self._get_events, "events")
        self.route("GET", "/events/{event_id}/participants", self._get_participants, "participants")
        self.route(
            "GET",
            "/events/{event_id}/registrations/{registration_number}",
            self._get_registration,
            "registration",
        )

    # -- world -----------------------------------------------------------------------------
    def _add_event(
        self,
        rng: Any,
        owner: str,
        name: str,
        city: str,
        state: str,
        offset: int,
        count: int,
        categories: list[str],
    ) -> None:
        index = len(self.events)
        event_id = f"{rd.entity_rng(self.seed, 'haku-event-id', index).getrandbits(80):020x}"
        day = self.today + timedelta(days=offset)
        timestamp = datetime(day.year, day.month, day.day, 8, 0, tzinfo=UTC).timestamp()
        created = self.anchor.timestamp() - rd.ri(rng, 120, 400) * 86400
        cancelled = 0 if count == 0 else int(count * rng.uniform(0.0, 0.05))
        self.events[event_id] = HakuEventSpec(
            event_id=event_id,
            index=index,
            owner=owner,
            name=name,
            city=city,
            state=state,
            event_date=day,
            categories=[(10_000 + index * 10 + k, c) for k, c in enumerate(categories)],
            count=count,
            cancelled=cancelled,
            base_price=rd.pick(rng, [30, 45, 60, 85, 120]),
            created_at=created,
            updated_at=created + rng.random() * (self.anchor.timestamp() - created),
            timestamp=timestamp,
        )

    def _plan_small(self) -> None:
        rng = rd.entity_rng(self.seed, "haku-plan-small")
        for owner, name, city, state, offset, count, categories in SMALL_EVENTS:
            self._add_event(
                rng, self._integrations[owner].login, name, city, state, offset, count, categories
            )

    def _plan_seed(self) -> None:
        rng = rd.entity_rng(self.seed, "haku-plan-seed")
        for integration in self._integrations:
            for _ in range(rd.ri(rng, 35, 65)):
                city, state, _ = rd.pick(rng, rd.CITIES)
                roll = rng.random()
                if roll < 0.05:
                    count = 0
                elif roll < 0.13:
                    count = rd.ri(rng, 1001, 3000)
                else:
                    count = int(5 * (80 ** rng.random()))  # 5..400, log-uniform
                name = f"{city} {rd.pick(rng, EVENT_KINDS)}"
                self._add_event(
                    rng,
                    integration.login,
                    name,
                    city,
                    state,
                    rd.ri(rng, -365, 300),
                    count,
                    rd.pick(rng, CATEGORY_SETS),
                )

    # -- generation ------------------------------------------------------------------------
    def _base(self, ev: HakuEventSpec) -> EventBase:
        with self.lock:
            base = self._cache.get(ev.event_id)
            if base is not None:
                self._cache.move_to_end(ev.event_id)
                return base
            base = self._generate(ev)
            self._cache[ev.event_id] = base
            while len(self._cache) > CACHE_EVENTS:
                self._cache.popitem(last=False)
            return base

    def _generate(self, ev: HakuEventSpec) -> EventBase:
        rng = rd.entity_rng(self.seed, "haku-event", ev.event_id)
        anchor_ts = self.anchor.timestamp()
        closes = min(ev.timestamp - 3600, anchor_ts)
        limit = min(anchor_ts, ev.timestamp + 14 * 86400)
        times = rd.registration_times(rng, ev.count, closes - 150 * 86400, closes)
        cancelled = set(rng.sample(range(ev.count), ev.cancelled))
        number = 100_000 + ev.index * 50_000
        records = []
        for i, created in enumerate(times):
            number += rd.pick(rng, (1, 1, 2))
            updated = created if rng.random() < 0.7 else created + rng.random() * (limit - created)
            cancelled_at = updated + rng.random() * (limit - updated) if i in cancelled else None
            records.append(
                self._registration(rng, f"R-{number:07d}", ev, created, cancelled_at or updated, cancelled_at)
            )
        # bulk imports: runs sharing one updated_at, so "updated_at desc" pages have ties
        i = 0
        while i < len(records):
            if rng.random() < 0.015:
                batch = [r for r in records[i : i + rd.ri(rng, 3, 10)] if not r["is_cancelled"]]
                if batch:
                    stamp = max(r["updated_at"] for r in batch)
                    for r in batch:
                        r["updated_at"] = stamp
                        r["participant"]["updated_at"] = stamp
                i += 10
            else:
                i += 1
        return EventBase(records, {r["registration_number"]: r for r in records})

    def _registration(
        self,
        rng: Any,
        number: str,
        ev: HakuEventSpec,
        created: float,
        updated: float,
        cancelled_at: float | None,
    ) -> dict[str, Any]:
        person = rd.make_person(rng, int(number[2:]), ev.event_date)
        category_id, category = rd.pick(rng, ev.categories)
        shirt, shirt_code = rd.pick(rng, SHIRTS)
        has_team = rng.random() < 0.12
        amount = ev.base_price + rd.pick(rng, [0, 0, 0, 5, 10, 25])
        tag = str(rd.ri(rng, 1, 30_000)) if rng.random() < 0.6 else None
        return {
            "registration_number": number,
            "created_at": iso(created),
            "updated_at": iso(updated),
            "cancelled_at": iso(cancelled_at),
            "is_cancelled": cancelled_at is not None,
            "transaction_amount": f"{amount:.2f}",
            "participant": {
                "first_name": person.first_name,
                "last_name": person.last_name,
                "middle_initial": person.middle_name,
                "email": person.email,
                "phone": person.phone,
                "dob": person.dob.isoformat() if person.dob else None,
                "gender": person.gender,
                "account_number": f"A{rd.ri(rng, 10**7, 10**8 - 1)}",
                "source_system_identifier": None,
                "created_at": iso(created),
                "updated_at": iso(updated),
                "additional_questions": [],
                "address": {
                    "line1": person.street,
                    "line2": None if rng.random() < 0.8 else f"Apt {rd.ri(rng, 1, 40)}",
                    "city": person.city,
                    "state": person.state,
                    "country": "US",
                    "zip_code": person.zipcode,
                },
            },
            "emergency_contact_name": f"{rd.pick(rng, rd.FIRST_NAMES)} {person.last_name}",
            "emergency_contact_phone_number": rd.phone(rng),
            "emergency_contact_relationship": rd.pick(rng, RELATIONSHIPS),
            "event_categories": [
                {
                    "id": category_id,
                    "name": category,
                    "master_name": category,
                    "is_active": True,
                    "participation_option": "In Person",
                    "corral_name": None if rng.random() < 0.7 else f"Corral {rd.pick(rng, 'ABCD')}",
                    "wave_name": None if rng.random() < 0.7 else f"Wave {rd.ri(rng, 1, 4)}",
                    "wave_code": None,
                    "tag_number": tag,
                    "chip_number": None if tag or rng.random() < 0.5 else f"{rd.ri(rng, 0, 0xFFFFFF):06X}",
                    "created_at": iso(created),
                    "updated_at": iso(created),
                }
            ],
            "shirt_size_name": shirt,
            "shirt_size_code": shirt_code,
            "current_pace": None if rng.random() < 0.6 else f"{rd.ri(rng, 6, 13)}:{rd.ri(rng, 0, 59):02d}",
            "strava_athlete_identification": None,
            "formatted_submitted_result_time": None,
            "fundraising_option": None,
            "fundraised_amount": "0.00",
            "fundraiser_goal": None,
            "wants_sms_communications": rng.random() < 0.4,
            "subscription_number": None,
            "team": {"name": f"{rd.pick(rng, rd.LAST_NAMES)} Run Club"} if has_team else None,
            "club": None,
            "entity": None,
            "partner": None,
            "products": [],
            "additional_questions": [],
            "device": rd.pick(rng, ["desktop", "mobile", "tablet"]),
            "browser": rd.pick(rng, ["Chrome", "Safari", "Firefox", "Edge"]),
            "browser_version": f"{rd.ri(rng, 100, 130)}.0",
            "os": rd.pick(rng, ["Mac OS X", "Windows", "iOS", "Android"]),
            "os_version": f"{rd.ri(rng, 10, 17)}.{rd.ri(rng, 0, 6)}",
        }

    def _summary(self, ev: HakuEventSpec, detail: dict[str, Any]) -> dict[str, Any]:
        person = detail["participant"]
        dob = date.fromisoformat(person["dob"]) if person["dob"] else None
        age = None
        if dob is not None:
            age = (
                ev.event_date.year
                - dob.year
                - ((ev.event_date.month, ev.event_date.day) < (dob.month, dob.day))
            )
        return {
            "registration_number": detail["registration_number"],
            "person_full_name": f"{person['first_name']} {person['last_name']}",
            "email": person["email"],
            "age": age,
            "gender": person["gender"],
            "team": detail["team"],
            "event_category_info": detail["event_categories"][0]["name"],
            "registered_at": detail["created_at"],
            "is_cancelled": detail["is_cancelled"],
            "transaction_amount": detail["transaction_amount"],
            "updated_at": detail["updated_at"],
        }

    # -- effective data ------------------------------------------------------------------------
    def _records(self, ev: HakuEventSpec) -> list[dict[str, Any]]:
        base = self._base(ev).records
        overlay = self._overlays.get(ev.event_id)
        if overlay is None:
            return base
        out = [overlay.modified.get(r["registration_number"], r) for r in base]
        out.extend(overlay.modified.get(r["registration_number"], r) for r in overlay.added)
        return out

    def _detail(self, ev: HakuEventSpec, number: str) -> dict[str, Any] | None:
        overlay = self._overlays.get(ev.event_id)
        if overlay is not None:
            if number in overlay.modified:
                return overlay.modified[number]
            for r in overlay.added:
                if r["registration_number"] == number:
                    return r
        return self._base(ev).by_number.get(number)

    def _counts(self, ev: HakuEventSpec) -> tuple[int, int]:
        overlay = self._overlays.get(ev.event_id)
        if overlay is None:
            return ev.count, ev.cancelled
        return ev.count + len(overlay.added), ev.cancelled + len(overlay.cancelled)

    # -- public helpers ----------------------------------------------------------------------
    def integrations(self, base_url: str | None = None) -> list[dict[str, Any]]:
        """The Haku credentials; extra.token_url is base_url + token_path when base_url is given."""
        token_url = base_url.rstrip("/") + self.token_path if base_url else None
        return [i.as_dict({"token_url": token_url}) for i in self._integrations]

    def events_for(self, login: str) -> list[dict[str, Any]]:
        with self.lock:
            out = []
            for ev in self.events.values():
                if ev.owner != login:
                    continue
                total, cancelled = self._counts(ev)
                out.append(
                    {
                        "event_id": ev.event_id,
                        "name": ev.name,
                        "event_date": ev.event_date.isoformat(),
                        "days_out": (ev.event_date - self.today).days,
                        "status": self._status(ev),
                        "registration_count": total,
                        "cancelled_count": cancelled,
                    }
                )
            return out

    def ground_truth(self, login: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(event_id, registration_number) -> registration detail (is_cancelled, updated_at included)."""
        with self.lock:
            truth = {}
            for ev in self.events.values():
                if ev.owner == login:
                    for r in self._records(ev):
                        truth[(ev.event_id, r["registration_number"])] = json.loads(json.dumps(r))
            return truth

    def _status(self, ev: HakuEventSpec) -> str:
        return "active" if ev.event_date >= self.today else "inactive"

    # -- provider hooks -----------------------------------------------------------------------
    def credential_of(self, request: Request) -> str | None:
        if request.path.rstrip("/") == self.token_path:
            client_id, _ = self._basic(request)
            return client_id if client_id in self._secrets else None
        return self._client(request, use=False)

    def check_quota(self, credential: str, endpoint: str) -> None:
        if endpoint == "token":  # Cognito's token endpoint is not behind the API's usage plan
            return
        mode = self.knobs.throttle_mode
        if mode == "off":
            return
        if mode == "always" or self.take("throttle_next"):
            self._local.reason = "rate"
            raise Throttled
        now = self.clock()
        if self.knobs.per_second and not self.windows.admit(
            f"{credential}|rate", [(self.knobs.per_second, 1.0)], now
        ):
            self._local.reason = "rate"
            raise Throttled
        if self.knobs.per_hour and not self.windows.admit(
            credential, [(self.knobs.per_hour, 3600.0 * self.knobs.time_scale)], now
        ):
            self._local.reason = "quota"
            raise Throttled

    def throttle_response(self, request: Request) -> Response:
        if getattr(self._local, "reason", "quota") == "quota":
            return Response(429, {"message": "Limit Exceeded"})
        return Response(429, {"message": "Too Many Requests"})

    def not_found(self, request: Request) -> Response:
        return Response(403, {"message": "Missing Authentication Token"})

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        with self.lock:
            out["tokens_issued"] = dict(self.tokens_issued)
            out["unauthorized"] = self.unauthorized
        return out

    def reset_stats(self) -> None:
        super().reset_stats()
        with self.lock:
            self.tokens_issued.clear()
            self.unauthorized = 0

    # -- auth ----------------------------------------------------------------------------------
    @staticmethod
    def _basic(request: Request) -> tuple[str | None, str | None]:
        raw = request.header("authorization") or ""
        if not raw.lower().startswith("basic "):
            return None, None
        try:
            decoded = base64.b64decode(raw[6:].strip()).decode()
        except (ValueError, UnicodeDecodeError):
            return None, None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret

    def _client(self, request: Request, use: bool = True) -> str | None:
        """The client a request's token belongs to (None: no valid token); `use` spends one of its
        knobs.token_uses (the accounting peek in credential_of does not)."""
        raw = (request.header("authorization") or "").strip()
        if not raw:
            return None
        value = raw[7:].strip() if raw.lower().startswith("bearer ") else raw
        with self.lock:
            entry = self._tokens.get(value)
            if entry is None:
                return None
            client_id, expires = entry
            uses_left = self._uses_left.get(value)
            if self.clock() >= expires or uses_left == 0:
                del self._tokens[value]
                self._uses_left.pop(value, None)
                return None
            if use and uses_left is not None:
                self._uses_left[value] = uses_left - 1
            return client_id

    def _unauthorized(self) -> Response:
        with self.lock:
            self.unauthorized += 1
        return Response(401, {"message": "Unauthorized"})

    def _post_token(self, request: Request) -> Response:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return Response(400, {"error": "invalid_request"})
        form = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        client_id, secret = self._basic(request)
        if client_id is None:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if not client_id or self._secrets.get(client_id) != secret:
            return Response(400, {"error": "invalid_client"})
        grant = form.get("grant_type")
        if grant is None:
            return Response(400, {"error": "invalid_request"})
        if grant != "client_credentials":
            return Response(400, {"error": "unsupported_grant_type"})
        lifetime = float(self.knobs.token_lifetime_s)
        now = time.time()
        claims = {
            "sub": client_id,
            "client_id": client_id,
            "token_use": "access",
            "scope": form.get("scope") or "haku/api",
            "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Sandbox",
            "iat": int(now),
            "exp": int(now + lifetime),
            "jti": str(uuid.uuid4()),
        }
        header = {"kid": "sandbox", "alg": "RS256"}
        access_token = ".".join(
            [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(os.urandom(64))]
        )
        with self.lock:
            if len(self._tokens) > 1000:  # long benchmark runs: forget tokens that can no longer be used
                now_mono = self.clock()
                self._tokens = {t: e for t, e in self._tokens.items() if e[1] > now_mono}
                self._uses_left = {t: n for t, n in self._uses_left.items() if t in self._tokens}
            self._tokens[access_token] = (client_id, self.clock() + lifetime)
            if self.knobs.token_uses is not None:
                self._uses_left[access_token] = max(0, int(self.knobs.token_uses))
            self.tokens_issued[client_id] = self.tokens_issued.get(client_id, 0) + 1
        return Response(
            200, {"access_token": access_token, "expires_in": int(lifetime), "token_type": "Bearer"}
        )

    # -- API -------------------------------------------------------------------------------
    def _paging(self, request: Request) -> tuple[int, int] | None:
        try:
            page = int(request.arg("page") or 1)
            per_page = int(request.arg("per_page") or 25)
        except ValueError:
            return None
        if page < 1 or per_page < 1:
            return None
        if self.knobs.max_per_page:
            per_page = min(per_page, int(self.knobs.max_per_page))  # silently, like the staging spec's 25
        return page, per_page

    def _get_events(self, request: Request) -> Response:
        client = self._client(request)
        if client is None:
            return self._unauthorized()
        paging = self._paging(request)
        if paging is None:
            return Response(400, {"message": "Invalid request parameters"})
        page, per_page = paging
        events = [ev for ev in self.events.values() if ev.owner == client]
        if (request.arg("show_inactive") or "false").lower() != "true":
            events = [ev for ev in events if self._status(ev) == "active"]
        column = request.arg("sort_column")
        descending = (request.arg("sort_direction") or "asc").lower() == "desc"
        if column in ("event_date", "name", "updated_at", "created_at"):
            attr = "event_date" if column == "event_date" else column
            events.sort(key=lambda ev: (getattr(ev, attr), ev.index), reverse=descending)
        chunk = events[(page - 1) * per_page : page * per_page]
        return Response(200, [self._event_obj(ev) for ev in chunk])

    def _event_obj(self, ev: HakuEventSpec) -> dict[str, Any]:
        opens = ev.event_date - timedelta(days=150)
        return {
            "id": ev.event_id,
            "name": ev.name,
            "description": f"Join us for the {ev.name}.",
            "event_date": ev.event_date.isoformat(),
            "event_end_date": None,
            "location_name": f"{ev.city} Waterfront Park",
            "location_city": ev.city,
            "location_state": ev.state,
            "event_type": "Running",
            "distance": ev.categories[0][1],
            "registration_limit": max(100, ev.count * 2),
            "registration_open_date": opens.isoformat(),
            "registration_close_date": (ev.event_date - timedelta(days=1)).isoformat(),
            "base_price": f"{ev.base_price:.2f}",
            "currency": "USD",
            "status": self._status(ev),
            "created_at": iso(ev.created_at),
            "updated_at": iso(ev.updated_at),
        }

    def _event_of(self, request: Request, client: str) -> HakuEventSpec | None:
        ev = self.events.get(request.path_params.get("event_id", ""))
        return ev if ev is not None and ev.owner == client else None

    def _get_participants(self, request: Request) -> Response:
        client = self._client(request)
        if client is None:
            return self._unauthorized()
        ev = self._event_of(request, client)
        if ev is None:
            return Response(404, {"message": "Event not found"})
        paging = self._paging(request)
        if paging is None:
            return Response(400, {"message": "Invalid request parameters"})
        page, per_page = paging
        column = request.arg("sort_column") or "updated_at"
        if column == "registered_at":
            column = "created_at"
        if column not in ("updated_at", "created_at"):
            column = "updated_at"
        descending = (request.arg("sort_direction") or "desc").lower() != "asc"
        with self.lock:
            records = sorted(self._records(ev), key=lambda r: r["registration_number"])
            records.sort(key=lambda r: r[column], reverse=descending)  # stable: ties stay by number
            chunk = records[(page - 1) * per_page : page * per_page]
            body = [self._maybe_malformed(self._summary(ev, r)) for r in chunk]
        return Response(200, body)

    def _get_registration(self, request: Request) -> Response:
        client = self._client(request)
        if client is None:
            return self._unauthorized()
        ev = self._event_of(request, client)
        if ev is None:
            return Response(404, {"message": "Event not found"})
        if self.knobs.fail_registration is not None and request.path_params["registration_number"] == str(
            self.knobs.fail_registration
        ):
            return Response(500, {"message": "Internal server error"})
        with self.lock:
            detail = self._detail(ev, request.path_params["registration_number"])
            if detail is None:
                return Response(404, {"message": "Registration not found"})
            return Response(200, self._maybe_malformed(detail))

    def _maybe_malformed(self, record: dict[str, Any]) -> dict[str, Any]:
        if not (self.knobs.malformed_rate and self.malformed()):
            return record
        out = dict(record)
        with self.lock:
            variant = self.rng.randrange(3)
        if variant == 0:
            out.pop("registration_number", None)
        elif variant == 1:
            out["updated_at"] = "abc"
        else:
            out["is_cancelled"] = "no"
        return out

    # -- mutations --------------------------------------------------------------------------
    def mutation_handlers(self) -> dict[str, Any]:
        return {
            "modify_participants": self._mutate_modify,
            "add_participants": self._mutate_add,
            "remove_participants": self._mutate_cancel,
            "cancel_participants": self._mutate_cancel,
            "expire_tokens": self._mutate_expire_tokens,
            "reset_data": self._mutate_reset,
            "add_event": self._mutate_add_event,
        }

    def _select_events(self, payload: dict[str, Any]) -> list[HakuEventSpec]:
        if payload.get("event_id") is not None:
            ev = self.events.get(str(payload["event_id"]))
            if ev is None:
                raise ValueError(f"unknown event_id {payload['event_id']}")
            return [ev]
        login = payload.get("client_id") or payload.get("login")
        if login is not None and login not in self._secrets:
            raise ValueError("unknown client_id")
        events = [ev for ev in self.events.values() if login is None or ev.owner == login]
        if payload.get("future_only"):
            events = [ev for ev in events if ev.event_date >= self.today]
        return events

    def _pick(self, payload: dict[str, Any], only_active: bool) -> list[tuple[HakuEventSpec, dict[str, Any]]]:
        candidates = [
            (ev, r)
            for ev in self._select_events(payload)
            for r in self._records(ev)
            if not (only_active and r["is_cancelled"])
        ]
        if "registration_numbers" in payload:
            wanted = {str(x) for x in payload["registration_numbers"]}
            return [c for c in candidates if c[1]["registration_number"] in wanted]
        if payload.get("fraction") is not None:
            fraction = float(payload["fraction"])
            k = round(len(candidates) * fraction)
            if fraction > 0 and candidates:
                k = max(k, 1)
        else:
            k = int(payload.get("n", 1))
        picked = self._mutation_rng.sample(candidates, min(max(k, 0), len(candidates)))
        return sorted(picked, key=lambda c: (c[0].index, c[1]["registration_number"]))

    @staticmethod
    def _stamp(payload: dict[str, Any]) -> int:
        at = payload.get("at")
        if at is None:
            return int(time.time())
        if isinstance(at, str) and not at.isdigit():
            return int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
        return int(at)

    @staticmethod
    def _copy(detail: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(detail))

    def _store(self, ev: HakuEventSpec, detail: dict[str, Any]) -> None:
        self._overlays.setdefault(ev.event_id, EventOverlay()).modified[detail["registration_number"]] = (
            detail
        )

    def _mutate_modify(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self._stamp(payload)
        rng = self._mutation_rng
        changed = []
        for ev, rec in self._pick(payload, only_active=False):
            column = payload.get("field") or rd.pick(rng, MUTABLE_FIELDS)
            new = self._copy(rec)
            person = new["participant"]
            if column == "email":
                person["email"] = f"updated.{rec['registration_number'].lower()}.{at % 100_000}@example.net"
            elif column == "phone":
                person["phone"] = rd.phone(rng)
            elif column == "tag_number":
                new["event_categories"][0]["tag_number"] = str(rd.ri(rng, 1, 30_000))
                new["event_categories"][0]["updated_at"] = iso(at)
            elif column == "last_name":
                person["last_name"] = rd.pick(
                    rng, [n for n in rd.LAST_NAMES + rd.UNICODE_LAST_NAMES if n != person["last_name"]]
                )
            elif column == "shirt_size":
                new["shirt_size_name"], new["shirt_size_code"] = rd.pick(rng, SHIRTS)
            else:
                raise ValueError(f"field must be one of {MUTABLE_FIELDS}")
            new["updated_at"] = person["updated_at"] = iso(at)
            self._store(ev, new)
            changed.append(
                {"event_id": ev.event_id, "registration_number": rec["registration_number"], "field": column}
            )
        return self._result("modify_participants", at, changed)

    def _mutate_add(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self._stamp(payload)
        events = self._select_events(payload)
        if not events:
            raise ValueError("no event matches")
        added = []
        for _ in range(int(payload.get("n", 1))):
            ev = self._mutation_rng.choice(events)
            self._next_added += self._mutation_rng.choice((1, 1, 2))
            number = f"R-{self._next_added:07d}"
            rng = rd.entity_rng(self.seed, "haku-added", number)
            self._overlays.setdefault(ev.event_id, EventOverlay()).added.append(
                self._registration(rng, number, ev, at, at, None)
            )
            added.append({"event_id": ev.event_id, "registration_number": number})
        return self._result("add_participants", at, added)

    def _mutate_cancel(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self._stamp(payload)
        cancelled = []
        for ev, rec in self._pick(payload, only_active=True):
            new = self._copy(rec)
            new["is_cancelled"] = True
            new["cancelled_at"] = new["updated_at"] = new["participant"]["updated_at"] = iso(at)
            self._store(ev, new)
            self._overlays[ev.event_id].cancelled.add(rec["registration_number"])
            cancelled.append({"event_id": ev.event_id, "registration_number": rec["registration_number"]})
        return self._result("remove_participants", at, cancelled)

    def _mutate_expire_tokens(self, payload: dict[str, Any]) -> dict[str, Any]:
        client = payload.get("client_id") or payload.get("login")
        doomed = [t for t, (c, _) in self._tokens.items() if client is None or c == client]
        for t in doomed:
            del self._tokens[t]
            self._uses_left.pop(t, None)
        return {"action": "expire_tokens", "count": len(doomed)}

    def _mutate_add_event(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A new event arrives: {"client_id", "name", "offset_days" (from today), "count"}."""
        owner = payload["client_id"]
        if owner not in {i.login for i in self._integrations}:
            raise ValueError("unknown client_id")
        with self.lock:
            self._add_event(self._mutation_rng, owner, str(payload.get("name") or "New Event"), "Springfield", "IL",
                            int(payload.get("offset_days", 10)), int(payload["count"]), CATEGORY_SETS[0])
            event = list(self.events.values())[-1]
        return {"action": "add_event", "event_id": event.event_id, "count": event.count}

    def _mutate_reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        dropped = len(self._overlays)
        self._overlays.clear()
        return {"action": "reset_data", "events_reset": dropped}

    @staticmethod
    def _result(action: str, at: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
        per_event: dict[str, int] = {}
        for row in rows:
            per_event[row["event_id"]] = per_event.get(row["event_id"], 0) + 1
        return {
            "action": action,
            "at": at,
            "updated_at": iso(at),
            "count": len(rows),
            "events": [{"event_id": e, "count": n} for e, n in per_event.items()],
            "participants": rows,
        }


def build(
    scale: str = "small", seed: int = 7, knobs: Knobs | None = None, today: date | None = None
) -> HakuStandIn:
    """A Haku stand-in with deterministic data; knobs=None uses default_knobs()."""
    return HakuStandIn(scale=scale, seed=seed, knobs=knobs, today=today)


__all__ = ["HakuStandIn", "build", "default_knobs"]
