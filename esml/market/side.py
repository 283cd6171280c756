"""The direction of a trade: a market word, so every package may say it, the models'
signals as much as the orders."""

from __future__ import annotations

import enum


class Side(enum.StrEnum):
    BUY = "Buy"
    SELL = "Sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1

    @property
    def opposite(self) -> Side:
        return Side.SELL if self is Side.BUY else Side.BUY

    @classmethod
    def of_position(cls, signed_qty: int) -> Side:
        return cls.BUY if signed_qty > 0 else cls.SELL
