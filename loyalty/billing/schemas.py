"""Request and response bodies of the Stripe billing calls."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from loyalty.api import PageQuerySchema, PageSchema, Pattern, Timestamp
from loyalty.billing.models import EVENT_STATUSES, PAYMENT_STATUSES

CUSTOMER_ID = Pattern(r"^cus_[A-Za-z0-9_]+$", error="A Stripe customer id, e.g. cus_Q2w3E4r5.")
URL = Pattern(r"^https?://[^\s]+$", error="An http(s) URL.")


class WebhookAnswerSchema(Schema):
    received = fields.Boolean(required=True, metadata={"description": "Always true"})
    event_id = fields.String(required=True)
    type = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(EVENT_STATUSES),
        metadata={
            "description": "processed, ignored (a type billing does not act on), deferred "
            "(waits for the payment or subscription it is about) or review"
        },
    )
    replayed = fields.Boolean(
        required=True, metadata={"description": "Recorded before: acknowledged, no effect"}
    )


class CustomerLinkInSchema(Schema):
    customer_id = fields.String(
        required=True, validate=[validate.Length(min=5, max=255), CUSTOMER_ID]
    )


class CustomerLinkSchema(Schema):
    member_id = fields.String(required=True)
    customer_id = fields.String(required=True)
    source = fields.String(
        required=True,
        validate=validate.OneOf(("api", "metadata", "checkout")),
        metadata={
            "description": "How it was linked: by this API, by metadata.loyalty_member_id on "
            "a Stripe object, or by a tier checkout"
        },
    )
    created_at = Timestamp(required=True)
    payments_accrued = fields.Integer(
        metadata={"description": "Payments of the customer kept for review that accrued now"}
    )


class CheckoutInSchema(Schema):
    tier = fields.String(
        required=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "Code of the paid tier to buy"},
    )
    success_url = fields.String(
        validate=[validate.Length(max=2000), URL],
        metadata={
            "description": "Where Checkout sends the member after paying; default "
            "LOYALTY_STRIPE_SUCCESS_URL"
        },
    )
    cancel_url = fields.String(
        validate=[validate.Length(max=2000), URL],
        metadata={
            "description": "Where Checkout sends the member on cancel; default "
            "LOYALTY_STRIPE_CANCEL_URL"
        },
    )


class CheckoutSchema(Schema):
    id = fields.String(required=True, metadata={"description": "The Checkout Session's id"})
    url = fields.String(required=True, metadata={"description": "Send the member here to pay"})
    tier = fields.String(required=True)
    customer_id = fields.String(required=True)
    expires_at = Timestamp(required=True, allow_none=True)


class PaymentSchema(Schema):
    id = fields.String(required=True, metadata={"description": "PaymentIntent id (the order id)"})
    member_id = fields.String(required=True, allow_none=True)
    customer_id = fields.String(required=True, allow_none=True)
    amount = fields.Integer(required=True, metadata={"description": "Minor units"})
    currency = fields.String(required=True)
    paid_at = Timestamp(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(PAYMENT_STATUSES),
        metadata={
            "description": "accrued (an order), unmatched (no member known: link the "
            "customer) or review (the order was refused: see detail)"
        },
    )
    points = fields.Integer(required=True, allow_none=True)
    detail = fields.String(required=True, allow_none=True)
    event_id = fields.String(required=True)


class PaymentPageQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(PAYMENT_STATUSES), load_default=None)


class PaymentPageSchema(PageSchema):
    items = fields.List(fields.Nested(PaymentSchema), required=True)


class StripeEventSchema(Schema):
    id = fields.String(required=True)
    type = fields.String(required=True)
    created = Timestamp(required=True)
    received_at = Timestamp(required=True)
    source = fields.String(required=True, validate=validate.OneOf(("webhook", "reconcile")))
    status = fields.String(required=True, validate=validate.OneOf(EVENT_STATUSES))
    waiting_for = fields.String(required=True, allow_none=True)
    detail = fields.String(required=True, allow_none=True)
    processed_at = Timestamp(required=True, allow_none=True)


class EventPageQuerySchema(PageQuerySchema):
    status = fields.String(validate=validate.OneOf(EVENT_STATUSES), load_default=None)


class EventPageSchema(PageSchema):
    items = fields.List(fields.Nested(StripeEventSchema), required=True)
