"""Where each feature family keeps its state: fixed offsets in one flat float64 vector.

Why one vector: the compiled kernel hands the feature state to `update` and `compute` as
two arrays (this vector and the per-second ring), so every family's scalars and buffers
live at fixed offsets here. One map keeps the families from overlapping; numba reads the
offsets as compile-time constants.
"""

from __future__ import annotations


class _Slots:
    """Hands out consecutive offsets in the state vector, in declaration order."""

    def __init__(self) -> None:
        self.size = 0

    def take(self, n: int = 1) -> int:
        start = self.size
        self.size += n
        return start


_s = _Slots()

# --- the per-second ring: the state as it stood at the end of each second -----------------
RING = 512  # seconds of history: the longest lookback (300 s) plus room
R_MID = 0  # mid, ticks
R_SUMMID = 1  # running sum of closed-second mids (moving averages by difference)
R_RV = 2  # running sum of squared one-second mid changes
R_ABSMOVE = 3  # running sum of absolute one-second mid changes
R_VOL = 4  # the running totals below mirror S_CUM .. S_CUM + N_CUM - 1, in this order
R_BUY = 5
R_SELL = 6
R_TRADES = 7
R_OFI = 8
R_DEPL_BID = 9
R_DEPL_ASK = 10
N_RING_CH = 11
N_CUM = N_RING_CH - R_VOL

# --- clock and mid -------------------------------------------------------------------------
S_LAST_SEC = _s.take()  # the open second (-1 before the first event)
S_FIRST_SEC = _s.take()
S_UTC_OFF = _s.take()  # Chicago's UTC offset in the open second, seconds
S_MID = _s.take()  # last valid mid, ticks
S_HAS_MID = _s.take()

# --- running totals (contracts), snapshotted into the ring each second --------------------
S_CUM = _s.take(N_CUM)
S_CUM_VOL = S_CUM  # traded contracts
S_CUM_BUY = S_CUM + 1  # bought by the aggressor
S_CUM_SELL = S_CUM + 2
S_CUM_TRADES = S_CUM + 3  # trade count
S_CUM_OFI = S_CUM + 4  # order-flow imbalance at the touch
S_CUM_DEPL_BID = S_CUM + 5  # cancelled at the best bid (cancels and fills alike)
S_CUM_DEPL_ASK = S_CUM + 6

# --- exponentially decayed trade flow ------------------------------------------------------
S_BUY10 = _s.take()
S_SELL10 = _s.take()
S_BUY60 = _s.take()
S_SELL60 = _s.take()
S_TRADES10 = _s.take()
S_LAST_TRADE_NS = _s.take()

# --- the previous touch, for Cont-Kukanov-Stoikov order-flow imbalance ---------------------
S_PREV_BP = _s.take()
S_PREV_BS = _s.take()
S_PREV_AP = _s.take()
S_PREV_AS = _s.take()
S_PREV_OK = _s.take()

# --- the trading session (17:00 CT to 16:00 CT) --------------------------------------------
S_SESSION = _s.take()  # session number, -1 before the first event
S_SESS_PV = _s.take()  # sum of price (ticks) x size of its trades
S_SESS_VOL = _s.take()
S_SESS_HI = _s.take()  # mid high and low, ticks
S_SESS_LO = _s.take()
S_SESS_HAS_MID = _s.take()
S_SESS_START = _s.take()  # second of its first event

# --- volume by time of day: 15-minute buckets of Chicago time, learnt from past days -------
TOD_BUCKET_S = 900
N_TOD = 86_400 // TOD_BUCKET_S
S_TB_ID = _s.take()  # the bucket being observed (local bucket number), -1 none
S_TB_VOL0 = _s.take()  # running volume before its first trade
S_TB_FROM = _s.take()  # local second of its first trade
S_TB_TO = _s.take()  # local second of its latest trade
TOD_NORM = _s.take(N_TOD)  # past days' volume per second in each bucket
TOD_DAYS = _s.take(N_TOD)  # how many past days each bucket has seen

# --- the last trades: a ring of rows, rolling max/min deques for the PSO, VPIN buckets -----
TR_N = 512  # rows kept: more than the longest trade lookback (500)
TR_MID = 0  # mid at the trade, ticks
TR_PX = 1  # trade price, ticks
TR_CSIGN = 2  # running aggressor-signed volume
TR_CVOL = 3  # running volume
TR_CSQ = 4  # running sum of squared trade-to-trade mid changes
TR_COLS = 5
S_NTR = _s.take()  # trades seen
TR = _s.take(TR_N * TR_COLS)
S_PSO = _s.take()
S_DQX_HEAD = _s.take()  # deques of trade numbers, as [head, tail) over circular buffers
S_DQX_TAIL = _s.take()
S_DQN_HEAD = _s.take()
S_DQN_TAIL = _s.take()
DQX = _s.take(TR_N)
DQN = _s.take(TR_N)
VP_RING = 64  # closed volume buckets kept: more than VPIN's window
S_VP_FILL = _s.take()
S_VP_BUY = _s.take()
S_VP_SELL = _s.take()
S_VP_N = _s.take()  # closed buckets
VP_CUM = _s.take(VP_RING)  # running sum of |buy - sell| per closed bucket

# --- one-minute trade bars and their technicals --------------------------------------------
BAR_RING = 32  # bars kept: more than the longest bar lookback (30)
B_CLOSE = 0
B_VOL = 1
B_RANGE = 2
B_COLS = 3
N_BAR_FEATURES = 11
S_BAR_MIN = _s.take()  # the open bar's minute (UTC minute number), -1 none
S_BAR_O = _s.take()
S_BAR_H = _s.take()
S_BAR_L = _s.take()
S_BAR_C = _s.take()
S_BAR_V = _s.take()
S_BAR_N = _s.take()  # closed bars
S_BAR_END_MIN = _s.take()  # the last closed bar ends at this minute
S_EMA12 = _s.take()
S_EMA26 = _s.take()
S_MACD_SIG = _s.take()
S_RSI_GAIN = _s.take()
S_RSI_LOSS = _s.take()
S_ATR = _s.take()
BARS = _s.take(BAR_RING * B_COLS)
BAR_OUT = _s.take(N_BAR_FEATURES)  # the technicals of the last closed bar
S_RANGE_EXP = _s.take()

N_STATE = _s.size
