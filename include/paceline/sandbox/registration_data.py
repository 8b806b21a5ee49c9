"""Deterministic data shared by the RunSignUp and Haku stand-ins.

Both stand-ins must agree on the timing partners and on which partner holds which
credential, so the "world" (partners, integrations, credentials) is planned here from
(scale, seed). Everything else (races, events, people) is generated per entity from an
RNG seeded with the seed and the entity's id, so any entity can be (re)generated on its
own, in any order, with the same result: that is what lets the "seed" scale stay lazy.

Dates are relative to an anchor, midnight UTC of "today" (overridable for tests), so the
data always has past and future events; generated timestamps never pass the anchor, so
anything stamped "now" by a mutation is newer than all generated data.
"""

from __future__ import annotations

import functools
import hashlib
import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

SCALES = ("small", "seed")

SMALL_PARTNERS = ["Summit Timing", "Lakeshore Race Services", "Pacific Chip Timing"]
SEED_PARTNERS = [
    "Summit Timing",
    "Lakeshore Race Services",
    "Pacific Chip Timing",
    "Blue Ridge Race Timing",
    "Desert Sun Timing",
    "Great Plains Racing",
    "Harbor City Timing",
    "Northwoods Chip Co.",
    "Peña & Søn Race Systems",
    "Gulf Coast Timing",
    "Rocky Mountain Splits",
    "Bayou Finish Line",
    "Capital Area Timing",
]

FIRST_NAMES = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Daniel",
    "Lisa",
    "Matthew",
    "Nancy",
    "Anthony",
    "Betty",
    "Mark",
    "Margie",
    "Steven",
    "Emily",
    "Andrew",
    "Megan",
    "Kevin",
    "Laura",
    "Brian",
    "Amy",
    "Jordan",
    "Taylor",
    "Casey",
    "Morgan",
]
LAST_NAMES = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Thompson",
    "White",
    "Harris",
    "Clark",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Stephens",
    "O'Brien",
    "Smith-Jones",
    "McDonald",
    "Nguyen",
    "Patel",
    "Kowalski",
    "Schmidt",
    "Rossi",
    "Novak",
]
# Names that exercise encodings end to end (é, ñ, ø, CJK), deliberately frequent.
UNICODE_FIRST_NAMES = [
    "José",
    "Renée",
    "Zoë",
    "Søren",
    "Åsa",
    "Begoña",
    "Iñaki",
    "Chloé",
    "Jørgen",
    "太郎",
    "花子",
]
UNICODE_LAST_NAMES = [
    "Muñoz",
    "Peña",
    "Ødegaard",
    "Løkke",
    "Núñez",
    "Gómez",
    "Brontë",
    "Dvořák",
    "日本",
    "山田",
    "Ibáñez",
]
UNICODE_RATE = 0.12

CITIES = [
    ("Chicago", "IL", "606"),
    ("Madison", "WI", "537"),
    ("Milwaukee", "WI", "532"),
    ("Des Moines", "IA", "503"),
    ("Albuquerque", "NM", "871"),
    ("Portland", "OR", "972"),
    ("Denver", "CO", "802"),
    ("Austin", "TX", "787"),
    ("Atlanta", "GA", "303"),
    ("Boston", "MA", "021"),
    ("Seattle", "WA", "981"),
    ("Minneapolis", "MN", "554"),
    ("Moorestown", "NJ", "080"),
    ("Richmond", "VA", "232"),
    ("Tucson", "AZ", "857"),
    ("Baton Rouge", "LA", "708"),
    ("Boise", "ID", "837"),
    ("Omaha", "NE", "681"),
]
STREETS = [
    "Main St",
    "Oak Ave",
    "Avondale Ave",
    "Lakeshore Dr",
    "Maple Ct",
    "Elm St",
    "Cedar Ln",
    "Park Blvd",
]
TIMEZONES = {
    "IL": "America/Chicago",
    "WI": "America/Chicago",
    "IA": "America/Chicago",
    "MN": "America/Chicago",
    "TX": "America/Chicago",
    "LA": "America/Chicago",
    "NE": "America/Chicago",
    "NM": "America/Denver",
    "CO": "America/Denver",
    "ID": "America/Denver",
    "AZ": "America/Phoenix",
    "OR": "America/Los_Angeles",
    "WA": "America/Los_Angeles",
}


def entity_rng(seed: int, *parts: Any) -> random.Random:
    """An RNG for one entity: the same (seed, parts) always yields the same stream."""
    key = ":".join(str(p) for p in (seed, *parts))
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def anchor_for(today: date | None = None) -> datetime:
    """Midnight UTC of today: the newest instant generated data may carry."""
    today = today or datetime.now(UTC).date()
    return datetime(today.year, today.month, today.day, tzinfo=UTC)


def token(rng: random.Random, length: int, alphabet: str = "0123456789abcdefghijklmnopqrstuvwxyz") -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def ri(rng: random.Random, low: int, high: int) -> int:
    """rng.randint without its overhead (generation draws hundreds of thousands of these)."""
    return low + int(rng.random() * (high - low + 1))


def pick(rng: random.Random, seq: Sequence[Any]) -> Any:
    """rng.choice without its overhead."""
    return seq[int(rng.random() * len(seq))]


@functools.lru_cache(maxsize=4096)
def ascii_slug(text: str) -> str:
    """Best-effort ASCII form of a name for e-mail local parts (CJK collapses to '')."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


@dataclass(frozen=True)
class Integration:
    """One provider credential of one timing partner (a row of provider_integrations)."""

    integration_id: str
    provider: str
    timing_partner_id: int
    timing_partner_name: str
    organization: str | None
    login: str
    password: str
    index: int  # position among the provider's integrations, drives data allocation

    @property
    def conn_id(self) -> str:
        return self.integration_id.replace("-", "_")

    def as_dict(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "integration_id": self.integration_id,
            "provider": self.provider,
            "timing_partner_id": self.timing_partner_id,
            "timing_partner_name": self.timing_partner_name,
            "organization": self.organization,
            "conn_id": self.conn_id,
            "login": self.login,
            "password": self.password,
            "extra": dict(extra or {}),
        }


def timing_partners(scale: str) -> list[tuple[int, str]]:
    check_scale(scale)
    names = SMALL_PARTNERS if scale == "small" else SEED_PARTNERS
    return [(i + 1, name) for i, name in enumerate(names)]


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {SCALES}")


def integrations(scale: str, seed: int, provider: str) -> list[Integration]:
    """The credentials of one provider: who holds them and their (deterministic) secrets.

    small: RunSignUp for partners 1 and 2, Haku for partners 2 and 3.
    seed:  RunSignUp for partners 1-11; Haku for partners 9-13, partners 9 and 10 with two
           organizations each (7 Haku integrations for 5 partners, like the real integrator).
    """
    partners = dict(timing_partners(scale))
    if provider == "runsignup":
        holders: list[tuple[int, str | None]] = (
            [(1, None), (2, None)] if scale == "small" else [(tp, None) for tp in range(1, 12)]
        )
    elif provider == "haku":
        if scale == "small":
            holders = [(2, "Lakeshore Running Co."), (3, "Pacific Endurance Events")]
        else:
            holders = [
                (9, "Peña Events"),
                (9, "Peña Trail Series"),
                (10, "Gulf Coast Running"),
                (10, "Gulf Coast Triathlon"),
                (11, "Rocky Mountain Runs"),
                (12, "Bayou Classic Races"),
                (13, "Capital Area Running Club"),
            ]
    else:
        raise ValueError(f"unknown provider {provider!r}")
    result: list[Integration] = []
    seen: dict[int, int] = {}
    for index, (tp, organization) in enumerate(holders):
        seen[tp] = seen.get(tp, 0) + 1
        suffix = "" if seen[tp] == 1 else f"-{seen[tp]}"
        rng = entity_rng(seed, provider, "credential", tp, seen[tp])
        if provider == "runsignup":
            login = token(rng, 32, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
            password = token(rng, 32, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        else:  # Cognito app client ids are 26 lowercase alphanumerics, secrets ~51 characters
            login = token(rng, 26)
            password = token(rng, 51)
        result.append(
            Integration(
                integration_id=f"{provider}-tp{tp}{suffix}",
                provider=provider,
                timing_partner_id=tp,
                timing_partner_name=partners[tp],
                organization=organization,
                login=login,
                password=password,
                index=index,
            )
        )
    return result


@dataclass
class Person:
    first_name: str
    middle_name: str | None
    last_name: str
    email: str | None
    dob: date | None
    gender: str
    phone: str
    street: str
    city: str
    state: str
    zipcode: str

    def age_on(self, day: date) -> int | None:
        if self.dob is None:
            return None
        years = day.year - self.dob.year
        return years - ((day.month, day.day) < (self.dob.month, self.dob.day))


def make_person(rng: random.Random, serial: int, on: date) -> Person:
    """A plausible participant; serial keeps e-mail addresses unique."""
    gender = "F" if rng.random() < 0.5 else "M"
    first = pick(rng, UNICODE_FIRST_NAMES) if rng.random() < UNICODE_RATE else pick(rng, FIRST_NAMES)
    last = pick(rng, UNICODE_LAST_NAMES) if rng.random() < UNICODE_RATE else pick(rng, LAST_NAMES)
    middle = pick(rng, "ABCDEJKLMRST") if rng.random() < 0.15 else None
    local = f"{ascii_slug(first)}.{ascii_slug(last)}".strip(".") or "runner"
    email = None if rng.random() < 0.01 else f"{local}{serial}@example.com"
    age_years = ri(rng, 8, 79)
    dob = None if rng.random() < 0.02 else on - timedelta(days=age_years * 365 + ri(rng, 0, 364))
    city, state, zip3 = pick(rng, CITIES)
    return Person(
        first_name=first,
        middle_name=middle,
        last_name=last,
        email=email,
        dob=dob,
        gender=gender,
        phone=phone(rng),
        street=f"{ri(rng, 1, 9999)} {pick(rng, STREETS)}",
        city=city,
        state=state,
        zipcode=f"{zip3}{ri(rng, 0, 99):02d}",
    )


def phone(rng: random.Random) -> str:
    return f"{ri(rng, 201, 989)}-{ri(rng, 200, 999)}-{ri(rng, 0, 9999):04d}"


def registration_times(rng: random.Random, count: int, opens: float, closes: float) -> list[float]:
    """Sorted registration instants in [opens, closes), denser towards closes like real sign-ups."""
    span = max(closes - opens, 60.0)
    return sorted(opens + span * (rng.random() ** 0.6) for _ in range(count))


def scaled_counts(rng: random.Random, n: int, total: int, cap: int, zero_rate: float = 0.03) -> list[int]:
    """n skewed counts (a few very large, many small, some empty) summing to about total."""
    weights = [0.0 if rng.random() < zero_rate else rng.lognormvariate(0.0, 1.3) for _ in range(n)]
    scale = total / (sum(weights) or 1.0)
    return [min(cap, int(round(w * scale))) for w in weights]
