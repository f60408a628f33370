"""The outbox writes each event's data as the catalogue's schema dumps it: the plain-field
dump `loyalty.events.outbox` uses instead of marshmallow's must give the same payload for
every type, whatever the data (values of other types, nulls, missing and undeclared keys)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields

from loyalty.api import Timestamp
from loyalty.events import outbox
from loyalty.events.catalogue import CATALOGUE

MOMENTS = st.datetimes(
    min_value=dt.datetime(1900, 1, 2),
    max_value=dt.datetime(9998, 12, 30),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5, minutes=-30))]),
)


def _values(field: fields.Field) -> st.SearchStrategy[Any]:
    """Values the writer could be given for ``field``: its own kind, and others."""
    if isinstance(field, fields.Nested):
        nested = field.schema
        assert isinstance(nested, Schema)
        return st.none() | _data(nested)
    if isinstance(field, Timestamp):
        return st.none() | MOMENTS
    if isinstance(field, fields.Integer):
        return st.none() | st.integers() | st.booleans() | st.floats(-1e9, 1e9)
    if isinstance(field, fields.String):
        return st.none() | st.text(max_size=5) | st.integers()
    if isinstance(field, fields.Date):
        return st.none() | st.dates()
    if isinstance(field, fields.Float):
        return st.none() | st.floats(allow_nan=False) | st.integers()
    if isinstance(field, fields.List):
        return st.none() | st.lists(st.text(max_size=3), max_size=2)
    raise AssertionError(f"no values for {field!r}: add its kind here")


def _data(schema: Schema) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={name: _values(field) for name, field in schema.fields.items()}
        | {"undeclared": st.integers()},
    )


@pytest.mark.parametrize("event_type", sorted(CATALOGUE))
def test_every_type_s_payload_is_the_schema_s_dump(event_type: str) -> None:
    schema = CATALOGUE[event_type][0]()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_data(schema))
    def check(data: dict[str, Any]) -> None:
        expected = {name: None for name in schema.fields} | schema.dump(data)
        assert outbox._payload(event_type, data) == expected
        assert list(outbox._payload(event_type, data)) == list(expected)

    check()


def test_the_points_events_are_dumped_without_marshmallow() -> None:
    # The job's events: they must take the plain dump (a schema that stops qualifying falls
    # back to marshmallow silently, still correct but several times slower).
    for event_type in ("points.activated", "points.expired", "points.accrued"):
        assert outbox._plain_dump(outbox._data_schema(event_type)) is not None
