"""Numpy layouts of the Databento GLBX.MDP3 record schemas, and typed views of them.

Each dtype is the record's little-endian wire layout, so a DBN body decodes as one numpy
view with nothing parsed per record. Prices stay int64 fixed point at 1e-9, exactly as
sent (`float_prices` gives float64 with UNDEF_PRICE as NaN); timestamps are uint64 ns
since the epoch, UTC (UNDEF_TIMESTAMP means none). `action` and `side` are ASCII codes,
as in esml's own event dtype. Definition and statistics records changed layout between
DBN versions 1/2 and 3: `upgrade` brings old records to the version-3 layout the way
databento-dbn's own upgrade policy does, so one store column set serves every file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from esml.market.events import MBO_DTYPE, RTYPE_MBO, UNDEF_PRICE
from esml.market.instruments import PRICE_SCALE

UNDEF_ORDER_SIZE = np.iinfo(np.uint32).max
UNDEF_STAT_QUANTITY = np.iinfo(np.int64).max  # version 3; version 1/2 used the int32 max
UNDEF_STAT_QUANTITY_V1 = np.iinfo(np.int32).max
UNDEF_TIMESTAMP = np.iinfo(np.uint64).max
UNDEF_INT32 = np.iinfo(np.int32).max
CURRENT_VERSION = 3

RTYPE_TRADES = 0x00
RTYPE_MBP_1 = 0x01
RTYPE_MBP_10 = 0x0A
RTYPE_STATUS = 0x12
RTYPE_DEFINITION = 0x13
RTYPE_STATISTICS = 0x18
RTYPE_OHLCV_1S = 0x20
RTYPE_OHLCV_1M = 0x21
RTYPE_OHLCV_1H = 0x22
RTYPE_OHLCV_1D = 0x23
RTYPE_BBO_1S = 0xC3
RTYPE_BBO_1M = 0xC4

_HEADER = [
    ("length", "u1"),  # record length in 4-byte words
    ("rtype", "u1"),
    ("publisher_id", "<u2"),
    ("instrument_id", "<u4"),
    ("ts_event", "<u8"),
]


def _level(k: int) -> list[tuple[str, str]]:
    return [
        (f"bid_px_{k:02d}", "<i8"), (f"ask_px_{k:02d}", "<i8"),
        (f"bid_sz_{k:02d}", "<u4"), (f"ask_sz_{k:02d}", "<u4"),
        (f"bid_ct_{k:02d}", "<u4"), (f"ask_ct_{k:02d}", "<u4"),
    ]  # fmt: skip


_TRADE_BODY = [
    ("price", "<i8"), ("size", "<u4"), ("action", "u1"), ("side", "u1"), ("flags", "u1"),
    ("depth", "u1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"), ("sequence", "<u4"),
]  # fmt: skip

_BBO_BODY = [
    ("price", "<i8"), ("size", "<u4"), ("_reserved1", "u1"), ("side", "u1"), ("flags", "u1"),
    ("_reserved2", "u1"), ("ts_recv", "<u8"), ("_reserved3", "S4"), ("sequence", "<u4"),
]  # fmt: skip
_OHLCV_BODY = [("open", "<i8"), ("high", "<i8"), ("low", "<i8"), ("close", "<i8"),
               ("volume", "<u8")]  # fmt: skip
_STATUS_BODY = [
    ("ts_recv", "<u8"), ("action", "<u2"), ("reason", "<u2"), ("trading_event", "<u2"),
    ("is_trading", "S1"), ("is_quoting", "S1"), ("is_short_sell_restricted", "S1"),
    ("_reserved", "S7"),
]  # fmt: skip
_STAT_HEAD = [("ts_recv", "<u8"), ("ts_ref", "<u8"), ("price", "<i8")]
_STAT_TAIL = [
    ("sequence", "<u4"), ("ts_in_delta", "<i4"), ("stat_type", "<u2"), ("channel_id", "<u2"),
    ("update_action", "u1"), ("stat_flags", "u1"),
]  # fmt: skip

TRADES_DTYPE = np.dtype([*_HEADER, *_TRADE_BODY])
MBP1_DTYPE = np.dtype([*_HEADER, *_TRADE_BODY, *_level(0)])  # also TBBO
MBP10_DTYPE = np.dtype([*_HEADER, *_TRADE_BODY, *(f for k in range(10) for f in _level(k))])
BBO_DTYPE = np.dtype([*_HEADER, *_BBO_BODY, *_level(0)])
OHLCV_DTYPE = np.dtype([*_HEADER, *_OHLCV_BODY])
STATUS_DTYPE = np.dtype([*_HEADER, *_STATUS_BODY])
STATISTICS_V1_DTYPE = np.dtype(
    [*_HEADER, *_STAT_HEAD, ("quantity", "<i4"), *_STAT_TAIL, ("_reserved", "S6")]
)
STATISTICS_DTYPE = np.dtype(
    [*_HEADER, *_STAT_HEAD, ("quantity", "<i8"), *_STAT_TAIL, ("_reserved", "S18")]
)

_DEF_PRICES_V1 = [
    ("ts_recv", "<u8"), ("min_price_increment", "<i8"), ("display_factor", "<i8"),
    ("expiration", "<u8"), ("activation", "<u8"), ("high_limit_price", "<i8"),
    ("low_limit_price", "<i8"), ("max_price_variation", "<i8"),
    ("trading_reference_price", "<i8"), ("unit_of_measure_qty", "<i8"),
    ("min_price_increment_amount", "<i8"), ("price_ratio", "<i8"),
]  # fmt: skip
_DEF_INTS_V1 = [
    ("inst_attrib_value", "<i4"), ("underlying_id", "<u4"), ("raw_instrument_id", "<u4"),
    ("market_depth_implied", "<i4"), ("market_depth", "<i4"), ("market_segment_id", "<u4"),
    ("max_trade_vol", "<u4"), ("min_lot_size", "<i4"), ("min_lot_size_block", "<i4"),
    ("min_lot_size_round_lot", "<i4"), ("min_trade_vol", "<u4"),
]  # fmt: skip
_DEF_TAIL_V1 = [
    ("match_algorithm", "S1"), ("md_security_trading_status", "u1"), ("main_fraction", "u1"),
    ("price_display_format", "u1"), ("settl_price_type", "u1"), ("sub_fraction", "u1"),
    ("underlying_product", "u1"), ("security_update_action", "S1"), ("maturity_month", "u1"),
    ("maturity_day", "u1"), ("maturity_week", "u1"), ("user_defined_instrument", "S1"),
    ("contract_multiplier_unit", "i1"), ("flow_schedule_type", "i1"), ("tick_rule", "u1"),
]  # fmt: skip
_DEF_DATES = [
    ("trading_reference_date", "<u2"), ("appl_id", "<i2"), ("maturity_year", "<u2"),
    ("decay_start_date", "<u2"), ("channel_id", "<u2"),
]  # fmt: skip
_DEF_SIZES = [("contract_multiplier", "<i4"), ("decay_quantity", "<i4"),
              ("original_contract_size", "<i4")]  # fmt: skip
_DEF_V1_STRIKE = [("instrument_class", "S1"), ("_reserved4", "S2"), ("strike_price", "<i8"),
                  ("_reserved5", "S6")]  # fmt: skip
_DEF_V3_NUMBERS = [
    ("ts_recv", "<u8"), ("min_price_increment", "<i8"), ("display_factor", "<i8"),
    ("expiration", "<u8"), ("activation", "<u8"), ("high_limit_price", "<i8"),
    ("low_limit_price", "<i8"), ("max_price_variation", "<i8"),
    ("unit_of_measure_qty", "<i8"), ("min_price_increment_amount", "<i8"),
    ("price_ratio", "<i8"), ("strike_price", "<i8"), ("raw_instrument_id", "<u8"),
    ("leg_price", "<i8"), ("leg_delta", "<i8"), ("inst_attrib_value", "<i4"),
    ("underlying_id", "<u4"), ("market_depth_implied", "<i4"), ("market_depth", "<i4"),
    ("market_segment_id", "<u4"), ("max_trade_vol", "<u4"), ("min_lot_size", "<i4"),
    ("min_lot_size_block", "<i4"), ("min_lot_size_round_lot", "<i4"),
    ("min_trade_vol", "<u4"), *_DEF_SIZES,
    ("leg_instrument_id", "<u4"), ("leg_ratio_price_numerator", "<i4"),
    ("leg_ratio_price_denominator", "<i4"), ("leg_ratio_qty_numerator", "<i4"),
    ("leg_ratio_qty_denominator", "<i4"), ("leg_underlying_id", "<u4"),
    ("appl_id", "<i2"), ("maturity_year", "<u2"), ("decay_start_date", "<u2"),
    ("channel_id", "<u2"), ("leg_count", "<u2"), ("leg_index", "<u2"),
]  # fmt: skip
_DEF_V3_TAIL = [
    ("leg_raw_symbol", "S71"), ("instrument_class", "S1"), ("match_algorithm", "S1"),
    ("main_fraction", "u1"), ("price_display_format", "u1"), ("sub_fraction", "u1"),
    ("underlying_product", "u1"), ("security_update_action", "S1"),
    ("maturity_month", "u1"), ("maturity_day", "u1"), ("maturity_week", "u1"),
    ("user_defined_instrument", "S1"), ("contract_multiplier_unit", "i1"),
    ("flow_schedule_type", "i1"), ("tick_rule", "u1"), ("leg_instrument_class", "S1"),
    ("leg_side", "S1"), ("_reserved", "S17"),
]  # fmt: skip


def _def_strings(symbol_len: int, asset_len: int) -> list[tuple[str, str]]:
    return [
        ("currency", "S4"), ("settl_currency", "S4"), ("secsubtype", "S6"),
        ("raw_symbol", f"S{symbol_len}"), ("group", "S21"), ("exchange", "S5"),
        ("asset", f"S{asset_len}"), ("cfi", "S7"), ("security_type", "S7"),
        ("unit_of_measure", "S31"), ("underlying", "S21"), ("strike_price_currency", "S4"),
    ]  # fmt: skip


DEFINITION_V1_DTYPE = np.dtype(
    [*_HEADER, *_DEF_PRICES_V1, *_DEF_INTS_V1, ("_reserved2", "S4"), *_DEF_SIZES,
     ("_reserved3", "S4"), *_DEF_DATES, *_def_strings(22, 7), *_DEF_V1_STRIKE,
     *_DEF_TAIL_V1, ("_dummy", "S3")]
)  # fmt: skip
DEFINITION_V2_DTYPE = np.dtype(
    [*_HEADER, *_DEF_PRICES_V1, ("strike_price", "<i8"), *_DEF_INTS_V1, *_DEF_SIZES,
     *_DEF_DATES, *_def_strings(71, 7), ("instrument_class", "S1"), *_DEF_TAIL_V1,
     ("_reserved", "S10")]
)  # fmt: skip
DEFINITION_DTYPE = np.dtype([*_HEADER, *_DEF_V3_NUMBERS, *_def_strings(71, 11), *_DEF_V3_TAIL])

_DEFINITION_PRICES = (
    "min_price_increment", "display_factor", "high_limit_price", "low_limit_price",
    "max_price_variation", "trading_reference_price", "unit_of_measure_qty",
    "min_price_increment_amount", "price_ratio", "strike_price", "leg_price", "leg_delta",
)  # fmt: skip


@dataclass(frozen=True)
class SchemaSpec:
    """One DBN schema: its record type, its layout per DBN version, which fields are what."""

    name: str
    rtype: int
    layouts: Mapping[int, np.dtype]  # DBN version -> record layout
    price_fields: tuple[str, ...]
    ts_fields: tuple[str, ...]

    def dtype(self, version: int) -> np.dtype:
        return self.layouts.get(version, self.layouts[CURRENT_VERSION])

    @property
    def current(self) -> np.dtype:
        return self.layouts[CURRENT_VERSION]

    @property
    def index_ts(self) -> str:
        """The timestamp records are ordered and partitioned by (Databento's index time)."""
        return "ts_recv" if "ts_recv" in self.current.names else "ts_event"

    @property
    def data_fields(self) -> tuple[str, ...]:
        """Fields that carry data: not the length word, not the padding."""
        return tuple(n for n in self.current.names if n != "length" and not n.startswith("_"))


def _same(dt: np.dtype) -> dict[int, np.dtype]:
    return {1: dt, 2: dt, 3: dt}


_PRICE_NAMES = frozenset(("price", "open", "high", "low", "close", *_DEFINITION_PRICES))


_DATE_NAMES = frozenset(("expiration", "activation"))


def _is_price(name: str) -> bool:
    return name in _PRICE_NAMES or name.startswith(("bid_px_", "ask_px_"))


def _is_timestamp(name: str) -> bool:
    return (name.startswith("ts_") and name != "ts_in_delta") or name in _DATE_NAMES


def _spec(name: str, rtype: int, layouts: Mapping[int, np.dtype]) -> SchemaSpec:
    names = layouts[CURRENT_VERSION].names
    return SchemaSpec(name, rtype, layouts, tuple(filter(_is_price, names)),
                      tuple(filter(_is_timestamp, names)))  # fmt: skip


SCHEMAS: dict[str, SchemaSpec] = {
    s.name: s
    for s in (
        _spec("mbo", RTYPE_MBO, _same(MBO_DTYPE)),
        _spec("mbp-1", RTYPE_MBP_1, _same(MBP1_DTYPE)),
        _spec("tbbo", RTYPE_MBP_1, _same(MBP1_DTYPE)),
        _spec("mbp-10", RTYPE_MBP_10, _same(MBP10_DTYPE)),
        _spec("trades", RTYPE_TRADES, _same(TRADES_DTYPE)),
        _spec("bbo-1s", RTYPE_BBO_1S, _same(BBO_DTYPE)),
        _spec("bbo-1m", RTYPE_BBO_1M, _same(BBO_DTYPE)),
        _spec("ohlcv-1s", RTYPE_OHLCV_1S, _same(OHLCV_DTYPE)),
        _spec("ohlcv-1m", RTYPE_OHLCV_1M, _same(OHLCV_DTYPE)),
        _spec("ohlcv-1h", RTYPE_OHLCV_1H, _same(OHLCV_DTYPE)),
        _spec("ohlcv-1d", RTYPE_OHLCV_1D, _same(OHLCV_DTYPE)),
        _spec("status", RTYPE_STATUS, _same(STATUS_DTYPE)),
        _spec("statistics", RTYPE_STATISTICS,
              {1: STATISTICS_V1_DTYPE, 2: STATISTICS_V1_DTYPE, 3: STATISTICS_DTYPE}),
        _spec("definition", RTYPE_DEFINITION,
              {1: DEFINITION_V1_DTYPE, 2: DEFINITION_V2_DTYPE, 3: DEFINITION_DTYPE}),
    )
}  # fmt: skip


def upgrade(records: np.ndarray, spec: SchemaSpec) -> np.ndarray:
    """Records of an older DBN version in the version-3 layout (a copy).

    Fields version 3 dropped (trading reference price and date, settlement price type,
    trading status: they moved to the statistics and status schemas) are left out; fields
    it added read as undefined, and the statistics quantity keeps its undefined sentinel.
    """
    target = spec.current
    if records.dtype == target:
        return records.copy()
    out = np.zeros(len(records), target)
    out["length"] = target.itemsize // 4
    for name in target.names:
        if name in records.dtype.names and name != "length":
            out[name] = records[name]
    if spec.name == "statistics":
        undef = records["quantity"] == UNDEF_STAT_QUANTITY_V1
        out["quantity"][undef] = UNDEF_STAT_QUANTITY
    if spec.name == "definition":
        out["leg_price"] = UNDEF_PRICE
        out["leg_delta"] = UNDEF_PRICE
        out["leg_side"] = b"N"
    return out


def float_prices(fixed: np.ndarray) -> np.ndarray:
    """Fixed-point 1e-9 prices as float64, UNDEF_PRICE as NaN (for analysis, never for
    matching: compare prices in fixed point)."""
    fixed = np.asarray(fixed, dtype=np.int64)
    out = fixed / PRICE_SCALE
    out[fixed == UNDEF_PRICE] = np.nan
    return out


def to_frame(records: np.ndarray, spec: SchemaSpec, *, prices: str = "float") -> pd.DataFrame:
    """A DataFrame of the data fields: timestamps as UTC datetimes (NaT when undefined),
    text decoded, prices as float (NaN when undefined) or, with prices="fixed", as the
    exact int64."""
    if prices not in ("float", "fixed"):
        raise ValueError(f"prices must be 'float' or 'fixed', not {prices!r}")
    cols: dict[str, object] = {}
    for name in spec.data_fields:
        if name not in records.dtype.names:
            continue
        col = records[name]
        if name in spec.ts_fields:
            ns = col.astype(np.uint64)
            undef = ns == UNDEF_TIMESTAMP
            cols[name] = pd.to_datetime(np.where(undef, 0, ns).astype(np.int64), utc=True)
            cols[name] = cols[name].where(~undef, pd.NaT)
        elif name in spec.price_fields and prices == "float":
            cols[name] = float_prices(col)
        elif col.dtype.kind == "S":
            cols[name] = np.char.decode(col, "ascii")
        elif name in ("action", "side") and col.dtype == np.uint8:
            cols[name] = [chr(c) for c in col]
        else:
            cols[name] = col
    return pd.DataFrame(cols)


def _text(b: bytes) -> str:
    return b.decode("ascii")


def _fixed_or_none(v: int) -> int | None:
    return None if v == UNDEF_PRICE else int(v)


def _ts_or_none(v: int) -> int | None:
    return None if v == UNDEF_TIMESTAMP else int(v)


@dataclass(frozen=True)
class InstrumentDefinition:
    """The contract terms a definition record carries, decoded; prices fixed point 1e-9.

    For CME equity-index futures the dollar value of one index point is
    `unit_of_measure_qty` (unit "IPNT", 50 for ES); CME leaves `contract_multiplier`
    undefined (None) for them, so `multiplier` falls back to it only where the unit
    quantity is missing.
    """

    instrument_id: int
    raw_symbol: str
    ts_event: int
    ts_recv: int
    security_update_action: str  # A add, M modify, D delete
    instrument_class: str  # F future, C call, P put, S spread, ...
    expiration_ns: int | None
    activation_ns: int | None
    min_price_increment: int
    display_factor: int
    unit_of_measure: str
    unit_of_measure_qty: int | None
    min_price_increment_amount: int | None
    contract_multiplier: int | None
    high_limit_price: int | None
    low_limit_price: int | None
    max_price_variation: int | None
    currency: str
    exchange: str
    asset: str
    group: str
    security_type: str
    cfi: str
    maturity_year: int
    maturity_month: int
    match_algorithm: str
    min_trade_vol: int
    max_trade_vol: int
    market_depth: int

    @property
    def tick_size(self) -> float:
        return self.min_price_increment / PRICE_SCALE

    @property
    def multiplier(self) -> float:
        """Dollars per one point of price per contract."""
        if self.unit_of_measure_qty is not None:
            return self.unit_of_measure_qty / PRICE_SCALE
        if self.contract_multiplier is not None:
            return float(self.contract_multiplier)
        raise ValueError(f"{self.raw_symbol}: the definition gives no contract multiplier")

    @property
    def tick_value(self) -> float:
        return self.tick_size * self.multiplier

    @property
    def expiration(self) -> datetime | None:
        if self.expiration_ns is None:
            return None
        return datetime.fromtimestamp(self.expiration_ns // 1_000_000_000, UTC)


def definitions(records: np.ndarray) -> list[InstrumentDefinition]:
    """Decode definition records of any DBN version (upgraded first when older)."""
    if records.dtype != DEFINITION_DTYPE:
        records = upgrade(records, SCHEMAS["definition"])
    out = []
    for r in records:
        mult = int(r["contract_multiplier"])
        out.append(
            InstrumentDefinition(
                instrument_id=int(r["instrument_id"]),
                raw_symbol=_text(r["raw_symbol"]),
                ts_event=int(r["ts_event"]),
                ts_recv=int(r["ts_recv"]),
                security_update_action=_text(r["security_update_action"]),
                instrument_class=_text(r["instrument_class"]),
                expiration_ns=_ts_or_none(r["expiration"]),
                activation_ns=_ts_or_none(r["activation"]),
                min_price_increment=int(r["min_price_increment"]),
                display_factor=int(r["display_factor"]),
                unit_of_measure=_text(r["unit_of_measure"]),
                unit_of_measure_qty=_fixed_or_none(r["unit_of_measure_qty"]),
                min_price_increment_amount=_fixed_or_none(r["min_price_increment_amount"]),
                contract_multiplier=None if mult == UNDEF_INT32 else mult,
                high_limit_price=_fixed_or_none(r["high_limit_price"]),
                low_limit_price=_fixed_or_none(r["low_limit_price"]),
                max_price_variation=_fixed_or_none(r["max_price_variation"]),
                currency=_text(r["currency"]),
                exchange=_text(r["exchange"]),
                asset=_text(r["asset"]),
                group=_text(r["group"]),
                security_type=_text(r["security_type"]),
                cfi=_text(r["cfi"]),
                maturity_year=int(r["maturity_year"]),
                maturity_month=int(r["maturity_month"]),
                match_algorithm=_text(r["match_algorithm"]),
                min_trade_vol=int(r["min_trade_vol"]),
                max_trade_vol=int(r["max_trade_vol"]),
                market_depth=int(r["market_depth"]),
            )
        )
    return out
