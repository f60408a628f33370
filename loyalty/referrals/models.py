"""Tables of loyalty.referrals."""

from __future__ import annotations
