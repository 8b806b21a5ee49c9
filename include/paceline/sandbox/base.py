"""A small HTTP framework shared by the provider stand-ins.

Each stand-in (RunSignUp, Haku, The Racing API) subclasses :class:`StandIn`, declares its
routes and keeps its data in memory. The base class adds what every stand-in needs and the
real providers have: latency, random 5xx answers, per-credential quotas (with a time scale
so that an "hour" can be a minute in tests), accounting of calls and throttles, and a
``/_control`` API that tests and benchmarks use to read that accounting, change the knobs
and mutate the data.

Quirks that tests rely on are driven by counts, not by wall-clock windows, so that a test gives
the same answer on a machine busy with other work: ``throttle_next`` throttles the next N calls,
``truncate_next`` cuts the body of the next N answers, ``hold_after`` answers N more calls and
holds every later one unanswered until it is set to None (a client to kill mid-work), Haku's
``token_uses`` expires a token after N calls. Quotas and token lifetimes read :attr:`StandIn.clock`, which a test may replace
with a clock it advances itself.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Knobs:
    """Behaviour switches of one stand-in; every field can be changed at run time."""

    latency_s: float = 0.0
    error_rate: float = 0.0  # share of calls answered with a random 5xx
    throttle_mode: str = "quota"  # "quota": enforce the quotas; "off": never; "always": throttle every call
    per_second: float | None = None  # calls per second per credential (None: unlimited)
    per_hour: int | None = None  # calls per (scaled) hour per credential (None: unlimited)
    time_scale: float = 1.0  # real seconds per simulated second for the hourly quota (60/3600: an hour is a minute)
    token_lifetime_s: float = 3600.0  # Haku token lifetime, real seconds
    malformed_rate: float = 0.0  # share of records served malformed (missing ids, wrong types)
    max_per_page: int | None = None  # server-specific silent page cap (Haku)
    soft_throttle_rate: float = 0.0  # share of throttled list calls answered 200 with an empty page (Racing API quirk)
    seed: int = 7
    # count-driven quirks (each counts down as calls consume it; see the module docstring)
    throttle_next: int = 0  # throttle the next N metered calls, whatever the quota says
    truncate_next: int = 0  # cut the body of the next N answers after truncate_at_bytes, then drop the connection
    truncate_at_bytes: int = 8
    token_uses: int | None = None  # Haku: a token issued from now on answers N calls, then is expired (401)
    hold_after: int | None = None  # answer N more metered calls, then hold later ones until set to None (or above 0)
    fail_registration: str | None = None  # Haku: this registration's detail always answers 500
    malformed_listing: bool = False  # RunSignUp: page 1 of /races holds a null race, a bad id, a null event

    def update(self, values: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown knobs: {sorted(unknown)}; known: {sorted(names)}")
        for key, value in values.items():
            setattr(self, key, value)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""
    path_params: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def args(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes/str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    truncate_at: int | None = None  # send only this many body bytes (Content-Length stays whole), then close


Handler = Callable[[Request], Response]


HOLD_AT_MOST_S = 600.0  # a call held by knobs.hold_after is answered after this anyway (no stuck thread)


class Throttled(Exception):
    """Raised by a stand-in's quota check; the stand-in turns it into its provider's throttle answer."""


class SlidingWindow:
    """Sliding-window call log per credential, used to enforce a stand-in's quotas."""

    def __init__(self) -> None:
        self._calls: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def admit(self, key: str, rates: list[tuple[float, float]], now: float | None = None) -> bool:
        """Record a call for key at `now` (default: time.monotonic()) if every (limit, window_seconds) rate allows it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            log = self._calls[key]
            longest = max((window for _, window in rates), default=0.0)
            while log and log[0] <= now - longest:
                log.popleft()
            for limit, window in rates:
                in_window = sum(1 for t in log if t > now - window)
                if in_window >= limit:
                    return False
            log.append(now)
            return True

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()


class ManualClock:
    """A clock that moves only when told: set as StandIn.clock, quotas and token lifetimes
    follow advance() instead of the wall clock (tests of windows on a busy machine)."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StandIn:
    """Base class of a provider stand-in: routing, knobs, quotas, accounting, control API."""

    name = "standin"
    case_insensitive_paths = False

    def __init__(self, knobs: Knobs | None = None) -> None:
        self.knobs = knobs or Knobs()
        self.rng = random.Random(self.knobs.seed)
        self.lock = threading.RLock()
        self.windows = SlidingWindow()
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.throttles: dict[str, int] = defaultdict(int)
        self.errors_injected = 0
        self.truncated = 0
        self.held = 0  # calls being held by knobs.hold_after right now
        # ms from a request read to its answer's headers sent: what a client waits before it knows
        # the call was counted (a benchmark's ceiling for settled rates, bench/racing_backfill.py)
        self.answer_ms: deque[float] = deque(maxlen=100_000)
        # the clock of quotas and token lifetimes; a test may set a fake one it advances itself
        self.clock: Callable[[], float] = time.monotonic
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []
        self.route("GET", "/_control/stats", self._control_stats, "control")
        self.route("POST", "/_control/knobs", self._control_knobs, "control")
        self.route("POST", "/_control/reset", self._control_reset, "control")
        self.route("POST", "/_control/mutate", self._control_mutate, "control")

    # -- routing -------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler, endpoint: str | None = None) -> None:
        """Register handler for a path pattern such as ``/race/{race_id}/participants``."""
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern.rstrip("/")) + "/?$"
        flags = re.IGNORECASE if self.case_insensitive_paths and not pattern.startswith("/_control") else 0
        self._routes.append((method, re.compile(regex, flags), handler, endpoint or pattern))

    def dispatch(self, request: Request) -> Response:
        for method, regex, handler, endpoint in self._routes:
            match = regex.match(request.path)
            if match and method == request.method:
                request.path_params = match.groupdict()
                if endpoint == "control":
                    return handler(request)
                response = self._serve(request, handler, endpoint)
                if self.take("truncate_next"):
                    with self.lock:
                        self.truncated += 1
                    response.truncate_at = max(0, int(self.knobs.truncate_at_bytes))
                return response
        return self.not_found(request)

    def _hold_if_asked(self) -> None:
        with self.lock:
            left = self.knobs.hold_after
            if left is None:
                return
            if left > 0:
                self.knobs.hold_after = left - 1
                return
            self.held += 1
        deadline = time.monotonic() + HOLD_AT_MOST_S
        try:
            while self.knobs.hold_after == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            with self.lock:
                self.held -= 1

    def take(self, knob: str) -> bool:
        """Consume one unit of a count knob (throttle_next, truncate_next); False when it is spent."""
        with self.lock:
            left = int(getattr(self.knobs, knob) or 0)
            if left <= 0:
                return False
            setattr(self.knobs, knob, left - 1)
            return True

    def _serve(self, request: Request, handler: Handler, endpoint: str) -> Response:
        if self.knobs.latency_s:
            time.sleep(self.knobs.latency_s)
        credential = self.credential_of(request) or "anonymous"
        with self.lock:
            self.calls[(credential, endpoint)] += 1
        self._hold_if_asked()
        with self.lock:
            inject_error = self.knobs.error_rate and self.rng.random() < self.knobs.error_rate
        if inject_error:
            with self.lock:
                self.errors_injected += 1
            return Response(self.rng.choice([500, 502, 503]), {"message": "Internal server error"})
        try:
            self.check_quota(credential, endpoint)
            return handler(request)
        except Throttled:
            with self.lock:
                self.throttles[credential] += 1
            return self.throttle_response(request)

    def check_quota(self, credential: str, endpoint: str) -> None:
        mode = self.knobs.throttle_mode
        if mode == "always" or self.take("throttle_next"):
            raise Throttled
        if mode == "off":
            return
        if not self.windows.admit(credential, self.rates_for(endpoint), self.clock()):
            raise Throttled

    def rates_for(self, endpoint: str) -> list[tuple[float, float]]:
        rates: list[tuple[float, float]] = []
        if self.knobs.per_second:
            rates.append((self.knobs.per_second, 1.0))
        if self.knobs.per_hour:
            rates.append((self.knobs.per_hour, 3600.0 * self.knobs.time_scale))
        return rates

    # -- provider specific hooks (overridden) --------------------------------------------
    def credential_of(self, request: Request) -> str | None:
        return None

    def throttle_response(self, request: Request) -> Response:
        return Response(429, {"message": "Too Many Requests"})

    def not_found(self, request: Request) -> Response:
        return Response(404, {"detail": "Not Found"})

    def mutation_handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """The data mutations this stand-in offers through POST /_control/mutate, by action name."""
        return {}

    def mutate(self, action: str, payload: dict[str, Any]) -> Any:
        handlers = self.mutation_handlers()
        if action not in handlers:
            raise ValueError(f"{self.name} supports no mutation {action!r}; known: {sorted(handlers)}")
        with self.lock:
            return handlers[action](payload)

    def malformed(self) -> bool:
        """Whether the next record served should be malformed (draws from the seeded RNG)."""
        with self.lock:
            return bool(self.knobs.malformed_rate) and self.rng.random() < self.knobs.malformed_rate

    # -- control API -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        with self.lock:
            per_credential: dict[str, dict[str, int]] = defaultdict(dict)
            for (credential, endpoint), count in self.calls.items():
                per_credential[credential][endpoint] = count
            return {
                "calls": {c: dict(e) for c, e in per_credential.items()},
                "total_calls": sum(self.calls.values()),
                "throttles": dict(self.throttles),
                "errors_injected": self.errors_injected,
                "truncated": self.truncated,
                "held": self.held,
                "knobs": asdict(self.knobs),
                "answer_ms": _quantiles(self.answer_ms),
            }

    def reset_stats(self) -> None:
        with self.lock:
            self.calls.clear()
            self.throttles.clear()
            self.errors_injected = 0
            self.truncated = 0
            self.answer_ms.clear()
        self.windows.reset()

    def _control_stats(self, request: Request) -> Response:
        return Response(200, self.stats())

    def _control_knobs(self, request: Request) -> Response:
        try:
            self.knobs.update(request.json() or {})
        except ValueError as exc:
            return Response(400, {"error": str(exc)})
        return Response(200, asdict(self.knobs))

    def _control_reset(self, request: Request) -> Response:
        self.reset_stats()
        return Response(200, {"reset": True})

    def _control_mutate(self, request: Request) -> Response:
        payload = request.json() or {}
        try:
            with self.lock:
                result = self.mutate(payload.get("action", ""), payload)
        except (ValueError, KeyError) as exc:
            return Response(400, {"error": str(exc)})
        return Response(200, {"result": result})


def _quantiles(values: deque[float]) -> dict[str, float | int]:
    """count, median and 95th percentile (ms) of the answer times, for stats()."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "median": round(ordered[len(ordered) // 2], 2),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2)}


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes; without TCP_NODELAY a keep-alive client (requests.Session)
    # waits ~40 ms per call for the delayed ACK of the first
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests run thousands of calls
        return

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        read_at = time.monotonic()
        try:
            response = self.standin.dispatch(request)
        except Exception as exc:  # a stand-in bug must show up as a 500, not a hung client
            response = Response(500, {"message": f"stand-in error: {exc!r}"})
        if isinstance(response.body, bytes):
            payload, content_type = response.body, "application/octet-stream"
        elif isinstance(response.body, str):
            payload, content_type = response.body.encode(), "text/plain; charset=utf-8"
        elif response.body is None:
            payload, content_type = b"", "application/json"
        else:
            payload, content_type = json.dumps(response.body).encode(), "application/json"
        self.send_response(response.status)
        headers = {"Content-Type": content_type, **response.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not parts.path.startswith("/_control/"):
            answered_ms = (time.monotonic() - read_at) * 1000.0
            with self.standin.lock:
                self.standin.answer_ms.append(answered_ms)
        if response.truncate_at is not None:  # a connection reset mid-body: the client reads too few bytes
            self.wfile.write(payload[: response.truncate_at])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle


class RunningServer:
    """A stand-in served on loopback from a daemon thread."""

    def __init__(self, standin: StandIn, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type(f"{standin.name}Handler", (_Handler,), {"standin": standin})
        self.standin = standin
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        # a short poll interval makes stop() return in ~50 ms instead of ~0.5 s (tests stop many servers)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"standin-{standin.name}", daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(standin: StandIn, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    return RunningServer(standin, host, port)
