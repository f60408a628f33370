"""Errors of perks, the rewards catalogue and claims. `UnknownRewardError`, which referrals
raise too, is in `loyalty.errors`."""

from __future__ import annotations

from loyalty.errors import ConfigNotFoundError, ConflictError, InvalidFieldError, NotFoundError


class PerkNotFoundError(ConfigNotFoundError):
    code = "perk-not-found"
    title = "Perk not found"

    def __init__(self, perk_id: str) -> None:
        super().__init__("perk", perk_id)


class RewardNotFoundError(ConfigNotFoundError):
    code = "reward-not-found"
    title = "Reward not found"

    def __init__(self, reward_id: str) -> None:
        super().__init__("reward", reward_id)


class ClaimNotFoundError(NotFoundError):
    code = "claim-not-found"
    title = "Claim not found"

    def __init__(self, claim_id: str) -> None:
        super().__init__(f"No reward claim {claim_id!r}.", claim_id=claim_id)


class UnknownTierCodeError(InvalidFieldError):
    code = "unknown-tier"
    title = "Unknown tier"

    def __init__(self, codes: list[str]) -> None:
        super().__init__("tier_codes", f"{len(codes)} of the codes name no tier.")
        self.tier_codes = codes  # for the code; the codes sent are not repeated to the client


class PerkInUseError(ConflictError):
    code = "perk-in-use"
    title = "Perk in use"

    def __init__(self, perk_id: str) -> None:
        super().__init__(
            f"Perk {perk_id!r} has been granted, so it stays for the record; set active to "
            "false instead.",
            perk_id=perk_id,
        )


class RewardInUseError(ConflictError):
    code = "reward-in-use"
    title = "Reward in use"

    def __init__(self, reward_id: str) -> None:
        super().__init__(
            f"Reward {reward_id!r} has claims or is a perk's gift, so it stays; set active to "
            "false instead.",
            reward_id=reward_id,
        )


class RewardNotClaimableError(ConflictError):
    """The reward cannot be claimed now: inactive, outside its window, or not for the member's
    tier (``reason`` says which)."""

    code = "reward-not-claimable"
    title = "Reward not claimable"

    def __init__(self, reward_id: str, reason: str, detail: str) -> None:
        super().__init__(detail, reward_id=reward_id, reason=reason)


class RewardOutOfStockError(ConflictError):
    code = "out-of-stock"
    title = "Reward out of stock"

    def __init__(self, reward_id: str) -> None:
        super().__init__(
            f"Reward {reward_id!r} is out of stock.", reward_id=reward_id, reason="out_of_stock"
        )


class ClaimLimitReachedError(ConflictError):
    code = "claim-limit-reached"
    title = "Claim limit reached"

    def __init__(self, reward_id: str, limit: int) -> None:
        super().__init__(
            f"The member has already claimed reward {reward_id!r} {limit} time(s), its limit.",
            reward_id=reward_id,
            limit=limit,
            reason="limit_reached",
        )


class ClaimNotIssuedError(ConflictError):
    code = "claim-not-issued"
    title = "Claim is not issued"

    def __init__(self, claim_id: str, status: str) -> None:
        super().__init__(
            f"Claim {claim_id!r} is {status}; only an issued claim can be used or cancelled.",
            claim_id=claim_id,
            claim_status=status,
        )
