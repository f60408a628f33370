"""API clients and their access tokens."""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from flask_jwt_extended import create_access_token
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.auth.errors import (
    ChannelExistsError,
    ChannelNotFoundError,
    ClientNotFoundError,
    InvalidClientError,
    ScopeNotGrantedError,
)
from loyalty.auth.models import ApiClient, Channel
from loyalty.auth.rules import DEFAULT_CHANNEL, SCOPES, parse_scopes, scope_string
from loyalty.db import locked_row, new_id, unit_of_work, utcnow
from loyalty.errors import RuleViolationError, TokenRevokedError


@cache
def _hasher(profile: str) -> PasswordHasher:
    return PasswordHasher.from_parameters(getattr(profiles, profile))


@cache
def _dummy_hash(profile: str) -> str:
    """Verified against when the client id is unknown, so that both failures take as long."""
    return _hasher(profile).hash("not-a-real-secret")


def _current_hasher() -> tuple[PasswordHasher, str]:
    profile = current_app.config["ARGON2_PROFILE"]
    return _hasher(profile), profile


@dataclass(frozen=True)
class NewClient:
    """A client just created, with the only copy of its secret."""

    client: ApiClient
    secret: str


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    token_type: str
    expires_in: int
    scope: str


@dataclass(frozen=True)
class Principal:
    """Who is calling: the API client behind a verified token and the scopes it carries."""

    client_id: str
    scopes: tuple[str, ...]
    # The channel the client reports for: its order, refund and event ids are the channel's.
    channel_id: str = DEFAULT_CHANNEL


# --- channels -------------------------------------------------------------------------------


def create_channel(session: Session, *, name: str) -> Channel:
    """Add a channel (a storefront, a point of sale, an app). Raises `RuleViolationError` for
    an empty or long name and `ChannelExistsError` when the name is taken."""
    name = name.strip()
    if not name or len(name) > 100:
        raise RuleViolationError("A channel name must have 1 to 100 characters.")
    with unit_of_work(session):
        if session.scalar(select(Channel.id).where(Channel.name == name)) is not None:
            raise ChannelExistsError(name)
        channel = Channel(id=new_id("chn"), name=name)
        session.add(channel)
    return channel


def list_channels(session: Session) -> list[Channel]:
    """All channels, the default one first, then by creation."""
    channels = list(session.scalars(select(Channel).order_by(Channel.created_at, Channel.id)))
    return sorted(channels, key=lambda channel: channel.id != DEFAULT_CHANNEL)


def get_channel(session: Session, channel_id: str) -> Channel:
    """Raises `ChannelNotFoundError`."""
    channel = session.get(Channel, channel_id)
    if channel is None:
        raise ChannelNotFoundError(channel_id)
    return channel


# --- clients --------------------------------------------------------------------------------


def create_client(
    session: Session,
    *,
    name: str,
    scopes: Iterable[str],
    channel_id: str = DEFAULT_CHANNEL,
) -> NewClient:
    """Create an API client of ``channel_id`` (default: the programme's default channel) with
    the given scopes and a new random secret.

    Raises `UnknownScopeError` for a scope that does not exist, `RuleViolationError` for an
    empty name or no scopes, and `ChannelNotFoundError`.
    """
    name = name.strip()
    if not name or len(name) > 100:
        raise RuleViolationError("A client name must have 1 to 100 characters.")
    granted = parse_scopes(scopes)
    if not granted:
        raise RuleViolationError(f"Give at least one scope: {scope_string(SCOPES)}.")
    secret = "lsk_" + secrets.token_urlsafe(32)
    secret_hash = _current_hasher()[0].hash(secret)  # slow by design: before taking locks
    with unit_of_work(session):
        get_channel(session, channel_id)
        client = ApiClient(
            id=new_id("cli"),
            name=name,
            channel_id=channel_id,
            secret_hash=secret_hash,
            scopes=granted,
        )
        session.add(client)
    return NewClient(client=client, secret=secret)


def list_clients(session: Session, *, include_revoked: bool = True) -> list[ApiClient]:
    """All API clients, oldest first."""
    query = select(ApiClient).order_by(ApiClient.id)
    if not include_revoked:
        query = query.where(ApiClient.revoked_at.is_(None))
    return list(session.scalars(query))


def revoke_client(session: Session, *, client_id: str) -> ApiClient:
    """Revoke a client: its secret stops working and so do the tokens already issued to it.

    Revoking twice keeps the first revocation time. Raises `ClientNotFoundError`.
    """
    with unit_of_work(session):
        client = locked_row(session, ApiClient, client_id, ClientNotFoundError(client_id))
        if client.revoked_at is None:
            client.revoked_at = utcnow()
    _client_states.pop(client_id, None)
    return client


def issue_token(
    session: Session,
    *,
    client_id: str,
    client_secret: str,
    scope: str | None = None,
) -> TokenGrant:
    """Exchange client credentials for a short-lived bearer JWT (OAuth 2 client credentials).

    ``scope`` narrows the token to some of the client's scopes. Raises `InvalidClientError` for
    a wrong id or secret or a revoked client, `UnknownScopeError` and `ScopeNotGrantedError`.
    Writes nothing.
    """
    client = session.get(ApiClient, client_id) if len(client_id) <= 40 else None
    hasher, profile = _current_hasher()
    try:
        hasher.verify(client.secret_hash if client else _dummy_hash(profile), client_secret)
    except (VerificationError, InvalidHashError):
        raise InvalidClientError() from None
    if client is None or not client.active:
        raise InvalidClientError()

    scopes = client.scopes
    if scope is not None and scope.strip():
        requested = parse_scopes(scope)
        refused = [s for s in requested if s not in client.scopes]
        if refused:
            raise ScopeNotGrantedError(refused)
        scopes = requested

    ttl = int(current_app.config["TOKEN_TTL"])
    token = create_access_token(
        identity=client.id,
        additional_claims={"scope": scope_string(scopes), "typ": "client"},
        expires_delta=dt.timedelta(seconds=ttl),
    )
    return TokenGrant(
        access_token=token, token_type="Bearer", expires_in=ttl, scope=scope_string(scopes)
    )


@dataclass(frozen=True)
class _ClientState:
    revoked: bool
    channel_id: str
    read_at: float  # time.monotonic() when it was read


# What this process last read of each client that presented a token: revocation reaches the
# other processes within the caller's ``max_age`` (AUTH_CACHE_SECONDS), this one at once.
_client_states: dict[str, _ClientState] = {}


def principal_for_token(
    session: Session, *, client_id: str, scope: str, max_age: float = 0.0
) -> Principal:
    """The caller behind a verified token, provided its client has not been revoked since.

    What the database says of the client is reused for up to ``max_age`` seconds (0: read
    every time), so that most requests authenticate without a query. Raises
    `TokenRevokedError`.
    """
    state = _client_states.get(client_id)
    if state is None or time.monotonic() - state.read_at >= max_age:
        row = session.execute(
            select(ApiClient.revoked_at, ApiClient.channel_id).where(ApiClient.id == client_id)
        ).first()
        state = _ClientState(
            revoked=row is None or row.revoked_at is not None,
            channel_id=row.channel_id if row is not None else "",
            read_at=time.monotonic(),
        )
        if len(_client_states) >= 10_000:  # clients are few; tokens of deleted ones are not
            _client_states.clear()
        _client_states[client_id] = state
    if state.revoked:
        raise TokenRevokedError()
    return Principal(client_id=client_id, scopes=tuple(scope.split()), channel_id=state.channel_id)
