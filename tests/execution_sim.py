"""The loopback Tradovate server (`esml.sim.tradovate_api.TradovateSim`) with what the
execution layer uses beyond the router's needs, for the execution and crash tests.

Added Tradovate endpoints: `/order/modifyorder`, `/order/list`, `/orderVersion/ldeps`,
`/fill/ldeps`, `/command/ldeps`, `/command/list` (each order's `New` command carries its
clOrdId). Added behaviour: a resting limit order fills at most `fill_cap` contracts per
price change (partial fills); a bracket leg is released at its full quantity on the
entry's first fill, as an unsophisticated OSO would (the execution layer must resize it);
a partial fill of one OCO leg takes as much off the other. Its clock is the market's.

Test controls that are not Tradovate's, under `/sim/`: a scripted market (SYNTHETIC
prices) that a trading loop in another process steps through with `POST /sim/advance`,
so the market, like a real one, lives on while that process crashes and restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from esml.sim.tradovate_api import (
    _LIVE,
    TradovateSim,
    _BadRequest,
    _fill_price,
    _NotFound,
    _Order,
    _priced,
    _Refused,
    _require,
)
from tests.aws_fixtures import sim_arguments

SYMBOL = "ESH5"
TICK = 0.25


@dataclass(frozen=True)
class Tick:
    """One step of a scripted market: seconds after the start, and the trade price."""

    at_s: float
    price: float


class ExecutionSim(TradovateSim):
    def __init__(self, *, script: list[Tick] | None = None, fill_cap: int | None = None,
                 **overrides: Any) -> None:  # fmt: skip
        self.start = datetime.now(UTC).replace(microsecond=0)
        self.now = self.start
        super().__init__(**sim_arguments(clock=lambda: self.now, **overrides))
        self.fill_cap = fill_cap
        self.script = list(script or [])
        self.cursor = -1
        self.checkpoints: list[dict[str, Any]] = []
        self._capped: set[int] = set()  # limit orders that took this price's liquidity
        self._filled: dict[int, int] = {}
        self._version: dict[int, int] = {}

    def __enter__(self) -> ExecutionSim:
        super().__enter__()
        assert self._server is not None
        # headers and body go out in two writes: without this, each answer waits out the
        # client's delayed ACK (40 ms)
        self._server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
        return self

    # --- test controls (in the test's process) -------------------------------------
    def at(self, at_s: float, price: float, symbol: str = SYMBOL) -> int:
        """Move the market to `at_s` seconds after the start and trade at `price`;
        returns the time in ns."""
        with self._lock:
            return self._move(at_s, price, symbol)

    def ns(self, at_s: float) -> int:
        ts = self.start + timedelta(seconds=at_s)
        return int(ts.timestamp()) * 1_000_000_000 + ts.microsecond * 1_000

    def cancel_order(self, order_id: int) -> None:
        """Someone (a person, the broker's end of day) cancels an order of ours."""
        with self._lock:
            self._orders[order_id].status = "Canceled"

    def live_orders(self, symbol: str = SYMBOL) -> list[dict[str, Any]]:
        contract = self._contracts[symbol]
        return [
            {**o, "filled": self._filled.get(o["id"], 0)}
            for o in self.orders()
            if o["contractId"] == contract and o["ordStatus"] in _LIVE
        ]

    def fill_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._fills)

    # --- the added endpoints -------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], token: str | None, body: Any
    ) -> tuple[int, Any]:
        controls: dict[tuple[str, str], Callable[[], Any]] = {
            ("POST", "/v1/sim/advance"): self._advance,
            ("GET", "/v1/sim/quote"): self._current,
            ("POST", "/v1/sim/checkpoint"): lambda: self._checkpoint(body),
        }
        if (method, path) in controls:
            return 200, controls[(method, path)]()
        added: dict[tuple[str, str], Callable[[], Any]] = {
            ("POST", "/v1/order/modifyorder"): lambda: self._modify(body),
            ("GET", "/v1/order/list"): lambda: [o.public() for o in self._orders.values()],
            ("GET", "/v1/orderversion/ldeps"): lambda: [
                self._version_of(o) for o in self._masters(query)
            ],
            ("GET", "/v1/fill/ldeps"): lambda: [
                f for f in self._fills if f["orderId"] in {o.id for o in self._masters(query)}
            ],
            ("GET", "/v1/command/ldeps"): lambda: [
                self._command_of(o) for o in self._masters(query)
            ],
            ("GET", "/v1/command/list"): lambda: [
                self._command_of(o) for o in self._orders.values()
            ],
        }
        if (method, path) not in added:
            return super().handle(method, path, query, token, body)
        if not self._authorised(token):
            return 401, {"errorText": "Access is denied"}
        try:
            return 200, added[(method, path)]()
        except _BadRequest as e:
            return 400, {"errorText": str(e)}
        except _NotFound as e:
            return 404, {"errorText": str(e)}
        except _Refused as e:
            return 200, {"failureReason": e.reason, "failureText": e.text}

    def _masters(self, query: dict[str, str]) -> list[_Order]:
        try:
            ids = [int(i) for i in query.get("masterids", "").split(",") if i]
        except ValueError:
            raise _BadRequest("masterids must be comma-separated integers") from None
        return [self._orders[i] for i in ids if i in self._orders]

    def _version_of(self, o: _Order) -> dict[str, Any]:
        return {
            "id": o.id * 1000 + self._version.get(o.id, 0),
            "orderId": o.id,
            "orderQty": o.qty,
            "orderType": o.order_type,
            "price": o.price,
            "stopPrice": o.stop_price,
            "timeInForce": "GTC" if o.parent_id is not None else "Day",
        }

    def _command_of(self, o: _Order) -> dict[str, Any]:
        command: dict[str, Any] = {
            "id": o.id * 1000,
            "orderId": o.id,
            "timestamp": o.timestamp,
            "commandType": "New",
            "commandStatus": "ExecutionStopped",
            "isAutomated": True,
        }
        if o.cl_ord_id:
            command["clOrdId"] = o.cl_ord_id
        return command

    def _modify(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _BadRequest("request body must be a JSON object")
        _require(body, ("orderId", "orderQty", "orderType"))
        if body.get("isAutomated") is not True:
            raise _BadRequest("isAutomated must be true for orders not entered by a person")
        o = self._orders.get(body["orderId"])
        if o is None:
            raise _NotFound(f"order {body['orderId']} not found")
        if o.status not in _LIVE:
            raise _Refused("TooLate", f"order {o.id} is {o.status}")
        if body["orderType"] != o.order_type:
            raise _Refused("Unsupported", "the simulator does not change an order's type")
        qty = body["orderQty"]
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= self._filled.get(o.id, 0):
            raise _BadRequest("orderQty must be an integer above the quantity filled")
        symbol = next(s for s, c in self._contracts.items() if c == o.contract_id)
        _, price, stop_price = _priced(body, "order", symbol)
        o.qty = qty
        if o.order_type == "Limit":
            o.price = price
        elif o.order_type == "Stop":
            o.stop_price = stop_price
        self._version[o.id] = self._version.get(o.id, 0) + 1
        self._match(o.contract_id)
        return {"commandId": self._next_id()}

    # --- the scripted market -------------------------------------------------------------
    def _advance(self) -> dict[str, Any]:
        if self.cursor + 1 >= len(self.script):
            return {"done": True}
        self.cursor += 1
        step = self.script[self.cursor]
        ts = self._move(step.at_s, step.price, SYMBOL)
        return {"done": False, "index": self.cursor, "ts_ns": ts, "price": step.price}

    def _current(self) -> dict[str, Any]:
        """Where the market is now (a test may have moved it while the loop was down)."""
        if self.cursor < 0:
            return {"done": False, "index": -1}
        at_s = (self.now - self.start).total_seconds()
        price = self._prices[self._contracts[SYMBOL]]
        return {"done": False, "index": self.cursor, "ts_ns": self.ns(at_s), "price": price}

    def _checkpoint(self, body: Any) -> dict[str, Any]:
        """What the broker holds at the moment a trading loop reports `body`: the
        position, and the contracts its working stops would close."""
        account_id = next(iter(self._accounts))
        contract = self._contracts[SYMBOL]
        pos = self._positions.get((account_id, contract))
        net = pos.net if pos else 0
        closing = "Sell" if net > 0 else "Buy"
        stops = sum(
            o.qty - self._filled.get(o.id, 0)
            for o in self._orders.values()
            if o.contract_id == contract
            and o.order_type == "Stop"
            and o.status == "Working"
            and o.action == closing
        )
        self.checkpoints.append({**(body or {}), "broker_position": net, "stop_qty": stops})
        return {}

    def _move(self, at_s: float, price: float, symbol: str) -> int:
        self.now = self.start + timedelta(seconds=at_s)
        self._capped = set()  # new trades: new liquidity at the limit
        contract = self._contracts[symbol]
        self._prices[contract] = float(price)
        self._match(contract)
        return self.ns(at_s)

    # --- matching with partial fills -----------------------------------------------------
    def _match(self, contract: int) -> None:
        px = self._prices[contract]
        capped = self._capped  # a resting limit fills once per price change
        changed = True
        while changed:
            changed = False
            for o in list(self._orders.values()):
                if o.contract_id != contract or o.status != "Working" or o.id in capped:
                    continue
                fill_px = _fill_price(o, px)
                if fill_px is None:
                    continue
                qty = o.qty - self._filled.get(o.id, 0)
                if o.order_type == "Limit" and self.fill_cap is not None:
                    qty = min(qty, self.fill_cap)
                    capped.add(o.id)
                self._fill_part(o, fill_px, qty)
                changed = True

    def _fill_part(self, o: _Order, price: float, qty: int) -> None:
        self._book_fill(o, price, qty)
        self._filled[o.id] = self._filled.get(o.id, 0) + qty
        if self._filled[o.id] >= o.qty:
            o.status = "Filled"
        for leg_id in o.legs:  # released at their full quantity on the first fill
            if self._orders[leg_id].status == "Suspended":
                self._orders[leg_id].status = "Working"
        other = self._orders.get(o.oco_id) if o.oco_id is not None else None
        if other is not None and other.status in _LIVE:
            if o.status == "Filled":
                other.status = "Canceled"
            else:  # one-cancels-other, in part
                other.qty -= qty
                self._version[other.id] = self._version.get(other.id, 0) + 1
                if other.qty <= self._filled.get(other.id, 0):
                    other.status = "Canceled"
