"""The programme's configuration cached per process behind one version number
(`loyalty.configcache`): which changes move the version, what a transaction sees, and that a
change made by another process (another engine, with a cache of its own) is used by the very
next order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty import configcache, create_app
from loyalty.clock import FrozenClock
from loyalty.configcache import ConfigVersion
from loyalty.db import get_database, unit_of_work
from loyalty.earning import service as earning_service
from loyalty.ledger import service as ledger_service
from loyalty.ledger.models import ProgramSettings
from loyalty.members import service as members_service
from loyalty.tiers import service as tiers_service
from tests.conftest import base_config
from tests.ledger.conftest import CLIENT


def version(session: Session) -> int:
    value = session.scalar(select(ConfigVersion.version))
    session.rollback()  # do not keep a transaction open
    assert value is not None
    return int(value)


def order_points(session: Session, member_id: str, order_id: str) -> int:
    result = ledger_service.accrue_order(
        session,
        client_id=CLIENT,
        order_id=order_id,
        member_id=member_id,
        total=10000,
        currency="USD",
        items=[{"sku": "s-1", "category": "shoes", "quantity": 1, "unit_price": 10000}],
    )
    return int(result.body["points"])


def test_every_kind_of_configuration_change_moves_the_version(
    session: Session, clock: FrozenClock
) -> None:
    before = version(session)
    earning_service.create_multiplier(
        session, actor="t", scope="category", match="shoes", multiplier=Decimal(2)
    )
    after_multiplier = version(session)
    assert after_multiplier != before
    tiers_service.create_tier(
        session, code="gold", name="Gold", rank=1, threshold=0, actor="t", benefits=None
    )
    after_tier = version(session)
    assert after_tier != after_multiplier
    earning_service.update_earning_settings(session, changes={"daily_cap": 500}, actor="t")
    after_earning = version(session)
    assert after_earning != after_tier
    ledger_service.update_settings(session, changes={"pending_days": 7}, actor="t")
    after_core = version(session)
    assert after_core != after_earning
    # The inactivity sweep moving its cursor is not a change of the programme.
    with unit_of_work(session):
        session.get(ProgramSettings, 1).due_sweep_after = "mem_0"  # type: ignore[union-attr]
    assert version(session) == after_core


def test_a_campaigns_running_spend_is_not_a_configuration_change(
    session: Session, clock: FrozenClock
) -> None:
    earning_service.create_campaign(
        session,
        actor="t",
        name="Budgeted",
        starts_at=clock.now() - dt.timedelta(days=1),
        ends_at=clock.now() + dt.timedelta(days=1),
        multiplier=Decimal(2),
        budget=1000,
    )
    member_id = members_service.enroll_member(session, external_id="spender")[0].id
    before = version(session)
    assert order_points(session, member_id, "o-1") == 200  # charges the budget 100
    assert version(session) == before


def test_orders_use_the_cached_rules_without_reading_them_again(
    session: Session, clock: FrozenClock
) -> None:
    earning_service.create_multiplier(
        session, actor="t", scope="category", match="shoes", multiplier=Decimal(3)
    )
    member_id = members_service.enroll_member(session, external_id="cached")[0].id
    assert order_points(session, member_id, "o-1") == 300
    loads = configcache.cache.loads
    assert order_points(session, member_id, "o-2") == 300
    assert configcache.cache.loads == loads  # nothing read again


def test_a_transaction_that_changes_the_configuration_sees_its_own_change(
    session: Session, clock: FrozenClock
) -> None:
    member_id = members_service.enroll_member(session, external_id="own")[0].id
    assert order_points(session, member_id, "o-1") == 100  # the rules are cached now
    with unit_of_work(session):
        session.add(
            earning_service.ProductMultiplier(
                id="pm-own", scope="category", match="shoes", multiplier=Decimal(2)
            )
        )
        session.flush()
        assert [p.id for p in earning_service._earning_rules(session).products] == ["pm-own"]


def test_a_rolled_back_change_is_never_served(session: Session, clock: FrozenClock) -> None:
    member_id = members_service.enroll_member(session, external_id="rolled")[0].id
    assert order_points(session, member_id, "o-1") == 100
    with pytest.raises(RuntimeError), unit_of_work(session):
        session.add(
            earning_service.ProductMultiplier(
                id="pm-gone", scope="category", match="shoes", multiplier=Decimal(5)
            )
        )
        session.flush()
        earning_service._earning_rules(session)  # read (and not shared) inside the change
        raise RuntimeError("changed my mind")
    assert order_points(session, member_id, "o-2") == 100


@pytest.fixture
def other_process(app: Flask, database_url: str) -> Iterator[Flask]:
    """A second app on the same database with its own engine, hence its own cache entries:
    what another process of the service would be."""
    other = create_app(base_config(database_url))
    yield other
    get_database(other).engine.dispose()


@pytest.mark.concurrency
def test_a_change_made_by_another_process_is_used_by_the_next_order(
    app: Flask, other_process: Flask, clock: FrozenClock
) -> None:
    with app.app_context():
        session = get_database(app).sessionmaker()
        member_id = members_service.enroll_member(session, external_id="two-processes")[0].id
        assert order_points(session, member_id, "o-1") == 100  # this process caches the rules
        session.close()
    with other_process.app_context():
        other = get_database(other_process).sessionmaker()
        earning_service.create_multiplier(
            other, actor="t", scope="category", match="shoes", multiplier=Decimal(2)
        )
        other.close()
    with app.app_context():
        session = get_database(app).sessionmaker()
        assert order_points(session, member_id, "o-2") == 200
        session.close()


@pytest.mark.concurrency
def test_a_core_settings_change_made_by_another_process_is_used_by_the_next_order(
    app: Flask, other_process: Flask, clock: FrozenClock
) -> None:
    """The programme's core settings are cached with the rest (no longer read with every
    wallet lock): a new earn rate set elsewhere prices the very next order here."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        member_id = members_service.enroll_member(session, external_id="core-two")[0].id
        assert order_points(session, member_id, "o-1") == 100  # the settings cached here
        session.close()
    with other_process.app_context():
        other = get_database(other_process).sessionmaker()
        ledger_service.update_settings(other, changes={"earn_rate": "3"}, actor="t")
        other.close()
    with app.app_context():
        session = get_database(app).sessionmaker()
        assert order_points(session, member_id, "o-2") == 300
        assert ledger_service.get_settings(session).earn_rate == Decimal(3)
        session.close()


@pytest.mark.concurrency
def test_a_stale_settings_object_in_the_identity_map_does_not_poison_the_process_cache(
    app: Flask,
    other_process: Flask,
    clock: FrozenClock,
) -> None:
    """A session of this process holds the settings row in its identity map (read before);
    another process changes the earn rate; this session then orders: its lock reads the new
    version, the cache misses, and the settings are read again from the database, never
    from the old object (a unit of work expires what its session held), so no later
    transaction of the process prices with the old rate under the new version (a review's
    probe)."""
    with app.app_context():
        session = get_database(app).sessionmaker()
        member_id = members_service.enroll_member(session, external_id="r5-poison")[0].id
        assert order_points(session, member_id, "r5-o-1") == 100
        session.close()
        reader = get_database(app).sessionmaker()
        held = reader.get(ProgramSettings, 1)  # a read earlier in the transaction
        assert held is not None and held.earn_rate == Decimal(1)
    with other_process.app_context():
        other = get_database(other_process).sessionmaker()
        ledger_service.update_settings(other, changes={"earn_rate": "3"}, actor="t")
        other.close()
    with app.app_context():
        second = order_points(reader, member_id, "r5-o-2")
        reader.close()
        fresh = get_database(app).sessionmaker()
        third = order_points(fresh, member_id, "r5-o-3")
        rate = ledger_service.get_settings(fresh).earn_rate
        fresh.close()
    assert (third, rate) == (300, Decimal(3)), f"second order got {second}"


def test_settings_changed_but_not_yet_written_are_never_shared(
    session: Session, clock: FrozenClock
) -> None:
    """A transaction that has read the version (its wallet lock) changes the core settings
    through the ORM, not yet flushed, then reads them while the process has none cached: it
    sees its change, and the process does not keep it under the version every other
    transaction still reads (the change then rolls back)."""
    member_id = members_service.enroll_member(session, external_id="unflushed")[0].id
    assert order_points(session, member_id, "o-1") == 100
    with pytest.raises(RuntimeError), unit_of_work(session):
        ledger_service.lock_member(session, member_id)  # reads the version
        configcache.cache.clear()  # nothing cached for it (another process's view, say)
        row = session.get(ProgramSettings, 1)
        assert row is not None
        row.earn_rate = Decimal(7)
        assert ledger_service.get_settings(session).earn_rate == Decimal(7)
        raise RuntimeError("changed my mind")
    assert ledger_service.get_settings(session).earn_rate == Decimal(1)
    assert order_points(session, member_id, "o-2") == 100
