"""Referrals: a member's referral code, link and referrals; managers' review of suspicious
referrals; the referral programme's terms."""

from __future__ import annotations

from loyalty.api import Blueprint

blp = Blueprint("referrals", __name__, url_prefix="/v1", description="Referrals")
