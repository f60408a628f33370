"""Member rules without a database."""

from __future__ import annotations

from loyalty.members import rules


def test_referral_codes_use_the_unambiguous_alphabet() -> None:
    codes = {rules.new_referral_code() for _ in range(500)}
    assert len(codes) == 500
    for code in codes:
        assert rules.is_referral_code(code)
        assert not set(code) & set("01ILOU")


def test_referral_codes_are_normalised_for_matching() -> None:
    assert rules.normalise_referral_code(" k7qm-2xwp ") == "K7QM2XWP"
    assert not rules.is_referral_code("K7QM2XW")
    assert not rules.is_referral_code("K7QM2XW0")


def test_time_zones_are_iana_names() -> None:
    assert rules.is_time_zone("Europe/Paris")
    assert rules.is_time_zone("UTC")
    assert not rules.is_time_zone("Mars/Olympus_Mons")
    assert not rules.is_time_zone("+02:00")
