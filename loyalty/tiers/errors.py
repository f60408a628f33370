"""Errors of the tier ladder: tiers, their ranks and thresholds, and manual assignments."""

from __future__ import annotations

from loyalty.errors import ConfigNotFoundError, ConflictError, InvalidFieldError


class TierNotFoundError(ConfigNotFoundError):
    code = "tier-not-found"
    title = "Tier not found"

    def __init__(self, code: str) -> None:
        super().__init__("tier", code)


class TierExistsError(ConflictError):
    code = "tier-exists"
    title = "Tier already exists"

    def __init__(self, code: str) -> None:
        super().__init__(f"A tier with code {code!r} already exists.", tier=code)


class TierRankTakenError(ConflictError):
    code = "tier-rank-taken"
    title = "Tier rank taken"

    def __init__(self, rank: int, holder: str) -> None:
        super().__init__(
            f"Tier {holder!r} already has rank {rank}; each tier has its own rank.",
            rank=rank,
            tier=holder,
        )


class TierInUseError(ConflictError):
    code = "tier-in-use"
    title = "Tier in use"

    def __init__(self, code: str, members: int) -> None:
        super().__init__(
            f"Tier {code!r} is held by {members} member(s) (computed or assigned by hand); "
            "move them first, or change the tier instead of deleting it.",
            tier=code,
            members=members,
        )


class TierReferencedError(ConflictError):
    code = "tier-referenced"
    title = "Tier referenced by the programme"

    def __init__(self, code: str, where: list[str]) -> None:
        super().__init__(
            f"Tier {code!r} is named by {', '.join(where)}; remove it from them first (or "
            "keep the tier).",
            tier=code,
            referenced_by=where,
        )


class BaseTierHeldError(ConflictError):
    code = "base-tier-held"
    title = "Base tier held by members"

    def __init__(self, code: str, members: int) -> None:
        super().__init__(
            f"Tier {code!r} has threshold 0: {members} member(s) hold it as their starting "
            "tier, and raising its threshold would take it from them at once. Keep its "
            "threshold at 0.",
            tier=code,
            members=members,
        )


class TierLadderOrderError(InvalidFieldError):
    code = "tier-ladder-order"
    title = "Tier thresholds out of order"

    def __init__(self, detail: str) -> None:
        super().__init__("threshold", detail)


class NoManualTierError(ConflictError):
    code = "no-manual-tier"
    title = "No manual tier assignment"

    def __init__(self, member_id: str) -> None:
        super().__init__(
            f"Member {member_id!r} has no tier assigned by hand to end.", member_id=member_id
        )


class TierPriceTakenError(ConflictError):
    code = "tier-price-taken"
    title = "Stripe price taken"

    def __init__(self, price_id: str, holder: str) -> None:
        super().__init__(
            f"Tier {holder!r} already sells Stripe price {price_id!r}; each paid tier has its "
            "own price.",
            stripe_price_id=price_id,
            tier=holder,
        )
