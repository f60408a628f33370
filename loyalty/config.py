"""Configuration: defaults, then ``LOYALTY_*`` environment variables, then an explicit mapping."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

ARGON2_PROFILES = ("RFC_9106_HIGH_MEMORY", "RFC_9106_LOW_MEMORY", "CHEAPEST")
STRING_SETTINGS = (
    "SECRET_KEY",
    "DATABASE_URL",
    "PROBLEM_TYPE_BASE",
    "ARGON2_PROFILE",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_API_BASE",
    "STRIPE_CHANNEL",
    "STRIPE_SUCCESS_URL",
    "STRIPE_CANCEL_URL",
    "ANALYTICS_DATABASE_URL",
)
INSECURE_SECRET_KEY = "insecure-development-key-change-me"


class ConfigError(Exception):
    """The configuration cannot run the service; the message says which variable to set."""


class Defaults:
    """Settings used when neither the environment nor the caller gives one."""

    SECRET_KEY = INSECURE_SECRET_KEY
    # None means "a SQLite file in the instance folder", resolved in `load_config`.
    DATABASE_URL: str | None = None
    # Analytics reads may go to a replica of the database; None: the database itself.
    ANALYTICS_DATABASE_URL: str | None = None
    DATABASE_ECHO = False
    DATABASE_POOL_SIZE = 10
    # Ping each pooled connection before use (one more round trip per request): only where
    # something between the service and PostgreSQL drops idle connections silently.
    DATABASE_PRE_PING = False
    # Longest wait for a row lock (PostgreSQL) before answering 503, in milliseconds.
    LOCK_TIMEOUT_MS = 5000
    # Requests larger than this are refused with 413 before they are parsed.
    MAX_CONTENT_LENGTH = 1024 * 1024
    # Lifetime of API client access tokens, in seconds.
    TOKEN_TTL = 900
    # How long a process reuses what it read of an API client (revoked or not, its channel):
    # a client revoked from another process stops working within this many seconds.
    AUTH_CACHE_SECONDS = 5.0
    # argon2 parameters for client secrets, by argon2.profiles name; tests use CHEAPEST.
    ARGON2_PROFILE = "RFC_9106_LOW_MEMORY"
    PROBLEM_TYPE_BASE = "https://loyalty.dev/problems/"
    # Webhook endpoints may point at private, loopback and link-local addresses (tests and local
    # development; never in production, where it would let a manager reach internal services).
    WEBHOOKS_ALLOW_PRIVATE = False

    # Stripe billing (loyalty.billing) is on when both the secret API key and the webhook
    # endpoint's signing secret are set.
    STRIPE_SECRET_KEY: str | None = None
    STRIPE_WEBHOOK_SECRET: str | None = None
    # Where the SDK sends API calls; None: Stripe's own (tests point it at a fake on loopback).
    STRIPE_API_BASE: str | None = None
    # How old a webhook's signature timestamp may be, in seconds (Stripe's default tolerance).
    STRIPE_WEBHOOK_TOLERANCE = 300
    # Days a paid tier is kept after a failed subscription payment (Stripe retries meanwhile).
    STRIPE_GRACE_DAYS = 7
    # The channel whose orders Stripe payments become (order id: the payment's id).
    STRIPE_CHANNEL = "chn_default"
    # Where Checkout sends the member back, unless a checkout call names its own URLs.
    STRIPE_SUCCESS_URL: str | None = None
    STRIPE_CANCEL_URL: str | None = None

    API_TITLE = "Loyalty API"
    API_VERSION = "1.0.0"
    OPENAPI_VERSION = "3.1.0"
    OPENAPI_URL_PREFIX = "/"
    OPENAPI_JSON_PATH = "v1/openapi.json"
    OPENAPI_SWAGGER_UI_PATH = "docs"
    OPENAPI_SWAGGER_UI_URL = "/docs/assets/"


def load_config(
    app: Flask, config: Mapping[str, Any] | None, *, require_secret: bool = True
) -> None:
    """Fill ``app.config`` in Flask's documented order and check it.

    ``require_secret=False`` is for commands that serve nothing (migrations, client admin).
    Raises `ConfigError` when a setting is unusable, naming the variable to fix.
    """
    app.config.from_object(Defaults)
    app.config.from_prefixed_env("LOYALTY")
    # from_prefixed_env parses values as JSON; these settings are strings whatever they look like.
    for key in STRING_SETTINGS:
        if f"LOYALTY_{key}" in os.environ:
            app.config[key] = os.environ[f"LOYALTY_{key}"]
    if config:
        app.config.update(config)

    if not app.config.get("DATABASE_URL"):
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["DATABASE_URL"] = "sqlite:///" + os.path.join(app.instance_path, "loyalty.db")
    app.config["DATABASE_URL"] = normalise_database_url(str(app.config["DATABASE_URL"]))
    if app.config.get("ANALYTICS_DATABASE_URL"):
        app.config["ANALYTICS_DATABASE_URL"] = normalise_database_url(
            str(app.config["ANALYTICS_DATABASE_URL"])
        )

    if require_secret:
        check_secret(app)
    _check(app)
    # flask-jwt-extended reads its own keys; derive them from ours so there is one secret.
    app.config.setdefault("JWT_SECRET_KEY", app.config["SECRET_KEY"])
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    app.config["JWT_ALGORITHM"] = "HS256"


def normalise_database_url(url: str) -> str:
    """Point PostgreSQL URLs at psycopg 3, whatever driver the URL names."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def check_secret(app: Flask) -> None:
    """Refuse to serve with no secret key, the built-in one, or a short one (unless debugging)."""
    if app.debug or app.testing:
        return
    secret = app.config.get("SECRET_KEY")
    if not isinstance(secret, str | bytes):
        raise ConfigError("LOYALTY_SECRET_KEY must be a string.")
    if not secret or secret == INSECURE_SECRET_KEY:
        raise ConfigError(
            "LOYALTY_SECRET_KEY is not set: set it to a long random string "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(48))").'
        )
    if len(str(secret)) < 32:
        raise ConfigError("LOYALTY_SECRET_KEY is too short: use at least 32 characters.")


def _check(app: Flask) -> None:
    url = app.config["DATABASE_URL"]
    if not (url.startswith("sqlite") or url.startswith("postgresql+psycopg://")):
        scheme = url.split(":")[0]
        raise ConfigError(
            f"LOYALTY_DATABASE_URL must be a sqlite:/// or postgresql:// URL, got {scheme!r}."
        )
    replica = app.config.get("ANALYTICS_DATABASE_URL")
    if replica and not (
        replica.startswith("sqlite") or replica.startswith("postgresql+psycopg://")
    ):
        raise ConfigError(
            "LOYALTY_ANALYTICS_DATABASE_URL must be a sqlite:/// or postgresql:// URL, got "
            f"{replica.split(':')[0]!r}."
        )
    if app.config["ARGON2_PROFILE"] not in ARGON2_PROFILES:
        raise ConfigError(
            f"LOYALTY_ARGON2_PROFILE must be one of {', '.join(ARGON2_PROFILES)}, "
            f"got {app.config['ARGON2_PROFILE']!r}."
        )
    app.config["WEBHOOKS_ALLOW_PRIVATE"] = _flag(app, "WEBHOOKS_ALLOW_PRIVATE")
    app.config["DATABASE_PRE_PING"] = _flag(app, "DATABASE_PRE_PING")
    _check_stripe(app)
    for key in ("TOKEN_TTL", "MAX_CONTENT_LENGTH", "DATABASE_POOL_SIZE", "LOCK_TIMEOUT_MS"):
        value = app.config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"LOYALTY_{key} must be a positive integer, got {value!r}.")
    cache_seconds = app.config.get("AUTH_CACHE_SECONDS")
    if (
        not isinstance(cache_seconds, int | float)
        or isinstance(cache_seconds, bool)
        or not 0 <= cache_seconds <= 60
    ):
        raise ConfigError(
            f"LOYALTY_AUTH_CACHE_SECONDS must be a number of seconds from 0 to 60, "
            f"got {cache_seconds!r}."
        )


def _check_stripe(app: Flask) -> None:
    """Stripe needs both secrets or neither; URLs must be http(s); numbers in range."""
    key, secret = app.config.get("STRIPE_SECRET_KEY"), app.config.get("STRIPE_WEBHOOK_SECRET")
    if bool(key) != bool(secret):
        missing = "LOYALTY_STRIPE_WEBHOOK_SECRET" if key else "LOYALTY_STRIPE_SECRET_KEY"
        raise ConfigError(
            f"Stripe billing needs both LOYALTY_STRIPE_SECRET_KEY and "
            f"LOYALTY_STRIPE_WEBHOOK_SECRET: set {missing} too (or neither, without billing)."
        )
    for name in ("STRIPE_API_BASE", "STRIPE_SUCCESS_URL", "STRIPE_CANCEL_URL"):
        url = app.config.get(name)
        if url is not None and not (
            isinstance(url, str) and url.startswith(("https://", "http://"))
        ):
            raise ConfigError(f"LOYALTY_{name} must be an http(s) URL, got {url!r}.")
    for name, low, high in (("STRIPE_WEBHOOK_TOLERANCE", 1, 86400), ("STRIPE_GRACE_DAYS", 0, 365)):
        value = app.config.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"LOYALTY_{name} must be an integer from {low} to {high}.")


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off", "")


def _flag(app: Flask, key: str) -> bool:
    """A boolean setting: true or false (also 1/0, yes/no, on/off, in any case)."""
    value = app.config.get(key)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"LOYALTY_{key} must be true or false, got {value!r}.")
