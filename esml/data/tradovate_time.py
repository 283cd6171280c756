"""Tradovate's timestamps ("2024-03-05T14:30:00.123Z") as esml's ns since the epoch.

Apart from the frame conversion so that the broker (and the router Lambda that imports it)
reads Tradovate's times without loading numpy."""

from __future__ import annotations

from datetime import UTC, datetime


def stamp_ns(text: str) -> int:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1_000
