"""What the warehouse must hold after loading some days: derived from the stand-in's own ground truth.

Written independently of the loader: straight from ``standin.racecards_for`` / ``results_for``,
with the documented normalisation (bare names + region, result values win where both sources
give one).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

import psycopg

SUFFIX = re.compile(r"^(.*\S)\s+\(([A-Z]{2,4})\)$")


def bare(name: str) -> tuple[str, str | None]:
    m = SUFFIX.match(name or "")
    return (m.group(1), m.group(2)) if m else (name, None)


def expected(standin: Any, days: Iterable[date]) -> dict[str, Any]:
    races: dict[str, dict[str, Any]] = {}
    runners: dict[tuple[str, str], dict[str, Any]] = {}
    horses: dict[str, dict[str, Any]] = {}
    people = {"jockey": {}, "trainer": {}, "owner": {}}
    ancestors: dict[str, dict[str, tuple[str, str | None]]] = {"sire": {}, "dam": {}, "damsire": {}}
    pedigree: dict[str, tuple[str, str, str]] = {}
    bookmakers: set[str] = set()
    for day in days:
        for card in standin.racecards_for(day):
            race = races.setdefault(card["race_id"], {"date": day, "card": None, "result": None})
            race["card"] = card
            for r in card["runners"]:
                runners.setdefault((card["race_id"], r["horse_id"]), {})["card"] = r
                horses[r["horse_id"]] = {"name": r["horse"], "region": r["region"], "dob": r["dob"]}
                for kind in people:
                    people[kind][r[f"{kind}_id"]] = r[kind]
                for kind in ancestors:
                    ancestors[kind][r[f"{kind}_id"]] = (r[kind], r.get(f"{kind}_region"))
                pedigree[r["horse_id"]] = (r["sire_id"], r["dam_id"], r["damsire_id"])
                bookmakers |= {o["bookmaker"] for o in r.get("odds") or []}
        for result in standin.results_for(day):
            race = races.setdefault(result["race_id"], {"date": day, "card": None, "result": None})
            race["result"] = result
            for r in result["runners"]:
                runners.setdefault((result["race_id"], r["horse_id"]), {})["result"] = r
                name, region = bare(r["horse"])
                horses.setdefault(r["horse_id"], {"name": name, "region": region, "dob": None})
                for kind in people:
                    people[kind][r[f"{kind}_id"]] = r[kind]
                for kind in ("sire", "dam"):
                    ancestors[kind].setdefault(r[f"{kind}_id"], bare(r[kind]))
                ancestors["damsire"].setdefault(r["damsire_id"], (r["damsire"], None))
                pedigree.setdefault(r["horse_id"], (r["sire_id"], r["dam_id"], r["damsire_id"]))
    return {
        "races": races,
        "runners": runners,
        "horses": horses,
        "people": people,
        "ancestors": ancestors,
        "pedigree": pedigree,
        "bookmakers": bookmakers,
    }


def assert_warehouse_matches(dsn: str, truth: dict[str, Any]) -> None:
    with psycopg.connect(dsn) as conn:
        races = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT race_id, race_date, course_id, off_dt, race_name, is_abandoned, has_racecard, has_result,"
                " raw_racecard, raw_result, field_size, distance_y FROM racing.ra_races"
            )
        }
        assert set(races) == set(truth["races"]), "races differ"
        for race_id, want in truth["races"].items():
            (
                day,
                course_id,
                off_dt,
                name,
                abandoned,
                has_card,
                has_result,
                raw_card,
                raw_result,
                size,
                dist_y,
            ) = races[race_id]
            card, result = want["card"], want["result"]
            src = result or card
            assert day == want["date"] and course_id == src["course_id"] and name == src["race_name"]
            assert off_dt.isoformat() == src["off_dt"] or off_dt == _dt(src["off_dt"])
            assert has_card == (card is not None) and has_result == (result is not None)
            if card is not None:
                assert raw_card == {k: v for k, v in card.items() if k != "runners"}
                assert size == int(card["field_size"])
                assert abandoned == card["is_abandoned"] or abandoned  # a result may add "abandoned"
                if card["is_abandoned"]:
                    assert abandoned
            if result is not None:
                assert raw_result == {k: v for k, v in result.items() if k != "runners"}
                assert dist_y == int(result["dist_y"])

        runners = {
            (r[0], r[1]): r[2:]
            for r in conn.execute(
                "SELECT race_id, horse_id, position, jockey_id, trainer_id, owner_id, raw_racecard, raw_result,"
                " is_non_runner FROM racing.ra_runners"
            )
        }
        assert set(runners) == set(truth["runners"]), "runners differ"
        for key, want in truth["runners"].items():
            position, jockey_id, trainer_id, owner_id, raw_card, raw_result, non_runner = runners[key]
            src = want.get("result") or want["card"]
            assert raw_card == want.get("card")
            assert raw_result == want.get("result")
            assert (jockey_id, trainer_id, owner_id) == (src["jockey_id"], src["trainer_id"], src["owner_id"])
            if "result" in want:
                assert position == want["result"]["position"], key
                assert non_runner == (want["result"]["position"] in (None, ""))
            else:
                assert position is None

        horses = {
            r[0]: r[1:] for r in conn.execute("SELECT horse_id, name, region, dob FROM racing.ra_mst_horses")
        }
        assert set(horses) == set(truth["horses"])
        for horse_id, want in truth["horses"].items():
            name, region, dob = horses[horse_id]
            assert (name, region) == (want["name"], want["region"]), horse_id
            assert (dob.isoformat() if dob else None) == want["dob"]
        for kind, want in truth["people"].items():
            got = dict(conn.execute(f"SELECT {kind}_id, name FROM racing.ra_mst_{kind}s").fetchall())  # noqa: S608
            assert got == want, f"{kind}s differ"
        for kind, want in truth["ancestors"].items():
            got = {
                r[0]: (r[1], r[2])
                for r in conn.execute(f"SELECT {kind}_id, name, region FROM racing.ra_mst_{kind}s")  # noqa: S608
            }
            assert got == want, f"{kind}s differ"
        got = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT horse_id, sire_id, dam_id, damsire_id FROM racing.ra_horse_pedigree"
            )
        }
        assert got == truth["pedigree"]
        got_b = {r[0] for r in conn.execute("SELECT bookmaker FROM racing.ra_mst_bookmakers")}
        assert got_b == truth["bookmakers"]


def _dt(value: str):
    from datetime import datetime

    return datetime.fromisoformat(value)


CHECKSUM_TABLES = (
    "ra_mst_bookmakers", "ra_mst_horses", "ra_mst_jockeys", "ra_mst_trainers", "ra_mst_owners", "ra_mst_sires",
    "ra_mst_dams", "ra_mst_damsires", "ra_horse_pedigree", "ra_races", "ra_runners",
)  # fmt: skip


def checksums(dsn: str) -> dict[str, str]:
    """md5 of every racing table's rows (synced_at excluded), keyed by table."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for table in CHECKSUM_TABLES:
            rows = conn.execute(f"SELECT to_jsonb(t) - 'synced_at' FROM racing.{table} t").fetchall()  # noqa: S608
            digest = hashlib.md5(usedforsecurity=False)
            for text in sorted(str(r[0]) for r in rows):
                digest.update(text.encode())
            out[table] = f"{len(rows)}:{digest.hexdigest()}"
    return out
