"""Perks, the rewards catalogue and claims."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Blueprint, PageQuerySchema
from loyalty.auth.security import current_principal
from loyalty.db import Page, get_session
from loyalty.rewards import service
from loyalty.rewards.models import Claim, Perk, Reward
from loyalty.rewards.schemas import (
    ClaimCreateSchema,
    ClaimLookupSchema,
    ClaimPageSchema,
    ClaimQuerySchema,
    ClaimResultSchema,
    ClaimSchema,
    MemberPerkListSchema,
    MemberRewardPageSchema,
    PerkCreateSchema,
    PerkPageSchema,
    PerkQuerySchema,
    PerkSchema,
    PerkUpdateSchema,
    RewardCreateSchema,
    RewardPageSchema,
    RewardQuerySchema,
    RewardSchema,
    RewardUpdateSchema,
)

blp = Blueprint("rewards", __name__, url_prefix="/v1", description="Perks and rewards")


def _caller() -> str:
    return current_principal().client_id


# --- catalogue administration ---------------------------------------------------------------


@blp.route("/program/rewards")
class Rewards(MethodView):
    @blp.requires("program:read")
    @blp.arguments(RewardQuerySchema, location="query")
    @blp.response(200, RewardPageSchema)
    def get(self, query: dict[str, Any]) -> Page[Reward]:
        """List the rewards catalogue."""
        return service.list_rewards(get_session(), **query)

    @blp.requires("program:write")
    @blp.arguments(RewardCreateSchema)
    @blp.response(201, RewardSchema)
    def post(self, data: dict[str, Any]) -> Reward:
        """Add a reward to the catalogue."""
        return service.create_reward(get_session(), actor=_caller(), **data)


@blp.route("/program/rewards/<string:reward_id>")
class RewardById(MethodView):
    @blp.requires("program:read")
    @blp.response(200, RewardSchema)
    @blp.errors(404)
    def get(self, reward_id: str) -> Reward:
        """Get a reward of the catalogue."""
        return service.get_reward(get_session(), reward_id)

    @blp.requires("program:write")
    @blp.arguments(RewardUpdateSchema)
    @blp.response(200, RewardSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], reward_id: str) -> Reward:
        """Change a reward; claims already issued keep their coupons."""
        return service.update_reward(
            get_session(), reward_id=reward_id, changes=changes, actor=_caller()
        )

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404, 409)
    def delete(self, reward_id: str) -> None:
        """Delete a reward that was never claimed (409 reward-in-use: deactivate it)."""
        service.delete_reward(get_session(), reward_id=reward_id, actor=_caller())


@blp.route("/program/perks")
class Perks(MethodView):
    @blp.requires("program:read")
    @blp.arguments(PerkQuerySchema, location="query")
    @blp.response(200, PerkPageSchema)
    def get(self, query: dict[str, Any]) -> Page[Perk]:
        """List the perks of the tiers."""
        return service.list_perks(get_session(), **query)

    @blp.requires("program:write")
    @blp.arguments(PerkCreateSchema)
    @blp.response(201, PerkSchema)
    def post(self, data: dict[str, Any]) -> Perk:
        """Create a perk and attach it to tiers."""
        return service.create_perk(get_session(), actor=_caller(), **data)


@blp.route("/program/perks/<string:perk_id>")
class PerkById(MethodView):
    @blp.requires("program:read")
    @blp.response(200, PerkSchema)
    @blp.errors(404)
    def get(self, perk_id: str) -> Perk:
        """Get a perk."""
        return service.get_perk(get_session(), perk_id)

    @blp.requires("program:write")
    @blp.arguments(PerkUpdateSchema)
    @blp.response(200, PerkSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], perk_id: str) -> Perk:
        """Change a perk; gifts already granted stay granted."""
        return service.update_perk(get_session(), perk_id=perk_id, changes=changes, actor=_caller())

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404, 409)
    def delete(self, perk_id: str) -> None:
        """Delete a perk that was never granted (409 perk-in-use: deactivate it)."""
        service.delete_perk(get_session(), perk_id=perk_id, actor=_caller())


# --- the member's view ----------------------------------------------------------------------


@blp.route("/members/<string:member_id>/perks")
class MemberPerks(MethodView):
    @blp.requires("members:read")
    @blp.response(200, MemberPerkListSchema)
    @blp.errors(404)
    def get(self, member_id: str) -> dict[str, Any]:
        """List the perks of the member's tier, with this year's birthday gift status."""
        return {"items": service.member_perks(get_session(), member_id)}


@blp.route("/members/<string:member_id>/rewards")
class MemberRewards(MethodView):
    @blp.requires("members:read")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, MemberRewardPageSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], member_id: str) -> Page[service.RewardOffer]:
        """List the active rewards, each saying whether the member can claim it and why not."""
        return service.member_rewards(get_session(), member_id, **query)


# --- claims ---------------------------------------------------------------------------------


@blp.route("/members/<string:member_id>/rewards/<string:reward_id>/claims")
class Claims(MethodView):
    @blp.requires("points:redeem")
    @blp.arguments(ClaimCreateSchema)
    @blp.created_or_replayed(
        ClaimResultSchema,
        created="The reward was claimed",
        replayed="The same reference again: the first claim",
    )
    @blp.errors(404)
    def post(
        self, data: dict[str, Any], member_id: str, reward_id: str
    ) -> tuple[service.ClaimResult, bool]:
        """Claim a reward for points and get its coupon code (409 when it cannot be had)."""
        result = service.claim_reward(
            get_session(),
            member_id=member_id,
            reward_id=reward_id,
            client_id=_caller(),
            actor=_caller(),
            **data,
        )
        return result, result.created


@blp.route("/members/<string:member_id>/claims")
class MemberClaims(MethodView):
    @blp.requires("members:read")
    @blp.arguments(ClaimQuerySchema, location="query")
    @blp.response(200, ClaimPageSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], member_id: str) -> Page[Claim]:
        """List a member's reward claims, newest first."""
        return service.list_member_claims(get_session(), member_id, **query)


@blp.route("/claims")
class ClaimLookup(MethodView):
    @blp.requires("points:redeem")
    @blp.arguments(ClaimLookupSchema, location="query")
    @blp.response(200, ClaimPageSchema)
    def get(self, query: dict[str, Any]) -> Page[Claim]:
        """Find the claim of a coupon code at checkout (an empty page when there is none)."""
        return service.find_claims(get_session(), **query)


@blp.route("/claims/<string:claim_id>")
class ClaimById(MethodView):
    @blp.requires("points:redeem")
    @blp.response(200, ClaimSchema)
    @blp.errors(404)
    def get(self, claim_id: str) -> Claim:
        """Get a reward claim and its status."""
        return service.get_claim(get_session(), claim_id)


@blp.route("/claims/<string:claim_id>/use")
class UseClaim(MethodView):
    @blp.requires("points:redeem")
    @blp.response(200, ClaimSchema)
    @blp.errors(404)
    def post(self, claim_id: str) -> Claim:
        """Mark a claim's coupon used (409 when it is not issued)."""
        return service.use_claim(get_session(), claim_id=claim_id, actor=_caller())


@blp.route("/claims/<string:claim_id>/cancel")
class CancelClaim(MethodView):
    @blp.requires("points:redeem")
    @blp.response(200, ClaimResultSchema)
    @blp.errors(404)
    def post(self, claim_id: str) -> service.ClaimResult:
        """Cancel an unused claim: its points come back (409 when used, cancelled or expired)."""
        return service.cancel_claim(get_session(), claim_id=claim_id, actor=_caller())
