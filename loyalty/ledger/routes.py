"""Points calls: orders, refunds, redemptions, holds, balances, history, adjustments and the
programme's core settings."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Blueprint
from loyalty.auth.security import current_principal
from loyalty.db import Page, get_session
from loyalty.ledger import service
from loyalty.ledger.models import Entry, ProgramSettings
from loyalty.ledger.schemas import (
    AdjustmentCreateSchema,
    BalanceReportSchema,
    CaptureSchema,
    EntryPageQuerySchema,
    EntryPageSchema,
    HoldCreateSchema,
    HoldResultSchema,
    HoldSchema,
    OrderCreateSchema,
    OrderPageQuerySchema,
    OrderPageSchema,
    OrderResultSchema,
    OrderSchema,
    PointsMoveSchema,
    RedemptionCreateSchema,
    RefundCreateSchema,
    RefundResultSchema,
    SettingsSchema,
    SettingsUpdateSchema,
)

blp = Blueprint("points", __name__, url_prefix="/v1", description="Points")


def _caller() -> str:
    return current_principal().client_id


def _reporter() -> dict[str, str]:
    """Who reports an order, refund or event: the calling client and its channel."""
    principal = current_principal()
    return {"channel_id": principal.channel_id, "client_id": principal.client_id}


def _hold_result(result: service.HoldResult, points: int | None = None) -> dict[str, Any]:
    hold = result.hold
    return {
        "id": hold.id,
        "status": hold.status,
        "points": hold.captured_points if hold.status == "captured" else hold.points,
        "expires_at": hold.expires_at,
        "redemption_id": hold.redemption_id,
        "balance": result.balance.as_dict(),
    }


@blp.route("/orders")
class Orders(MethodView):
    @blp.requires("points:accrue")
    @blp.arguments(OrderCreateSchema)
    @blp.created_or_replayed(
        OrderResultSchema,
        created="Points credited (pending or active)",
        replayed="The same order again: the first result",
    )
    @blp.errors(404)
    def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Report an order and credit the points it earns (idempotent on order_id)."""
        result = service.accrue_order(get_session(), **_reporter(), actor=_caller(), **data)
        return result.body, result.created


@blp.route("/orders/<string:order_id>")
class OrderById(MethodView):
    @blp.requires("points:accrue")
    @blp.response(200, OrderSchema)
    @blp.errors(404)
    def get(self, order_id: str) -> service.OrderView:
        """Get an order of the caller's channel: what it earned and its refunds."""
        return service.get_order(
            get_session(), order_id=order_id, channel_id=current_principal().channel_id
        )


@blp.route("/orders/<string:order_id>/refunds")
class Refunds(MethodView):
    @blp.requires("points:accrue")
    @blp.arguments(RefundCreateSchema)
    @blp.created_or_replayed(
        RefundResultSchema,
        created="Points reversed",
        replayed="The same refund again: the first result",
    )
    @blp.errors(404)
    def post(self, data: dict[str, Any], order_id: str) -> tuple[dict[str, Any], bool]:
        """Report a refund and reverse the points it takes back (idempotent on refund_id)."""
        result = service.refund_order(
            get_session(), **_reporter(), order_id=order_id, actor=_caller(), **data
        )
        return result.body, result.created


@blp.route("/members/<string:member_id>/redemptions")
class Redemptions(MethodView):
    @blp.requires("points:redeem")
    @blp.arguments(RedemptionCreateSchema)
    @blp.response(201, PointsMoveSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], member_id: str) -> service.PointsMove:
        """Redeem points (409 insufficient-points carries the available balance)."""
        return service.redeem(
            get_session(), member_id=member_id, client_id=_caller(), actor=_caller(), **data
        )


@blp.route("/members/<string:member_id>/holds")
class Holds(MethodView):
    @blp.requires("points:redeem")
    @blp.arguments(HoldCreateSchema)
    @blp.response(201, HoldResultSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], member_id: str) -> dict[str, Any]:
        """Hold points at checkout until captured or released (or timed out)."""
        result = service.place_hold(
            get_session(), member_id=member_id, client_id=_caller(), actor=_caller(), **data
        )
        return _hold_result(result)


@blp.route("/holds/<string:hold_id>")
class HoldById(MethodView):
    @blp.requires("points:redeem")
    @blp.response(200, HoldSchema)
    @blp.errors(404)
    def get(self, hold_id: str) -> Any:
        """Get a hold and its status."""
        return service.get_hold(get_session(), hold_id)


@blp.route("/holds/<string:hold_id>/capture")
class Capture(MethodView):
    @blp.requires("points:redeem")
    @blp.arguments(CaptureSchema)
    @blp.response(200, HoldResultSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], hold_id: str) -> dict[str, Any]:
        """Capture a hold, in full or in part; the rest is available again at once."""
        result = service.capture_hold(
            get_session(), hold_id=hold_id, actor=_caller(), points=data.get("points")
        )
        return _hold_result(result)


@blp.route("/holds/<string:hold_id>/release")
class Release(MethodView):
    @blp.requires("points:redeem")
    @blp.response(200, HoldResultSchema)
    @blp.errors(404)
    def post(self, hold_id: str) -> dict[str, Any]:
        """Release a hold: its points are available again."""
        return _hold_result(service.release_hold(get_session(), hold_id=hold_id, actor=_caller()))


@blp.route("/members/<string:member_id>/balance")
class MemberBalance(MethodView):
    @blp.requires("members:read")
    @blp.response(200, BalanceReportSchema)
    @blp.errors(404)
    def get(self, member_id: str) -> service.BalanceReport:
        """Get a member's balances and the points expiring in the next 90 days."""
        return service.get_balance(get_session(), member_id)


@blp.route("/members/<string:member_id>/ledger")
class MemberLedger(MethodView):
    @blp.requires("members:read")
    @blp.arguments(EntryPageQuerySchema, location="query")
    @blp.response(200, EntryPageSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], member_id: str) -> Page[Entry]:
        """List a member's ledger entries, newest first."""
        return service.list_entries(get_session(), member_id, **query)


@blp.route("/members/<string:member_id>/orders")
class MemberOrders(MethodView):
    @blp.requires("members:read")
    @blp.arguments(OrderPageQuerySchema, location="query")
    @blp.response(200, OrderPageSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], member_id: str) -> Page[service.OrderView]:
        """List a member's orders from every channel, newest first, with their refunds."""
        return service.list_member_orders(get_session(), member_id, **query)


@blp.route("/members/<string:member_id>/adjustments")
class Adjustments(MethodView):
    @blp.requires("points:adjust")
    @blp.arguments(AdjustmentCreateSchema)
    @blp.response(201, PointsMoveSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], member_id: str) -> service.PointsMove:
        """Credit or debit points by hand, with a reason."""
        return service.adjust(get_session(), member_id=member_id, actor=_caller(), **data)


@blp.route("/program/settings")
class Settings(MethodView):
    @blp.requires("program:read")
    @blp.response(200, SettingsSchema)
    def get(self) -> service.Settings:
        """Get the programme's core settings (earning rate, pending period, expiry, ...)."""
        return service.get_settings(get_session())

    @blp.requires("program:write")
    @blp.arguments(SettingsUpdateSchema)
    @blp.response(200, SettingsSchema)
    def patch(self, changes: dict[str, Any]) -> ProgramSettings:
        """Change core settings; they apply to points earned from now on."""
        return service.update_settings(get_session(), changes=changes, actor=_caller())
