"""API clients and tokens through the service layer."""

from __future__ import annotations

import jwt
import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.auth import service
from loyalty.auth.errors import (
    ClientNotFoundError,
    InvalidClientError,
    ScopeNotGrantedError,
    UnknownScopeError,
)
from loyalty.auth.models import ApiClient
from loyalty.errors import RuleViolationError, TokenRevokedError


def test_secret_is_stored_only_as_an_argon2_hash(session: Session) -> None:
    new = service.create_client(session, name="Shop", scopes=["members:read"])
    stored = session.scalars(select(ApiClient).where(ApiClient.id == new.client.id)).one()
    assert stored.secret_hash.startswith("$argon2id$")
    assert new.secret not in stored.secret_hash
    assert new.secret.startswith("lsk_") and len(new.secret) > 40


def test_token_carries_the_clients_scopes_and_expires(session: Session, app: Flask) -> None:
    new = service.create_client(session, name="Shop", scopes=["points:accrue", "members:read"])
    grant = service.issue_token(session, client_id=new.client.id, client_secret=new.secret)
    assert grant.token_type == "Bearer"
    assert grant.scope == "members:read points:accrue"
    claims = jwt.decode(grant.access_token, app.config["JWT_SECRET_KEY"], algorithms=["HS256"])
    assert claims["sub"] == new.client.id
    assert claims["scope"] == grant.scope
    assert claims["exp"] - claims["iat"] == app.config["TOKEN_TTL"] == grant.expires_in


def test_requested_scope_narrows_the_token(session: Session) -> None:
    new = service.create_client(session, name="Shop", scopes=["points:accrue", "members:read"])
    grant = service.issue_token(
        session, client_id=new.client.id, client_secret=new.secret, scope="members:read"
    )
    assert grant.scope == "members:read"
    with pytest.raises(ScopeNotGrantedError):
        service.issue_token(
            session, client_id=new.client.id, client_secret=new.secret, scope="points:adjust"
        )
    with pytest.raises(UnknownScopeError):
        service.issue_token(session, client_id=new.client.id, client_secret=new.secret, scope="god")


@pytest.mark.parametrize("which", ["secret", "id"])
def test_wrong_credentials_are_refused(session: Session, which: str) -> None:
    new = service.create_client(session, name="Shop", scopes=["members:read"])
    client_id = new.client.id if which == "secret" else "cli_unknown"
    secret = "wrong" if which == "secret" else new.secret
    with pytest.raises(InvalidClientError):
        service.issue_token(session, client_id=client_id, client_secret=secret)


def test_revoked_client_cannot_get_tokens_and_its_tokens_stop_working(session: Session) -> None:
    new = service.create_client(session, name="Shop", scopes=["members:read"])
    grant = service.issue_token(session, client_id=new.client.id, client_secret=new.secret)
    assert service.principal_for_token(session, client_id=new.client.id, scope=grant.scope)
    first = service.revoke_client(session, client_id=new.client.id).revoked_at
    assert first is not None
    assert service.revoke_client(session, client_id=new.client.id).revoked_at == first
    with pytest.raises(InvalidClientError):
        service.issue_token(session, client_id=new.client.id, client_secret=new.secret)
    with pytest.raises(TokenRevokedError):
        service.principal_for_token(session, client_id=new.client.id, scope=grant.scope)


def test_revoking_an_unknown_client(session: Session) -> None:
    with pytest.raises(ClientNotFoundError):
        service.revoke_client(session, client_id="cli_nope")


@pytest.mark.parametrize(("name", "scopes"), [("", ["members:read"]), ("Shop", [])])
def test_client_needs_a_name_and_a_scope(session: Session, name: str, scopes: list[str]) -> None:
    with pytest.raises(RuleViolationError):
        service.create_client(session, name=name, scopes=scopes)


def test_list_clients(session: Session) -> None:
    a = service.create_client(session, name="A", scopes=["members:read"]).client
    b = service.create_client(session, name="B", scopes=["members:read"]).client
    service.revoke_client(session, client_id=a.id)
    assert [c.id for c in service.list_clients(session)] == [a.id, b.id]
    assert [c.id for c in service.list_clients(session, include_revoked=False)] == [b.id]
