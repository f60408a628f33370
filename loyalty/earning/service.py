"""Earning rules: the programme's earning limits, product multipliers and campaigns, and
pricing an order (what it earns and why) for the ledger and for previews.

Configuration changes are units of work of their own, audited. `price_order` runs inside
the ledger's accrual (it never commits): there it charges budgeted campaigns after the
member's wallet is locked, each in one conditional statement that holds the campaign's row
to the commit, so a budget is never overspent under concurrent orders.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from dateutil.relativedelta import relativedelta
from sqlalchemy import ColumnElement, Select, Table, bindparam, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from loyalty import clock, configcache
from loyalty.audit import service as audit_service
from loyalty.db import (
    Page,
    RunAgainError,
    after_commit,
    before_commit,
    constraint_name,
    locked_row,
    new_id,
    retrying,
    settings_row,
    transaction_scoped,
    unit_of_work,
)
from loyalty.earning import rules
from loyalty.earning.errors import (
    CampaignInUseError,
    CampaignNotFoundError,
    MultiplierConflictError,
    MultiplierNotFoundError,
)
from loyalty.earning.models import Campaign, EarningSettings, ProductMultiplier
from loyalty.errors import InvalidFieldError
from loyalty.ledger import ports as ledger_ports
from loyalty.ledger import rules as ledger_rules
from loyalty.ledger import service as ledger_service
from loyalty.members import rules as member_rules
from loyalty.members import service as members_service
from loyalty.members.models import Member
from loyalty.ports import Port
from loyalty.tiers import service as tiers_service

EARNING_FIELDS = (
    "minimum_order_total",
    "minimum_order_currency",
    "excluded_categories",
    "daily_cap",
    "monthly_cap",
)
MULTIPLIER_FIELDS = ("scope", "match", "multiplier", "label")
CAMPAIGN_FIELDS = (
    "name",
    "description",
    "starts_at",
    "ends_at",
    "target",
    "target_values",
    "multiplier",
    "bonus_points",
    "budget",
    "active",
    "holdout_pct",
)


FACTOR = Decimal("0.0001")

# The member's lifecycle stage (new, active, silent, churned) as of a moment, for campaigns
# that target stages: analytics (above) answers.
member_stage: Port[[Session, str, dt.datetime], str] = Port("earning.member_stage")


def _factor(value: Decimal | int | str | None) -> Decimal | None:
    """Multipliers are kept to 4 decimal places (the column's scale)."""
    return None if value is None else Decimal(value).quantize(FACTOR)


# --- earning settings ----------------------------------------------------------------------


def get_earning_settings(session: Session) -> EarningSettings:
    """Minimum order, excluded categories and caps (none until a manager sets them)."""
    return settings_row(session, EarningSettings)


@retrying
def update_earning_settings(
    session: Session, *, changes: dict[str, Any], actor: str
) -> EarningSettings:
    """Change the earning limits; they apply to orders reported from now on. Audited.
    Raises `InvalidFieldError` when a minimum total comes without its currency."""
    with unit_of_work(session):
        settings = settings_row(session, EarningSettings, lock=True)
        with audit_service.recorded_update(
            session,
            settings,
            EARNING_FIELDS,
            actor=actor,
            entity_type="earning_settings",
            entity_id="earning",
        ):
            for name in EARNING_FIELDS:
                if name in changes:
                    value = changes[name]
                    if name == "minimum_order_currency" and value:
                        value = value.upper()
                    if name == "excluded_categories":
                        value = sorted(set(value or []))
                    setattr(settings, name, value)
            if (settings.minimum_order_total is None) != (settings.minimum_order_currency is None):
                raise InvalidFieldError(
                    "minimum_order_currency",
                    "Give minimum_order_total and minimum_order_currency together (null both to "
                    "remove the minimum).",
                )
            if (
                settings.minimum_order_currency
                and ledger_rules.currency_exponent(settings.minimum_order_currency) is None
            ):
                raise InvalidFieldError("minimum_order_currency", "Not an ISO 4217 currency code.")
    return settings


# --- product multipliers -------------------------------------------------------------------


def list_multipliers(session: Session) -> list[ProductMultiplier]:
    """Every product multiplier, categories first, then SKUs, alphabetically."""
    return list(
        session.scalars(
            select(ProductMultiplier).order_by(ProductMultiplier.scope, ProductMultiplier.match)
        )
    )


def get_multiplier(session: Session, multiplier_id: str) -> ProductMultiplier:
    multiplier = session.get(ProductMultiplier, multiplier_id)
    if multiplier is None:
        raise MultiplierNotFoundError(multiplier_id)
    return multiplier


def create_multiplier(
    session: Session,
    *,
    scope: str,
    match: str,
    multiplier: Decimal,
    label: str | None = None,
    actor: str,
) -> ProductMultiplier:
    """Make items of a category (or one SKU) earn ``multiplier`` times the base rate.
    Raises `MultiplierConflictError` when that category or SKU already has one."""
    with unit_of_work(session):
        now = clock.now()
        row = ProductMultiplier(
            id=new_id("mul"),
            scope=scope,
            match=match,
            multiplier=_factor(multiplier),
            label=label,
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError as error:
            if constraint_name(error) == "uq_product_multipliers_scope_match":
                raise MultiplierConflictError(scope, match) from None
            raise
        audit_service.record(
            session,
            actor=actor,
            action="created",
            entity_type="multiplier",
            entity_id=row.id,
            after=audit_service.snapshot_of(row, MULTIPLIER_FIELDS),
        )
    return row


def update_multiplier(
    session: Session, *, multiplier_id: str, changes: dict[str, Any], actor: str
) -> ProductMultiplier:
    """Change a multiplier's factor or label. Raises `MultiplierNotFoundError`."""
    with unit_of_work(session):
        row = locked_row(
            session, ProductMultiplier, multiplier_id, MultiplierNotFoundError(multiplier_id)
        )
        with audit_service.recorded_update(
            session, row, MULTIPLIER_FIELDS, actor=actor, entity_type="multiplier", entity_id=row.id
        ):
            if changes.get("multiplier") is not None:
                row.multiplier = _factor(changes["multiplier"])  # type: ignore[assignment]
            if "label" in changes:
                row.label = changes["label"]
    return row


def delete_multiplier(session: Session, *, multiplier_id: str, actor: str) -> None:
    """Remove a multiplier; orders already reported keep their points. Audited."""
    with unit_of_work(session):
        row = locked_row(
            session, ProductMultiplier, multiplier_id, MultiplierNotFoundError(multiplier_id)
        )
        audit_service.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="multiplier",
            entity_id=row.id,
            before=audit_service.snapshot_of(row, MULTIPLIER_FIELDS),
        )
        session.delete(row)


# --- campaigns -----------------------------------------------------------------------------


def campaign_status(campaign: Campaign, now: dt.datetime) -> str:
    """paused, scheduled, running, exhausted (budget spent) or ended."""
    if not campaign.active:
        return "paused"
    if now < campaign.starts_at:
        return "scheduled"
    if now >= campaign.ends_at:
        return "ended"
    if campaign.budget is not None and campaign.spent >= campaign.budget:
        return "exhausted"
    return "running"


def list_campaigns(
    session: Session, *, status: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[Campaign]:
    """Campaigns, newest first by start, filtered by status, a page at a time."""
    query: Select[Campaign] = select(Campaign).order_by(Campaign.id.desc())
    if cursor is not None:
        query = query.where(Campaign.id < cursor)
    now = clock.now()
    items: list[Campaign] = []
    more = False
    # Status depends on the clock and the budget, so filter after reading (campaigns are few).
    for campaign in session.scalars(query):
        if status is not None and campaign_status(campaign, now) != status:
            continue
        if len(items) == limit:
            more = True
            break
        items.append(campaign)
    return Page(items=items, next_cursor=items[-1].id if more else None)


def get_campaign(session: Session, campaign_id: str) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFoundError(campaign_id)
    return campaign


def _check_campaign(session: Session, campaign: Campaign, *, targets: bool = True) -> None:
    """Validate a campaign; ``targets`` False skips the target values (unchanged by an update:
    a tier or member that went away since must not stop a manager pausing the campaign)."""
    campaign.multiplier = _factor(campaign.multiplier)
    if campaign.ends_at <= campaign.starts_at:
        raise InvalidFieldError("ends_at", "ends_at must be after starts_at.")
    if campaign.multiplier is None and not campaign.bonus_points:
        raise InvalidFieldError("multiplier", "Give a multiplier, a bonus_points, or both.")
    values = list(campaign.target_values or [])
    if not targets:
        values = []
    elif campaign.target == "all":
        if values:
            raise InvalidFieldError("target_values", "A campaign for all members takes no values.")
    elif not values:
        raise InvalidFieldError(
            "target_values", f"Name the {campaign.target} the campaign targets."
        )
    if campaign.target == "tiers":
        ladder = tiers_service.ladder(session)
        unknown = set(values) - set(ladder)
        if unknown:
            raise InvalidFieldError(
                "target_values",
                f"{len(unknown)} value(s) name no tier; the ladder's tiers are: "
                f"{', '.join(ladder) or 'none'}.",
            )
    if campaign.target == "stages":
        unknown = set(values) - set(member_rules.STAGES)
        if unknown:
            raise InvalidFieldError(
                "target_values",
                f"{len(unknown)} value(s) name no stage; use {', '.join(member_rules.STAGES)}.",
            )
    if campaign.target == "members":
        found = set(session.scalars(select(Member.id).where(Member.id.in_(values))))
        unknown = set(values) - found
        if unknown:
            raise InvalidFieldError("target_values", f"{len(unknown)} value(s) name no member.")
    if campaign.budget is not None and campaign.spent > campaign.budget:
        raise InvalidFieldError(
            "budget", f"The campaign has already given {campaign.spent} points."
        )
    if targets:
        campaign.target_values = sorted(set(values))


def tier_references(session: Session, code: str) -> tuple[str, int]:
    """How many campaigns target the tier ``code`` (a tier referred to cannot be deleted)."""
    campaigns = session.scalars(select(Campaign).where(Campaign.target == "tiers"))
    return "campaigns", sum(1 for campaign in campaigns if code in (campaign.target_values or []))


def create_campaign(session: Session, *, actor: str, **values: Any) -> Campaign:
    """Create a campaign (see `loyalty.earning.rules` for how it adds points). Audited.
    Raises `InvalidFieldError` for a bad window, target or reward."""
    with unit_of_work(session):
        now = clock.now()
        campaign = Campaign(id=new_id("cmp"), spent=0, created_at=now, updated_at=now)
        campaign.target = "all"
        campaign.target_values = []
        campaign.active = True
        campaign.holdout_pct = 0
        for name in CAMPAIGN_FIELDS:
            if name in values:
                setattr(campaign, name, values[name])
        _check_campaign(session, campaign)
        session.add(campaign)
        audit_service.record(
            session,
            actor=actor,
            action="created",
            entity_type="campaign",
            entity_id=campaign.id,
            after=audit_service.snapshot_of(campaign, CAMPAIGN_FIELDS),
        )
    return campaign


@retrying
def update_campaign(
    session: Session, *, campaign_id: str, changes: dict[str, Any], actor: str
) -> Campaign:
    """Change a campaign (pause it with ``active: false``). Points already given stay.
    Locks the campaign. Raises `CampaignNotFoundError`, `InvalidFieldError`."""
    with unit_of_work(session):
        campaign = locked_row(session, Campaign, campaign_id, CampaignNotFoundError(campaign_id))
        with audit_service.recorded_update(
            session,
            campaign,
            CAMPAIGN_FIELDS,
            actor=actor,
            entity_type="campaign",
            entity_id=campaign.id,
        ):
            audit_service.apply_changes(campaign, changes, CAMPAIGN_FIELDS)
            if changes.get("target") == "all" and "target_values" not in changes:
                campaign.target_values = []
            _check_campaign(
                session, campaign, targets="target" in changes or "target_values" in changes
            )
    return campaign


def delete_campaign(session: Session, *, campaign_id: str, actor: str) -> None:
    """Delete a campaign that never gave points; one that did can only be paused (its
    points stay on the orders that earned them). Raises `CampaignNotFoundError` and
    `CampaignInUseError`."""
    with unit_of_work(session):
        campaign = locked_row(session, Campaign, campaign_id, CampaignNotFoundError(campaign_id))
        if campaign.spent:
            raise CampaignInUseError(campaign_id, campaign.spent)
        audit_service.record(
            session,
            actor=actor,
            action="deleted",
            entity_type="campaign",
            entity_id=campaign.id,
            before=audit_service.snapshot_of(campaign, CAMPAIGN_FIELDS),
        )
        session.delete(campaign)


# --- pricing orders ------------------------------------------------------------------------


def _periods(member: Member, moment: dt.datetime) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
    """The day and the month ``moment`` falls in, in the member's time zone, as UTC
    ``[start, end)`` pairs."""
    return _periods_in(member.timezone, moment)


def _periods_in(
    timezone: str | None, moment: dt.datetime
) -> tuple[tuple[dt.datetime, dt.datetime], ...]:
    try:
        zone = zoneinfo.ZoneInfo(timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    local = moment.astimezone(zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_day = (day + dt.timedelta(days=1)).replace(hour=0)
    next_month = month + relativedelta(months=1)
    return (
        (day.astimezone(dt.UTC), next_day.astimezone(dt.UTC)),
        (month.astimezone(dt.UTC), next_month.astimezone(dt.UTC)),
    )


@dataclass(frozen=True)
class _CampaignTerms:
    """What pricing needs of an active campaign (its budget's spend is read when it counts)."""

    id: str
    name: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    target: str
    target_values: tuple[str, ...]
    multiplier: Decimal | None
    bonus_points: int | None
    budget: int | None
    holdout_pct: int  # the share of the target held out (no campaign points), for uplift

    def runs_at(self, moment: dt.datetime) -> bool:
        return self.starts_at <= moment < self.ends_at


@dataclass(frozen=True)
class _EarningRules:
    """The earning configuration as pricing reads it: cached per process, behind the
    configuration's version (`loyalty.configcache`)."""

    limits: rules.Limits
    daily_cap: int | None
    monthly_cap: int | None
    products: tuple[rules.ProductRule, ...]
    campaigns: tuple[_CampaignTerms, ...]  # active ones, by start then id


def _load_earning_rules(session: Session) -> _EarningRules:
    earning = get_earning_settings(session)
    products = tuple(
        rules.ProductRule(row.id, row.scope, row.match, row.multiplier, row.label)
        for row in session.scalars(select(ProductMultiplier).order_by(ProductMultiplier.id))
    )
    campaigns = tuple(
        _CampaignTerms(
            id=row.id,
            name=row.name,
            starts_at=row.starts_at,
            ends_at=row.ends_at,
            target=row.target,
            target_values=tuple(row.target_values or ()),
            multiplier=row.multiplier,
            bonus_points=row.bonus_points,
            budget=row.budget,
            holdout_pct=row.holdout_pct or 0,
        )
        for row in session.scalars(
            select(Campaign)
            .where(Campaign.active.is_(True))
            .order_by(Campaign.starts_at, Campaign.id)
        )
    )
    return _EarningRules(
        limits=rules.Limits(
            minimum_total=earning.minimum_order_total,
            minimum_currency=earning.minimum_order_currency,
            excluded_categories=frozenset(earning.excluded_categories or []),
        ),
        daily_cap=earning.daily_cap,
        monthly_cap=earning.monthly_cap,
        products=products,
        campaigns=campaigns,
    )


_RULES = "earning.rules"


def _earning_rules(session: Session) -> _EarningRules:
    return configcache.cached(session, _RULES, _load_earning_rules)


def may_target_stages(session: Session) -> bool:
    """Whether an active campaign targets lifecycle stages (pricing then asks for the
    member's stage), as far as this process knows without asking the database."""
    known: _EarningRules | None = configcache.peek(session, _RULES)
    return known is not None and any(terms.target == "stages" for terms in known.campaigns)


def price_order(
    session: Session,
    *,
    member: Member,
    total: int,
    currency: str,
    exponent: int,
    items: list[dict[str, Any]],
    placed_at: dt.datetime,
    now: dt.datetime,
    charge: bool,
) -> rules.Quote:
    """What the order earns for this member now, and why.

    With ``charge`` (inside the accrual, the member's wallet locked), budgeted campaigns are
    charged the points they give (`_charge`); without it (previews) nothing is locked or
    written and budgets' spend is read from the database. The rules come from the
    per-process cache.
    """
    settings = ledger_service.get_settings(session)
    earning = _earning_rules(session)
    lines = [
        rules.Line(
            sku=item["sku"],
            category=item.get("category"),
            amount=item["quantity"] * item["unit_price"],
        )
        for item in items
    ]
    skus = {line.sku for line in lines}
    categories = {line.category for line in lines if line.category}
    products = [
        product
        for product in earning.products
        if (product.scope == "sku" and product.match in skus)
        or (product.scope == "category" and product.match in categories)
    ]
    tier_ref = tiers_service.current_tiers(session, [member.id]).get(member.id)
    tier = (
        rules.TierRule(tier_ref.code, tier_ref.name, tier_ref.points_multiplier)
        if tier_ref is not None
        else None
    )
    chosen = _chosen_campaigns(
        session, earning, member, tier_ref.code if tier_ref else None, placed_at, now
    )
    limits = earning.limits
    if earning.daily_cap is not None or earning.monthly_cap is not None:
        # Caps count by the day and month the order was placed in (an imported order of
        # 2024 counts towards its own day, not today's).
        periods = _periods(member, placed_at)
        locked = session.info.get(_CAPS_READ, {}).pop(member.id, None)
        if locked is not None and locked[0] == periods:  # read with the wallet's lock
            day_points, month_points = locked[1]
        else:
            day_points, month_points = ledger_service.order_points_placed(
                session, member.id, list(periods)
            )
        limits = dataclasses.replace(
            limits,
            daily_room=None if earning.daily_cap is None else earning.daily_cap - day_points,
            monthly_room=None
            if earning.monthly_cap is None
            else earning.monthly_cap - month_points,
        )

    def quote(campaigns: list[rules.CampaignRule]) -> rules.Quote:
        return rules.quote(
            total=total,
            currency=currency,
            exponent=exponent,
            rate=settings.earn_rate,
            rounding=settings.rounding,
            lines=lines,
            products=products,
            tier=tier,
            campaigns=campaigns,
            limits=limits,
        )

    if not charge:
        return quote(_campaign_rules(session, chosen, placed_at, lock=False))
    # Priced as if every budget had room for the order, then charged: one conditional
    # UPDATE per budgeted campaign, sent just before the accrual commits (its row's lock,
    # which the campaign's other orders queue for, is then held for the commit only). Only
    # when one of them lacks the room (or was paused, cut short or given another budget
    # meanwhile) is the accrual run again, this process charging that budget at once from
    # then on: its row read, locked, and the order priced again.
    result = quote([_campaign_rule(terms, terms.budget) for terms in chosen])
    run_again = session.info.pop(_RUN_AGAIN, False)
    if (
        not run_again
        and not session.in_nested_transaction()
        and not any(
            (terms.id, terms.budget) in _TIGHT for terms in chosen if terms.budget is not None
        )
    ):
        _charge_at_commit(session, chosen, result, placed_at)
        return result
    charged = _charge(session, chosen, result, placed_at)
    if charged is None:
        return result
    return _charge_locked(session, chosen, placed_at, charged, quote)


# --- the caps' points, read with the accrual's wallet lock ---------------------------------

# session.info: member id -> the periods asked before the lock (in the time zone guessed),
# and member id -> (those periods, their points) read with it.
_CAPS_ASKED = transaction_scoped("loyalty.earning.caps_asked")
_CAPS_READ = transaction_scoped("loyalty.earning.caps_read")
# The members' time zones this process saw, other than UTC (the guess for everyone else):
# the periods are asked before the lock reads the member. At most this many are kept.
_ZONES: dict[str, str] = {}
_ZONES_KEPT = 100_000


def _caps_wanted(session: Session) -> bool:
    # A lateral join: PostgreSQL only (SQLite reads the caps' points on their own).
    if session.get_bind().dialect.name != "postgresql":
        return False
    known: _EarningRules | None = configcache.peek(session, _RULES)
    return known is not None and (known.daily_cap is not None or known.monthly_cap is not None)


def _caps_parameters(session: Session, member_id: str, placed_at: dt.datetime) -> dict[str, Any]:
    day, month = periods = _periods_in(_ZONES.get(member_id, "UTC"), placed_at)
    session.info.setdefault(_CAPS_ASKED, {})[member_id] = periods
    return {
        "caps_since_0": day[0],
        "caps_until_0": day[1],
        "caps_since_1": month[0],
        "caps_until_1": month[1],
        "caps_low": min(day[0], month[0]),
        "caps_high": max(day[1], month[1]),
    }


def _with_caps(query: Select[Any], member_id: ColumnElement[str]) -> Select[Any]:
    placed = ledger_service.points_placed_lateral(member_id, 2, "caps")
    return query.outerjoin(placed, true()).add_columns(Member.timezone, placed.c.p0, placed.c.p1)


def _keep_caps(session: Session, member_id: str, values: tuple[Any, ...], current: bool) -> None:
    timezone, day_points, month_points = values
    if (timezone or "UTC") == "UTC":
        _ZONES.pop(member_id, None)
    else:
        if len(_ZONES) >= _ZONES_KEPT:
            _ZONES.clear()
        _ZONES[member_id] = timezone
    periods = session.info.get(_CAPS_ASKED, {}).pop(member_id, None)
    if current and periods is not None:
        # Pricing uses them for these periods only: those of the member's time zone.
        read = (int(day_points or 0), int(month_points or 0))
        session.info.setdefault(_CAPS_READ, {})[member_id] = (periods, read)


# Pricing reads the member's points of the order's day and month on every order while the
# programme caps them: the accrual's wallet lock reads them in its statement, for the
# periods in the member's time zone as this process last saw it (pricing uses them when
# they are the periods of the member's time zone the lock read, else reads again).
LOCK_COMPANION = ledger_ports.Companion(
    "earning.caps",
    _with_caps,
    3,
    _keep_caps,
    wanted=_caps_wanted,
    parameters=_caps_parameters,
)


# Built once: an order a budgeted campaign applies to charges its budget in one statement,
# which also checks that the campaign still applies and that its budget has the room (the
# row's lock, taken by the UPDATE, is held to the accrual's commit: concurrent charges of
# the campaign queue there, and each sees the spend the one before it left).
_campaigns = cast(Table, Campaign.__table__)
_CHARGE = (
    update(_campaigns)
    .where(
        _campaigns.c.id == bindparam("charge_id"),
        _campaigns.c.active.is_(True),
        _campaigns.c.starts_at <= bindparam("charge_placed_at"),
        _campaigns.c.ends_at > bindparam("charge_placed_at"),
        _campaigns.c.spent + bindparam("charge_points") <= _campaigns.c.budget,
    )
    .values(spent=_campaigns.c.spent + bindparam("charge_points"))
    .returning(_campaigns.c.budget)
)
# Every order a budgeted campaign applies to when its budget lacks the room (or previews)
# reads its row; locked when charging.
_BUDGETS = (
    select(Campaign)
    .where(Campaign.id.in_(bindparam("ids", expanding=True)))
    .order_by(Campaign.id)
    .execution_options(populate_existing=True)
)
_BUDGETS_LOCKED = _BUDGETS.with_for_update()
# Budgets this process found spent, as (campaign id, budget): the spend never goes down,
# and a new budget is a new pair. Their campaigns give nothing more, without a statement.
_SPENT: set[tuple[str, int]] = set()
_SPENT_KEPT = 10_000
# Budgets this process found short of an order's points at its commit, as (campaign id,
# budget): their orders charge them at once, as they are priced (`_charge`).
_TIGHT: set[tuple[str, int]] = set()
# session.info: the accrual is run again after its charge missed at the commit; it charges as
# it prices (whatever budget it now reads: one a manager keeps changing would otherwise miss
# at every commit). Kept across the rollback; the next pricing takes it.
_RUN_AGAIN = "loyalty.earning.run_again"


def _chosen_campaigns(
    session: Session,
    earning: _EarningRules,
    member: Member,
    tier_code: str | None,
    placed_at: dt.datetime,
    now: dt.datetime,
) -> list[_CampaignTerms]:
    """Active campaigns running when the order was placed that target this member (and
    whose budget this process has not seen spent)."""
    running = [
        terms
        for terms in earning.campaigns
        if terms.runs_at(placed_at) and (terms.id, terms.budget) not in _SPENT
    ]
    stage = None
    if any(terms.target == "stages" for terms in running):
        stage = member_stage(session, member.id, now)
    return [
        terms
        for terms in running
        if rules.targets(
            terms.target,
            list(terms.target_values),
            member_id=member.id,
            tier_code=tier_code,
            stage=stage,
        )
        and not rules.in_holdout(terms.id, member.id, terms.holdout_pct)
    ]


def _charge(
    session: Session, chosen: list[_CampaignTerms], quote: rules.Quote, placed_at: dt.datetime
) -> dict[str, int] | None:
    """Charge each budgeted campaign the points it gives in ``quote`` (in id order, after
    the wallet: the global lock order). None when all had the room under the budgets the
    order was priced with; else what was charged before the first that had not, or up to the
    first whose budget a manager changed since the process read it (the order is then priced
    again with the budget as it is)."""
    charged: dict[str, int] = {}
    for terms in sorted(chosen, key=lambda terms: terms.id):
        given = quote.campaign_points.get(terms.id, 0)
        if terms.budget is None or not given:
            continue
        parameters = {"charge_id": terms.id, "charge_placed_at": placed_at, "charge_points": given}
        budget = session.execute(_CHARGE, parameters).scalar_one_or_none()
        if budget is None:
            return charged
        charged[terms.id] = given
        loaded = session.identity_map.get(identity_key(Campaign, terms.id))
        if loaded is not None:  # the session read the row before: it reads the spend again
            session.expire(loaded, ["spent"])
        if budget != terms.budget:
            return charged
    return None


def _charge_at_commit(
    session: Session, chosen: list[_CampaignTerms], quote: rules.Quote, placed_at: dt.datetime
) -> None:
    """Charge the budgeted campaigns ``quote`` gives points from when the transaction
    commits (`_charge_queued`)."""
    charges = [
        (terms, quote.campaign_points.get(terms.id, 0))
        for terms in sorted(chosen, key=lambda terms: terms.id)
        if terms.budget is not None and quote.campaign_points.get(terms.id, 0)
    ]
    if charges:
        before_commit(session, functools.partial(_charge_queued, charges, placed_at))


def _charge_queued(
    charges: list[tuple[_CampaignTerms, int]], placed_at: dt.datetime, session: Session
) -> None:
    """Charge what an order gave from budgeted campaigns (in campaign id order, after the
    wallet: the global lock order), each only if the campaign still runs and its budget,
    unchanged, has the room. Otherwise the order was priced with what no longer holds:
    `RunAgainError`, this process charging that budget at once from then on."""
    for terms, points in charges:
        parameters = {"charge_id": terms.id, "charge_placed_at": placed_at, "charge_points": points}
        budget = session.execute(_CHARGE, parameters).scalar_one_or_none()
        if budget != terms.budget and terms.budget is not None:
            if len(_TIGHT) >= _SPENT_KEPT:
                _TIGHT.clear()
            _TIGHT.add((terms.id, terms.budget))
            session.info[_RUN_AGAIN] = True
            raise RunAgainError()
        loaded = session.identity_map.get(identity_key(Campaign, terms.id))
        if loaded is not None:  # the session read the row before: it reads the spend again
            session.expire(loaded, ["spent"])


def _charge_locked(
    session: Session,
    chosen: list[_CampaignTerms],
    placed_at: dt.datetime,
    charged: dict[str, int],
    quote: Callable[[list[rules.CampaignRule]], rules.Quote],
) -> rules.Quote:
    """Price the order again with the budgets' rows locked (in id order) and their spend as
    it is, less what `_charge` already charged them, and charge them what they now give (a
    campaign whose budget was removed meanwhile gives without limit, and is not charged)."""
    rows = _budget_rows(session, chosen, lock=True)
    for campaign_id, given in charged.items():
        rows[campaign_id].spent -= given
    result = quote(_campaign_rules(session, chosen, placed_at, rows=rows))
    for campaign_id, row in rows.items():
        if row.budget is not None:
            row.spent += result.campaign_points.get(campaign_id, 0)
    return result


def _budget_rows(
    session: Session, chosen: list[_CampaignTerms], *, lock: bool
) -> dict[str, Campaign]:
    budgeted = sorted(terms.id for terms in chosen if terms.budget is not None)
    if not budgeted:
        return {}
    query = _BUDGETS_LOCKED if lock else _BUDGETS
    return {row.id: row for row in session.scalars(query, {"ids": budgeted})}


def _campaign_rules(
    session: Session,
    chosen: list[_CampaignTerms],
    placed_at: dt.datetime,
    *,
    lock: bool = False,
    rows: dict[str, Campaign] | None = None,
) -> list[rules.CampaignRule]:
    """The chosen campaigns' rules with their budgets' room as the rows say (read now,
    unless given), leaving out those paused, cut short, deleted or spent meanwhile."""
    if rows is None:
        rows = _budget_rows(session, chosen, lock=lock)
    result = []
    for terms in chosen:
        if terms.budget is None:
            result.append(_campaign_rule(terms, None))
            continue
        row = rows.get(terms.id)
        # A campaign paused, cut short or deleted meanwhile no longer applies.
        if row is None or not row.active or not (row.starts_at <= placed_at < row.ends_at):
            continue
        if row.budget is None:  # its budget removed meanwhile
            result.append(_campaign_rule(terms, None))
        elif row.spent < row.budget:
            result.append(_campaign_rule(terms, row.budget - row.spent))
        else:  # known spent once the spend that used it up is known committed
            after_commit(session, functools.partial(_remember_spent, (row.id, row.budget)))
    return result


def _remember_spent(key: tuple[str, int], session: Session) -> None:
    if len(_SPENT) >= _SPENT_KEPT:
        _SPENT.clear()
    _SPENT.add(key)


def _campaign_rule(terms: _CampaignTerms, budget_left: int | None) -> rules.CampaignRule:
    return rules.CampaignRule(
        id=terms.id,
        name=terms.name,
        multiplier=terms.multiplier,
        bonus_points=terms.bonus_points,
        budget_left=budget_left,
    )


def preview_order(
    session: Session,
    *,
    member_id: str,
    total: int,
    currency: str,
    items: list[dict[str, Any]] | None = None,
    placed_at: dt.datetime | None = None,
) -> rules.Quote:
    """What an order would earn now, without writing anything (for carts and checkouts).
    Raises `MemberNotFoundError` and `InvalidFieldError` (unknown currency, duplicate SKUs)."""
    member = members_service.get_member(session, member_id)
    exponent = ledger_rules.currency_exponent(currency)
    if exponent is None:
        raise InvalidFieldError("currency", "Not an ISO 4217 currency code.")
    items = items or []
    skus = [item["sku"] for item in items]
    if len(set(skus)) != len(skus):
        raise InvalidFieldError("items", "Each SKU may appear once in an order.")
    now = clock.now()
    return price_order(
        session,
        member=member,
        total=total,
        currency=currency.upper(),
        exponent=exponent,
        items=items,
        placed_at=placed_at or now,
        now=now,
        charge=False,
    )
