"""Community: engagement events, event types, check-ins, badges, challenges, leaderboards."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Blueprint, PageQuerySchema
from loyalty.auth.security import current_principal
from loyalty.community import service
from loyalty.community.models import (
    Badge,
    CommunitySettings,
    EventRule,
    EventType,
    LeaderboardProfile,
)
from loyalty.community.schemas import (
    BadgeCreateSchema,
    BadgePageSchema,
    BadgeQuerySchema,
    BadgeSchema,
    BadgeUpdateSchema,
    CheckInCreateSchema,
    CommunitySettingsSchema,
    CommunitySettingsUpdateSchema,
    EventCreateSchema,
    EventResultSchema,
    EventRuleCreateSchema,
    EventRulePageSchema,
    EventRuleSchema,
    EventRuleUpdateSchema,
    EventTypeCreateSchema,
    EventTypePageSchema,
    EventTypeSchema,
    EventTypeUpdateSchema,
    LeaderboardProfileSchema,
    LeaderboardProfileUpdateSchema,
    LeaderboardQuerySchema,
    LeaderboardSchema,
    MemberBadgesSchema,
)
from loyalty.db import Page, get_session

blp = Blueprint("community", __name__, url_prefix="/v1", description="Community")


def _caller() -> str:
    return current_principal().client_id


# --- programme configuration ----------------------------------------------------------------


@blp.route("/program/community-settings")
class Settings(MethodView):
    @blp.requires("program:read")
    @blp.response(200, CommunitySettingsSchema)
    def get(self) -> CommunitySettings:
        """Get the community settings (check-in streak grace days)."""
        return service.get_settings(get_session())

    @blp.requires("program:write")
    @blp.arguments(CommunitySettingsUpdateSchema)
    @blp.response(200, CommunitySettingsSchema)
    def patch(self, changes: dict[str, Any]) -> CommunitySettings:
        """Change the community settings."""
        return service.update_settings(get_session(), changes=changes, actor=_caller())


@blp.route("/program/event-types")
class EventTypes(MethodView):
    @blp.requires("program:read")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, EventTypePageSchema)
    def get(self, query: dict[str, Any]) -> Page[EventType]:
        """List the event types, by name."""
        return service.list_event_types(get_session(), **query)

    @blp.requires("program:write")
    @blp.arguments(EventTypeCreateSchema)
    @blp.response(201, EventTypeSchema)
    @blp.errors(409)
    def post(self, data: dict[str, Any]) -> EventType:
        """Declare an event type and the properties its events carry."""
        return service.create_event_type(get_session(), actor=_caller(), **data)


@blp.route("/program/event-types/<string:name>")
class EventTypeByName(MethodView):
    @blp.requires("program:read")
    @blp.response(200, EventTypeSchema)
    @blp.errors(404)
    def get(self, name: str) -> EventType:
        """Get an event type."""
        return service.get_event_type(get_session(), name)

    @blp.requires("program:write")
    @blp.arguments(EventTypeUpdateSchema)
    @blp.response(200, EventTypeSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], name: str) -> EventType:
        """Change an event type's description or properties."""
        return service.update_event_type(get_session(), name=name, changes=changes, actor=_caller())

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404, 409)
    def delete(self, name: str) -> None:
        """Delete an event type no event, rule or badge uses (409 event-type-in-use)."""
        service.delete_event_type(get_session(), name=name, actor=_caller())


@blp.route("/program/event-rules")
class EventRules(MethodView):
    @blp.requires("program:read")
    @blp.arguments(PageQuerySchema, location="query")
    @blp.response(200, EventRulePageSchema)
    def get(self, query: dict[str, Any]) -> Page[EventRule]:
        """List the event earning rules."""
        return service.list_event_rules(get_session(), **query)

    @blp.requires("program:write")
    @blp.arguments(EventRuleCreateSchema)
    @blp.response(201, EventRuleSchema)
    @blp.errors(409)
    def post(self, data: dict[str, Any]) -> EventRule:
        """Give points for events of a type (one rule per type)."""
        return service.create_event_rule(get_session(), actor=_caller(), **data)


@blp.route("/program/event-rules/<string:rule_id>")
class EventRuleById(MethodView):
    @blp.requires("program:read")
    @blp.response(200, EventRuleSchema)
    @blp.errors(404)
    def get(self, rule_id: str) -> EventRule:
        """Get an event earning rule."""
        return service.get_event_rule(get_session(), rule_id)

    @blp.requires("program:write")
    @blp.arguments(EventRuleUpdateSchema)
    @blp.response(200, EventRuleSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], rule_id: str) -> EventRule:
        """Change an event earning rule; events already recorded keep their points."""
        return service.update_event_rule(
            get_session(), rule_id=rule_id, changes=changes, actor=_caller()
        )

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404)
    def delete(self, rule_id: str) -> None:
        """Delete an event earning rule."""
        service.delete_event_rule(get_session(), rule_id=rule_id, actor=_caller())


@blp.route("/program/badges")
class Badges(MethodView):
    @blp.requires("program:read")
    @blp.arguments(BadgeQuerySchema, location="query")
    @blp.response(200, BadgePageSchema)
    def get(self, query: dict[str, Any]) -> Page[Badge]:
        """List the badges and challenges."""
        return service.list_badges(get_session(), **query)

    @blp.requires("program:write")
    @blp.arguments(BadgeCreateSchema)
    @blp.response(201, BadgeSchema)
    def post(self, data: dict[str, Any]) -> Badge:
        """Define a badge (a challenge when it has a window)."""
        return service.create_badge(get_session(), actor=_caller(), **data)


@blp.route("/program/badges/<string:badge_id>")
class BadgeById(MethodView):
    @blp.requires("program:read")
    @blp.response(200, BadgeSchema)
    @blp.errors(404)
    def get(self, badge_id: str) -> Badge:
        """Get a badge."""
        return service.get_badge(get_session(), badge_id)

    @blp.requires("program:write")
    @blp.arguments(BadgeUpdateSchema)
    @blp.response(200, BadgeSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], badge_id: str) -> Badge:
        """Change a badge; levels already awarded stay awarded."""
        return service.update_badge(
            get_session(), badge_id=badge_id, changes=changes, actor=_caller()
        )

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404, 409)
    def delete(self, badge_id: str) -> None:
        """Delete a badge never awarded (409 badge-in-use: deactivate it)."""
        service.delete_badge(get_session(), badge_id=badge_id, actor=_caller())


@blp.route("/program/badges/<string:badge_id>/leaderboard")
class Leaderboard(MethodView):
    @blp.requires("members:read")
    @blp.arguments(LeaderboardQuerySchema, location="query")
    @blp.response(200, LeaderboardSchema)
    @blp.errors(404)
    def get(self, query: dict[str, Any], badge_id: str) -> dict[str, Any]:
        """Rank the opted-in members on a badge's metric, by display name only."""
        return {"items": service.leaderboard(get_session(), badge_id, **query)}


# --- events ---------------------------------------------------------------------------------


@blp.route("/events")
class Events(MethodView):
    @blp.requires("points:accrue")
    @blp.arguments(EventCreateSchema)
    @blp.created_or_replayed(
        EventResultSchema,
        created="Event recorded",
        replayed="The same event again: the first result",
    )
    @blp.errors(404, 409)
    def post(self, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Report an engagement event: points, streak and badges (idempotent on event_id)."""
        principal = current_principal()
        result = service.record_event(
            get_session(),
            channel_id=principal.channel_id,
            client_id=principal.client_id,
            actor=principal.client_id,
            **data,
        )
        return result.body, result.created


@blp.route("/members/<string:member_id>/check-ins")
class CheckIns(MethodView):
    @blp.requires("points:accrue")
    @blp.arguments(CheckInCreateSchema)
    @blp.created_or_replayed(
        EventResultSchema,
        created="Check-in recorded",
        replayed="The same check-in again: the first result",
    )
    @blp.errors(404, 409)
    def post(self, data: dict[str, Any], member_id: str) -> tuple[dict[str, Any], bool]:
        """Check the member in for today (a check_in event; counts once per local day)."""
        principal = current_principal()
        result = service.check_in(
            get_session(),
            channel_id=principal.channel_id,
            client_id=principal.client_id,
            member_id=member_id,
            actor=principal.client_id,
            **data,
        )
        return result.body, result.created


# --- the member's view ----------------------------------------------------------------------


@blp.route("/members/<string:member_id>/badges")
class MemberBadges(MethodView):
    @blp.requires("members:read")
    @blp.response(200, MemberBadgesSchema)
    @blp.errors(404)
    def get(self, member_id: str) -> service.MemberBadges:
        """List the member's badge levels and progress toward the next level of each badge."""
        return service.member_badges(get_session(), member_id)


@blp.route("/members/<string:member_id>/leaderboard-profile")
class MemberLeaderboardProfile(MethodView):
    @blp.requires("members:read")
    @blp.response(200, LeaderboardProfileSchema)
    @blp.errors(404)
    def get(self, member_id: str) -> LeaderboardProfile:
        """Get whether the member appears on leaderboards, and under which name."""
        return service.get_leaderboard_profile(get_session(), member_id)

    @blp.requires("members:write")
    @blp.arguments(LeaderboardProfileUpdateSchema)
    @blp.response(200, LeaderboardProfileSchema)
    @blp.errors(404)
    def put(self, data: dict[str, Any], member_id: str) -> LeaderboardProfile:
        """Opt the member in to leaderboards under a display name, or out."""
        return service.set_leaderboard_profile(get_session(), member_id=member_id, **data)
