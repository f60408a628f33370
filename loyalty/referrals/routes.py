"""Referrals: a member's referral code, link and referrals; managers' review of suspicious
referrals; the referral programme's terms."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Blueprint, PageQuerySchema
from loyalty.auth.security import current_principal
from loyalty.db import Page, get_session
from loyalty.referrals import service
from loyalty.referrals.models import Referral, ReferralSettings
from loyalty.referrals.schemas import (
    MemberReferralsSchema,
    ReferralPageSchema,
    ReferralReviewSchema,
    ReferralSchema,
    ReferralTermsSchema,
    ReferralTermsUpdateSchema,
)

blp = Blueprint("referrals", __name__, url_prefix="/v1", description="Referrals")


def _caller() -> str:
    return current_principal().client_id


@blp.route("/program/referrals")
class Terms(MethodView):
    @blp.requires("program:read")
    @blp.response(200, ReferralTermsSchema)
    def get(self) -> ReferralSettings:
        """Get the referral programme's terms."""
        return service.get_settings(get_session())

    @blp.requires("program:write")
    @blp.arguments(ReferralTermsUpdateSchema)
    @blp.response(200, ReferralTermsSchema)
    def patch(self, changes: dict[str, Any]) -> ReferralSettings:
        """Change the referral programme's terms; qualified referrals keep their rewards."""
        return service.update_settings(get_session(), changes=changes, actor=_caller())


@blp.route("/program/referrals/reviews")
class Reviews(MethodView):
    @blp.requires("program:read")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, ReferralPageSchema)
    def get(self, query: dict[str, Any]) -> Page[Referral]:
        """List the referrals held for review, oldest first."""
        return service.list_reviews(get_session(), **query)


@blp.route("/program/referrals/<string:referral_id>/approve")
class Approve(MethodView):
    @blp.requires("program:write")
    @blp.arguments(ReferralReviewSchema)
    @blp.response(200, ReferralSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], referral_id: str) -> Referral:
        """Approve a held or rejected referral (409 referral-not-reviewable otherwise)."""
        return service.approve_referral(
            get_session(), referral_id=referral_id, actor=_caller(), **data
        )


@blp.route("/program/referrals/<string:referral_id>/reject")
class Reject(MethodView):
    @blp.requires("program:write")
    @blp.arguments(ReferralReviewSchema)
    @blp.response(200, ReferralSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any], referral_id: str) -> Referral:
        """Reject a held or pending referral (409 referral-not-reviewable otherwise)."""
        return service.reject_referral(
            get_session(), referral_id=referral_id, actor=_caller(), **data
        )


@blp.route("/members/<string:member_id>/referrals")
class MemberReferrals(MethodView):
    @blp.requires("members:read")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, MemberReferralsSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], member_id: str) -> service.MemberReferrals:
        """Get the member's referral code, link, counts, points earned and referees."""
        return service.member_referrals(get_session(), member_id, **query)
