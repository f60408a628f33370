"""Sending one webhook: where it may go (the SSRF guard) and the HTTP POST itself.

A webhook URL is http or https, and its host must resolve to public addresses only: private,
loopback, link-local, multicast, reserved and unspecified targets are refused (see
`loyalty.events.rules.address_refusal`), unless ``WEBHOOKS_ALLOW_PRIVATE`` is set. The check
runs when an endpoint is saved and again before every attempt, and the attempt connects to the
very address that was checked, so a DNS answer that changes in between (DNS rebinding) cannot
point a webhook at an internal service. Redirects are not followed; timeouts are short.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from importlib import metadata
from urllib.parse import urlsplit

from loyalty.events import rules

SCHEMES = {"http": 80, "https": 443}
# Seconds to connect, and to wait for each part of the answer once connected.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
# How much of the answer's body is read, and kept in the delivery log.
READ_LIMIT = 4096
EXCERPT_LENGTH = 1000
USER_AGENT = f"loyalty-webhooks/{metadata.version('loyalty')}"


class TargetRefusedError(Exception):
    """The URL may not be sent to; ``reason`` completes "The URL's host ..."."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """Where a webhook goes: the URL's parts and the addresses checked for its host."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]


def _parts(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise TargetRefusedError("is missing, or the scheme is not http or https")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise TargetRefusedError("has an invalid port") from None
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(url: str, *, allow_private: bool) -> Target:
    """The URL's target, its host resolved and every address checked (none is refused when
    ``allow_private``). Raises `TargetRefusedError`."""
    scheme, host, port, path = _parts(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise TargetRefusedError(f"{host} does not resolve") from None
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TargetRefusedError(f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            refusal = rules.address_refusal(address)
            if refusal is not None:
                where = "is" if _is_literal(host) else f"{host} resolves to"
                article = "an" if refusal[0] in "aeiou" else "a"
                raise TargetRefusedError(f"{where} {address}, {article} {refusal}")
    return Target(scheme, host, port, path, addresses)


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL a webhook may not go to. With ``allow_private`` only its form is checked
    (no DNS lookup). Raises `TargetRefusedError`."""
    if allow_private:
        _parts(url)
    else:
        resolve(url, allow_private=False)


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code and the start of the body, or an error."""

    status_code: int | None
    duration_ms: int
    excerpt: str | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None


class _Connection(http.client.HTTPConnection):
    """An HTTP connection over a socket already connected to a checked address."""

    def __init__(self, target: Target, sock: socket.socket) -> None:
        super().__init__(target.host, target.port, timeout=READ_TIMEOUT)
        self._connected = sock

    def connect(self) -> None:
        self.sock = self._connected


def _connect(target: Target) -> socket.socket:
    """A socket connected to the first reachable checked address (TLS for https)."""
    error: OSError | None = None
    for address in target.addresses:
        try:
            sock = socket.create_connection((address, target.port), timeout=CONNECT_TIMEOUT)
            break
        except OSError as exc:
            error = exc
    else:
        assert error is not None
        raise error
    sock.settimeout(READ_TIMEOUT)
    if target.scheme == "https":
        context = ssl.create_default_context()
        try:
            return context.wrap_socket(sock, server_hostname=target.host)
        except BaseException:
            sock.close()
            raise
    return sock


def _excerpt(raw: bytes) -> str | None:
    if not raw:
        return None
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")[:EXCERPT_LENGTH]


def _describe(error: BaseException) -> str:
    """A short account of a failure, without the payload or any header."""
    if isinstance(error, TargetRefusedError):
        return f"not sent: the URL's host {error.reason}"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or 'handshake failed'}"
    if isinstance(error, http.client.HTTPException):
        return f"invalid HTTP answer ({type(error).__name__})"
    if isinstance(error, OSError) and error.strerror:
        return f"network error: {error.strerror}"
    return f"network error ({type(error).__name__})"


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool) -> Outcome:
    """POST ``body`` to ``url`` once: 2xx is success; a redirect, any other status, a refused
    target, a timeout or a network error is a failure. Never raises for the network's sake."""
    started = time.monotonic()
    status: int | None = None
    excerpt: str | None = None
    error: str | None = None
    connection: _Connection | None = None
    try:
        target = resolve(url, allow_private=allow_private)
        connection = _Connection(target, _connect(target))
        connection.request(
            "POST",
            target.path,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "Connection": "close",
                **headers,
            },
        )
        response = connection.getresponse()
        status = response.status
        try:
            excerpt = _excerpt(response.read(READ_LIMIT))
        except (OSError, http.client.HTTPException):
            excerpt = None  # the status is what counts
        if 300 <= status < 400:
            error = f"redirect ({status}) not followed: the URL must answer 2xx itself"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
    except (OSError, http.client.HTTPException, TargetRefusedError) as exc:
        error = _describe(exc)
    finally:
        if connection is not None:
            connection.close()
    duration_ms = round((time.monotonic() - started) * 1000)
    return Outcome(status, duration_ms, excerpt, error)
