#!/usr/bin/env python3
"""Where a worker's time goes, from a py-spy profile in raw (collapsed stack) format.

    python benchmarks/orders.py --profile /tmp/orders.txt        # records it during the run
    python benchmarks/profile_breakdown.py /tmp/orders.txt

Only samples taken inside a request (gunicorn's handle_request) count. Two tables:

* by library: each sample goes to the library of its innermost frame, where standard-library
  frames are charged to the library that called them (so `re` called by marshmallow counts as
  marshmallow);
* by step: inclusive time of named steps of POST /v1/orders (one sample can be in several).

Recorded without --idle (the default of orders.py --profile), the samples are on-CPU time;
with --idle, time spent waiting on PostgreSQL shows up under psycopg's Connection.wait.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from collections.abc import Callable

# The library a frame belongs to, by the start of its file path as py-spy prints it.
LIBRARIES: list[tuple[str, str]] = [
    ("loyalty/", "loyalty (the service's own code)"),
    ("sqlalchemy/orm/", "SQLAlchemy ORM (unit of work, identity map, loading)"),
    ("sqlalchemy/", "SQLAlchemy Core (compile, cache keys, execute, pool, types)"),
    ("psycopg_binary", "psycopg (driver)"),
    ("psycopg_pool", "psycopg (driver)"),
    ("psycopg/", "psycopg (driver)"),
    ("marshmallow/", "marshmallow/webargs/flask-smorest (parse, validate, dump)"),
    ("webargs/", "marshmallow/webargs/flask-smorest (parse, validate, dump)"),
    ("flask_smorest/", "marshmallow/webargs/flask-smorest (parse, validate, dump)"),
    ("apispec/", "marshmallow/webargs/flask-smorest (parse, validate, dump)"),
    ("flask_jwt_extended/", "JWT (flask-jwt-extended, PyJWT)"),
    ("jwt/", "JWT (flask-jwt-extended, PyJWT)"),
    ("flask/", "Flask/Werkzeug (routing, request, response)"),
    ("werkzeug/", "Flask/Werkzeug (routing, request, response)"),
    ("gunicorn/", "gunicorn (accept, HTTP parsing, socket writes)"),
    ("ulid/", "ULID ids"),
    ("iso4217/", "iso4217"),
]

# Inclusive steps of a POST /v1/orders, matched on the frame's function name (and file).
STEPS: list[tuple[str, Callable[[str], bool]]] = [
    ("whole request (Flask app)", lambda f: f.startswith("Flask.wsgi_app ")),
    ("gunicorn outside the app", lambda f: False),  # computed below
    ("auth: authenticate() in all", lambda f: f.startswith("authenticate (loyalty/auth")),
    ("  JWT decode + verify", lambda f: f.startswith("verify_jwt_in_request ")),
    ("  revoked-client lookup (SQL)", lambda f: f.startswith("principal_for_token ")),
    ("request body: parse + validate", lambda f: f.startswith("Parser.parse ")),
    (
        "response: dump the schema",
        lambda f: "ResponseMixin._prepare_response" in f or f.startswith("Schema.dump "),
    ),
    ("accrue_order() in all", lambda f: f.startswith("accrue_order ") or ".accrue_order (" in f),
    (
        "  Session.execute (SELECTs, locks)",
        lambda f: (
            f.startswith("Session.execute ")
            or f.startswith("Session.scalar ")
            or f.startswith("Session.get ")
        ),
    ),
    ("  Session.flush (INSERT/UPDATE)", lambda f: f.startswith("Session.flush ")),
    ("  Session.commit", lambda f: f.startswith("Session.commit ")),
    ("  request_fingerprint (sha256)", lambda f: f.startswith("request_fingerprint ")),
    ("SQL statement compile/cache key", lambda f: f.startswith("ClauseElement._compile_w_cache")),
    ("pool checkout + pre-ping", lambda f: f.startswith("_ConnectionFairy._checkout ")),
    (
        "psycopg Cursor.execute (send, wait, receive)",
        lambda f: f.startswith("Cursor.execute ") and "psycopg/" in f,
    ),
    (
        "  of which waiting on PostgreSQL",
        lambda f: f.startswith("Connection.wait ") and "psycopg/" in f,
    ),
    ("connection close/rollback at teardown", lambda f: f.startswith("_close_session ")),
]

# A sample is inside a request when its stack has gunicorn's request handler or, for a
# profile of benchmarks/request_cpu.py (no server), Flask's WSGI app.
REQUEST = re.compile(
    r"^(SyncWorker|ThreadWorker)\.handle_request |^ThreadWorker\.handle |^Flask\.wsgi_app "
)


def library(frame: str) -> str | None:
    match = re.search(r"\(([^():]+):\d+\)$", frame)
    path = match.group(1) if match else ""
    for prefix, name in LIBRARIES:
        if path.startswith(prefix) or f"/{prefix}" in path:
            return name
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", help="py-spy record --format raw output")
    args = parser.parse_args(argv)

    by_library: collections.Counter[str] = collections.Counter()
    by_step: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    in_requests = idle = total = 0
    with open(args.profile) as handle:
        for line in handle:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            frames = [f for f in stack.split(";") if not f.startswith("process ")]
            total += count
            if not any(REQUEST.match(f) for f in frames):
                if any(f.startswith("SyncWorker.wait ") or "workers/gthread" in f for f in frames):
                    idle += count
                continue
            in_requests += count
            owner = next((lib for f in reversed(frames) if (lib := library(f))), "other")
            by_library[owner] += count
            leaves[frames[-1]] += count
            for name, matches in STEPS:
                if any(matches(f) for f in frames):
                    by_step[name] += count
    if not in_requests:
        print("no samples inside requests", file=sys.stderr)
        return 1
    by_step["gunicorn outside the app"] = in_requests - by_step["whole request (Flask app)"]

    def pct(n: int) -> str:
        return f"{100 * n / in_requests:5.1f}%"

    print(f"{in_requests} samples inside requests ({idle} more in workers waiting for one)\n")
    print("by library (innermost non-stdlib frame)")
    for name, count in by_library.most_common():
        print(f"  {pct(count)}  {name}")
    print("\nby step (inclusive)")
    for name, _ in STEPS:
        print(f"  {pct(by_step[name])}  {name}")
    print("\nhottest innermost frames")
    for frame, count in leaves.most_common(12):
        print(f"  {pct(count)}  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
