"""Stripe billing: payments earn points, refunds take them back, paid tiers, rewards as
Stripe promotion codes, and reconciliation with Stripe's event log."""
