"""The live capture keeps each clock hour as an esml store, uploaded to the model bucket's
data prefix (moto S3), where retraining and `esml data info --store` read it directly.

Data: the shipped real ES file (CME MBO, 2023-12-25 22:00-24:00 UTC: two clock hours),
its opening book snapshot stamped when the hour's first record came, as a live run
receives it."""

from __future__ import annotations

from pathlib import Path

import boto3
import numpy as np
from moto import mock_aws
from typer.testing import CliRunner

from esml.cli.app import app
from esml.data import store
from esml.data.book import BookState, snapshot_end
from esml.engine.capture import HOUR_NS, Capture, _apply_all, s3_uploader
from esml.market.events import F_SNAPSHOT
from esml.market.instruments import ES
from training.retrain_data import collect_sources

BUCKET = "esml-models"


def _depth(events: np.ndarray) -> np.ndarray:
    """The 10-level book after `events` (the book code the engine runs)."""
    book = BookState.new(ES.tick_fixed)
    assert _apply_all(events, *book.arrays) == -1
    return book.depth(10)


def test_each_hour_is_a_store_that_training_and_data_info_read_from_s3(es_events, tmp_path) -> None:
    ev = es_events[es_events["instrument_id"] == np.bincount(es_events["instrument_id"]).argmax()]
    ev = ev.copy()
    opened = snapshot_end(ev)
    ev["ts_recv"][:opened] = ev["ts_recv"][opened]
    hours = ev["ts_recv"].astype(np.int64) // HOUR_NS
    second = hours == hours.max()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        fail = {"left": 1}

        def flaky(folder: Path) -> None:  # S3 refuses the first upload once
            if fail["left"]:
                fail["left"] -= 1
                raise ConnectionError("S3 unreachable (test)")
            s3_uploader(s3, BUCKET, "data/")(folder)

        cap = Capture(tmp_path / "capture", "ESH4", flaky)
        for chunk in np.array_split(ev, 97):  # the live loop's small chunks
            cap.add(chunk)
        cap.close()
        assert [p.name for p in cap.written] == ["20231225-22", "20231225-23"]
        assert cap.not_uploaded == []  # the refused hour went up with the next one
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
        assert "data/live/ESH4/20231225-23/_manifest.json" in keys
        part = "data/live/ESH4/20231225-23/schema=mbo/instrument=ESH4/date=2023-12-26/"
        assert any(k.startswith(part) and k.endswith(".parquet") for k in keys)
        # retraining's data channel: the data prefix, downloaded as it is
        channel = tmp_path / "channel"
        for k in keys:
            (channel / k).parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(BUCKET, k, str(channel / k))
    sources, skipped = collect_sources([channel / "data"])
    assert not skipped and len(sources) == 2
    late = sources[1]
    snap = late.events[late.events["flags"] & F_SNAPSHOT != 0]
    # the later hour starts from the book at the top of the hour, then its own records
    assert int(snap["ts_recv"].max()) == int(hours.max()) * HOUR_NS
    np.testing.assert_array_equal(late.events[len(snap) :], ev[second])
    np.testing.assert_array_equal(sources[0].events, ev[~second])
    # replayed alone, the later hour ends on the same 10-level book as the whole stream
    np.testing.assert_array_equal(_depth(late.events), _depth(ev))
    # a person reads one hour with `esml data info --store`
    out = CliRunner().invoke(app, ["data", "info", "--store",
                                   str(channel / "data/live/ESH4/20231225-23")])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "ESH4" in out.output and "mbo" in out.output
    info = store.info(channel / "data/live/ESH4/20231225-23")
    assert not info.problems and info.rows[0].rows == len(late.events)
