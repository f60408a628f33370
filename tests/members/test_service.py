"""Enrolment, updates and lists through the service layer, on PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from loyalty.errors import InvalidFieldError, MemberClosedError
from loyalty.members import service
from loyalty.members.errors import MemberNotFoundError


def enroll(session: Session, external_id: str, **kwargs: object) -> service.Member:
    member, _ = service.enroll_member(session, external_id=external_id, **kwargs)  # type: ignore[arg-type]
    return member


def test_enrolment_is_idempotent_on_external_id(session: Session) -> None:
    first, created = service.enroll_member(session, external_id="c1", email="Ada@Example.COM")
    again, created_again = service.enroll_member(session, external_id="c1", email="other@x.io")
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert again.email == "ada@example.com"


def test_new_members_get_defaults_and_a_referral_code(session: Session) -> None:
    member = enroll(session, "c1")
    assert member.id.startswith("mem_")
    assert member.status == "active"
    assert member.timezone == "UTC"
    assert member.marketing_consent is False
    assert len(member.referral_code) == 8
    assert member.enrolled_at.tzinfo is not None


def test_referral_code_attributes_the_new_member(session: Session) -> None:
    referrer = enroll(session, "c1")
    code = referrer.referral_code.lower()[:4] + "-" + referrer.referral_code.lower()[4:]
    referee = enroll(session, "c2", referral_code=code)
    assert referee.referrer_id == referrer.id


@pytest.mark.parametrize("code", ["NOPE2345", "x", "K7QM2XW0"])
def test_unknown_referral_code_is_a_field_error(session: Session, code: str) -> None:
    with pytest.raises(InvalidFieldError) as caught:
        enroll(session, "c1", referral_code=code)
    assert caught.value.field == "referral_code"
    assert service.list_members(session, external_id="c1").items == []


def test_update_changes_only_the_given_fields(session: Session) -> None:
    member = enroll(session, "c1", name="Ada", email="ada@example.com", timezone="Europe/Paris")
    updated = service.update_member(
        session, member_id=member.id, changes={"name": "Ada L.", "email": None}
    )
    assert (updated.name, updated.email, updated.timezone) == ("Ada L.", None, "Europe/Paris")


def test_closed_members_cannot_change(session: Session) -> None:
    member = enroll(session, "c1")
    service.update_member(session, member_id=member.id, changes={"status": "suspended"})
    service.update_member(session, member_id=member.id, changes={"status": "closed"})
    with pytest.raises(MemberClosedError):
        service.update_member(session, member_id=member.id, changes={"status": "active"})
    with pytest.raises(MemberClosedError):
        service.update_member(session, member_id=member.id, changes={"name": "x"})
    assert service.get_member(session, member.id).status == "closed"


def test_unknown_member(session: Session) -> None:
    with pytest.raises(MemberNotFoundError):
        service.get_member(session, "mem_nope")
    with pytest.raises(MemberNotFoundError):
        service.update_member(session, member_id="mem_nope", changes={})


def test_list_filters_and_pages(session: Session) -> None:
    now = dt.datetime.now(dt.UTC)
    members = [
        enroll(session, f"c{i}", email=f"m{i}@x.io", enrolled_at=now - dt.timedelta(days=i))
        for i in range(7)
    ]
    service.update_member(session, member_id=members[3].id, changes={"status": "suspended"})

    seen, cursor = [], None
    while True:
        page = service.list_members(session, limit=3, cursor=cursor)
        seen += [m.id for m in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(m.id for m in members)

    assert [m.id for m in service.list_members(session, status="suspended").items] == [
        members[3].id
    ]
    assert [m.id for m in service.list_members(session, email="M2@X.IO").items] == [members[2].id]
    recent = service.list_members(session, enrolled_after=now - dt.timedelta(days=2, hours=1))
    assert {m.id for m in recent.items} == {m.id for m in members[:3]}
    older = service.list_members(session, enrolled_before=now - dt.timedelta(days=5, hours=1))
    assert {m.id for m in older.items} == {members[6].id}
    code = members[5].referral_code
    assert [m.id for m in service.list_members(session, referral_code=code).items] == [
        members[5].id
    ]
