"""The analytics settings managers set (one row, created by the migration)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from loyalty.analytics.models import AnalyticsSettings
from loyalty.audit import service as audit_service
from loyalty.db import retrying, settings_row, unit_of_work
from loyalty.errors import InvalidFieldError

SETTINGS_FIELDS = (
    "new_days",
    "active_days",
    "silent_days",
    "risk_drop_pct",
    "rfm_days",
    "currency",
    "cost_per_point",
    "alert_drop_points",
)


def get_settings(session: Session) -> AnalyticsSettings:
    """The analytics settings (the migration's defaults until a manager changes them)."""
    return settings_row(session, AnalyticsSettings)


@retrying
def update_settings(session: Session, *, changes: dict[str, Any], actor: str) -> AnalyticsSettings:
    """Change the settings (audited); fields absent from ``changes`` stay as they are. New
    thresholds apply from the worker's next recomputation of stages. Locks the settings row.
    Raises `InvalidFieldError` when ``silent_days`` would not be above ``active_days``."""
    with unit_of_work(session):
        settings = settings_row(session, AnalyticsSettings, lock=True)
        with audit_service.recorded_update(
            session,
            settings,
            SETTINGS_FIELDS,
            actor=actor,
            entity_type="analytics_settings",
            entity_id="1",
        ):
            audit_service.apply_changes(settings, changes, SETTINGS_FIELDS)
            if settings.silent_days <= settings.active_days:
                raise InvalidFieldError("silent_days", "silent_days must be above active_days.")
            # A change of thresholds is due for recomputation at once.
            if {"new_days", "active_days", "silent_days", "risk_drop_pct", "rfm_days"} & set(
                changes
            ):
                settings.computed_at = None
        return settings
