"""Community: engagement events, event rules, check-ins and streaks, badges, challenges and
leaderboards.

Points move only through the ledger's helpers (`lock_member`, `credit_bonus`,
`reverse_bonus`) inside this package's units of work (or the ledger's, for the hooks). Locks
are taken in one order: the member's wallet first, then this package's rows; so events,
orders and refunds of one member queue, and each badge level is awarded once (the unique
(badge, member, level) key stands behind that).

One module per topic; callers use the names re-exported here (``from loyalty.community
import service``, then ``service.record_event``):

- `configuration`: event types, event rules, badges and the community settings;
- `intake`: engagement events and check-ins coming in, streaks;
- `badges`: standings, metrics, awarding and revoking levels;
- `leaderboards`: rankings and members' leaderboard profiles;
- `subscribers`: what `loyalty.wiring` subscribes to orders and referrals, and the due work.
"""

from __future__ import annotations

from loyalty.community.service.badges import (
    ORDER_RULES,
    PROGRESS_LIMIT,
    BadgeStanding,
    MemberBadges,
    member_badges,
)
from loyalty.community.service.configuration import (
    BADGE_FIELDS,
    EVENT_RULE_FIELDS,
    EVENT_TYPE_FIELDS,
    SETTINGS_FIELDS,
    create_badge,
    create_event_rule,
    create_event_type,
    delete_badge,
    delete_event_rule,
    delete_event_type,
    get_badge,
    get_event_rule,
    get_event_type,
    get_settings,
    list_badges,
    list_event_rules,
    list_event_types,
    update_badge,
    update_event_rule,
    update_event_type,
    update_settings,
)
from loyalty.community.service.intake import check_in, record_event
from loyalty.community.service.leaderboards import (
    LeaderboardEntry,
    get_leaderboard_profile,
    leaderboard,
    set_leaderboard_profile,
)
from loyalty.community.service.subscribers import (
    on_order_recorded,
    on_order_refunded,
    on_referral_clawed_back,
    on_referral_qualified,
    run_due,
)

__all__ = [
    "BADGE_FIELDS",
    "BadgeStanding",
    "EVENT_RULE_FIELDS",
    "EVENT_TYPE_FIELDS",
    "LeaderboardEntry",
    "MemberBadges",
    "ORDER_RULES",
    "PROGRESS_LIMIT",
    "SETTINGS_FIELDS",
    "check_in",
    "create_badge",
    "create_event_rule",
    "create_event_type",
    "delete_badge",
    "delete_event_rule",
    "delete_event_type",
    "get_badge",
    "get_event_rule",
    "get_event_type",
    "get_leaderboard_profile",
    "get_settings",
    "leaderboard",
    "list_badges",
    "list_event_rules",
    "list_event_types",
    "member_badges",
    "on_order_recorded",
    "on_order_refunded",
    "on_referral_clawed_back",
    "on_referral_qualified",
    "record_event",
    "run_due",
    "set_leaderboard_profile",
    "update_badge",
    "update_event_rule",
    "update_event_type",
    "update_settings",
]
