"""From The Racing API's payloads to warehouse rows.

The API sends every scalar as a string, with "" for "none"; numbers are parsed defensively
(a value that does not parse becomes NULL, and the payload is kept as raw jsonb). Racecards and
results name the same things differently (``off_time``/``off``, ``race_class``/``class``,
``distance_f`` "8.0"/``dist_f`` "8f", bare names + ``*_region`` / "Name (IRE)"); rows use one
name and one form for each.

Rows are built per source with only the columns that source gives, so that a racecard loaded
after a result (or the other way round) never blanks the other's columns.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")
_NUMBER_RE = re.compile(r"[-+]?\d+(?:\.\d+)?")
_SUFFIX_RE = re.compile(r"^(?P<name>.*\S)\s+\((?P<region>[A-Z]{2,4})\)$")
NON_FINISH_CODES = {"F", "PU", "UR", "BD", "RO", "SU", "RR", "REF", "DSQ", "CO", "LFT", "VOI"}


# -- scalars -------------------------------------------------------------------------------------
def text(value: Any) -> str | None:
    """A string, or None for null; "" stays "" (the API's "not given")."""
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INT_RE.match(value):
        return int(value)
    return None


def to_decimal(value: Any) -> Decimal | None:
    """The first number in a string ("8.0", "16f", "£3,140", "3.75"); None when there is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _NUMBER_RE.search(str(value).replace(",", ""))
    if not match:
        return None
    try:
        return Decimal(match.group())
    except InvalidOperation:
        return None


def to_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def to_datetime(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def to_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def split_region(name: Any) -> tuple[str | None, str | None]:
    """ "Raging Raj (IRE)" -> ("Raging Raj", "IRE"); a name with no suffix keeps region None."""
    if not name:
        return text(name), None
    match = _SUFFIX_RE.match(str(name))
    if match:
        return match.group("name"), match.group("region")
    return str(name), None


def blank_none(value: Any) -> Any:
    return None if value == "" else value


def without_runners(race: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in race.items() if k != "runners"}


# -- races -----------------------------------------------------------------------------------------
def race_from_racecard(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "race_id": card["race_id"],
        "race_date": to_date(card.get("date")),
        "course_id": blank_none(card.get("course_id")),
        "course": text(card.get("course")),
        "region": text(card.get("region")),
        "off_time": text(card.get("off_time")),
        "off_dt": to_datetime(card.get("off_dt")),
        "race_name": text(card.get("race_name")),
        "race_type": text(card.get("type")),
        "race_class": text(card.get("race_class")),
        "pattern": text(card.get("pattern")),
        "age_band": text(card.get("age_band")),
        "rating_band": text(card.get("rating_band")),
        "sex_restriction": text(card.get("sex_restriction")),
        "distance": text(card.get("distance")),
        "distance_f": to_decimal(card.get("distance_f")),
        "going": text(card.get("going")),
        "surface": text(card.get("surface")),
        "jumps": text(card.get("jumps")),
        "is_abandoned": bool(to_bool(card.get("is_abandoned"))),
        # racecard only
        "distance_round": text(card.get("distance_round")),
        "going_detailed": text(card.get("going_detailed")),
        "prize": text(card.get("prize")),
        "prize_value": to_decimal(card.get("prize")),
        "field_size": to_int(card.get("field_size")),
        "big_race": to_bool(card.get("big_race")),
        "race_status": text(card.get("race_status")),
        "has_racecard": True,
        "raw_racecard": without_runners(card),
    }


def result_is_abandoned(result: dict[str, Any]) -> bool:
    """Results carry no abandoned flag: a race with no runner placed or finishing was not run."""
    if "abandon" in str(result.get("comments") or "").lower():
        return True
    return not any(r.get("position") not in (None, "") for r in result.get("runners") or [])


def race_from_result(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "race_id": result["race_id"],
        "race_date": to_date(result.get("date")),
        "course_id": blank_none(result.get("course_id")),
        "course": text(result.get("course")),
        "region": text(result.get("region")),
        "off_time": text(result.get("off")),
        "off_dt": to_datetime(result.get("off_dt")),
        "race_name": text(result.get("race_name")),
        "race_type": text(result.get("type")),
        "race_class": text(result.get("class")),
        "pattern": text(result.get("pattern")),
        "age_band": text(result.get("age_band")),
        "rating_band": text(result.get("rating_band")),
        "sex_restriction": text(result.get("sex_rest")),
        "distance": text(result.get("dist")),
        "distance_f": to_decimal(result.get("dist_f")),
        "going": text(result.get("going")),
        "surface": text(result.get("surface")),
        "jumps": text(result.get("jumps")),
        "is_abandoned": result_is_abandoned(result),
        # result only
        "distance_y": to_int(result.get("dist_y")),
        "distance_m": to_int(result.get("dist_m")),
        "winning_time_detail": text(result.get("winning_time_detail")),
        "comments": text(result.get("comments")),
        "non_runners": text(result.get("non_runners")),
        "tote_win": text(result.get("tote_win")),
        "tote_pl": text(result.get("tote_pl")),
        "tote_ex": text(result.get("tote_ex")),
        "tote_csf": text(result.get("tote_csf")),
        "tote_tricast": text(result.get("tote_tricast")),
        "tote_trifecta": text(result.get("tote_trifecta")),
        "has_result": True,
        "raw_result": without_runners(result),
    }


def merge_race(card_row: dict[str, Any] | None, result_row: dict[str, Any] | None) -> dict[str, Any]:
    """One row from both: the result's value wins where both give one; abandoned if either says so."""
    if card_row is None or result_row is None:
        return dict(card_row or result_row or {})
    merged = {**card_row, **result_row}
    merged["is_abandoned"] = bool(card_row["is_abandoned"] or result_row["is_abandoned"])
    return merged


# -- runners ---------------------------------------------------------------------------------------
def _runner_common(
    race: dict[str, Any], runner: dict[str, Any], *, sex_key: str, weight_key: str, rating_key: str
) -> dict[str, Any]:
    """The runner columns racecards and results share; the field names they use differ."""
    name, _ = split_region(runner.get("horse"))
    return {
        "race_id": race["race_id"],
        "horse_id": runner["horse_id"],
        "race_date": to_date(race.get("date")),
        "horse": name,
        "number": text(runner.get("number")),
        "number_int": to_int(runner.get("number")),
        "draw": text(runner.get("draw")),
        "draw_int": to_int(runner.get("draw")),
        "age": to_int(runner.get("age")),
        "sex_code": blank_none(text(runner.get(sex_key))),
        "weight_lbs": to_int(runner.get(weight_key)),
        "headgear": text(runner.get("headgear")),
        "jockey_id": blank_none(runner.get("jockey_id")),
        "jockey": text(runner.get("jockey")),
        "trainer_id": blank_none(runner.get("trainer_id")),
        "trainer": text(runner.get("trainer")),
        "owner_id": blank_none(runner.get("owner_id")),
        "owner": text(runner.get("owner")),
        "official_rating": to_int(runner.get(rating_key)),
    }


def runner_from_racecard(race: dict[str, Any], runner: dict[str, Any]) -> dict[str, Any]:
    return {
        **_runner_common(race, runner, sex_key="sex_code", weight_key="lbs", rating_key="ofr"),
        # racecard only
        "rpr": to_int(runner.get("rpr")),
        "topspeed": to_int(runner.get("ts")),
        "form": text(runner.get("form")),
        "last_run": to_int(runner.get("last_run")),
        "odds": runner.get("odds") if isinstance(runner.get("odds"), list) else None,
        "has_racecard": True,
        "raw_racecard": runner,
    }


def runner_from_result(race: dict[str, Any], runner: dict[str, Any]) -> dict[str, Any]:
    position = runner.get("position")
    position = None if position is None else str(position)
    return {
        **_runner_common(race, runner, sex_key="sex", weight_key="weight_lbs", rating_key="or"),
        # result only
        "position": position,
        "finish_position": to_int(position),
        "is_non_runner": position in (None, ""),
        "btn": text(runner.get("btn")),
        "ovr_btn": text(runner.get("ovr_btn")),
        "sp": text(runner.get("sp")),
        "sp_dec": to_decimal(runner.get("sp_dec")),
        "bsp": to_decimal(runner.get("bsp")),
        "race_time": text(runner.get("time")),
        "prize": text(runner.get("prize")),
        "comment": text(runner.get("comment")),
        "jockey_claim_lbs": to_int(runner.get("jockey_claim_lbs")),
        "has_result": True,
        "raw_result": runner,
    }


def merge_runner(card_row: dict[str, Any] | None, result_row: dict[str, Any] | None) -> dict[str, Any]:
    if card_row is None or result_row is None:
        return dict(card_row or result_row or {})
    return {**card_row, **result_row}


# -- masters ---------------------------------------------------------------------------------------
# Each returns {table: rows}. Rows omit attributes the source does not give, so they
# never blank what another source wrote.
def masters_from_racecard_runner(runner: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    name, suffix = split_region(runner.get("horse"))
    out["ra_mst_horses"] = [
        {
            "horse_id": runner["horse_id"],
            "name": name,
            "region": blank_none(runner.get("region")) or suffix,
            "dob": to_date(runner.get("dob")),
            "colour": blank_none(text(runner.get("colour"))),
            "breeder": blank_none(text(runner.get("breeder"))),
        }
    ]
    _people(out, runner)
    for kind, table in (("sire", "ra_mst_sires"), ("dam", "ra_mst_dams"), ("damsire", "ra_mst_damsires")):
        ident = blank_none(runner.get(f"{kind}_id"))
        if ident:
            bare, suffix = split_region(runner.get(kind))
            row = {f"{kind}_id": ident, "name": bare or ""}
            region = blank_none(runner.get(f"{kind}_region")) or suffix
            if region:
                row["region"] = region
            out.setdefault(table, []).append(row)
    return out


def masters_from_result_runner(runner: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    name, region = split_region(runner.get("horse"))
    horse = {"horse_id": runner["horse_id"], "name": name or ""}
    if region:
        horse["region"] = region
    out["ra_mst_horses"] = [horse]
    _people(out, runner)
    for kind, table in (("sire", "ra_mst_sires"), ("dam", "ra_mst_dams"), ("damsire", "ra_mst_damsires")):
        ident = blank_none(runner.get(f"{kind}_id"))
        if ident:
            bare, suffix = split_region(runner.get(kind))
            row = {f"{kind}_id": ident, "name": bare or ""}
            if suffix:
                row["region"] = suffix
            out.setdefault(table, []).append(row)
    return out


def _people(out: dict[str, list[dict[str, Any]]], runner: dict[str, Any]) -> None:
    for kind, table in (
        ("jockey", "ra_mst_jockeys"),
        ("trainer", "ra_mst_trainers"),
        ("owner", "ra_mst_owners"),
    ):
        ident = blank_none(runner.get(f"{kind}_id"))
        if ident:
            out.setdefault(table, []).append({f"{kind}_id": ident, "name": text(runner.get(kind)) or ""})


def pedigree(runner: dict[str, Any]) -> dict[str, Any]:
    return {
        "horse_id": runner["horse_id"],
        "sire_id": blank_none(runner.get("sire_id")),
        "dam_id": blank_none(runner.get("dam_id")),
        "damsire_id": blank_none(runner.get("damsire_id")),
    }


def bookmakers(card: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for runner in card.get("runners") or []:
        for odds in runner.get("odds") or []:
            if isinstance(odds, dict) and odds.get("bookmaker"):
                names.add(str(odds["bookmaker"]))
    return names


MASTER_KEYS = {
    "ra_mst_horses": "horse_id",
    "ra_mst_jockeys": "jockey_id",
    "ra_mst_trainers": "trainer_id",
    "ra_mst_owners": "owner_id",
    "ra_mst_sires": "sire_id",
    "ra_mst_dams": "dam_id",
    "ra_mst_damsires": "damsire_id",
}
