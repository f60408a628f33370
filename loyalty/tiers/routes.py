"""Tier ladder and policy, members' tiers, manual assignment and history."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Blueprint
from loyalty.auth.security import current_principal
from loyalty.db import Page, get_session
from loyalty.tiers import service
from loyalty.tiers.models import Tier, TierChange, TierSettings
from loyalty.tiers.schemas import (
    AssignmentSchema,
    MemberTierSchema,
    PolicySchema,
    PolicyUpdateSchema,
    TierChangePageQuerySchema,
    TierChangePageSchema,
    TierCreateSchema,
    TierListSchema,
    TierSchema,
    TierUpdateSchema,
)

blp = Blueprint("tiers", __name__, url_prefix="/v1", description="Tiers")


def _caller() -> str:
    return current_principal().client_id


@blp.route("/program/tiers")
class Tiers(MethodView):
    @blp.requires("program:read")
    @blp.response(200, TierListSchema)
    def get(self) -> dict[str, list[Tier]]:
        """List the tier ladder, lowest rank first."""
        return {"items": service.list_tiers(get_session())}

    @blp.requires("program:write")
    @blp.arguments(TierCreateSchema)
    @blp.response(201, TierSchema)
    @blp.errors(409)
    def post(self, data: dict[str, Any]) -> Tier:
        """Add a tier to the ladder (members move in when the job re-evaluates them)."""
        return service.create_tier(get_session(), actor=_caller(), **data)


@blp.route("/program/tiers/<string:code>")
class TierByCode(MethodView):
    @blp.requires("program:read")
    @blp.response(200, TierSchema)
    @blp.errors(404)
    def get(self, code: str) -> Tier:
        """Get a tier."""
        return service.get_tier(get_session(), code)

    @blp.requires("program:write")
    @blp.arguments(TierUpdateSchema)
    @blp.response(200, TierSchema)
    @blp.errors(404, 409)
    def patch(self, changes: dict[str, Any], code: str) -> Tier:
        """Change a tier (its code never changes); the job applies new thresholds."""
        return service.update_tier(get_session(), code=code, changes=changes, actor=_caller())

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404, 409)
    def delete(self, code: str) -> None:
        """Remove a tier that no member holds (409 tier-in-use otherwise)."""
        service.delete_tier(get_session(), code=code, actor=_caller())


@blp.route("/program/tier-policy")
class TierPolicy(MethodView):
    @blp.requires("program:read")
    @blp.response(200, PolicySchema)
    def get(self) -> TierSettings:
        """Get the tier qualification policy (metric, window, grace days, downgrade mode)."""
        return service.get_policy(get_session())

    @blp.requires("program:write")
    @blp.arguments(PolicyUpdateSchema)
    @blp.response(200, PolicySchema)
    def patch(self, changes: dict[str, Any]) -> TierSettings:
        """Change the qualification policy; the job re-evaluates members under it."""
        return service.update_policy(get_session(), changes=changes, actor=_caller())


@blp.route("/members/<string:member_id>/tier")
class MemberTier(MethodView):
    @blp.requires("members:read")
    @blp.response(200, MemberTierSchema)
    @blp.errors(404)
    def get(self, member_id: str) -> service.MemberTierView:
        """Get a member's tier, its source and dates, and progress to the next tier."""
        return service.get_member_tier(get_session(), member_id)

    @blp.requires("program:write")
    @blp.arguments(AssignmentSchema)
    @blp.response(200, MemberTierSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], member_id: str) -> service.MemberTierView:
        """Assign a member a tier by hand, with a reason and an optional end."""
        return service.assign_tier(get_session(), member_id=member_id, actor=_caller(), **data)

    @blp.requires("program:write")
    @blp.response(200, MemberTierSchema)
    @blp.errors(404, 409)
    def delete(self, member_id: str) -> service.MemberTierView:
        """End a member's manual tier now; the computed tier applies again."""
        return service.end_assignment(get_session(), member_id=member_id, actor=_caller())


@blp.route("/members/<string:member_id>/tier/history")
class MemberTierHistory(MethodView):
    @blp.requires("members:read")
    @blp.arguments(TierChangePageQuerySchema, location="query")
    @blp.response(200, TierChangePageSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], member_id: str) -> Page[TierChange]:
        """List a member's tier changes, newest first."""
        return service.list_history(get_session(), member_id, **query)
