"""Reports as CSV (``Accept: text/csv``): the same figures as the JSON, as a spreadsheet reads
them. Lists of records become one row each; a report of figures becomes ``metric,value`` rows
whose metric is the JSON path (``points.issued.points``, ``by_tier.gold.nps``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Response, request

CSV_TYPE = "text/csv"
# In a list of records, the first of these fields a record has names it in metric paths.
KEYS = ("cohort", "stage", "segment", "tier", "month", "key", "mark", "kind")


def wants_csv() -> bool:
    """Whether the request prefers CSV to JSON (``Accept: text/csv``)."""
    best = request.accept_mimetypes.best_match(["application/json", CSV_TYPE])
    return best == CSV_TYPE


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) pairs of a JSON document's leaves."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from flatten(item, f"{prefix}.{name}" if prefix else str(name))
    elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        for index, item in enumerate(value):
            key = next((item[k] for k in KEYS if k in item), index)
            rest = {
                k: v for k, v in item.items() if k != next((k for k in KEYS if k in item), None)
            }
            yield from flatten(rest, f"{prefix}.{'none' if key is None else key}")
    elif isinstance(value, list):
        yield prefix, " ".join(_text(item) for item in value)
    else:
        yield prefix, value


def _response(rows: Iterable[list[Any]], filename: str) -> Response:
    def generate() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        for row in rows:
            writer.writerow([_text(cell) for cell in row])
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    response = Response(generate(), mimetype=CSV_TYPE)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def figures(document: dict[str, Any], filename: str) -> Response:
    """A report of figures as ``metric,value`` rows."""
    return _response([["metric", "value"], *([path, v] for path, v in flatten(document))], filename)


def records(items: Iterable[dict[str, Any]], columns: list[str], filename: str) -> Response:
    """Records, one row each, in ``columns``."""
    return _response(_rows(items, columns), filename)


def rows(columns: list[str], values: Iterable[Iterable[Any]], filename: str) -> Response:
    """Rows already in ``columns``' order (Core rows streamed from the database)."""

    def lines() -> Iterator[list[Any]]:
        yield columns
        for value in values:
            yield list(value)

    return _response(lines(), filename)


def _rows(items: Iterable[dict[str, Any]], columns: list[str]) -> Iterator[list[Any]]:
    yield columns
    for item in items:
        yield [item.get(column) for column in columns]


def cohorts(document: dict[str, Any]) -> Response:
    """One row per cohort: members, each mark's eligible, retained, rate and status, and each
    month's active members and rate."""
    cohorts_ = document["cohorts"]
    marks = [mark["mark"] for mark in cohorts_[0]["marks"]] if cohorts_ else []
    months = len(cohorts_[0]["months"]) if cohorts_ else 0
    columns = ["cohort", "members"]
    for mark in marks:
        columns += [f"{mark}_eligible", f"{mark}_retained", f"{mark}_rate", f"{mark}_status"]
    for index in range(months):
        columns += [f"month_{index}_active", f"month_{index}_rate"]

    def rows() -> Iterator[dict[str, Any]]:
        for cohort in cohorts_:
            row: dict[str, Any] = {"cohort": cohort["cohort"], "members": cohort["members"]}
            for mark in cohort["marks"]:
                for name in ("eligible", "retained", "rate", "status"):
                    row[f"{mark['mark']}_{name}"] = mark[name]
            for cell in cohort["months"]:
                row[f"month_{cell['offset']}_active"] = cell["active"]
                row[f"month_{cell['offset']}_rate"] = cell["rate"]
            yield row

    return records(rows(), columns, "cohorts")
