"""Stripe billing: the webhook endpoint, customer links, tier checkout, and review lists."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView

from loyalty.api import Blueprint
from loyalty.billing import gateway, service
from loyalty.billing.models import StripeEvent, StripePayment
from loyalty.billing.schemas import (
    CheckoutInSchema,
    CheckoutSchema,
    CustomerLinkInSchema,
    CustomerLinkSchema,
    EventPageQuerySchema,
    EventPageSchema,
    PaymentPageQuerySchema,
    PaymentPageSchema,
    WebhookAnswerSchema,
)
from loyalty.db import Page, get_session

blp = Blueprint("billing", __name__, url_prefix="/v1", description="Stripe billing")


@blp.route("/billing/stripe/webhook")
class StripeWebhook(MethodView):
    @blp.public
    @blp.response(200, WebhookAnswerSchema)
    @blp.errors(400, 409)
    def post(self) -> dict[str, Any]:
        """Receive a Stripe event (signed with the endpoint's secret); each event id counts
        once."""
        event = gateway.verify_event(
            request.get_data(cache=False), request.headers.get("Stripe-Signature")
        )
        received = service.receive_event(get_session(), event=event, source="webhook")
        return {
            "received": True,
            "event_id": received.event_id,
            "type": received.type,
            "status": received.status,
            "replayed": received.replayed,
        }


@blp.route("/members/<string:member_id>/stripe-customer")
class MemberStripeCustomer(MethodView):
    @blp.requires("members:read")
    @blp.response(200, CustomerLinkSchema)
    @blp.errors(404, 409)
    def get(self, member_id: str) -> Any:
        """Get the Stripe customer linked to a member."""
        return service.get_customer_link(get_session(), member_id)

    @blp.requires("members:write")
    @blp.arguments(CustomerLinkInSchema)
    @blp.created_or_replayed(
        CustomerLinkSchema, created="Linked", replayed="Already linked to this customer"
    )
    @blp.errors(404)
    def put(self, data: dict[str, Any], member_id: str) -> tuple[dict[str, Any], bool]:
        """Link a member to a Stripe customer; the customer's payments kept for review
        accrue."""
        result = service.link_customer(
            get_session(), member_id=member_id, customer_id=data["customer_id"]
        )
        link = result.link
        body = {
            "member_id": link.member_id,
            "customer_id": link.customer_id,
            "source": link.source,
            "created_at": link.created_at,
            "payments_accrued": result.payments_accrued,
        }
        return body, result.created

    @blp.requires("members:write")
    @blp.response(204)
    @blp.errors(404)
    def delete(self, member_id: str) -> None:
        """Unlink a member from its Stripe customer."""
        service.unlink_customer(get_session(), member_id=member_id)


@blp.route("/members/<string:member_id>/tier/checkout")
class TierCheckout(MethodView):
    @blp.requires("members:write")
    @blp.arguments(CheckoutInSchema)
    @blp.response(201, CheckoutSchema)
    @blp.errors(404, 503)
    def post(self, data: dict[str, Any], member_id: str) -> service.CheckoutResult:
        """Start buying a paid tier: a Stripe Checkout Session (subscription) and its URL."""
        return service.create_tier_checkout(get_session(), member_id=member_id, **data)


@blp.route("/billing/stripe/payments")
class StripePayments(MethodView):
    @blp.requires("program:read")
    @blp.arguments(PaymentPageQuerySchema, location="query")
    @blp.response(200, PaymentPageSchema)
    @blp.errors(409)
    def get(self, query: dict[str, Any]) -> Page[StripePayment]:
        """List Stripe payments and what became of them (unmatched ones wait for review)."""
        gateway.require_configured()
        return service.list_payments(get_session(), **query)


@blp.route("/billing/stripe/events")
class StripeEvents(MethodView):
    @blp.requires("program:read")
    @blp.arguments(EventPageQuerySchema, location="query")
    @blp.response(200, EventPageSchema)
    @blp.errors(409)
    def get(self, query: dict[str, Any]) -> Page[StripeEvent]:
        """List the Stripe events received and what became of each."""
        gateway.require_configured()
        return service.list_events(get_session(), **query)
