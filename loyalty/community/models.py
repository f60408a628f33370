"""Tables of loyalty.community."""

from __future__ import annotations
