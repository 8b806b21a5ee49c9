"""Start bqemulator offline. Run with ``.venv-bq/bin/python path/to/bq_launcher.py``.

This file runs inside the emulator's own virtualenv (``.venv-bq``), which has neither Airflow
nor Paceline installed, so it imports nothing but the standard library and ``bqemulator``;
``paceline.sandbox.bigquery`` starts it as a subprocess by file path.

Why a launcher instead of ``bqemulator start``: bqemulator 1.4.0 runs ``INSTALL spatial;
LOAD spatial`` when its DuckDB engine starts and refuses to start when that fails, and the
INSTALL downloads the extension from DuckDB's extension site. Offline machines have no such
access and there is no flag or environment variable to skip it. Paceline uses no GEOGRAPHY
type, so the launcher replaces that step with a best-effort ``LOAD spatial`` (works when the
extension is already in the local DuckDB extension directory) that is skipped on failure.
The Avro extension (also downloaded) is turned off via ``enable_format_extensions``.

It also binds the REST and gRPC ports itself (0 = a free port chosen by the OS) and, once the
server accepts traffic, writes ``{"rest_port", "grpc_port", "pid"}`` as JSON to
``--ready-file``, so that the parent learns the real port with no race.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path


def _patch_spatial() -> None:
    from bqemulator.storage import engine as engine_mod

    def _load_spatial_if_present(self: engine_mod.DuckDBEngine) -> None:
        try:
            self.connection.execute("LOAD spatial")
        except Exception as exc:  # any failure: GEOGRAPHY is simply unavailable
            print(f"bq_launcher: spatial extension not loaded ({exc}); GEOGRAPHY disabled", file=sys.stderr)

    engine_mod.DuckDBEngine._load_spatial = _load_spatial_if_present  # type: ignore[method-assign]


def _patch_auto_snapshots() -> None:
    # bqemulator copies the whole table after every write (CREATE TABLE .. AS SELECT *) to serve
    # FOR SYSTEM_TIME AS OF; Paceline never time-travels, and the copies cost a full table scan
    # per MERGE or load and memory for a week. Explicit (USER) snapshots still work.
    from bqemulator.versioning import snapshots

    original = snapshots.SnapshotManager.capture

    def capture(self: snapshots.SnapshotManager, *args: object, kind: str = "AUTO", **kwargs: object) -> object:
        if kind == "AUTO":
            return None
        return original(self, *args, kind=kind, **kwargs)  # type: ignore[arg-type]

    snapshots.SnapshotManager.capture = capture  # type: ignore[method-assign]


def _patch_translation_cache() -> None:
    # bqemulator translates every statement from GoogleSQL to DuckDB with SQLGlot, about 0.12 s of
    # CPU for the day's MERGE, every time; Paceline sends the same few statements with other
    # parameters. The translation is a function of the text, the schema snapshot and the caller,
    # so a successful one is kept for the same three (a failed one is translated again).
    from bqemulator.sql import translator as translator_mod

    original = translator_mod.SQLTranslator.translate
    cache: dict[tuple[str, str, str], object] = {}

    def translate(self: object, bq_sql: str, *, schema: dict | None = None, caller: object = None,
                  **kwargs: object) -> object:
        key = (bq_sql, json.dumps(schema, sort_keys=True, default=str), repr(caller))
        if key in cache:
            return cache[key]
        result = original(self, bq_sql, schema=schema, caller=caller, **kwargs)  # type: ignore[arg-type]
        if type(result).__name__ == "Ok" and not kwargs:
            if len(cache) >= 256:  # a bound: ad-hoc queries from a session must not grow it forever
                cache.pop(next(iter(cache)))
            cache[key] = result
        return result

    translator_mod.SQLTranslator.translate = translate  # type: ignore[method-assign]


async def _serve(args: argparse.Namespace) -> None:
    from bqemulator.config import LogLevel, PersistenceMode, Settings
    from bqemulator.server import EmulatorServer

    overrides: dict[str, object] = {
        "rest_host": args.host,
        "rest_port": args.port,
        "grpc_host": args.host,
        "grpc_port": args.grpc_port,
        "default_project_id": args.project,
        "log_level": LogLevel(args.log_level),
        "enable_format_extensions": False,
        "max_concurrent_jobs": args.max_concurrent_jobs,
    }
    if args.data_dir:
        overrides["persistence_mode"] = PersistenceMode.PERSISTENT
        overrides["data_dir"] = Path(args.data_dir)
    else:
        overrides["persistence_mode"] = PersistenceMode.EPHEMERAL
    server = EmulatorServer(Settings(**overrides))
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    if args.ready_file:
        ready = Path(args.ready_file)
        tmp = ready.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rest_port": server.rest_port, "grpc_port": server.grpc_port, "pid": os.getpid()}))
        tmp.replace(ready)  # atomic: the parent never reads half a file
    print(f"bq_launcher: ready on {server.rest_url}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="REST port; 0 picks a free one")
    parser.add_argument("--grpc-port", type=int, default=0, help="gRPC port; 0 picks a free one")
    parser.add_argument("--data-dir", default=None, help="persistent DuckDB directory; omit for in-memory")
    parser.add_argument("--project", default="paceline-local")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--max-concurrent-jobs", type=int, default=16)
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--time-travel", action="store_true",
                        help="keep bqemulator's automatic snapshot after every write")
    args = parser.parse_args(argv)
    _patch_spatial()
    if not args.time_travel:
        _patch_auto_snapshots()
    _patch_translation_cache()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
