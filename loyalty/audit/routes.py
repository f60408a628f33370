"""The audit trail of programme configuration changes."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty.api import Blueprint
from loyalty.audit import service
from loyalty.audit.models import AuditRecord
from loyalty.audit.schemas import AuditPageSchema, AuditQuerySchema
from loyalty.db import Page, get_session

blp = Blueprint("audit", __name__, url_prefix="/v1/audit", description="Audit trail")


@blp.route("")
class AuditRecords(MethodView):
    @blp.requires("program:read")
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, query: dict[str, Any]) -> Page[AuditRecord]:
        """List configuration changes, newest first (who, when, before and after)."""
        return service.list_records(get_session(), **query)
