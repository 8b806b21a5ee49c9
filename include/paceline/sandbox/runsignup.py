"""Local stand-in for the RunSignUp REST API (docs/providers.md, RunSignUp).

What it reproduces, deliberately:

- paths under ``/Rest`` matched case-insensitively (``/rest``, ``/REST``);
- ``format=json`` required, anything else answers error 10;
- errors as ``{"error": {"error_code": n, "error_msg": ...}}`` in **HTTP 200**: 6 (key
  authentication failed), 7 (race not accessible to the key), 14 (throttled), 201 (race not
  found), 3 (invalid parameters, e.g. ``results_per_page`` over 2,500), 223 (event not in race);
- ``/Rest/races``: ``page`` + ``results_per_page`` (max 1,000), no total; ``events=T`` lists only
  the race's "most current" events (its future ones, or else those of its last date);
  ``only_partner_races=T`` limits an authenticated call to the key's own races (without it,
  every public race is listed, including races the key cannot read participants of);
- ``/Rest/race/{id}``: all events including past ones unless ``future_events_only=T``;
- ``/Rest/race/{id}/participants``: the array envelope, one element per requested event, with
  an always-empty ``event.participants`` and the records in the top-level ``participants``;
  paging is per event; ``after_registration_id`` is ``>``; ``modified_after_timestamp`` is ``>=``;
- ``/Rest/race/{id}/removed-participants``: records inside ``event.participants`` with
  ``removed_reason``, ``new_registration_id``, string dates and ``last_modified_ts``;
- mixed formats: ``registration_date`` "M/D/YYYY H:MM" (Eastern), integer ``last_modified``,
  ``bib_num`` an int, a string or null, money as "$55.00" strings.

Data is generated per race on first access from (seed, race id) and kept in a small LRU
cache; mutations are kept apart as per-race overlays, so the "seed" scale (about 1,600 events
and 400,000 participants) builds instantly and stays small in memory.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from paceline.sandbox import registration_data as rd
from paceline.sandbox.base import Knobs, Request, Response, StandIn

EASTERN = ZoneInfo("America/New_York")
MAX_RACES_PER_PAGE = 1000
MAX_PARTICIPANTS_PER_PAGE = 2500
DEFAULT_RESULTS_PER_PAGE = 50
CACHE_RACES = 32  # generated races kept in memory; others are regenerated on demand
ADDED_ID_START = 500_000_000  # ids of participants added by mutations: above every generated id
REMOVED_REASONS = ("cleared", "removed", "transferred", "deferred")
MUTABLE_FIELDS = ("email", "bib_num", "phone", "last_name", "team_name")

ERROR_MESSAGES = {
    1: "Unknown method",
    3: "Invalid parameters",
    6: "Key authentication failed",
    7: "Permission Denied",
    9: "Invalid date",
    10: "Response format not supported",
    14: "Request throttled.",
    201: "Race not found.",
    223: "Event id not valid.",
}

# small scale: (owner index or None, race name, city, state, [(event, distance, day offset, count)])
SMALL_RACES: list[tuple[int | None, str, str, str, list[tuple[str, str, int, int]]]] = [
    (
        0,
        "Lakeshore Half Marathon",
        "Chicago",
        "IL",
        [("Half Marathon", "13.1M", 10, 2600), ("Lakeshore 5K", "5K", 10, 40)],
    ),
    (0, "Frosty Five Miler", "Madison", "WI", [("5 Mile", "5M", -30, 120)]),
    (0, "Midnight Mile", "Milwaukee", "WI", [("Mile", "1M", 1, 80), ("Kids Dash", "100M", 1, 0)]),
    (0, "Harvest 10K", "Des Moines", "IA", [("10K", "10K", 100, 25)]),
    (
        1,
        "Río Grande Trail Run",
        "Albuquerque",
        "NM",
        [("25K Trail", "25K", 40, 150), ("50K Ultra", "50K", 40, 60)],
    ),
    (1, "Spring Series", "Portland", "OR", [("Race 1", "8K", -20, 90), ("Race 2", "8K", 40, 30)]),
    (None, "Community Fun Run", "Boise", "ID", [("5K", "5K", 15, 30)]),
]
RACE_KINDS = [
    "Turkey Trot",
    "Half Marathon",
    "Marathon",
    "Fun Run",
    "Trail Challenge",
    "Classic",
    "Dash",
    "Relay",
    "Ultra",
]
RACE_ADJECTIVES = [
    "Annual",
    "Spring",
    "Autumn",
    "Midnight",
    "Sunrise",
    "Harbor",
    "River",
    "Founders",
    "Jingle",
    "Lakefront",
]
EVENT_CHOICES = [
    ("5K", "5K"),
    ("10K", "10K"),
    ("Half Marathon", "13.1M"),
    ("Marathon", "26.2M"),
    ("1 Mile Fun Run", "1M"),
    ("Kids Dash", "100M"),
    ("15K", "15K"),
]
START_TIMES = [(7, 0), (7, 30), (8, 0), (8, 30), (9, 0)]


def default_knobs(**overrides: Any) -> Knobs:
    """RunSignUp defaults: 1,000 calls per (scaled) hour per api_key; overrides win."""
    knobs = Knobs(per_hour=1000)
    knobs.update(overrides)
    return knobs


@dataclass
class EventSpec:
    event_id: int
    race_id: int
    name: str
    distance: str
    start: datetime  # wall time in the race's timezone, naive like the API's strings
    count: int  # generated active registrations
    removed_count: int  # generated removed registrations
    race_event_days_id: int
    fee: int
    timestamp: float  # the start as a unix timestamp


@dataclass
class RaceSpec:
    race_id: int
    index: int
    name: str
    owner: str | None  # api_key of the integration that may read participants
    city: str
    state: str
    timezone: str
    created: datetime
    last_modified: datetime
    events: list[EventSpec] = field(default_factory=list)

    @property
    def id_base(self) -> int:
        return 10_000_000 + self.index * 100_000


@dataclass
class RaceBase:
    """The generated registrations of one race (never mutated; mutations live in RaceOverlay)."""

    active: dict[int, list[dict[str, Any]]]
    removed: dict[int, list[dict[str, Any]]]


@dataclass
class RaceOverlay:
    modified: dict[int, dict[str, Any]] = field(default_factory=dict)  # registration_id -> current record
    removed: dict[int, dict[str, Any]] = field(default_factory=dict)  # registration_id -> removed record
    added: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # event_id -> new records


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _rsu_datetime(dt: datetime) -> str:
    """Race and event times: "3/20/2019 09:00" (zero-padded hour)."""
    return f"{dt.month}/{dt.day}/{dt.year} {dt.hour:02d}:{dt.minute:02d}"


def _rsu_date(day: date) -> str:
    return f"{day.month:02d}/{day.day:02d}/{day.year}"


def _registration_date(ts: float) -> str:
    """Participant registration_date: "9/7/2021 15:15" in Eastern time (hour not padded)."""
    dt = datetime.fromtimestamp(ts, EASTERN)
    return f"{dt.month}/{dt.day}/{dt.year} {dt.hour}:{dt.minute:02d}"


def _sql_like(ts: float) -> str:
    """Removed-participants dates: "2021-09-23 09:54:37" in Eastern time."""
    return datetime.fromtimestamp(ts, EASTERN).strftime("%Y-%m-%d %H:%M:%S")


def _parse_date(value: str, today: date) -> date | None:
    value = value.strip().lower()
    if value == "today":
        return today
    if value == "tomorrow":
        return today + timedelta(days=1)
    if value.isdigit():
        return datetime.fromtimestamp(int(value), EASTERN).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


class RunSignUpStandIn(StandIn):
    name = "runsignup"
    case_insensitive_paths = True
    api_path = "/Rest"

    def __init__(
        self, scale: str = "small", seed: int = 7, knobs: Knobs | None = None, today: date | None = None
    ) -> None:
        super().__init__(knobs or default_knobs(seed=seed))
        rd.check_scale(scale)
        self.scale = scale
        self.seed = seed
        self.anchor = rd.anchor_for(today)
        self.today = self.anchor.date()
        self._integrations = rd.integrations(scale, seed, "runsignup")
        self._secrets = {i.login: i.password for i in self._integrations}
        self._revoked: set[str] = set()
        self.races: dict[int, RaceSpec] = {}
        self.events: dict[int, EventSpec] = {}
        self._cache: OrderedDict[int, RaceBase] = OrderedDict()
        self._overlays: dict[int, RaceOverlay] = {}
        self._next_added_id = ADDED_ID_START
        self._mutation_rng = rd.entity_rng(seed, "rsu-mutations")
        self.error_codes: dict[int, int] = {}
        if scale == "small":
            self._plan_small()
        else:
            self._plan_seed()
        self.route("GET", "/Rest/races", self._get_races, "races")
        self.route("GET", "/Rest/race/{race_id}", self._get_race, "race")
        self.route("GET", "/Rest/race/{race_id}/participants", self._get_participants, "participants")
        self.route(
            "GET", "/Rest/race/{race_id}/removed-participants", self._get_removed, "removed_participants"
        )

    # -- world -----------------------------------------------------------------------------
    def _add_race(
        self,
        rng: Any,
        owner: str | None,
        name: str,
        city: str,
        state: str,
        events: list[tuple[str, str, int, int]],
    ) -> None:
        index = len(self.races)
        race_id = 100_000 + index * 13 + rd.ri(rng, 0, 12)
        tz = rd.TIMEZONES.get(state, "America/New_York")
        created = self.anchor - timedelta(days=rd.ri(rng, 200, 2500), minutes=rd.ri(rng, 0, 1439))
        last_modified = created + (self.anchor - created) * rng.random()
        spec = RaceSpec(race_id, index, name, owner, city, state, tz, created, last_modified)
        for event_name, distance, offset, count in events:
            hour, minute = rd.pick(rng, START_TIMES)
            day = self.today + timedelta(days=offset)
            start = datetime(day.year, day.month, day.day, hour, minute)
            removed = 0 if count == 0 else max(1, int(count * rng.uniform(0.01, 0.04)))
            event_id = 500_000 + len(self.events) * 7 + rd.ri(rng, 0, 6)
            ev = EventSpec(
                event_id=event_id,
                race_id=race_id,
                name=event_name,
                distance=distance,
                start=start,
                count=count,
                removed_count=removed,
                race_event_days_id=200_000 + len(self.events),
                fee=rd.pick(rng, [25, 35, 45, 55, 65, 85, 110]),
                timestamp=start.replace(tzinfo=ZoneInfo(tz)).timestamp(),
            )
            spec.events.append(ev)
            self.events[event_id] = ev
        self.races[race_id] = spec

    def _plan_small(self) -> None:
        rng = rd.entity_rng(self.seed, "rsu-plan-small")
        for owner, name, city, state, events in SMALL_RACES:
            login = self._integrations[owner].login if owner is not None else None
            self._add_race(rng, login, name, city, state, events)

    def _plan_seed(self) -> None:
        """About 1,600 events in 1-3-event races over 11 keys, 400,000 registrations, skewed sizes."""
        rng = rd.entity_rng(self.seed, "rsu-plan-seed")
        weights = [rng.uniform(0.3, 2.0) for _ in self._integrations]
        shapes: list[tuple[str | None, str, str, str, list[tuple[str, str, int]]]] = []
        n_events = 0
        while n_events < 1600:
            owner = None if rng.random() < 0.02 else rng.choices(self._integrations, weights)[0].login
            city, state, _ = rd.pick(rng, rd.CITIES)
            name = f"{city} {rd.pick(rng, RACE_ADJECTIVES)} {rd.pick(rng, RACE_KINDS)}"
            offset = rd.ri(rng, -400, 300)
            events = []
            for k, (event_name, distance) in enumerate(
                rng.sample(EVENT_CHOICES, rng.choices([1, 2, 3], [60, 25, 15])[0])
            ):
                same_day = rng.random() < 0.7
                events.append((event_name, distance, offset if same_day or k == 0 else offset + 7 * k))
            shapes.append((owner, name, city, state, events))
            n_events += len(events)
        counts = iter(rd.scaled_counts(rng, n_events, 400_000, cap=9000))
        for owner, name, city, state, events in shapes:
            self._add_race(rng, owner, name, city, state, [(e, d, o, next(counts)) for e, d, o in events])

    # -- generation ------------------------------------------------------------------------
    def _base(self, spec: RaceSpec) -> RaceBase:
        with self.lock:
            base = self._cache.get(spec.race_id)
            if base is not None:
                self._cache.move_to_end(spec.race_id)
                return base
            base = self._generate(spec)
            self._cache[spec.race_id] = base
            while len(self._cache) > CACHE_RACES:
                self._cache.popitem(last=False)
            return base

    def _generate(self, spec: RaceSpec) -> RaceBase:
        rng = rd.entity_rng(self.seed, "rsu-race", spec.race_id)
        anchor_ts = self.anchor.timestamp()
        slots: list[tuple[float, EventSpec, bool]] = []
        for ev in spec.events:
            closes = min(ev.timestamp - 3600, anchor_ts)
            times = rd.registration_times(rng, ev.count + ev.removed_count, closes - 180 * 86400, closes)
            flags = [False] * ev.count + [True] * ev.removed_count
            rng.shuffle(flags)
            slots.extend((t, ev, flag) for t, flag in zip(times, flags, strict=True))
        slots.sort(key=lambda slot: slot[0])
        registration_id = spec.id_base
        records: list[tuple[dict[str, Any], EventSpec, bool, float]] = []
        bibs: dict[int, int] = {}
        for t, ev, is_removed in slots:
            registration_id += rd.pick(rng, (1, 1, 1, 1, 2, 3))
            limit = min(anchor_ts, ev.timestamp + 14 * 86400)
            modified = t if rng.random() < 0.7 else t + rng.random() * (limit - t)
            bibs[ev.event_id] = bibs.get(ev.event_id, 99) + 1
            rec = self._participant(rng, registration_id, ev, t, modified, bibs[ev.event_id])
            records.append((rec, ev, is_removed, limit))
        self._import_batches(rng, records)
        base = RaceBase({ev.event_id: [] for ev in spec.events}, {ev.event_id: [] for ev in spec.events})
        later_active = [rec for rec, _, is_removed, _ in records if not is_removed]
        later_ids = [rec["registration_id"] for rec in later_active]
        for rec, ev, is_removed, limit in records:
            if not is_removed:
                base.active[ev.event_id].append(rec)
                continue
            reason = rng.choices(REMOVED_REASONS, [15, 40, 30, 15])[0]
            new_id = None
            if reason == "transferred":
                # the registration it became: a later one, preferably in another event
                pos = bisect.bisect_right(later_ids, rec["registration_id"])
                candidates = [r for r in later_active[pos:] if r["event_id"] != ev.event_id] or later_active[
                    pos:
                ]
                if candidates:
                    new_id = rd.pick(rng, candidates)["registration_id"]
                else:
                    reason = "removed"
            removed_at = rec["last_modified"] + rng.random() * max(0.0, limit - rec["last_modified"])
            base.removed[ev.event_id].append(self._removed_record(rec, reason, int(removed_at), new_id))
        return base

    def _import_batches(self, rng: Any, records: list[tuple[dict[str, Any], EventSpec, bool, float]]) -> None:
        """Bulk imports: runs of records sharing one last_modified, so cursors land on ties."""
        i = 0
        while i < len(records):
            if rng.random() < 0.012:
                batch = records[i : i + rd.ri(rng, 3, 10)]
                stamp = max(rec["last_modified"] for rec, *_ in batch) + rd.ri(rng, 0, 3600)
                if stamp <= min(limit for *_, limit in batch):
                    for rec, *_ in batch:
                        rec["last_modified"] = stamp
                        rec["imported"] = "T"
                i += len(batch)
            else:
                i += 1

    def _participant(
        self, rng: Any, registration_id: int, ev: EventSpec, registered: float, modified: float, bib_seq: int
    ) -> dict[str, Any]:
        person = rd.make_person(rng, registration_id, ev.start.date())
        past = ev.start.date() < self.today
        roll = rng.random()
        if roll < (0.15 if past else 0.55):
            bib: int | str | None = None
        elif roll < 0.8:
            bib = bib_seq
        else:
            bib = rd.pick(rng, [str(bib_seq), f"H{bib_seq}", f"{bib_seq:05d}"])
        has_team = rng.random() < 0.1
        fee = float(ev.fee)
        processing = round(fee * 0.05, 2)
        return {
            "user": {
                "user_id": rd.ri(rng, 10_000_000, 199_999_999),
                "first_name": person.first_name,
                "middle_name": person.middle_name,
                "last_name": person.last_name,
                "email": person.email,
                "address": {
                    "street": person.street,
                    "city": person.city,
                    "state": person.state,
                    "zipcode": person.zipcode,
                    "country_code": "US",
                },
                "dob": person.dob.isoformat() if person.dob else None,
                "gender": person.gender,
                "phone": person.phone,
                "profile_image_url": None,
            },
            "registration_id": registration_id,
            "event_id": ev.event_id,
            "rsu_transaction_id": rd.ri(rng, 100_000, 9_999_999),
            "transaction_id": f"ay_{rd.ri(rng, 10**14, 10**15 - 1)}C_0",
            "bib_num": bib,
            "chip_num": None if rng.random() < 0.9 else f"{rd.ri(rng, 0, 0xFFFFFF):06X}",
            "age": person.age_on(ev.start.date()),
            "registration_date": _registration_date(registered),
            "team_id": rd.ri(rng, 1000, 99999) if has_team else None,
            "team_name": f"{rd.pick(rng, rd.LAST_NAMES)} Striders" if has_team else None,
            "team_type_id": 1 if has_team else None,
            "team_type": "Running Club" if has_team else None,
            "team_gender": rd.pick(rng, ["M", "F", "Mixed"]) if has_team else None,
            "team_bib_num": None,
            "last_modified": int(modified),
            "imported": "F",
            "race_fee": _money(fee),
            "offline_payment_amount": "$0.00",
            "processing_fee": _money(processing),
            "processing_fee_paid_by_user": _money(processing),
            "processing_fee_paid_by_race": "$0.00",
            "partner_fee": "$0.00",
            "affiliate_profit": "$0.00",
            "extra_fees": "$0.00",
            "amount_paid": _money(fee + processing),
            "usatf_discount_amount_in_cents": "$0.00",
            "usatf_discount_additional_field": None,
            "giveaway": rd.pick(rng, ["S", "M", "L", "XL"]),
            "giveaway_option_id": rd.ri(rng, 1, 4),
            "question_responses": [
                {
                    "question_id": "1",
                    "question_text": "Is this your first road race?",
                    "response": rd.pick(rng, ["Yes", "No"]),
                }
            ],
        }

    @staticmethod
    def _removed_record(
        rec: dict[str, Any], reason: str, removed_at: int, new_id: int | None
    ) -> dict[str, Any]:
        out = {k: v for k, v in rec.items() if k != "question_responses"}
        # the removed endpoint reports its dates in "YYYY-MM-DD HH:MM:SS", unlike participants
        registered = datetime.strptime(rec["registration_date"], "%m/%d/%Y %H:%M").replace(tzinfo=EASTERN)
        out["registration_date"] = registered.strftime("%Y-%m-%d %H:%M:%S")
        out["last_modified"] = _sql_like(removed_at)
        out["last_modified_ts"] = removed_at
        out["removed_reason"] = reason
        out["new_registration_id"] = new_id
        return out

    # -- effective data (base + overlay) ------------------------------------------------------
    def _active(self, spec: RaceSpec, event_id: int) -> list[dict[str, Any]]:
        records = self._base(spec).active[event_id]
        overlay = self._overlays.get(spec.race_id)
        if overlay is None:
            return records
        out = [
            overlay.modified.get(r["registration_id"], r)
            for r in records
            if r["registration_id"] not in overlay.removed
        ]
        out.extend(
            overlay.modified.get(r["registration_id"], r)
            for r in overlay.added.get(event_id, [])
            if r["registration_id"] not in overlay.removed
        )
        return out

    def _removed(self, spec: RaceSpec, event_id: int) -> list[dict[str, Any]]:
        records = self._base(spec).removed[event_id]
        overlay = self._overlays.get(spec.race_id)
        if overlay is None:
            return records
        extra = [r for r in overlay.removed.values() if r["event_id"] == event_id]
        return sorted(records + extra, key=lambda r: r["registration_id"])

    def _active_count(self, ev: EventSpec) -> int:
        overlay = self._overlays.get(ev.race_id)
        if overlay is None:
            return ev.count
        gone = sum(1 for r in overlay.removed.values() if r["event_id"] == ev.event_id)
        return ev.count + len(overlay.added.get(ev.event_id, [])) - gone

    # -- public helpers for tests and the sandbox manager ----------------------------------------
    def integrations(self, base_url: str | None = None) -> list[dict[str, Any]]:
        """The RunSignUp keys (login = api_key, password = api_secret); the conn host is base_url + api_path.

        base_url is accepted for symmetry with the Haku stand-in; RunSignUp needs no extra.
        """
        return [i.as_dict({}) for i in self._integrations]

    def races_of(self, login: str) -> list[RaceSpec]:
        return [spec for spec in self.races.values() if spec.owner == login]

    def events_for(self, login: str) -> list[dict[str, Any]]:
        """The events a key can read, with their current active and removed counts."""
        with self.lock:
            out = []
            for spec in self.races_of(login):
                overlay = self._overlays.get(spec.race_id)
                for ev in spec.events:
                    extra_removed = (
                        sum(1 for r in overlay.removed.values() if r["event_id"] == ev.event_id)
                        if overlay
                        else 0
                    )
                    out.append(
                        {
                            "race_id": spec.race_id,
                            "race_name": spec.name,
                            "event_id": ev.event_id,
                            "event_name": ev.name,
                            "start_time": ev.start.isoformat(),
                            "start_date": ev.start.date().isoformat(),
                            "days_out": (ev.start.date() - self.today).days,
                            "participant_count": self._active_count(ev),
                            "removed_count": ev.removed_count + extra_removed,
                        }
                    )
            return out

    def ground_truth(self, login: str) -> dict[tuple[int, int, int], dict[str, Any]]:
        """(race_id, event_id, registration_id) -> the record as served (removed ones carry removed_reason)."""
        with self.lock:
            truth: dict[tuple[int, int, int], dict[str, Any]] = {}
            for spec in self.races_of(login):
                for ev in spec.events:
                    for rec in self._active(spec, ev.event_id):
                        truth[(spec.race_id, ev.event_id, rec["registration_id"])] = self._plain(rec)
                    for rec in self._removed(spec, ev.event_id):
                        truth[(spec.race_id, ev.event_id, rec["registration_id"])] = dict(rec)
            return truth

    @staticmethod
    def _plain(rec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if k != "question_responses"}

    # -- provider hooks -----------------------------------------------------------------------
    def credential_of(self, request: Request) -> str | None:
        return request.arg("api_key") or request.arg("rsu_api_key") or request.arg("tmp_key")

    def throttle_response(self, request: Request) -> Response:
        return self._error(14)

    def not_found(self, request: Request) -> Response:
        if request.path.lower().startswith("/rest/"):
            return self._error(1)
        return Response(404, "Not Found")

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        with self.lock:
            out["error_codes"] = {str(code): n for code, n in self.error_codes.items()}
        return out

    def reset_stats(self) -> None:
        super().reset_stats()
        with self.lock:
            self.error_codes.clear()

    def _error(self, code: int) -> Response:
        with self.lock:
            self.error_codes[code] = self.error_codes.get(code, 0) + 1
        return Response(200, {"error": {"error_code": code, "error_msg": ERROR_MESSAGES[code]}})

    def _preamble(self, request: Request) -> tuple[str | None, Response | None]:
        """Checks shared by every method: format=json, then the key pair if one is sent."""
        if (request.arg("format") or "xml").lower() != "json":
            return None, self._error(10)
        key, secret = request.arg("api_key"), request.arg("api_secret")
        if key is None and secret is None and request.arg("rsu_api_key"):
            key, secret = request.arg("rsu_api_key"), request.header("x-rsu-api-secret")
        if key is None and secret is None:
            if request.arg("tmp_key") or request.arg("tmp_secret"):
                return None, self._error(6)  # temporary keys come from a login this stand-in lacks
            return None, None
        if not key or not secret or self._secrets.get(key) != secret or key in self._revoked:
            return None, self._error(6)
        return key, None

    def _race_of(self, request: Request) -> RaceSpec | None:
        raw = request.path_params.get("race_id", "")
        return self.races.get(int(raw)) if raw.isdigit() else None

    # -- GET /Rest/races ----------------------------------------------------------------------
    def _get_races(self, request: Request) -> Response:
        login, failure = self._preamble(request)
        if failure:
            return failure
        try:
            page = int(request.arg("page") or 1)
            per_page = int(request.arg("results_per_page") or DEFAULT_RESULTS_PER_PAGE)
        except ValueError:
            return self._error(3)
        if page < 1 or not 1 <= per_page <= MAX_RACES_PER_PAGE:
            return self._error(3)
        races = list(self.races.values())
        if login and request.arg("only_partner_races", "F").upper() == "T":
            races = [r for r in races if r.owner == login]
        start = end = None
        if request.arg("start_date"):
            start = _parse_date(request.arg("start_date") or "", self.today)
            if start is None:
                return self._error(9)
        if request.arg("end_date"):
            end = _parse_date(request.arg("end_date") or "", self.today)
            if end is None:
                return self._error(9)
        if start or end:
            strict = request.arg("search_start_date_only", "F").upper() == "T"
            races = [r for r in races if self._in_window(r, start, end, strict)]
        sort = (request.arg("sort") or "").lower()
        if sort.startswith("name"):
            races.sort(key=lambda r: r.name, reverse=sort.endswith("desc"))
        elif sort.startswith("date"):
            races.sort(key=lambda r: self._sort_date(r), reverse=sort.endswith("desc"))
        chunk = races[(page - 1) * per_page : page * per_page]
        with_events = request.arg("events", "F").upper() == "T"
        listed = [{"race": self._race_obj(r, self._current_events(r) if with_events else None)} for r in chunk]
        if self.knobs.malformed_listing and page == 1 and listed:
            # what a listing can hold that no parser expects; the rest of the listing must still be used
            first = listed[0]["race"]
            if isinstance(first.get("events"), list):
                first["events"] = [None, *first["events"]]
            listed += [{"race": None}, {"race": {**first, "race_id": "not-a-number", "events": []}}]
        return Response(200, {"races": listed})

    def _dates(self, spec: RaceSpec) -> tuple[date | None, date | None]:
        days = sorted({ev.start.date() for ev in spec.events})
        upcoming = [d for d in days if d >= self.today]
        past = [d for d in days if d < self.today]
        return (upcoming[0] if upcoming else None), (past[-1] if past else None)

    def _sort_date(self, spec: RaceSpec) -> date:
        next_date, last_date = self._dates(spec)
        return next_date or last_date or date.max

    def _in_window(self, spec: RaceSpec, start: date | None, end: date | None, strict: bool) -> bool:
        if strict:  # search_start_date_only=T: the next date itself must be in the window
            next_date, _ = self._dates(spec)
            return (
                next_date is not None
                and (start is None or next_date >= start)
                and (end is None or next_date <= end)
            )
        # default: any overlap of the race's span with the window, which lets races whose
        # next_date is outside the window (or null) through, as a real client reported
        days = [ev.start.date() for ev in spec.events]
        return (start is None or max(days) >= start) and (end is None or min(days) <= end)

    def _current_events(self, spec: RaceSpec) -> list[EventSpec]:
        upcoming = [ev for ev in spec.events if ev.start.date() >= self.today]
        if upcoming:
            return upcoming
        last = max(ev.start.date() for ev in spec.events)
        return [ev for ev in spec.events if ev.start.date() == last]

    def _race_obj(self, spec: RaceSpec, events: list[EventSpec] | None) -> dict[str, Any]:
        next_date, last_date = self._dates(spec)
        slug = "".join(ch for ch in spec.name.title() if ch.isalnum())
        obj: dict[str, Any] = {
            "race_id": spec.race_id,
            "name": spec.name,
            "last_date": _rsu_date(last_date) if last_date else None,
            "last_end_date": _rsu_date(last_date) if last_date else None,
            "next_date": _rsu_date(next_date) if next_date else None,
            "next_end_date": _rsu_date(next_date) if next_date else None,
            "is_draft_race": "F",
            "is_private_race": "F",
            "is_registration_open": "T" if next_date else "F",
            "created": _rsu_datetime(spec.created.astimezone(EASTERN)),
            "last_modified": _rsu_datetime(spec.last_modified.astimezone(EASTERN)),
            "description": f"<p>Welcome to the {spec.name}!</p>",
            "url": f"https://runsignup.com/Race/{spec.state}/{spec.city.replace(' ', '')}/{slug}",
            "external_race_url": None,
            "external_results_url": None,
            "fb_page_id": None,
            "fb_event_id": None,
            "address": {
                "street": "1 Start Line Way",
                "city": spec.city,
                "state": spec.state,
                "zipcode": None,
                "country_code": "US",
            },
            "timezone": spec.timezone,
            "logo_url": None,
            "real_time_notifications_enabled": "F",
            "can_use_registration_api": "T",
        }
        if events is not None:
            obj["events"] = [self._event_obj(ev) for ev in events]
        return obj

    def _event_obj(self, ev: EventSpec) -> dict[str, Any]:
        opens = ev.start - timedelta(days=180)
        closes = ev.start - timedelta(hours=1)
        return {
            "event_id": ev.event_id,
            "race_event_days_id": ev.race_event_days_id,
            "name": ev.name,
            "details": None,
            "start_time": _rsu_datetime(ev.start),
            "end_time": None,
            "age_calc_base_date": None,
            "registration_opens": _rsu_datetime(opens),
            "event_type": "running_race",
            "distance": ev.distance,
            "volunteer": "F",
            "require_dob": "T",
            "require_phone": "F",
            "registration_periods": [
                {
                    "registration_opens": _rsu_datetime(opens),
                    "registration_closes": _rsu_datetime(closes),
                    "race_fee": _money(ev.fee),
                    "processing_fee": _money(round(ev.fee * 0.05, 2)),
                }
            ],
            "sub_event_ids": [],
            "giveaway": None,
        }

    # -- GET /Rest/race/{race_id} ----------------------------------------------------------------
    def _get_race(self, request: Request) -> Response:
        _, failure = self._preamble(request)
        if failure:
            return failure
        spec = self._race_of(request)
        if spec is None:
            return self._error(201)
        events = spec.events
        if request.arg("future_events_only", "F").upper() == "T":
            events = [ev for ev in events if ev.start.date() >= self.today]
        return Response(200, {"race": self._race_obj(spec, events)})

    # -- GET /Rest/race/{race_id}/participants and /removed-participants -------------------------
    def _get_participants(self, request: Request) -> Response:
        return self._registrations(request, removed=False)

    def _get_removed(self, request: Request) -> Response:
        return self._registrations(request, removed=True)

    def _registrations(self, request: Request, removed: bool) -> Response:
        login, failure = self._preamble(request)
        if failure:
            return failure
        spec = self._race_of(request)
        if spec is None:
            return self._error(201)
        if login is None or spec.owner != login:
            return self._error(7)
        try:
            page = int(request.arg("page") or 1)
            per_page = int(request.arg("results_per_page") or DEFAULT_RESULTS_PER_PAGE)
            after = (
                int(request.arg("after_registration_id")) if request.arg("after_registration_id") else None
            )
            since = (
                int(request.arg("modified_after_timestamp"))
                if request.arg("modified_after_timestamp")
                else None
            )
            wanted = [int(x) for x in (request.arg("event_id") or "").split(",") if x.strip()]
        except ValueError:
            return self._error(3)
        if page < 1 or not 1 <= per_page <= MAX_PARTICIPANTS_PER_PAGE:
            return self._error(3)
        sort_key = self._sort_key(request.arg("sort"), removed)
        if sort_key is None:
            return self._error(3)
        key, descending = sort_key
        race_events = {ev.event_id for ev in spec.events}
        if any(e not in race_events for e in wanted):
            return self._error(223)
        event_ids = list(dict.fromkeys(wanted)) or [ev.event_id for ev in spec.events]
        stamp = "last_modified_ts" if removed else "last_modified"
        include_questions = request.arg("include_questions", "F").upper() == "T"
        body = []
        with self.lock:
            for event_id in event_ids:
                records = self._removed(spec, event_id) if removed else self._active(spec, event_id)
                if after is not None:
                    records = [r for r in records if r["registration_id"] > after]
                if since is not None:
                    records = [r for r in records if r[stamp] >= since]
                if key != "registration_id" or descending:
                    records = sorted(records, key=key_function(key), reverse=descending)
                chunk = records[(page - 1) * per_page : page * per_page]
                served = [self._serve_record(r, include_questions, removed) for r in chunk]
                if removed:
                    body.append({"event": {"event_id": event_id, "participants": served}})
                else:
                    body.append({"event": {"event_id": event_id, "participants": []}, "participants": served})
        return Response(200, body)

    @staticmethod
    def _sort_key(raw: str | None, removed: bool) -> tuple[str, bool] | None:
        if not raw:
            return "registration_id", False
        parts = raw.replace("+", " ").split()
        column = parts[0].lower()
        direction = parts[1].upper() if len(parts) > 1 else "ASC"
        if column == "last_modified" and removed:
            column = "last_modified_ts"
        if column not in {"registration_id", "last_modified", "last_modified_ts", "last_name", "first_name"}:
            return None
        if direction not in {"ASC", "DESC"}:
            return None
        return column, direction == "DESC"

    def _serve_record(self, rec: dict[str, Any], include_questions: bool, removed: bool) -> dict[str, Any]:
        out = rec if include_questions or removed else self._plain(rec)
        if self.knobs.malformed_rate and self.malformed():
            out = dict(out)
            with self.lock:
                variant = self.rng.randrange(3)
            if variant == 0:
                out.pop("registration_id", None)
            elif variant == 1:
                out["last_modified_ts" if removed else "last_modified"] = "abc"
            else:
                out["user"] = None
        return out

    # -- mutations --------------------------------------------------------------------------
    def mutation_handlers(self) -> dict[str, Any]:
        return {
            "modify_participants": self._mutate_modify,
            "add_participants": self._mutate_add,
            "remove_participants": self._mutate_remove,
            "revoke_credential": self._mutate_revoke,
            "restore_credential": self._mutate_restore,
            "reset_data": self._mutate_reset,
        }

    def _select_events(self, payload: dict[str, Any]) -> list[EventSpec]:
        if payload.get("event_id") is not None:
            ev = self.events.get(int(payload["event_id"]))
            if ev is None:
                raise ValueError(f"unknown event_id {payload['event_id']}")
            return [ev]
        if payload.get("race_id") is not None:
            spec = self.races.get(int(payload["race_id"]))
            if spec is None:
                raise ValueError(f"unknown race_id {payload['race_id']}")
            return list(spec.events)
        login = payload.get("login") or payload.get("api_key")
        if login is not None:
            if login not in self._secrets:
                raise ValueError("unknown login")
            events = [ev for spec in self.races_of(login) for ev in spec.events]
        else:
            events = list(self.events.values())
        if payload.get("future_only"):
            events = [ev for ev in events if ev.start.date() >= self.today]
        return events

    def _pick(self, payload: dict[str, Any], candidates: list[Any]) -> list[Any]:
        if "registration_ids" in payload:
            wanted = {int(x) for x in payload["registration_ids"]}
            return [c for c in candidates if c[2]["registration_id"] in wanted]
        if payload.get("fraction") is not None:
            k = round(len(candidates) * float(payload["fraction"]))
            if float(payload["fraction"]) > 0 and candidates:
                k = max(k, 1)
        else:
            k = int(payload.get("n", 1))
        picked = self._mutation_rng.sample(candidates, min(max(k, 0), len(candidates)))
        return sorted(picked, key=lambda c: (c[0].race_id, c[2]["registration_id"]))

    def _candidates(self, payload: dict[str, Any]) -> list[tuple[RaceSpec, EventSpec, dict[str, Any]]]:
        out = []
        for ev in self._select_events(payload):
            spec = self.races[ev.race_id]
            out.extend((spec, ev, rec) for rec in self._active(spec, ev.event_id))
        return out

    def _overlay(self, race_id: int) -> RaceOverlay:
        return self._overlays.setdefault(race_id, RaceOverlay())

    def _new_registration_id(self) -> int:
        self._next_added_id += self._mutation_rng.choice((1, 1, 2, 3))
        return self._next_added_id

    @staticmethod
    def _stamp(payload: dict[str, Any]) -> int:
        return int(payload["at"]) if payload.get("at") is not None else int(time.time())

    def _mutate_modify(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self._stamp(payload)
        rng = self._mutation_rng
        changed = []
        for spec, ev, rec in self._pick(payload, self._candidates(payload)):
            column = payload.get("field") or rd.pick(rng, MUTABLE_FIELDS)
            new = {
                **rec,
                "user": {**rec["user"], "address": dict(rec["user"]["address"])},
                "last_modified": at,
            }
            if column == "email":
                new["user"]["email"] = f"updated.{rec['registration_id']}.{at % 100_000}@example.net"
            elif column == "bib_num":
                new["bib_num"] = rd.pick(rng, [rd.ri(rng, 1, 99_999), str(rd.ri(rng, 1, 99_999))])
            elif column == "phone":
                new["user"]["phone"] = rd.phone(rng)
            elif column == "last_name":
                names = [n for n in rd.LAST_NAMES + rd.UNICODE_LAST_NAMES if n != rec["user"]["last_name"]]
                new["user"]["last_name"] = rd.pick(rng, names)
            elif column == "team_name":
                new["team_name"] = f"{rd.pick(rng, rd.LAST_NAMES)} Harriers"
            else:
                raise ValueError(f"field must be one of {MUTABLE_FIELDS}")
            self._overlay(spec.race_id).modified[rec["registration_id"]] = new
            changed.append(
                {
                    "race_id": spec.race_id,
                    "event_id": ev.event_id,
                    "registration_id": rec["registration_id"],
                    "field": column,
                }
            )
        return self._summary("modify_participants", at, changed)

    def _new_participant(
        self, spec: RaceSpec, ev: EventSpec, at: int, like: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        registration_id = self._new_registration_id()
        rng = rd.entity_rng(self.seed, "rsu-added", registration_id)
        rec = self._participant(rng, registration_id, ev, at, at, 0)
        rec["bib_num"] = None
        if like is not None:  # a transfer keeps the person
            rec["user"] = like["user"]
        self._overlay(spec.race_id).added.setdefault(ev.event_id, []).append(rec)
        return rec

    def _mutate_add(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self._stamp(payload)
        events = self._select_events(payload)
        if not events:
            raise ValueError("no event matches")
        added = []
        for _ in range(int(payload.get("n", 1))):
            ev = self._mutation_rng.choice(events)
            spec = self.races[ev.race_id]
            rec = self._new_participant(spec, ev, at)
            added.append(
                {"race_id": spec.race_id, "event_id": ev.event_id, "registration_id": rec["registration_id"]}
            )
        return self._summary("add_participants", at, added)

    def _mutate_remove(self, payload: dict[str, Any]) -> dict[str, Any]:
        at = self._stamp(payload)
        reason_wanted = payload.get("reason")
        if reason_wanted is not None and reason_wanted not in REMOVED_REASONS:
            raise ValueError(f"reason must be one of {REMOVED_REASONS}")
        removed = []
        for spec, ev, rec in self._pick(payload, self._candidates(payload)):
            reason = reason_wanted or self._mutation_rng.choice(REMOVED_REASONS)
            new_id = None
            if reason == "transferred":
                others = [e for e in spec.events if e.event_id != ev.event_id] or [ev]
                new_id = self._new_participant(spec, self._mutation_rng.choice(others), at, like=rec)[
                    "registration_id"
                ]
            self._overlay(spec.race_id).removed[rec["registration_id"]] = self._removed_record(
                rec, reason, at, new_id
            )
            removed.append(
                {
                    "race_id": spec.race_id,
                    "event_id": ev.event_id,
                    "registration_id": rec["registration_id"],
                    "removed_reason": reason,
                    "new_registration_id": new_id,
                }
            )
        return self._summary("remove_participants", at, removed)

    def _mutate_revoke(self, payload: dict[str, Any]) -> dict[str, Any]:
        login = payload["login"]
        self._revoked.add(login)
        return {"action": "revoke_credential", "login": login}

    def _mutate_restore(self, payload: dict[str, Any]) -> dict[str, Any]:
        login = payload["login"]
        self._revoked.discard(login)
        return {"action": "restore_credential", "login": login}

    def _mutate_reset(self, payload: dict[str, Any]) -> dict[str, Any]:
        dropped = len(self._overlays)
        self._overlays.clear()
        self._revoked.clear()
        return {"action": "reset_data", "races_reset": dropped}

    @staticmethod
    def _summary(action: str, at: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
        per_event: dict[tuple[int, int], int] = {}
        for row in rows:
            per_event[(row["race_id"], row["event_id"])] = (
                per_event.get((row["race_id"], row["event_id"]), 0) + 1
            )
        return {
            "action": action,
            "at": at,
            "count": len(rows),
            "events": [{"race_id": r, "event_id": e, "count": n} for (r, e), n in sorted(per_event.items())],
            "participants": rows,
        }


def key_function(column: str) -> Any:
    if column in ("last_name", "first_name"):
        return lambda r: ((r["user"] or {}).get(column) or "", r["registration_id"])
    return lambda r: (r[column], r["registration_id"])


def build(
    scale: str = "small", seed: int = 7, knobs: Knobs | None = None, today: date | None = None
) -> RunSignUpStandIn:
    """A RunSignUp stand-in with deterministic data; knobs=None uses default_knobs()."""
    return RunSignUpStandIn(scale=scale, seed=seed, knobs=knobs, today=today)


__all__ = ["RunSignUpStandIn", "build", "default_knobs"]
