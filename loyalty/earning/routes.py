"""Earning rules: product multipliers, exclusions, minimum order, caps, campaigns; order
previews."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from loyalty import clock
from loyalty.api import Blueprint
from loyalty.auth.security import current_principal
from loyalty.db import Page, get_session
from loyalty.earning import service
from loyalty.earning.models import Campaign, EarningSettings, ProductMultiplier
from loyalty.earning.schemas import (
    CampaignCreateSchema,
    CampaignPageSchema,
    CampaignQuerySchema,
    CampaignSchema,
    CampaignUpdateSchema,
    EarningSettingsSchema,
    EarningSettingsUpdateSchema,
    MultiplierCreateSchema,
    MultiplierListSchema,
    MultiplierSchema,
    MultiplierUpdateSchema,
    PreviewCreateSchema,
    PreviewSchema,
)

blp = Blueprint("earning", __name__, url_prefix="/v1", description="Earning rules")


def _caller() -> str:
    return current_principal().client_id


def _campaign(campaign: Campaign) -> dict[str, Any]:
    body = {name: getattr(campaign, name) for name in CampaignSchema().fields if name != "status"}
    body["status"] = service.campaign_status(campaign, clock.now())
    return body


@blp.route("/orders/preview")
class OrderPreview(MethodView):
    @blp.requires("points:accrue")
    @blp.arguments(PreviewCreateSchema)
    @blp.response(200, PreviewSchema)
    @blp.errors(404)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Show what an order would earn, and why, without recording anything."""
        quote = service.preview_order(get_session(), **data)
        items = data.get("items") or []
        return {
            "member_id": data["member_id"],
            "points": quote.points,
            "breakdown": [component.as_dict() for component in quote.components],
            "description": quote.describe(),
            "items": [
                {"sku": item["sku"], "points": points}
                for item, points in zip(items, quote.line_points, strict=True)
            ],
        }


@blp.route("/program/earning")
class Earning(MethodView):
    @blp.requires("program:read")
    @blp.response(200, EarningSettingsSchema)
    def get(self) -> EarningSettings:
        """Get the earning limits: minimum order, excluded categories, daily/monthly caps."""
        return service.get_earning_settings(get_session())

    @blp.requires("program:write")
    @blp.arguments(EarningSettingsUpdateSchema)
    @blp.response(200, EarningSettingsSchema)
    def patch(self, changes: dict[str, Any]) -> EarningSettings:
        """Change the earning limits (audited); they apply to orders from now on."""
        return service.update_earning_settings(get_session(), changes=changes, actor=_caller())


@blp.route("/program/multipliers")
class Multipliers(MethodView):
    @blp.requires("program:read")
    @blp.response(200, MultiplierListSchema)
    def get(self) -> dict[str, list[ProductMultiplier]]:
        """List the category and SKU multipliers."""
        return {"items": service.list_multipliers(get_session())}

    @blp.requires("program:write")
    @blp.arguments(MultiplierCreateSchema)
    @blp.response(201, MultiplierSchema)
    @blp.errors(409)
    def post(self, data: dict[str, Any]) -> ProductMultiplier:
        """Make a category or a SKU earn a multiple of the base rate (audited)."""
        return service.create_multiplier(get_session(), actor=_caller(), **data)


@blp.route("/program/multipliers/<string:multiplier_id>")
class MultiplierById(MethodView):
    @blp.requires("program:read")
    @blp.response(200, MultiplierSchema)
    @blp.errors(404)
    def get(self, multiplier_id: str) -> ProductMultiplier:
        """Get a product multiplier."""
        return service.get_multiplier(get_session(), multiplier_id)

    @blp.requires("program:write")
    @blp.arguments(MultiplierUpdateSchema)
    @blp.response(200, MultiplierSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], multiplier_id: str) -> ProductMultiplier:
        """Change a product multiplier (audited)."""
        return service.update_multiplier(
            get_session(), multiplier_id=multiplier_id, changes=changes, actor=_caller()
        )

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404)
    def delete(self, multiplier_id: str) -> None:
        """Remove a product multiplier (audited)."""
        service.delete_multiplier(get_session(), multiplier_id=multiplier_id, actor=_caller())


@blp.route("/program/campaigns")
class Campaigns(MethodView):
    @blp.requires("program:read")
    @blp.arguments(CampaignQuerySchema, location="query")
    @blp.response(200, CampaignPageSchema)
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """List campaigns, newest first, optionally by status."""
        page: Page[Campaign] = service.list_campaigns(get_session(), **query)
        return {"items": [_campaign(c) for c in page.items], "next_cursor": page.next_cursor}

    @blp.requires("program:write")
    @blp.arguments(CampaignCreateSchema)
    @blp.response(201, CampaignSchema)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Create a campaign: a multiplier and/or fixed bonus for a target, in a window."""
        return _campaign(service.create_campaign(get_session(), actor=_caller(), **data))


@blp.route("/program/campaigns/<string:campaign_id>")
class CampaignById(MethodView):
    @blp.requires("program:read")
    @blp.response(200, CampaignSchema)
    @blp.errors(404)
    def get(self, campaign_id: str) -> dict[str, Any]:
        """Get a campaign, with its status and the points it has given."""
        return _campaign(service.get_campaign(get_session(), campaign_id))

    @blp.requires("program:write")
    @blp.arguments(CampaignUpdateSchema)
    @blp.response(200, CampaignSchema)
    @blp.errors(404)
    def patch(self, changes: dict[str, Any], campaign_id: str) -> dict[str, Any]:
        """Change or pause a campaign (audited)."""
        return _campaign(
            service.update_campaign(
                get_session(), campaign_id=campaign_id, changes=changes, actor=_caller()
            )
        )

    @blp.requires("program:write")
    @blp.response(204)
    @blp.errors(404, 409)
    def delete(self, campaign_id: str) -> None:
        """Delete a campaign that has given no points (pause one that has)."""
        service.delete_campaign(get_session(), campaign_id=campaign_id, actor=_caller())
