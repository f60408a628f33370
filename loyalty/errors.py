"""Domain errors. They know nothing about HTTP; `loyalty.problems` maps them to responses."""

from __future__ import annotations

from typing import Any


class LoyaltyError(Exception):
    """Base of every domain error: a stable ``code`` slug, a title, a detail and extra data.

    ``field`` names the request field at fault, when there is one (it becomes a pointer).
    """

    code = "error"
    title = "Error"
    field: str | None = None

    def __init__(self, detail: str, **data: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.data = data


class BadRequestError(LoyaltyError):
    code = "bad-request"
    title = "Bad request"


class MalformedJSONError(BadRequestError):
    code = "malformed-json"
    title = "Malformed JSON"

    def __init__(self, reason: str) -> None:
        super().__init__(f"The request body is not valid JSON: {reason}.")


class NotFoundError(LoyaltyError):
    code = "not-found"
    title = "Not found"


class ConflictError(LoyaltyError):
    code = "conflict"
    title = "Conflict"


class RuleViolationError(LoyaltyError):
    code = "rule-violation"
    title = "Rule violation"


class PermissionDeniedError(LoyaltyError):
    code = "forbidden"
    title = "Forbidden"


class AuthenticationError(LoyaltyError):
    code = "unauthenticated"
    title = "Authentication required"


class ServiceUnavailableError(LoyaltyError):
    code = "service-unavailable"
    title = "Service unavailable"


class InvalidFieldError(RuleViolationError):
    """A field's value is well-formed but not acceptable (an unknown referral code, say)."""

    code = "validation-failed"
    title = "Validation failed"

    def __init__(self, field: str, detail: str, **data: Any) -> None:
        super().__init__(detail, **data)
        self.field = field


class MemberNotFoundError(NotFoundError):
    code = "member-not-found"
    title = "Member not found"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"No member with id {member_id!r}.", member_id=member_id)


class MemberClosedError(ConflictError):
    code = "member-closed"
    title = "Member is closed"

    def __init__(self, member_id: str) -> None:
        super().__init__(
            f"Member {member_id!r} is closed; a closed membership cannot change.",
            member_id=member_id,
        )


class ClientNotFoundError(NotFoundError):
    code = "client-not-found"
    title = "API client not found"

    def __init__(self, client_id: str) -> None:
        super().__init__(f"No API client with id {client_id!r}.", client_id=client_id)


class InvalidClientError(AuthenticationError):
    code = "invalid-client"
    title = "Invalid client credentials"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail or "The client id or secret is wrong, or the client has been revoked."
        )


class InvalidTokenError(AuthenticationError):
    code = "invalid-token"
    title = "Invalid access token"


class TokenExpiredError(AuthenticationError):
    code = "token-expired"
    title = "Access token expired"

    def __init__(self) -> None:
        super().__init__("The access token has expired; request a new one at /v1/auth/token.")


class TokenRevokedError(AuthenticationError):
    code = "token-revoked"
    title = "Access token revoked"

    def __init__(self) -> None:
        super().__init__("The API client that this token was issued to has been revoked.")


class InsufficientScopeError(PermissionDeniedError):
    code = "insufficient-scope"
    title = "Insufficient scope"

    def __init__(self, required: str, granted: list[str]) -> None:
        super().__init__(
            f"This call needs the {required!r} scope.", required_scope=required, granted=granted
        )


class UnknownScopeError(InvalidFieldError):
    code = "unknown-scope"
    title = "Unknown scope"

    def __init__(self, scopes: list[str], known: tuple[str, ...] | list[str]) -> None:
        # The scopes asked for are not repeated: a client may have put anything there.
        super().__init__(
            "scope", f"{len(scopes)} unknown scope(s); the scopes are: {' '.join(known)}."
        )
        self.scopes = scopes


class ScopeNotGrantedError(PermissionDeniedError):
    code = "scope-not-granted"
    title = "Scope not granted"

    def __init__(self, scopes: list[str]) -> None:
        super().__init__(
            f"This client is not allowed the scope(s): {', '.join(scopes)}.", scopes=scopes
        )


class MemberNotActiveError(ConflictError):
    code = "member-not-active"
    title = "Member is not active"

    def __init__(self, member_id: str, status: str) -> None:
        super().__init__(
            f"Member {member_id!r} is {status}: it can neither earn nor redeem points.",
            member_id=member_id,
            member_status=status,
        )


class InsufficientPointsError(ConflictError):
    code = "insufficient-points"
    title = "Insufficient points"

    def __init__(self, available: int, requested: int) -> None:
        super().__init__(
            f"The member has {available} points available; {requested} were requested.",
            available=available,
            requested=requested,
        )


class OrderNotFoundError(NotFoundError):
    code = "order-not-found"
    title = "Order not found"

    def __init__(self, order_id: str) -> None:
        super().__init__(f"This channel has no order {order_id!r}.", order_id=order_id)


class OrderTooOldError(InvalidFieldError):
    """An order or event dated before the programme's maximum age: history comes in through
    the import (``loyalty import``), not through the API."""

    code = "order-too-old"
    title = "Order too old"

    def __init__(self, field: str, max_age_days: int, kind: str = "order") -> None:
        super().__init__(
            field,
            f"This {kind} is dated more than {max_age_days} days ago, the programme's maximum "
            "age; import history with `loyalty import` instead.",
            max_age_days=max_age_days,
        )


class EventTooOldError(OrderTooOldError):
    code = "event-too-old"
    title = "Event too old"


class OrderInFutureError(InvalidFieldError):
    code = "order-in-future"
    title = "Order in the future"

    def __init__(self, field: str = "placed_at") -> None:
        super().__init__(field, "Must not be more than 5 minutes in the future.")


class OrderConflictError(ConflictError):
    code = "order-conflict"
    title = "Order already reported with other data"

    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"Order {order_id!r} was already reported with a different body; an order's data "
            "cannot change (report a refund instead).",
            order_id=order_id,
        )


class RefundConflictError(ConflictError):
    code = "refund-conflict"
    title = "Refund already reported with other data"

    def __init__(self, refund_id: str) -> None:
        super().__init__(
            f"Refund {refund_id!r} was already reported with a different body or order.",
            refund_id=refund_id,
        )


class RefundExceedsOrderError(RuleViolationError):
    code = "refund-exceeds-order"
    title = "Refund exceeds what is left of the order"


class HoldNotFoundError(NotFoundError):
    code = "hold-not-found"
    title = "Hold not found"

    def __init__(self, hold_id: str) -> None:
        super().__init__(f"No hold with id {hold_id!r}.", hold_id=hold_id)


class HoldNotHeldError(ConflictError):
    code = "hold-not-held"
    title = "Hold is no longer held"

    def __init__(self, hold_id: str, status: str) -> None:
        super().__init__(
            f"Hold {hold_id!r} is {status}; only a held hold can be captured or released.",
            hold_id=hold_id,
            hold_status=status,
        )


class CaptureExceedsHoldError(RuleViolationError):
    code = "capture-exceeds-hold"
    title = "Capture exceeds the hold"

    def __init__(self, held: int, requested: int) -> None:
        super().__init__(
            f"The hold reserves {held} points; {requested} cannot be captured.",
            held=held,
            requested=requested,
        )


class InvalidIdempotencyKeyError(RuleViolationError):
    code = "invalid-idempotency-key"
    title = "Invalid Idempotency-Key"

    def __init__(self) -> None:
        super().__init__("Idempotency-Key must be 1 to 255 printable ASCII characters.")


class IdempotencyKeyReusedError(RuleViolationError):
    code = "idempotency-key-reused"
    title = "Idempotency-Key reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was already used for a different request (method, path or "
            "body); use a new key for a new request."
        )


class IdempotencyKeyInUseError(ConflictError):
    code = "idempotency-key-in-use"
    title = "Idempotency-Key in use"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly to "
            "get its result."
        )


class RedemptionNotFoundError(NotFoundError):
    code = "redemption-not-found"
    title = "Redemption not found"

    def __init__(self, redemption_id: str) -> None:
        super().__init__(f"No redemption {redemption_id!r}.", redemption_id=redemption_id)


class RedemptionAlreadyReturnedError(ConflictError):
    code = "redemption-already-returned"
    title = "Redemption already returned"

    def __init__(self, redemption_id: str) -> None:
        super().__init__(
            f"The points of redemption {redemption_id!r} were already given back.",
            redemption_id=redemption_id,
        )


class LedgerBusyError(ServiceUnavailableError):
    code = "ledger-busy"
    title = "Ledger busy"

    def __init__(self) -> None:
        super().__init__("The member's ledger is busy; retry the request.")


# --- configuration (earning, tiers, rewards) -------------------------------------------------


class ConfigNotFoundError(NotFoundError):
    """A configured thing (campaign, tier, perk, reward...) that does not exist."""

    code = "not-found"
    title = "Not found"

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"No {kind} {key!r}.", **{kind.replace(" ", "_"): key})


# --- earning (edit only this section for earning errors) ------------------------------------


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


# --- tiers (edit only this section for tier errors) -----------------------------------------


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


# --- rewards (edit only this section for perk, reward and claim errors) ---------------------


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


class UnknownRewardError(InvalidFieldError):
    code = "unknown-reward"
    title = "Unknown reward"

    def __init__(self, reward_id: str) -> None:
        super().__init__("reward_id", "No reward has this id.")
        self.reward_id = reward_id  # for the code; the id sent is not repeated to the client


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


# --- referrals (edit only this section for referral errors) ---------------------------------


class ReferralNotFoundError(NotFoundError):
    code = "referral-not-found"
    title = "Referral not found"

    def __init__(self, referral_id: str) -> None:
        super().__init__(f"No referral with id {referral_id!r}.", referral_id=referral_id)


class ReferralNotReviewableError(ConflictError):
    """Only a held or rejected referral can be approved, and only a held or pending one
    rejected."""

    code = "referral-not-reviewable"
    title = "Referral cannot be reviewed"

    def __init__(self, referral_id: str, status: str, action: str) -> None:
        super().__init__(
            f"Referral {referral_id!r} is {status}; it cannot be {action}.",
            referral_id=referral_id,
            referral_status=status,
        )


# --- community (edit only this section for event, badge and streak errors) -----------------


class EventTypeNotFoundError(ConfigNotFoundError):
    code = "event-type-not-found"
    title = "Event type not found"

    def __init__(self, name: str) -> None:
        super().__init__("event type", name)


class EventRuleNotFoundError(ConfigNotFoundError):
    code = "event-rule-not-found"
    title = "Event rule not found"

    def __init__(self, rule_id: str) -> None:
        super().__init__("event rule", rule_id)


class BadgeNotFoundError(ConfigNotFoundError):
    code = "badge-not-found"
    title = "Badge not found"

    def __init__(self, badge_id: str) -> None:
        super().__init__("badge", badge_id)


class EventTypeExistsError(ConflictError):
    code = "event-type-exists"
    title = "Event type already exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"An event type {name!r} already exists.", event_type=name)


class EventTypeInUseError(ConflictError):
    code = "event-type-in-use"
    title = "Event type in use"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Event type {name!r} has events, a rule or badges, so it stays.", event_type=name
        )


class EventRuleExistsError(ConflictError):
    code = "event-rule-exists"
    title = "Event rule already exists"

    def __init__(self, name: str, rule_id: str) -> None:
        super().__init__(
            f"Events of type {name!r} already have rule {rule_id!r}; change that one instead.",
            event_type=name,
            rule_id=rule_id,
        )


class BadgeInUseError(ConflictError):
    code = "badge-in-use"
    title = "Badge in use"

    def __init__(self, badge_id: str) -> None:
        super().__init__(
            f"Badge {badge_id!r} has been awarded, so it stays; set active to false instead.",
            badge_id=badge_id,
        )


class EventConflictError(ConflictError):
    code = "event-conflict"
    title = "Event already reported with other data"

    def __init__(self, event_id: str) -> None:
        super().__init__(
            f"Event {event_id!r} was already reported with a different body.", event_id=event_id
        )


class UnknownEventTypeError(InvalidFieldError):
    code = "unknown-event-type"
    title = "Unknown event type"

    def __init__(self, field: str, name: str) -> None:
        super().__init__(field, "No event type has this name; declare it first.")
        self.event_type = name  # for the code; the name sent is not repeated to the client


class InvalidEventPropertyError(InvalidFieldError):
    """A property of an event (or named by a rule or badge) that its type does not allow;
    ``field`` points at it (``properties/co2_kg``)."""

    code = "invalid-event-property"
    title = "Invalid event property"


class EventInFutureError(InvalidFieldError):
    code = "event-in-future"
    title = "Event in the future"

    def __init__(self) -> None:
        super().__init__("occurred_at", "Must not be more than 5 minutes in the future.")
