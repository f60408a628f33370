"""Values the service must read back later but a database dump must not reveal (webhook
signing secrets, a stored response that shows one), sealed with a key derived from
``SECRET_KEY``.

Sealing is authenticated encryption (Fernet: AES-128-CBC with HMAC-SHA256) under a key that
HKDF-SHA256 derives from ``SECRET_KEY`` and the value's purpose, so one purpose's sealed
values cannot stand in for another's. Changing ``SECRET_KEY`` makes the sealed values
unreadable (`unseal` raises `UnsealError`): webhook secrets must then be rotated.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app


class UnsealError(Exception):
    """A sealed value that this ``SECRET_KEY`` cannot open (the key changed, or the value was
    altered)."""


@lru_cache(maxsize=16)
def _fernet(secret_key: str, purpose: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"loyalty sealing: {purpose}".encode(),
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _current(purpose: str) -> Fernet:
    secret = current_app.config["SECRET_KEY"]
    return _fernet(secret.decode() if isinstance(secret, bytes) else str(secret), purpose)


def seal(value: str, *, purpose: str) -> str:
    """``value`` encrypted and authenticated under the app's key for ``purpose`` (ASCII)."""
    return _current(purpose).encrypt(value.encode()).decode("ascii")


def unseal(sealed: str, *, purpose: str) -> str:
    """The value `seal` sealed for ``purpose``. Raises `UnsealError`."""
    try:
        return _current(purpose).decrypt(sealed.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as error:
        raise UnsealError(f"cannot unseal a {purpose} with this SECRET_KEY") from error
