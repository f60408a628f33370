"""Webhook endpoints: where the programme's events are POSTed, signed; their delivery log and
replays; the lifecycle triggers' settings. The events themselves are documented under the
spec's ``webhooks``."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Api, Blueprint, PageQuerySchema
from loyalty.auth.security import current_principal
from loyalty.db import Page, get_session
from loyalty.events import service, spec
from loyalty.events.models import LifecycleSettings, WebhookAttempt, WebhookEndpoint
from loyalty.events.schemas import (
    AttemptPageSchema,
    EndpointCreateSchema,
    EndpointPageSchema,
    EndpointQuerySchema,
    EndpointSchema,
    EndpointUpdateSchema,
    EndpointWithSecretSchema,
    LifecycleSettingsSchema,
    LifecycleSettingsUpdateSchema,
    ReplayResultSchema,
    ReplaySchema,
    RotateSecretSchema,
)
from loyalty.idempotency import seal_stored_response

SCOPE = "webhooks:manage"

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/v1/webhooks",
    description="Signed webhooks: endpoints, their delivery log, replays, lifecycle triggers",
)


def _caller() -> str:
    return current_principal().client_id


@blp.route("/endpoints")
class Endpoints(MethodView):
    @blp.requires(SCOPE)
    @blp.arguments(EndpointQuerySchema, location="query")
    @blp.response(200, EndpointPageSchema)
    def get(self, query: dict[str, Any]) -> Page[WebhookEndpoint]:
        """List webhook endpoints, oldest first (secrets are never shown)."""
        return service.list_endpoints(get_session(), **query)

    @blp.requires(SCOPE)
    @blp.arguments(EndpointCreateSchema)
    @blp.response(201, EndpointWithSecretSchema)
    def post(self, data: dict[str, Any]) -> service.EndpointWithSecret:
        """Add a webhook endpoint; the answer shows its signing secret, once."""
        seal_stored_response()
        return service.create_endpoint(get_session(), actor=_caller(), **data)


@blp.route("/endpoints/<string:endpoint_id>")
class EndpointById(MethodView):
    @blp.requires(SCOPE)
    @blp.response(200, EndpointSchema)
    @blp.errors(404)
    def get(self, endpoint_id: str) -> WebhookEndpoint:
        """Get a webhook endpoint (and why it was disabled, if it was)."""
        return service.get_endpoint(get_session(), endpoint_id)

    @blp.requires(SCOPE)
    @blp.arguments(EndpointUpdateSchema)
    @blp.response(200, EndpointSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], endpoint_id: str) -> WebhookEndpoint:
        """Change an endpoint's URL, event types, description, or enable it again."""
        return service.update_endpoint(
            get_session(), endpoint_id=endpoint_id, changes=changes, actor=_caller()
        )

    @blp.requires(SCOPE)
    @blp.response(204)
    @blp.errors(404)
    def delete(self, endpoint_id: str) -> None:
        """Delete an endpoint with its pending deliveries and delivery log."""
        service.delete_endpoint(get_session(), endpoint_id=endpoint_id, actor=_caller())


@blp.route("/endpoints/<string:endpoint_id>/rotate-secret")
class RotateSecret(MethodView):
    @blp.requires(SCOPE)
    @blp.arguments(RotateSecretSchema)
    @blp.response(200, EndpointWithSecretSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], endpoint_id: str) -> service.EndpointWithSecret:
        """Give the endpoint a new signing secret, shown once; the old one signs too for a while."""
        seal_stored_response()
        return service.rotate_secret(
            get_session(), endpoint_id=endpoint_id, actor=_caller(), **data
        )


@blp.route("/endpoints/<string:endpoint_id>/deliveries")
class Deliveries(MethodView):
    @blp.requires(SCOPE)
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, AttemptPageSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], endpoint_id: str) -> Page[WebhookAttempt]:
        """List the endpoint's delivery attempts, newest first: status, timing, answer."""
        return service.list_attempts(get_session(), endpoint_id, **query)


@blp.route("/endpoints/<string:endpoint_id>/replay")
class Replay(MethodView):
    @blp.requires(SCOPE)
    @blp.arguments(ReplaySchema)
    @blp.response(202, ReplayResultSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], endpoint_id: str) -> dict[str, int]:
        """Send events again: one by id, or a time range (409 when the endpoint is disabled)."""
        queued = service.replay(get_session(), endpoint_id=endpoint_id, actor=_caller(), **data)
        return {"queued": queued}


@blp.route("/lifecycle")
class Lifecycle(MethodView):
    @blp.requires(SCOPE)
    @blp.response(200, LifecycleSettingsSchema)
    def get(self) -> LifecycleSettings:
        """Get the lifecycle triggers' settings: which are on, and their windows."""
        return service.get_lifecycle_settings(get_session())

    @blp.requires(SCOPE)
    @blp.arguments(LifecycleSettingsUpdateSchema)
    @blp.response(200, LifecycleSettingsSchema)
    def patch(self, changes: dict[str, Any]) -> LifecycleSettings:
        """Switch lifecycle triggers on or off, or change their windows."""
        return service.update_lifecycle_settings(get_session(), changes=changes, actor=_caller())


def register(api: Api) -> None:
    """Register the blueprint and the spec's ``webhooks``: one entry per event type."""
    api.register_blueprint(blp)
    spec.document_webhooks(api.spec)
