"""Retention analytics: cohorts, repurchase, LTV, RFM and lifecycle stages, the churn warning,
NPS, campaign uplift, programme KPIs, liability, alerts and the tier what-if."""
