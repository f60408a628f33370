"""The fingerprint of a request, to tell a retry (the same request) from a reuse of its key."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """A hash identifying a request: method, path and the JSON body in canonical form."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()
