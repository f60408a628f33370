"""Errors only the members area raises. `MemberClosedError` and `MemberNotActiveError`, which
the ledger and other areas raise too, are in `loyalty.errors`."""

from __future__ import annotations

from loyalty.errors import NotFoundError


class MemberNotFoundError(NotFoundError):
    code = "member-not-found"
    title = "Member not found"

    def __init__(self, member_id: str) -> None:
        super().__init__(f"No member with id {member_id!r}.", member_id=member_id)
