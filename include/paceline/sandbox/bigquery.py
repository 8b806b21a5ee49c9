"""Local BigQuery: the bqemulator subprocess, the NBA schema and a deterministic raw-data seed.

bqemulator (DuckDB + SQLGlot) lives in its own virtualenv, ``.venv-bq`` (created by
``scripts/setup-bq-emulator.sh``), because it needs a fastapi newer than Airflow allows. It is
started as ``.venv-bq/bin/python bq_launcher.py`` (see that file for the offline start-up
workaround) on a loopback port; clients reach it with ``BIGQUERY_EMULATOR_HOST=<url>`` and
anonymous credentials, or with :func:`make_client`.

The seed generates NBA-shaped raw rows in Python and loads them as Parquet load jobs (measured on
the emulator: ~0.6 s per 100k rows, against ~4.5 s for streaming inserts). Every day's rows
depend only on (seed, day), so any range seeds the same rows for the days it shares with another.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from paceline.config import project_root
from paceline.nba import BOX_TABLE, PBP_TABLE
from paceline.sandbox.processes import pid_alive

DEFAULT_PROJECT = "paceline-local"
LAUNCHER = Path(__file__).resolve().parent / "bq_launcher.py"
READY_FILE = "emulator.json"
LOG_FILE = "emulator.log"

# name -> (first day, last day), both inclusive.
SCALES: dict[str, tuple[dt.date, dt.date]] = {
    # 18 days around the 2022 All-Star break: 12 game days and 6 days without games.
    "small": (dt.date(2022, 2, 10), dt.date(2022, 2, 27)),
    # The old system's validation window: 2.6 seasons with off-seasons in between.
    "seed": (dt.date(2021, 10, 1), dt.date(2024, 5, 1)),
}

DELETE_BOX_RANGE = "DELETE FROM nba_raw.box_player WHERE game_date BETWEEN @start_date AND @end_date"
DELETE_PBP_RANGE = "DELETE FROM nba_raw.pbp_actions WHERE game_date BETWEEN @start_date AND @end_date"


class EmulatorUnavailable(RuntimeError):
    """The emulator's virtualenv is missing or the emulator did not start."""


# ---------------------------------------------------------------------------------------------
# The emulator process
# ---------------------------------------------------------------------------------------------


def bq_python() -> Path:
    """The interpreter of the emulator's venv (``PACELINE_BQ_PYTHON`` overrides it)."""
    override = os.environ.get("PACELINE_BQ_PYTHON")
    return Path(override) if override else project_root() / ".venv-bq" / "bin" / "python"


def emulator_available() -> bool:
    return bq_python().exists()


def make_client(url: str, project: str = DEFAULT_PROJECT) -> Any:
    """A ``google.cloud.bigquery.Client`` for the emulator at ``url``, anonymous credentials."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=url),
    )


def airflow_connection_json(project: str = DEFAULT_PROJECT) -> str:
    """Value for ``AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT`` (pair it with ``BIGQUERY_EMULATOR_HOST``)."""
    return json.dumps({"conn_type": "google_cloud_platform", "extra": {"project": project, "is_anonymous": True}})


@dataclass
class EmulatorProcess:
    """A running emulator. ``url`` goes into ``BIGQUERY_EMULATOR_HOST``."""

    pid: int
    url: str
    rest_port: int
    grpc_port: int
    data_dir: Path
    project: str = DEFAULT_PROJECT
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def client(self) -> Any:
        return make_client(self.url, self.project)

    def rest_client(self) -> Any:
        """What the pipeline uses: :class:`paceline.providers.bigquery.BigQueryClient`, anonymous."""
        from paceline.providers.bigquery import BigQueryClient

        return BigQueryClient.anonymous(self.url, self.project)

    def env(self) -> dict[str, str]:
        """Environment for processes that use this emulator through Airflow's google provider."""
        return {
            "BIGQUERY_EMULATOR_HOST": self.url,
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": airflow_connection_json(self.project),
        }

    def is_alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``. Idempotent."""
        if self.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.is_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout)
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / READY_FILE).unlink()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=timeout) as response:  # noqa: S310 - loopback URL we built
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_emulator(
    data_dir: Path,
    port: int | None = None,
    *,
    project: str = DEFAULT_PROJECT,
    persistent: bool = True,
    timeout: float = 60.0,
    host: str = "127.0.0.1",
) -> EmulatorProcess:
    """Start bqemulator on `host` (loopback by default) and return once it answers.

    ``data_dir`` holds the log, the ready file (pid and ports, read by :func:`find_running`) and,
    when ``persistent``, the DuckDB database, so data survives a restart. ``port=None`` lets the
    OS pick a free port (no race: the emulator binds port 0 and reports the real port).
    The process runs in its own session, so it outlives the caller until :meth:`stop`.
    """
    python = bq_python()
    if not python.exists():
        raise EmulatorUnavailable(
            f"{python} is missing: run scripts/setup-bq-emulator.sh to create the emulator's venv"
        )
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ready = data_dir / READY_FILE
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()
    cmd = [
        str(python), str(LAUNCHER),
        "--host", host,
        "--port", str(port or 0),
        "--project", project,
        "--ready-file", str(ready),
    ]
    if persistent:
        cmd += ["--data-dir", str(data_dir / "duckdb")]
    with open(data_dir / LOG_FILE, "ab") as log:
        # cwd=data_dir: bqemulator reads a .bqemu.toml from its working directory, if any.
        process = subprocess.Popen(  # noqa: S603 - fixed argv, our own interpreter and script
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=data_dir, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorUnavailable(
                f"bqemulator exited with {process.returncode} at start-up; log tail:\n{_tail(data_dir / LOG_FILE)}"
            )
        if ready.exists():
            info = json.loads(ready.read_text())
            emulator = EmulatorProcess(
                pid=process.pid,
                # 0.0.0.0 (docker-compose) also answers on loopback, which is what clients here use
                url=f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{info['rest_port']}",  # noqa: S104
                rest_port=info["rest_port"],
                grpc_port=info["grpc_port"],
                data_dir=data_dir,
                project=project,
                process=process,
            )
            if _healthy(emulator.url):
                ready.write_text(json.dumps({**info, "url": emulator.url, "project": project}))
                return emulator
        time.sleep(0.1)
    process.kill()
    raise EmulatorUnavailable(f"bqemulator not ready after {timeout:.0f}s; log tail:\n{_tail(data_dir / LOG_FILE)}")


def find_running(data_dir: Path) -> EmulatorProcess | None:
    """The emulator started earlier on ``data_dir`` (possibly by another process), if it answers."""
    ready = Path(data_dir) / READY_FILE
    try:
        info = json.loads(ready.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    emulator = EmulatorProcess(
        pid=info["pid"], url=info["url"], rest_port=info["rest_port"], grpc_port=info["grpc_port"],
        data_dir=Path(data_dir), project=info.get("project", DEFAULT_PROJECT),
    )
    if emulator.is_alive() and _healthy(emulator.url):
        return emulator
    return None


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------


def google_client(client: Any) -> Any:
    """A ``google.cloud.bigquery`` client for the emulator that ``client`` talks to: the seed and
    the test fixtures load Parquet through load jobs, which the pipeline never does."""
    from paceline.providers.bigquery import BigQueryClient

    if isinstance(client, BigQueryClient):
        return make_client(client.session.base_url, client.project)
    return client


def rest_client(client: Any) -> Any:
    """Paceline's REST client (``paceline.providers.bigquery``) for the emulator that
    ``google.cloud.bigquery`` ``client`` talks to (the seed loads through the latter)."""
    from paceline.providers.bigquery import BigQueryClient

    if isinstance(client, BigQueryClient):
        return client
    return BigQueryClient.anonymous(client._connection.API_BASE_URL, client.project)  # set by make_client


def ensure_schema(client: Any) -> None:
    """Create the datasets and tables of docs/contract.md when missing. Idempotent; never drops."""
    # The summary table goes through the same set-up as on BigQuery (`paceline nba setup`).
    from paceline.nba.setup import ensure_raw_tables, ensure_summary_table

    rest = rest_client(client)
    ensure_raw_tables(rest)
    ensure_summary_table(rest)


# ---------------------------------------------------------------------------------------------
# Deterministic NBA raw data
# ---------------------------------------------------------------------------------------------

TEAM_IDS = tuple(1610612737 + i for i in range(30))
ROSTER = 15
FIRST_NAMES = ("LeBron", "Stephen", "Kevin", "Giannis", "Luka", "Nikola", "Joel", "Jayson", "Devin",
               "Damian", "Jimmy", "Anthony", "Kawhi", "Paul", "Jaylen", "Trae", "Ja", "Zion", "Bam",
               "De'Aaron", "Donovan", "Karl-Anthony", "Tyrese", "Shai", "Darius", "Jalen", "Scottie")
FAMILY_NAMES = ("James", "Curry", "Durant", "Antetokounmpo", "Doncic", "Jokic", "Embiid", "Tatum",
                "Booker", "Lillard", "Butler", "Davis", "Leonard", "George", "Brown", "Young", "Morant",
                "Williamson", "Adebayo", "Fox", "Mitchell", "Towns", "Haliburton", "Gilgeous-Alexander",
                "Garland", "Brunson", "Barnes", "O'Neale", "Holiday", "White", "Porter Jr.")
POSITIONS = ("G", "G", "F", "F", "C")
DNP_COMMENTS = ("DNP - Coach's Decision", "DNP - Coach's Decision", "DNP - Injury/Illness", "NWT - Personal")
TWO_ZONES = (("Restricted Area", 0.35), ("In The Paint (Non-RA)", 0.20), ("Mid-Range", 0.45))
THREE_ZONES = (("Above the Break 3", 0.76), ("Left Corner 3", 0.115), ("Right Corner 3", 0.115),
               ("Backcourt", 0.01))
# Points on or next to the zone boundaries of docs/providers.md, NBA data (x, y in 0.1 ft, hoop at 0,0).
BOUNDARY_POINTS: dict[str, tuple[tuple[int, int], ...]] = {
    "Restricted Area": ((0, 40), (40, 0), (-28, 28), (0, -40)),
    "In The Paint (Non-RA)": ((80, 142), (-80, 142), (80, -47), (0, 142), (-80, 60)),
    # outside the paint by one unit, just inside the arc, just off the corner-3 line
    "Mid-Range": ((81, 0), (-81, 100), (0, 143), (0, 237), (219, 80), (-219, -40), (150, 180)),
    "Left Corner 3": ((-220, 92), (-220, -47), (-247, 0)),
    "Right Corner 3": ((220, 92), (220, -47), (247, 0)),
    # on or just past the 237.5 arc; (220, 93) is past the corner line's y, so the arc decides
    "Above the Break 3": ((0, 238), (-142, 191), (168, 168), (220, 93)),
    "Backcourt": ((0, 423), (-240, 500)),
}
ARC2 = 237.5 * 237.5

BOX_COLUMNS = ("game_date", "game_id", "team_id", "person_id", "first_name", "family_name", "position",
               "comment", "minutes", "fgm", "fga", "fg3m", "fg3a", "ftm", "fta", "oreb", "dreb", "reb",
               "ast", "stl", "blk", "tov", "pf", "pts", "plus_minus")
PBP_COLUMNS = ("game_date", "game_id", "action_number", "period", "clock", "team_id", "person_id",
               "action_type", "sub_type", "shot_result", "is_field_goal", "shot_value", "shot_distance",
               "x_legacy", "y_legacy", "shot_zone_basic")
_STRING = {"game_id", "first_name", "family_name", "position", "comment", "minutes", "clock",
           "action_type", "sub_type", "shot_result", "shot_zone_basic"}
_FLOAT = {"plus_minus", "shot_distance"}


@dataclass(frozen=True)
class SeedStats:
    start: dt.date
    end: dt.date
    days: int
    game_days: int
    games: int
    box_rows: int
    pbp_rows: int
    seconds: float


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _on_or_after(day: dt.date, weekday: int) -> dt.date:
    return day + dt.timedelta(days=(weekday - day.weekday()) % 7)


@dataclass(frozen=True)
class _Season:
    year: int  # the calendar year the season starts in
    opening: dt.date
    regular_end: dt.date
    playoffs_start: dt.date
    playoffs_end: dt.date
    off_days: frozenset[dt.date]


def _season(year: int) -> _Season:
    opening = _on_or_after(dt.date(year, 10, 18), 1)  # a Tuesday in Oct 18-24
    regular_end = _on_or_after(dt.date(year + 1, 4, 9), 6)  # a Sunday in Apr 9-15
    all_star = _nth_weekday(year + 1, 2, 6, 3)  # third Sunday of February
    off = {all_star + dt.timedelta(days=k) for k in range(-2, 4)}  # Friday..Wednesday
    off.add(_nth_weekday(year, 11, 3, 4))  # Thanksgiving
    off.add(dt.date(year, 12, 24))
    return _Season(year, opening, regular_end, regular_end + dt.timedelta(days=3),
                   dt.date(year + 1, 6, 15), frozenset(off))


def games_on(day: dt.date, rng: random.Random) -> tuple[str, int]:
    """(kind, number of games) of a day: kind '002' regular season, '004' playoffs."""
    season = _season(day.year if day.month >= 7 else day.year - 1)
    if day in season.off_days:
        return "002", 0
    if season.opening <= day <= season.regular_end:
        return "002", rng.choice((2, 3, 4, 5, 6, 7, 7, 8, 8, 9, 9, 10, 11, 12, 13))
    if season.playoffs_start <= day <= season.playoffs_end:
        week = (day - season.playoffs_start).days // 7
        if week < 2:
            return "004", rng.randint(2, 4)
        if week < 4:
            return "004", rng.randint(1, 2)
        return "004", day.toordinal() % 2  # the Finals: every other day
    return "002", 0


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def _weighted(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    roll, acc = rng.random(), 0.0
    for name, weight in choices:
        acc += weight
        if roll < acc:
            return name
    return choices[-1][0]


def _ri(rng: random.Random, low: int, high: int) -> int:
    # random.randint is several times slower; the seed draws millions of these.
    return low + int(rng.random() * (high - low + 1))


def _point(zone: str, rng: random.Random) -> tuple[int, int]:
    """Coordinates consistent with ``zone``; one in ten sits on a boundary."""
    if rng.random() < 0.1:
        return rng.choice(BOUNDARY_POINTS[zone])
    while True:
        if zone == "Restricted Area":
            x, y = _ri(rng, -40, 40), _ri(rng, -40, 40)
            ok = x * x + y * y <= 1600
        elif zone == "In The Paint (Non-RA)":
            x, y = _ri(rng, -80, 80), _ri(rng, -47, 142)
            ok = x * x + y * y > 1600
        elif zone == "Mid-Range":
            x, y = _ri(rng, -235, 235), _ri(rng, -47, 237)
            ok = (x * x + y * y < ARC2 and not (abs(x) >= 220 and y <= 92)
                  and not (abs(x) <= 80 and y <= 142))
        elif zone == "Left Corner 3":
            x, y, ok = _ri(rng, -247, -220), _ri(rng, -47, 92), True
        elif zone == "Right Corner 3":
            x, y, ok = _ri(rng, 220, 247), _ri(rng, -47, 92), True
        elif zone == "Above the Break 3":
            x, y = _ri(rng, -250, 250), _ri(rng, 93, 330)
            ok = x * x + y * y >= ARC2
        else:  # Backcourt
            x, y, ok = _ri(rng, -250, 250), _ri(rng, 423, 800), True
        if ok:
            return x, y


def _minutes_text(seconds: int, style: str) -> str:
    m, s = divmod(seconds, 60)
    if style == "iso":
        return f"PT{m:02d}M{s:02d}.00S"
    if style == "padded":
        return f"{m:02d}:{s:02d}"
    return f"{m}:{s:02d}"  # 'M:SS' below ten minutes, 'MM:SS' above


def _person(team_index: int, slot: int) -> tuple[int, str, str, str]:
    person_id = 1_630_000 + team_index * 100 + slot
    names = random.Random(person_id)
    position = POSITIONS[slot % 5] if slot < 5 else ""
    return person_id, names.choice(FIRST_NAMES), names.choice(FAMILY_NAMES), position


_CLOCKS = tuple(f"PT{left // 60:02d}M{left % 60:02d}.00S" for left in range(721))


def _when(rng: random.Random, periods: int, tail: tuple[Any, ...]) -> tuple[int, int, tuple[Any, ...]]:
    period = _ri(rng, 1, periods)
    return period, _ri(rng, 0, 719 if period <= 4 else 299), tail


def generate_day(day: dt.date, seed: int = 7) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Box-score and play-by-play rows of one day (empty on days without games).

    Identities hold by construction: pts = 2*(fgm-fg3m) + 3*fg3m + ftm; a player's fga and fg3a
    equal his field-goal and three-point attempts in the play-by-play; makes likewise.
    """
    rng = random.Random(f"paceline-nba-{seed}-{day.isoformat()}")
    kind, n_games = games_on(day, rng)
    box: list[tuple[Any, ...]] = []
    pbp: list[tuple[Any, ...]] = []
    if n_games == 0:
        return box, pbp
    season = _season(day.year if day.month >= 7 else day.year - 1)
    teams = list(range(len(TEAM_IDS)))
    rng.shuffle(teams)
    day_index = (day - season.opening).days
    for g in range(n_games):
        game_id = f"{kind}{season.year % 100:02d}{day_index * 16 + g + 1:05d}"
        style = rng.choices(("clock", "padded", "iso"), weights=(0.55, 0.15, 0.30))[0]
        overtime = rng.random() < 0.08
        periods = 5 if overtime else 4
        actions: list[tuple[int, int, tuple[Any, ...]]] = []  # (period, seconds left, row tail)
        for side in (0, 1):
            team_index = teams[2 * g + side]
            team_id = TEAM_IDS[team_index]
            dnp = set(rng.sample(range(5, ROSTER), rng.choice((5, 6, 6, 7))))
            active = [slot for slot in range(ROSTER) if slot not in dnp]
            weights = [rng.uniform(28, 38) if slot < 5 else rng.uniform(6, 24) for slot in active]
            total = 48 * 60 * 5 + (5 * 60 * 5 if overtime else 0)
            seconds = [int(total * w / sum(weights)) for w in weights]
            seconds[0] += total - sum(seconds)
            played = dict(zip(active, seconds, strict=True))
            for slot in range(ROSTER):
                person_id, first, family, position = _person(team_index, slot)
                if slot in dnp:
                    minutes = "" if rng.random() < 0.6 else None
                    stat = None if rng.random() < 0.3 else 0
                    box.append((day, game_id, team_id, person_id, first, family, position,
                                rng.choice(DNP_COMMENTS), minutes, *([stat] * 15), None))
                    continue
                secs = played[slot]
                fga = round(secs / 60 * rng.uniform(0.2, 0.55))
                fg3a = _binomial(rng, fga, rng.uniform(0.2, 0.5))
                fg3m = _binomial(rng, fg3a, 0.36)
                fg2m = _binomial(rng, fga - fg3a, 0.52)
                fta = round(secs / 60 * rng.uniform(0.0, 0.2))
                ftm = _binomial(rng, fta, 0.78)
                oreb, dreb = _ri(rng, 0, 3), _ri(rng, 0, 8)
                pts = 2 * fg2m + 3 * fg3m + ftm
                box.append((day, game_id, team_id, person_id, first, family, position, "",
                            _minutes_text(secs, style), fg2m + fg3m, fga, fg3m, fg3a, ftm, fta, oreb, dreb,
                            oreb + dreb, _ri(rng, 0, 9), _ri(rng, 0, 3), _ri(rng, 0, 2),
                            _ri(rng, 0, 4), _ri(rng, 0, 5), pts, float(_ri(rng, -20, 20))))
                shots = [(3, k < fg3m) for k in range(fg3a)] + [(2, k < fg2m) for k in range(fga - fg3a)]
                for value, made in shots:
                    zone = _weighted(rng, THREE_ZONES if value == 3 else TWO_ZONES)
                    x, y = _point(zone, rng)
                    roll = rng.random()
                    zone_basic = zone if roll < 0.70 else ("" if roll < 0.75 else None)
                    shot_value = value if rng.random() < 0.85 else None
                    sub_type = "Jump Shot" if zone not in ("Restricted Area",) else rng.choice(("Layup", "Dunk"))
                    tail = (team_id, person_id, "Made Shot" if made else "Missed Shot", sub_type,
                            "Made" if made else "Missed", 1, shot_value,
                            round(math.sqrt(x * x + y * y) / 10, 1), x, y, zone_basic)
                    actions.append(_when(rng, periods, tail))
                for k in range(fta):
                    made = k < ftm
                    tail = (team_id, person_id, "Free Throw", f"Free Throw {k % 2 + 1} of 2",
                            "Made" if made else "Missed", 0, 1, None, None, None, None)
                    actions.append(_when(rng, periods, tail))
        for period in range(1, periods + 1):
            actions.append((period, 720 if period <= 4 else 300,
                            (None, 0, "period", "start", None, 0, None, None, None, None, None)))
        actions.sort(key=lambda a: (a[0], -a[1]))
        for number, (period, left, tail) in enumerate(actions, start=1):
            pbp.append((day, game_id, number, period, _CLOCKS[left], *tail))
    return box, pbp


def _arrow_table(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Any:
    import pyarrow as pa

    def kind(name: str) -> Any:
        if name == "game_date":
            return pa.date32()
        if name in _STRING:
            return pa.string()
        if name in _FLOAT:
            return pa.float64()
        return pa.int64()

    schema = pa.schema([(name, kind(name)) for name in columns])
    data = list(zip(*rows, strict=True)) if rows else [[] for _ in columns]
    return pa.Table.from_arrays([pa.array(col, type=schema.field(i).type) for i, col in enumerate(data)],
                                schema=schema)


def _load(client: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    import pyarrow.parquet as pq
    from google.cloud import bigquery

    client = google_client(client)
    buffer = io.BytesIO()
    pq.write_table(_arrow_table(columns, rows), buffer)
    buffer.seek(0)
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
    )
    client.load_table_from_file(buffer, f"{client.project}.{table}", job_config=config).result()


def load_rows(client: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` (dicts; missing columns are NULL) to ``nba_raw.box_player`` or
    ``nba_raw.pbp_actions`` with one load job. For tests and hand-made fixtures."""
    columns = {BOX_TABLE: BOX_COLUMNS, PBP_TABLE: PBP_COLUMNS}[table]
    unknown = {key for row in rows for key in row} - set(columns)
    if unknown:
        raise ValueError(f"unknown columns for {table}: {sorted(unknown)}")
    _load(client, table, columns, [tuple(row.get(name) for name in columns) for row in rows])


def _days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


def seed_nba(client: Any, start: dt.date, end: dt.date, seed: int = 7, *, chunk_rows: int = 500_000) -> SeedStats:
    """Replace the raw NBA rows of ``[start, end]`` with generated ones. Deterministic, idempotent.

    Off days (no games: July to mid-October, All-Star break, Thanksgiving, Dec 24, some playoff
    days) get no rows. About 40% of box-score rows are players who did not play, with '' or NULL
    minutes; played minutes come as 'M:SS', 'MM:SS' or 'PT25M01.00S'. 70% of shots carry
    shot_zone_basic (5% an empty string, 25% NULL), 85% a shot_value; one in ten sits on a zone
    boundary.
    """
    from google.cloud import bigquery

    started = time.monotonic()
    client = google_client(client)
    ensure_schema(client)
    params = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter("start_date", "DATE", start),
        bigquery.ScalarQueryParameter("end_date", "DATE", end),
    ])
    client.query(DELETE_BOX_RANGE, job_config=params).result()
    client.query(DELETE_PBP_RANGE, job_config=params).result()
    box: list[tuple[Any, ...]] = []
    pbp: list[tuple[Any, ...]] = []
    days = game_days = games = box_total = pbp_total = 0
    for day in _days(start, end):
        day_box, day_pbp = generate_day(day, seed)
        days += 1
        if day_box:
            game_days += 1
            games += len({row[1] for row in day_box})
        box += day_box
        pbp += day_pbp
        if len(pbp) >= chunk_rows:
            _load(client, BOX_TABLE, BOX_COLUMNS, box)
            _load(client, PBP_TABLE, PBP_COLUMNS, pbp)
            box_total, pbp_total = box_total + len(box), pbp_total + len(pbp)
            box, pbp = [], []
    if box:
        _load(client, BOX_TABLE, BOX_COLUMNS, box)
        _load(client, PBP_TABLE, PBP_COLUMNS, pbp)
        box_total, pbp_total = box_total + len(box), pbp_total + len(pbp)
    return SeedStats(start, end, days, game_days, games, box_total, pbp_total, time.monotonic() - started)


def seed_scale(client: Any, scale: str = "small", seed: int = 7) -> SeedStats:
    """Seed one of :data:`SCALES` ("small": 18 days, "seed": 2021-10-01..2024-05-01)."""
    try:
        start, end = SCALES[scale]
    except KeyError:
        raise ValueError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}") from None
    return seed_nba(client, start, end, seed)


def main(argv: list[str] | None = None) -> None:
    """``python -m paceline.sandbox.bigquery [--scale small|seed] [--data-dir D]``: start, seed, wait."""
    import argparse

    parser = argparse.ArgumentParser(description="Start the BigQuery emulator and seed NBA raw data")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: <var dir>/bigquery")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    from paceline.config import var_dir

    emulator = start_emulator(args.data_dir or var_dir() / "bigquery", args.port)
    stats = seed_scale(emulator.client(), args.scale, args.seed)
    print(f"BIGQUERY_EMULATOR_HOST={emulator.url}")
    print(f"seeded {stats}", file=sys.stderr)
    print("Ctrl-C stops the emulator", file=sys.stderr)
    try:
        while emulator.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
