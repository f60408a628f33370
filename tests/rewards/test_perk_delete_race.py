"""The birthday-gift job racing the deletion of its perk (a perk never granted may be
deleted): the deletion locks the perk row and commits while the job's grant waits for it (the
key check of the perk); the job's batch is run again, finds the perk gone and grants nothing,
instead of failing on the grant's foreign key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loyalty.clock import FrozenClock
from loyalty.rewards import service
from loyalty.rewards.models import Perk, PerkGrant
from tests.rewards.conftest import make_member, make_perk, make_tiers
from tests.support import held_at_commit, in_thread, wait_for, waiting_for_lock

pytestmark = pytest.mark.concurrency


def test_the_birthday_job_racing_the_deletion_of_its_perk_grants_nothing(
    app: Flask, new_session: Callable[[], Session], clock: FrozenClock
) -> None:
    session = new_session()
    make_tiers(session)
    perk = make_perk(session, kind="birthday_gift", bonus_points=50, tier_codes=["silver"])
    make_member(session, birthday=dt.date(1990, 3, 2))  # the clock's month: due now
    delete, delete_outcome, release = held_at_commit(
        app, new_session(), lambda s: service.delete_perk(s, perk_id=perk.id, actor="test")
    )
    job, job_outcome = in_thread(app, lambda: service.run_due(new_session()))
    watcher = new_session()
    try:
        wait_for(lambda: waiting_for_lock(watcher, "%perk_grants%"), "the job to wait for the perk")
    finally:
        watcher.close()
        release.set()
    delete.join()
    job.join()
    assert delete_outcome == [None]
    assert job_outcome == [{"birthday gifts": 0, "claims expired": 0}], job_outcome
    check = new_session()
    assert check.get(Perk, perk.id) is None
    assert check.scalar(select(func.count()).select_from(PerkGrant)) == 0
