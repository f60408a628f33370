"""Community: engagement events, event types, check-ins, badges, challenges, leaderboards."""

from __future__ import annotations

from loyalty.api import Blueprint

blp = Blueprint("community", __name__, url_prefix="/v1", description="Community")
