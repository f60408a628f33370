"""Errors of the earning rules: campaigns and product multipliers."""

from __future__ import annotations

from loyalty.errors import ConfigNotFoundError, ConflictError


class CampaignNotFoundError(ConfigNotFoundError):
    code = "campaign-not-found"
    title = "Campaign not found"

    def __init__(self, campaign_id: str) -> None:
        super().__init__("campaign", campaign_id)


class MultiplierNotFoundError(ConfigNotFoundError):
    code = "multiplier-not-found"
    title = "Product multiplier not found"

    def __init__(self, multiplier_id: str) -> None:
        super().__init__("multiplier", multiplier_id)


class CampaignInUseError(ConflictError):
    code = "campaign-in-use"
    title = "Campaign has given points"

    def __init__(self, campaign_id: str, spent: int) -> None:
        super().__init__(
            f"Campaign {campaign_id!r} has given {spent} points and cannot be deleted; pause "
            "it (active: false) instead.",
            campaign_id=campaign_id,
            spent=spent,
        )


class MultiplierConflictError(ConflictError):
    code = "multiplier-exists"
    title = "Product multiplier already exists"

    def __init__(self, scope: str, match: str) -> None:
        super().__init__(
            f"A multiplier for {scope} {match!r} already exists; change that one instead.",
            scope=scope,
            match=match,
        )
