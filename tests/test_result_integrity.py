"""Results are never lost or silently stale: concurrent robustness.json appenders, evaluation cache integrity."""
from __future__ import annotations

import json
import multiprocessing

from callbacks.report import append_json


def _append_many(path, writer: int, n: int) -> None:
    for i in range(n):
        append_json(path, {"writer": writer, "i": i})


def test_concurrent_appenders_lose_no_result(tmp_path):
    path = tmp_path / "robustness.json"
    ctx = multiprocessing.get_context("fork")  # real separate processes
    writers = [ctx.Process(target=_append_many, args=(path, w, 150)) for w in range(2)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(timeout=120)
        assert p.exitcode == 0
    entries = json.loads(path.read_text())["evaluations"]
    assert sorted((e["writer"], e["i"]) for e in entries) == [(w, i) for w in range(2) for i in range(150)]
