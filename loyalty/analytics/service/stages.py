"""Lifecycle stages, RFM scores and segments, and the churn warning: recomputed by the worker
once a day for every member (with history), read by reports and by campaigns that target
stages."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    Select,
    Table,
    bindparam,
    case,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from loyalty import bus, clock, configcache
from loyalty.analytics import rules
from loyalty.analytics.events import MemberAtRisk
from loyalty.analytics.models import AnalyticsSettings, MemberStage, RiskFlag, StageChange
from loyalty.analytics.service._sql import activity, activity_sources, moments
from loyalty.analytics.service.settings import get_settings
from loyalty.db import dialect_insert, insert_rows, new_id, transaction_scoped, unit_of_work
from loyalty.earning import service as earning
from loyalty.ledger import ports as ledger_ports
from loyalty.ledger import reporting as ledger
from loyalty.members.models import Member


def _last_active(session: Session, member_id: str, now: dt.datetime) -> dt.datetime | None:
    """The member's last activity up to ``now``."""
    statement = _last_active_query(session.get_bind().dialect.name)
    last: dt.datetime | None = session.scalar(statement, {"member_id": member_id, "now": now})
    return last


@cache
def _last_active_query(dialect: str) -> Select[Any]:
    """The member's last activity: built once, as a campaign that targets stages asks on every
    order whose wallet changed while it waited for the lock (a hot member's, each time). On
    PostgreSQL each source's row nearest the moment, from its (member, time) index, whatever
    the member's history (`_nearest`); elsewhere the aggregate over the union of the sources."""
    moment = bindparam("now", type_=moments().c.at.type)
    if dialect == "postgresql":
        last, _ = _nearest(bindparam("member_id"), moment)
        return select(func.greatest(*last))
    acts = activity()
    return select(func.max(acts.c.at)).where(
        acts.c.member_id == bindparam("member_id"), acts.c.at <= moment
    )


def _nearest(member_id: Any, moment: Any) -> tuple[list[Any], list[Any]]:
    """Of each source of activity (`_sql.activity_sources`), the member's row nearest
    ``moment``: the last at or before it and the first after it, each read from the source's
    index on (member, time) and stopping there (an aggregate over the union of the sources
    reads the member's whole history: 1 ms of PostgreSQL at 3,000 orders)."""
    last, first_after = [], []
    for rows, time_name, _kind in activity_sources():
        at = rows.selected_columns[time_name]
        mine = rows.with_only_columns(at).where(rows.selected_columns.member_id == member_id)
        last.append(mine.where(at <= moment).order_by(at.desc()).limit(1).scalar_subquery())
        first_after.append(mine.where(at > moment).order_by(at).limit(1).scalar_subquery())
    return last, first_after


@dataclass(frozen=True)
class _Thresholds:
    """The managers' stage thresholds, as campaigns read them on every order: cached per
    process behind the configuration's version (`loyalty.configcache`)."""

    new_days: int
    active_days: int
    silent_days: int


def _thresholds(session: Session) -> _Thresholds:
    def load(session: Session) -> _Thresholds:
        settings = get_settings(session)
        return _Thresholds(settings.new_days, settings.active_days, settings.silent_days)

    return configcache.cached(session, "analytics.stage_thresholds", load)


def stage_of(session: Session, member_id: str, now: dt.datetime) -> str:
    """The member's lifecycle stage as of ``now``, from their enrolment and last activity
    with the managers' thresholds (campaigns that target stages ask this, live). Reads only;
    an unknown member is ``new``."""
    member = session.get(Member, member_id)  # an accrual has it already
    if member is None:
        return "new"
    # What the accrual's wallet lock read (`LOCK_COMPANION`): the last activity up to the
    # lock's moment and the first after it; the same answer as a read now when nothing
    # happened in between. Used once.
    locked = session.info.get(_LOCKED_ACTIVITY, {}).pop(member_id, None)
    if locked is not None and locked[0] <= now and (locked[2] is None or locked[2] > now):
        last = locked[1]
    else:
        last = _last_active(session, member_id, now)
    return _stage(_thresholds(session), member.enrolled_at, last, now)


# session.info: member id -> (the lock's moment, the last activity then, the first after it)
# as the accrual's wallet lock read them.
_LOCKED_ACTIVITY = transaction_scoped("loyalty.analytics.locked_activity")


def _with_last_active(query: Select[Any], member_id: ColumnElement[str]) -> Select[Any]:
    """The member's last activity up to the lock's moment and the first after it, each
    source's row nearest the moment (`_nearest`), whatever the member's history."""
    moment = bindparam(ledger_ports.LOCK_NOW, type_=moments().c.at.type)
    last, first_after = _nearest(member_id, moment)
    # greatest and least skip nulls (PostgreSQL): a source with no such row counts for none.
    return query.add_columns(moment, func.greatest(*last), func.least(*first_after))


def _keep_last_active(
    session: Session, member_id: str, values: tuple[Any, ...], current: bool
) -> None:
    if current:
        session.info.setdefault(_LOCKED_ACTIVITY, {})[member_id] = values


def _stages_priced(session: Session) -> bool:
    # A lateral join: PostgreSQL only (SQLite reads the last activity on its own).
    postgresql = session.get_bind().dialect.name == "postgresql"
    return postgresql and earning.may_target_stages(session)


# Pricing asks for the member's stage on every order while a campaign targets stages: the
# accrual's wallet lock reads the member's last activity in its statement.
LOCK_COMPANION = ledger_ports.Companion(
    "analytics.last_active", _with_last_active, 3, _keep_last_active, wanted=_stages_priced
)


def _stage(
    settings: AnalyticsSettings | _Thresholds, enrolled_at: dt.datetime, last: Any, now: dt.datetime
) -> str:
    return rules.lifecycle_stage(
        enrolled_at=enrolled_at,
        last_active_at=last,
        now=now,
        new_days=settings.new_days,
        active_days=settings.active_days,
        silent_days=settings.silent_days,
    )


@dataclass(frozen=True)
class Bounds:
    """The lowest value of each quintile (ascending) of recency, frequency and money among the
    members who bought in the RFM window."""

    recency: list[Any]
    frequency: list[Any]
    monetary: list[Any]


def _rfm_window(settings: AnalyticsSettings, now: dt.datetime) -> Any:
    orders = ledger.counted_orders().subquery()
    money = orders.c.total - orders.c.amount_refunded
    return (
        select(
            orders.c.member_id,
            func.max(orders.c.placed_at).label("last_order_at"),
            func.count().label("orders"),
            func.sum(case((orders.c.currency == settings.currency, money), else_=0)).label(
                "revenue"
            ),
        )
        .where(
            orders.c.placed_at >= now - dt.timedelta(days=settings.rfm_days),
            orders.c.placed_at <= now,
        )
        .group_by(orders.c.member_id)
    )


def quintile_bounds(session: Session, settings: AnalyticsSettings, now: dt.datetime) -> Bounds:
    """One pass over the window's buyers: NTILE(5) of each measure, the lowest value of each."""
    window = _rfm_window(settings, now).subquery("rfm")
    result = []
    for column in (window.c.last_order_at, window.c.orders, window.c.revenue):
        tiles = select(column.label("value"), func.ntile(5).over(order_by=column).label("tile"))
        tiles_q = tiles.subquery()
        rows = session.execute(
            select(func.min(tiles_q.c.value)).group_by(tiles_q.c.tile).order_by(tiles_q.c.tile)
        ).scalars()
        result.append(list(rows))
    return Bounds(*result)


def recompute(
    session: Session, *, now: dt.datetime | None = None, batch_size: int = 1000
) -> dict[str, int]:
    """Recompute every member's stage, RFM scores and segment, record what changed, and raise
    or close churn-warning flags (each raised flag publishes `MemberAtRisk`, which becomes a
    ``member.at_risk`` event). One unit of work per batch of members, in id order. Returns
    counts."""
    now = now or clock.now()
    settings = get_settings(session)
    bounds = quintile_bounds(session, settings, now)
    counts: Counter[str] = Counter()
    after = ""
    while True:
        with unit_of_work(session):
            ids = list(
                session.scalars(
                    select(Member.id).where(Member.id > after).order_by(Member.id).limit(batch_size)
                )
            )
            if not ids:
                break
            counts += _recompute_batch(session, settings, bounds, ids, now)
            after = ids[-1]
    return dict(counts)


def _recompute_batch(
    session: Session,
    settings: AnalyticsSettings,
    bounds: Bounds,
    ids: list[str],
    now: dt.datetime,
) -> Counter[str]:
    counts: Counter[str] = Counter()
    # The batch is a range of member ids (in id order): range scans of the member-id indexes.
    lo, hi = ids[0], ids[-1]
    members: dict[str, Any] = {
        member_id: enrolled_at
        for member_id, enrolled_at in session.execute(
            select(Member.id, Member.enrolled_at).where(Member.id.between(lo, hi))
        )
    }
    orders = ledger.counted_orders().subquery()
    in_window = orders.c.placed_at >= now - dt.timedelta(days=settings.rfm_days)
    money = orders.c.total - orders.c.amount_refunded
    rfm = {
        row.member_id: row
        for row in session.execute(
            select(
                orders.c.member_id,
                func.max(orders.c.placed_at).label("ever"),
                func.max(case((in_window, orders.c.placed_at))).label("last_order_at"),
                func.coalesce(func.sum(case((in_window, 1), else_=0)), 0).label("orders"),
                func.coalesce(
                    func.sum(
                        case((in_window & (orders.c.currency == settings.currency), money), else_=0)
                    ),
                    0,
                ).label("revenue"),
            )
            .where(orders.c.member_id.between(lo, hi), orders.c.placed_at <= now)
            .group_by(orders.c.member_id)
        )
    }
    acts = activity()
    recent_start = now - dt.timedelta(days=rules.RECENT_DAYS)
    baseline_start = recent_start - dt.timedelta(days=rules.BASELINE_DAYS)
    windows: dict[str, tuple[Any, int, int]] = {
        row.member_id: (row.last, int(row.recent), int(row.baseline))
        for row in session.execute(
            select(
                acts.c.member_id,
                func.max(acts.c.at).label("last"),
                func.sum(case((acts.c.at >= recent_start, 1), else_=0)).label("recent"),
                func.sum(
                    case(((acts.c.at >= baseline_start) & (acts.c.at < recent_start), 1), else_=0)
                ).label("baseline"),
            )
            .where(acts.c.member_id.between(lo, hi), acts.c.at <= now)
            .group_by(acts.c.member_id)
        )
    }
    stored = {
        row.member_id: row
        for row in session.execute(
            select(MemberStage.member_id, MemberStage.stage, MemberStage.segment).where(
                MemberStage.member_id.between(lo, hi)
            )
        )
    }
    flags = {
        row.member_id: row
        for row in session.execute(
            select(RiskFlag.member_id, RiskFlag.id, RiskFlag.flagged_at).where(
                RiskFlag.member_id.between(lo, hi), RiskFlag.closed_at.is_(None)
            )
        )
    }
    # The rules decide per member (pure functions over the rows read); the writes go in one
    # statement each per batch: stages upserted, changes, raised flags and closed ones
    # inserted or updated together, the events' outbox rows gathered by `bus.batch`.
    write = _Writes()
    for member_id in ids:
        enrolled_at = members[member_id]
        last, recent, baseline = windows.get(member_id, (None, 0, 0))
        stage = _stage(settings, enrolled_at, last, now)
        row = rfm.get(member_id)
        scores: tuple[int, int, int] | None = None
        segment = None
        if row is not None and row.orders:
            scores = (
                rules.score(row.last_order_at, bounds.recency),
                rules.score(row.orders, bounds.frequency),
                rules.score(row.revenue, bounds.monetary),
            )
            segment = rules.segment(*scores)
        elif row is not None:
            segment = "lost"
        current = stored.get(member_id)
        old_stage = current.stage if current is not None else None
        old_segment = current.segment if current is not None else None
        values: dict[str, Any] = {
            "member_id": member_id,
            "stage": stage,
            "segment": segment,
            "last_active_at": last,
            "last_order_at": row.ever if row is not None else None,
            "orders": int(row.orders) if row is not None else 0,
            "revenue": int(row.revenue or 0) if row is not None else 0,
            "computed_at": now,
            "since": now,  # kept by the upsert unless the stage changed
        }
        values["recency"], values["frequency"], values["monetary"] = scores or (None, None, None)
        write.stages.append(values)
        if old_stage != stage or old_segment != segment:
            write.changes.append(
                {
                    "member_id": member_id,
                    "from_stage": old_stage,
                    "to_stage": stage,
                    "from_segment": old_segment,
                    "to_segment": segment,
                    "at": now,
                }
            )
            counts["stages changed"] += 1
        counts["stages computed"] += 1
        counts += _warn(
            write, settings, member_id, stage, recent, baseline, last, flags.get(member_id), now
        )
    write.flush(session, now)
    return counts


_STAGES = cast(Table, MemberStage.__table__)
# The stages a batch computed, on PostgreSQL, for the one upsert of `_Writes.flush`: the
# batch's own table, dropped when its transaction ends.
_COMPUTED = Table(
    "member_stages_computed",
    MetaData(),
    *(Column(column.name, column.type) for column in _STAGES.c),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


def _upserting(statement: Any) -> Any:
    """``statement`` (an INSERT of member stages) updating the member's row when there is one:
    its ``since`` moves only when the stage changed."""
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=["member_id"],
        set_={
            **{
                name: excluded[name]
                for name in (
                    "stage",
                    "segment",
                    "recency",
                    "frequency",
                    "monetary",
                    "last_active_at",
                    "last_order_at",
                    "orders",
                    "revenue",
                    "computed_at",
                )
            },
            "since": case(
                (_STAGES.c.stage != excluded.stage, excluded.since), else_=_STAGES.c.since
            ),
        },
    )


class _Writes:
    """What a batch writes, gathered."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self.changes: list[dict[str, Any]] = []
        self.raised: list[dict[str, Any]] = []
        self.closed: list[dict[str, Any]] = []

    def flush(self, session: Session, now: dt.datetime) -> None:
        if self.stages and session.get_bind().dialect.name == "postgresql":
            # Copied into a scratch table, then upserted by one statement: as an executemany
            # the upsert ran once per member (a pass over 100,000 members that never had a
            # stage wrote 100,000 of them).
            _COMPUTED.create(session.connection())
            insert_rows(session, _COMPUTED, self.stages)
            names = list(self.stages[0])
            session.execute(
                _upserting(
                    postgresql.insert(_STAGES).from_select(
                        names, select(*(_COMPUTED.c[name] for name in names))
                    )
                )
            )
            _COMPUTED.drop(session.connection())  # tests' transactions outlive a batch
        elif self.stages:
            session.execute(_upserting(dialect_insert(session)(_STAGES)), self.stages)
        insert_rows(session, StageChange, self.changes)
        insert_rows(session, RiskFlag, self.raised)
        if self.closed:
            flags = cast(Table, RiskFlag.__table__)
            session.execute(
                update(flags)
                .where(flags.c.id == bindparam("flag_id"))
                .values(outcome=bindparam("flag_outcome"), closed_at=bindparam("flag_closed_at")),
                self.closed,
            )
        with bus.batch(session):
            for flag in self.raised:
                bus.publish(
                    session,
                    MemberAtRisk(
                        occurred_at=now,
                        member_id=flag["member_id"],
                        flag_id=flag["id"],
                        reason=flag["reason"],
                        recent=flag["recent"],
                        baseline=flag["baseline"],
                        last_active_at=flag["last_active_at"],
                    ),
                )


def _warn(
    write: _Writes,
    settings: AnalyticsSettings,
    member_id: str,
    stage: str,
    recent: int,
    baseline: int,
    last: Any,
    flag: Any,
    now: dt.datetime,
) -> Counter[str]:
    """Raise a flag for a member newly at risk; close an open one (``flag``: its ``id`` and
    ``flagged_at``) when the member came back (active since the flag and no longer at risk)
    or churned."""
    counts: Counter[str] = Counter()
    if stage == "new":
        return counts
    at_risk = rules.risk(
        recent=recent, baseline_total=baseline, stage=stage, drop_pct=settings.risk_drop_pct
    )
    if flag is not None:
        outcome = None
        if stage == "churned":
            outcome = "churned"
        elif at_risk is None and last is not None and last > flag.flagged_at:
            won = last - flag.flagged_at <= dt.timedelta(days=rules.WIN_BACK_DAYS)
            outcome = "won_back" if won else "returned"
        if outcome is not None:
            write.closed.append(
                {"flag_id": flag.id, "flag_outcome": outcome, "flag_closed_at": now}
            )
            counts["at-risk flags closed"] += 1
        return counts
    if at_risk is None:
        return counts
    write.raised.append(
        {
            "id": new_id("risk"),
            "member_id": member_id,
            "reason": at_risk.reason,
            "recent": at_risk.recent,
            "baseline": at_risk.baseline,
            "last_active_at": last,
            "flagged_at": now,
            "outcome": None,
            "closed_at": None,
        }
    )
    counts["members flagged at risk"] += 1
    return counts
