"""Member calls: enrol, look up, list and update members."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Blueprint
from loyalty.auth.security import current_principal
from loyalty.db import Page, get_session
from loyalty.members import service
from loyalty.members.models import Member
from loyalty.members.schemas import (
    MemberCreateSchema,
    MemberPageSchema,
    MemberQuerySchema,
    MemberSchema,
    MemberUpdateSchema,
)

blp = Blueprint("members", __name__, url_prefix="/v1/members", description="Members")


@blp.route("")
class Members(MethodView):
    @blp.requires("members:write")
    @blp.arguments(MemberCreateSchema)
    @blp.created_or_replayed(
        MemberSchema,
        created="The member was enrolled",
        replayed="Already enrolled: the existing member",
    )
    def post(self, data: dict[str, Any]) -> tuple[Member, bool]:
        """Enrol a member (idempotent on external_id)."""
        return service.enroll_member(get_session(), actor=current_principal().client_id, **data)

    @blp.requires("members:read")
    @blp.arguments(MemberQuerySchema, location="query")
    @blp.response(200, MemberPageSchema)
    def get(self, query: dict[str, Any]) -> Page[Member]:
        """List members, filtered, a page at a time (look up by external_id here)."""
        return service.list_members(get_session(), **query)


@blp.route("/<string:member_id>")
class MemberById(MethodView):
    @blp.requires("members:read")
    @blp.response(200, MemberSchema)
    @blp.errors(404)
    def get(self, member_id: str) -> Member:
        """Get a member."""
        return service.get_member_with_points(get_session(), member_id)

    @blp.requires("members:write")
    @blp.arguments(MemberUpdateSchema)
    @blp.response(200, MemberSchema)
    @blp.errors(404, 409)
    def patch(self, changes: dict[str, Any], member_id: str) -> Member:
        """Update a member's profile or status (a closed member cannot change)."""
        return service.update_member(get_session(), member_id=member_id, changes=changes)
