"""Pure rules: type filters, the signature, secrets, the retry schedule, the disable rule, the
addresses a webhook may reach, and the calendar of lifecycle triggers."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from ulid import ULID

from loyalty.events import rules
from loyalty.events.catalogue import CATALOGUE

T0 = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("filters", "event_type", "expected"),
    [
        (["*"], "points.accrued", True),
        (["points.*"], "points.accrued", True),
        (["points.*"], "hold.created", False),
        (["points.accrued"], "points.accrued", True),
        (["points.accrued"], "points.activated", False),
        (["member.enrolled", "hold.*"], "hold.expired", True),
    ],
)
def test_filters_match_types_families_and_everything(
    filters: list[str], event_type: str, expected: bool
) -> None:
    assert rules.matches(filters, event_type) is expected


def test_every_catalogue_type_and_family_is_a_filter() -> None:
    assert set(CATALOGUE) < set(rules.EVENT_TYPE_FILTERS)
    assert {"*", "points.*", "member.*", "hold.*"} <= set(rules.EVENT_TYPE_FILTERS)
    assert rules.matching_types(["*"]) == list(CATALOGUE)
    assert rules.normalise_filters(["points.*", "*", "points.*"]) == ["points.*", "*"]
    with pytest.raises(ValueError):
        rules.normalise_filters(["points.accrued", "points.teleported"])


def test_secrets_are_whsec_and_base64_of_32_random_bytes() -> None:
    secret = rules.new_secret()
    assert secret.startswith("whsec_")
    assert len(rules.secret_key(secret)) == 32
    assert rules.new_secret() != secret


def test_signature_is_standard_webhooks_v1() -> None:
    """The example of the Standard Webhooks specification's reference libraries."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    signature = rules.sign(
        secret, event_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330, body=body
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_two_secrets_give_two_space_separated_signatures() -> None:
    first, second = rules.new_secret(), rules.new_secret()
    header = rules.signature_header([first, second], event_id="evt_1", timestamp=1, body=b"{}")
    assert header.split(" ") == [
        rules.sign(first, event_id="evt_1", timestamp=1, body=b"{}"),
        rules.sign(second, event_id="evt_1", timestamp=1, body=b"{}"),
    ]
    assert base64.b64decode(header.split(" ")[0].removeprefix("v1,"))


def test_retries_back_off_exponentially_with_jitter_up_to_a_cap() -> None:
    middle = [rules.retry_delay(n, 0.5).total_seconds() for n in range(1, 12)]
    assert middle[:4] == [5, 15, 45, 135]
    assert middle == sorted(middle)
    assert max(middle) == rules.RETRY_CAP.total_seconds()
    low, high = rules.retry_delay(3, 0.0), rules.retry_delay(3, 0.999)
    assert low.total_seconds() == 36 and 53 <= high.total_seconds() <= 54


@pytest.mark.parametrize("jitter", [0.0, 0.5, 0.999])
def test_a_failing_message_is_retried_for_up_to_three_days(jitter: float) -> None:
    now, attempts = T0, 1
    while (
        nxt := rules.next_attempt_at(first_attempt_at=T0, attempts=attempts, now=now, jitter=jitter)
    ) is not None:
        assert nxt > now
        now, attempts = nxt, attempts + 1
    assert now - T0 <= rules.RETRY_WINDOW
    assert now - T0 > rules.RETRY_WINDOW - rules.RETRY_CAP * 1.2
    assert 12 <= attempts <= 16


def test_disable_rule_needs_a_failure_streak_covering_the_whole_message() -> None:
    assert rules.should_disable(failing_since=T0, gave_up_first_attempt=T0)
    assert not rules.should_disable(
        failing_since=T0 + dt.timedelta(hours=1), gave_up_first_attempt=T0
    )
    assert not rules.should_disable(failing_since=None, gave_up_first_attempt=T0)


@pytest.mark.parametrize(
    ("address", "refusal"),
    [
        ("127.0.0.1", "loopback address"),
        ("127.8.9.10", "loopback address"),
        ("10.1.2.3", "private address"),
        ("172.16.0.1", "private address"),
        ("192.168.1.1", "private address"),
        ("169.254.169.254", "link-local address"),
        ("0.0.0.0", "unspecified address"),
        ("224.0.0.1", "multicast address"),
        ("240.0.0.1", "private address"),  # Python counts reserved 240/4 as private
        ("100.64.0.1", "non-public address"),
        ("::1", "loopback address"),
        ("::", "unspecified address"),
        ("fe80::1", "link-local address"),
        ("fc00::1", "private address"),
        ("ff02::1", "multicast address"),
        ("::ffff:127.0.0.1", "loopback address"),
        ("::ffff:10.0.0.1", "private address"),
        ("2002:7f00:1::", "loopback address"),  # 6to4 wrapping 127.0.0.1
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_only_public_addresses_may_be_reached(address: str, refusal: str | None) -> None:
    assert rules.address_refusal(address) == refusal


# --- lifecycle triggers ----------------------------------------------------------------------


def test_days_begin_earlier_east_and_are_grouped_by_moment_and_date() -> None:
    begun = rules.days_begun(
        ["UTC", "Pacific/Auckland", "Etc/GMT-12", "Etc/GMT+12", "Europe/London"],
        dt.datetime(2026, 3, 10, 10, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 11, 0, 0, tzinfo=dt.UTC),
    )
    assert [(b.start.isoformat(), b.day.isoformat(), b.zones) for b in begun] == [
        ("2026-03-10T11:00:00+00:00", "2026-03-11", ("Pacific/Auckland",)),
        # UTC-12 and UTC+12 begin different dates at one moment.
        ("2026-03-10T12:00:00+00:00", "2026-03-10", ("Etc/GMT+12",)),
        ("2026-03-10T12:00:00+00:00", "2026-03-11", ("Etc/GMT-12",)),
        ("2026-03-11T00:00:00+00:00", "2026-03-11", ("Europe/London", "UTC")),
    ]


def test_a_day_whose_midnight_is_skipped_begins_when_the_clocks_jump() -> None:
    # Havana moves from 00:00 to 01:00 on 8 March 2026: that day begins at 05:00 UTC.
    assert rules.day_start(dt.date(2026, 3, 8), "America/Havana") == dt.datetime(
        2026, 3, 8, 5, tzinfo=dt.UTC
    )
    [begun] = rules.days_begun(
        ["America/Havana"],
        dt.datetime(2026, 3, 8, 4, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 8, 6, tzinfo=dt.UTC),
    )
    assert begun.day == dt.date(2026, 3, 8)
    # A day of 23 hours: over at 04:00 UTC on the 9th.
    ends = dt.datetime(2026, 3, 9, 4, tzinfo=dt.UTC)
    assert not rules.day_over(begun.day, "America/Havana", ends - dt.timedelta(seconds=1))
    assert rules.day_over(begun.day, "America/Havana", ends)


@pytest.mark.parametrize(
    ("day", "born"),
    [
        (dt.date(2027, 3, 11), {dt.date(1990, 3, 11), dt.date(2027, 3, 11)}),
        # 28 February of a common year: 29 February birthdays too.
        (dt.date(2027, 2, 28), {dt.date(1999, 2, 28), dt.date(2000, 2, 29), dt.date(2024, 2, 29)}),
        (dt.date(2028, 2, 28), {dt.date(2000, 2, 28)}),
        (dt.date(2028, 2, 29), {dt.date(2000, 2, 29), dt.date(2028, 2, 29)}),
    ],
)
def test_whose_birthday_a_day_is(day: dt.date, born: set[dt.date]) -> None:
    dates = rules.birthdays_on(day, since_year=1900)
    assert born <= set(dates)
    assert all(d.year <= day.year for d in dates)
    if day == dt.date(2028, 2, 28):
        assert not any(d.month == 2 and d.day == 29 for d in dates)
    if day == dt.date(2028, 2, 29):
        assert dt.date(2001, 2, 28) not in dates and len(dates) == 32  # the leap years 1904-2028


def test_rewound_ids_are_the_smallest_made_that_long_before() -> None:
    made = dt.datetime(2026, 12, 4, 23, 44, 43, 360000, tzinfo=dt.UTC)
    order_id = f"ord_{ULID.from_datetime(made)}"
    rewound = rules.rewound_id(order_id, dt.timedelta(minutes=2))
    assert rewound < order_id and rewound.startswith("ord_")
    assert ULID.from_str(rewound.removeprefix("ord_")).datetime == made - dt.timedelta(minutes=2)
    assert rewound.endswith("0" * 16)
    assert rules.care_window_ends_at(made) == made + dt.timedelta(hours=72)
