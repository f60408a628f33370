"""``loyalty import``: a storefront's history (orders and refunds older than the API accepts)
from CSV or JSON Lines files, through the same ledger rules as the API.

Each row is validated with the API's own schemas and recorded in its own unit of work, keyed
by the channel's order or refund id, so an import can be stopped and run again: rows already
recorded are counted as such and change nothing. Rows that fail are reported with their line
number and the import goes on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from marshmallow import Schema, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from loyalty.auth import service as auth_service
from loyalty.errors import LoyaltyError
from loyalty.ledger import service as ledger_service
from loyalty.ledger.schemas import OrderCreateSchema, RefundCreateSchema
from loyalty.members.models import Member

# How many failed rows are listed in the report (all are counted).
MAX_LISTED_FAILURES = 50


@dataclass
class ImportReport:
    recorded: int = 0
    already: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, line: int, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_LISTED_FAILURES:
            self.failures.append(f"line {line}: {reason}")

    def summary(self, what: str) -> str:
        return (
            f"Imported {self.recorded} {what}; {self.already} were already recorded; "
            f"{self.failed} failed."
        )


class OrderRowSchema(OrderCreateSchema):
    """An order of the history: as the API takes it, with the member named by the
    storefront's ``external_id`` as an alternative to ``member_id``, and ``placed_at``
    required (that is the point of history)."""

    class Meta:
        unknown = "exclude"

    def load(self, data: Any, **kwargs: Any) -> Any:
        external_id = None
        if isinstance(data, dict) and "member_id" not in data and "external_id" in data:
            external_id = str(data["external_id"])
            data = {**data, "member_id": "-"}
        loaded = super().load(data, **kwargs)
        if "placed_at" not in loaded:
            raise ValidationError({"placed_at": ["Missing data for required field."]})
        if external_id is not None:
            loaded["member_id"] = None
            loaded["external_id"] = external_id
        return loaded


class RefundRowSchema(RefundCreateSchema):
    """A refund of the history: as the API takes it, plus the ``order_id`` it refunds."""

    class Meta:
        unknown = "exclude"

    def load(self, data: Any, **kwargs: Any) -> Any:
        order_id = data.get("order_id") if isinstance(data, dict) else None
        if not isinstance(order_id, str) or not order_id:
            raise ValidationError({"order_id": ["Missing data for required field."]})
        loaded = super().load({k: v for k, v in data.items() if k != "order_id"}, **kwargs)
        return {**loaded, "order_id": order_id}


class ImportFileError(Exception):
    """The file cannot be read as a whole (not UTF-8 text). The file is read through once
    before anything is imported, so nothing was."""


def rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The file's rows with their line numbers: CSV with a header line (numbers and JSON
    ``items`` cells parsed), or JSON Lines (``.jsonl``/``.ndjson``, one object a line); UTF-8
    text, with or without a byte order mark (as spreadsheets save "CSV UTF-8"). Raises
    `ImportFileError` for a file that is not UTF-8."""
    try:
        yield from _rows(path)
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f"{path.name} is not UTF-8 text ({error.reason} at byte {error.start}): save it "
            "as UTF-8 (in a spreadsheet: CSV UTF-8) and import it again; nothing was imported."
        ) from None


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8-sig") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except ValueError:
                    yield number, {"__error__": "not a JSON object"}
                    continue
                yield number, value if isinstance(value, dict) else {"__error__": "not an object"}
        return
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            yield reader.line_num, {k: _cell(k, v) for k, v in row.items() if k and v != ""}


def _cell(name: str, value: str | None) -> Any:
    if value is None:
        return None
    if name in ("total", "amount"):
        try:
            return int(value)
        except ValueError:
            return value
    if name == "items":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def import_orders(
    session: Session, path: Path, *, channel_id: str, progress: bool = False
) -> ImportReport:
    """Record every order of the file for ``channel_id`` (see the module docstring)."""
    auth_service.get_channel(session, channel_id)

    def record(data: dict[str, Any]) -> bool:
        member_id = data.pop("member_id")
        external_id = data.pop("external_id", None)
        if external_id is not None:
            member_id = session.scalar(select(Member.id).where(Member.external_id == external_id))
            if member_id is None:
                raise _RowError("no member with this external_id")
        return ledger_service.accrue_order(
            session,
            channel_id=channel_id,
            member_id=member_id,
            actor="import",
            backfill=True,
            **data,
        ).created

    return _run(session, path, OrderRowSchema(), record, progress=progress, label="orders")


def import_refunds(
    session: Session, path: Path, *, channel_id: str, progress: bool = False
) -> ImportReport:
    """Record every refund of the file for ``channel_id``'s orders."""
    auth_service.get_channel(session, channel_id)

    def record(data: dict[str, Any]) -> bool:
        return ledger_service.refund_order(
            session, channel_id=channel_id, actor="import", **data
        ).created

    return _run(session, path, RefundRowSchema(), record, progress=progress, label="refunds")


class _RowError(Exception):
    pass


def _run(
    session: Session,
    path: Path,
    schema: Schema,
    record: Callable[[dict[str, Any]], bool],
    *,
    progress: bool,
    label: str,
) -> ImportReport:
    report = ImportReport()
    total = sum(1 for _ in rows(path))
    with click.progressbar(
        rows(path),
        length=total,
        label=f"Importing {label}",
        file=None if progress else io.StringIO(),
    ) as bar:
        for number, raw in bar:
            if "__error__" in raw:
                report.fail(number, raw["__error__"])
                continue
            try:
                data = schema.load(raw)
                created = record(data)
            except ValidationError as error:
                report.fail(number, _describe(error.messages))
                continue
            except _RowError as error:
                report.fail(number, str(error))
                continue
            except LoyaltyError as error:
                report.fail(number, f"{error.code}: {error.detail}")
                continue
            if created:
                report.recorded += 1
            else:
                report.already += 1
    return report


def _describe(messages: Any) -> str:
    if isinstance(messages, dict):
        return "; ".join(f"{name}: {_describe(value)}" for name, value in messages.items())
    if isinstance(messages, list):
        return " ".join(_describe(value) for value in messages)
    return str(messages)
