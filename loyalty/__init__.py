"""Loyalty: a self-hostable loyalty and membership backend."""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_jwt_extended import JWTManager

__version__ = "0.1.0"


def create_app(config: Mapping[str, Any] | None = None, *, require_secret: bool = True) -> Flask:
    """Build the WSGI app: configuration, database, error mapping, API and blueprints.

    ``config`` overrides the defaults and the ``LOYALTY_*`` environment (tests use it).
    ``require_secret=False`` lets commands that serve nothing run without a secret key.
    Raises `loyalty.config.ConfigError` when the configuration cannot run the service.
    """
    from loyalty import api, db, problems, wiring
    from loyalty.analytics import routes as analytics_routes
    from loyalty.audit import routes as audit_routes
    from loyalty.auth import routes as auth_routes
    from loyalty.billing import routes as billing_routes
    from loyalty.community import routes as community_routes
    from loyalty.config import load_config
    from loyalty.earning import routes as earning_routes
    from loyalty.events import routes as events_routes
    from loyalty.ledger import routes as ledger_routes
    from loyalty.members import routes as member_routes
    from loyalty.referrals import routes as referrals_routes
    from loyalty.rewards import routes as rewards_routes
    from loyalty.tiers import routes as tiers_routes

    wiring.install()
    app = Flask(__name__, instance_path=os.environ.get("LOYALTY_INSTANCE_PATH") or None)
    load_config(app, config, require_secret=require_secret)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the schemas' field order
    db.init_app(app)
    JWTManager(app)
    problems.init_app(app)
    the_api = api.init_app(app)
    auth_routes.register(the_api)
    the_api.register_blueprint(member_routes.blp)
    the_api.register_blueprint(ledger_routes.blp)
    the_api.register_blueprint(earning_routes.blp)
    the_api.register_blueprint(tiers_routes.blp)
    the_api.register_blueprint(rewards_routes.blp)
    the_api.register_blueprint(referrals_routes.blp)
    the_api.register_blueprint(community_routes.blp)
    the_api.register_blueprint(audit_routes.blp)
    the_api.register_blueprint(analytics_routes.blp)
    events_routes.register(the_api)
    the_api.register_blueprint(billing_routes.blp)
    return app


def settle_for_serving() -> None:
    """Call once a serving process has built its app (the WSGI entry points do): what it
    built so far (modules, the app, its mappers and schemas: about 200,000 objects) lives as
    long as the process, so it is moved out of the cyclic garbage collector's reach. A full
    collection otherwise walks it all, stopping every request of the process for 70-140 ms
    (about once every few thousand requests); with it frozen, about 10 ms."""
    gc.collect()
    gc.freeze()
