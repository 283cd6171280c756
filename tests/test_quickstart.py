"""docs/quickstart.md, run: every fenced ```bash block, in order, in a scratch folder that
sees the repository's data/ and models/, with `esml` from this interpreter's environment.

Each block says how it runs, in its info string:
    quickstart               run; it must exit 0
    quickstart:serve         a server: started, asked over HTTP, stopped
    quickstart:live          `esml sim tradovate` + `esml live` against it
    quickstart:elsewhere=T   too slow here; the named test T runs the same command
Durations are cut short (`--for 90s` runs 10 s); nothing else is changed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT

DOC = ROOT / "docs" / "quickstart.md"
BLOCK = re.compile(r"^```bash ([^\n]*)\n(.*?)^```", re.M | re.S)
KINDS = ("quickstart", "quickstart:serve", "quickstart:live", "quickstart:elsewhere")
SHORTER = {"--for 30s": "--for 20s"}  # the test needs the orders, not the whole half minute


def _blocks(kind: str) -> list[tuple[str, str]]:
    return [(info, body) for info, body in BLOCK.findall(DOC.read_text())
            if info.split("=")[0].strip() == kind]  # fmt: skip


def _workdir(tmp_path: Path) -> Path:
    for name in ("data", "models", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT), "COLUMNS": "160"}  # fmt: skip


def _shorter(body: str) -> str:
    for long, short in SHORTER.items():
        body = body.replace(long, short)
    return body


def _run(body: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", _shorter(body)], cwd=cwd,
                          env=_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, f"{body}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_block_says_how_it_runs() -> None:
    infos = [info.split("=")[0].strip() for info, _ in BLOCK.findall(DOC.read_text())]
    assert infos and set(infos) <= set(KINDS), infos
    assert "```sh" not in DOC.read_text() and "```shell" not in DOC.read_text()
    for info, _ in _blocks("quickstart:elsewhere"):
        path, name = info.split("=", 1)[1].split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), info


def test_the_quickstart_runs(tmp_path: Path) -> None:
    """Blocks in document order: the backtest's journal is what the monitor serves."""
    work = _workdir(tmp_path)
    text = DOC.read_text()
    for info, body in BLOCK.findall(text):
        kind = info.split("=")[0].strip()
        if kind == "quickstart":
            _run(body, work)
        elif kind == "quickstart:serve":
            _serve(body, work)
    out = work / "runs" / "backtest"
    assert (out / "journal.sqlite").is_file() and (out / "plotly.min.js").is_file()
    report = out / "esh4-glbx-mdp3-20231225.mbo.dbn.zst.html"
    assert report.stat().st_size < 500_000  # plotly.js is beside it, not in it


def _serve(body: str, cwd: Path) -> None:
    """Start the server, wait for its page and state, check the state has the backtest's
    trades, stop it."""
    port = _free_port()
    command = re.sub(r"--port \d+", f"--port {port}", body.strip())
    server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True, text=True)  # fmt: skip
    try:
        state = _poll(f"http://127.0.0.1:{port}/api/state", server)
        assert len(state["trades"]) > 0 and state["model"]["champion"] == "zscore_regime"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/").read().decode()
        assert "esml monitor" in page
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(20)


def _poll(url: str, server: subprocess.Popen[str]) -> dict:
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            return json.loads(urllib.request.urlopen(url, timeout=5).read())
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.2)


def test_the_tradovate_section_runs(tmp_path: Path) -> None:
    blocks = _blocks("quickstart:live")
    assert blocks, "docs/quickstart.md has no quickstart:live block"
    work = _workdir(tmp_path)
    for _, body in blocks:
        _run(body, work)
    with sqlite3.connect(work / "runs" / "live" / "journal.sqlite") as db:
        sent = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    assert sent > 0, "the live run against the simulator sent no order"

