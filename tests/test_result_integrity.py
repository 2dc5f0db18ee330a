"""Results are never lost or silently stale: concurrent robustness.json appenders, evaluation cache integrity."""
from __future__ import annotations

import json
import multiprocessing

import pytest
import torch
from torch import nn

from callbacks import RobustnessEvaluation
from callbacks.batch_cache import BatchCache, _checksum
from callbacks.report import append_json
from experiments.cli import main
from tests.test_cli import SHORT, SYNTHETIC, csv_logger
from tests.test_evaluate import EVAL


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


# -- the evaluation cache ------------------------------------------------------------------
SHAPES = {"samples": (), "robust": (5,)}


def _cache_and_batch(tmp_path):
    torch.manual_seed(0)
    cache = BatchCache(tmp_path, nn.Linear(4, 3), {"attacks": ["pgd"], "seed": 0}, SHAPES)
    x, y = torch.rand(8, 4), torch.arange(8) % 3
    counts = {"samples": torch.tensor(8), "robust": torch.tensor([7, 5, 3, 0, 0])}
    cache.save(0, x, y, counts)
    return cache, x, y, counts


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _rewrite(path, change):
    entry = torch.load(path, weights_only=True)
    change(entry)
    torch.save(entry, path)


def _refused(cache, x, y, why):
    with pytest.warns(UserWarning, match=f"evaluation cache entry {cache._path(0)} is {why}.*; recomputing it"):
        assert cache.load(0, x, y) is None


def test_cache_entry_round_trip_and_other_data_is_stale(tmp_path):
    cache, x, y, counts = _cache_and_batch(tmp_path)
    assert _equal(cache.load(0, x, y), counts)
    _refused(cache, x[:7], y[:7], r"stale \(for a batch of another size")
    x2 = x.clone()
    x2[3, 1] += 0.01
    _refused(cache, x2, y, r"stale \(for other data")
    other = BatchCache(tmp_path, nn.Linear(4, 3), {"attacks": ["pgd"], "seed": 1}, SHAPES)
    other.folder.mkdir(parents=True)
    cache._path(0).rename(other._path(0))  # an entry moved into another key's folder
    _refused(other, x, y, r"stale \(written for other settings")


def test_corrupt_truncated_and_forged_entries_are_named_and_recomputed(tmp_path):
    cache, x, y, counts = _cache_and_batch(tmp_path)
    path = cache._path(0)
    _rewrite(path, lambda e: e["counts"]["robust"].__setitem__(0, 8))  # edited counts, old checksum
    _refused(cache, x, y, r"corrupt \(checksum mismatch")

    def forge(entry):  # a forger who knows the format: more robust than samples, checksum recomputed
        entry["counts"]["robust"][1] = 9
        entry["checksum"] = _checksum(entry["counts"], entry["header"])
    cache.save(0, x, y, counts)
    _rewrite(path, forge)
    _refused(cache, x, y, r"forged \(a count outside \[0, 8\]")

    def relayout(entry):  # counts of another shape (a cache written by another version), checksum recomputed
        entry["counts"]["robust"] = torch.tensor([1, 2])
        entry["checksum"] = _checksum(entry["counts"], entry["header"])
    cache.save(0, x, y, counts)
    _rewrite(path, relayout)
    _refused(cache, x, y, r"malformed \(counts of other names, shapes or types")

    cache.save(0, x, y, counts)
    path.write_bytes(path.read_bytes()[:100])
    _refused(cache, x, y, r"unreadable")
    path.write_bytes(b"")
    _refused(cache, x, y, r"unreadable")
    cache.save(0, x, y, counts)
    assert _equal(cache.load(0, x, y), counts)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    main(["fit", *SYNTHETIC, *SHORT, *csv_logger(root), "--model.backbone", "mnist_small"])
    return str(next(root.rglob("*.ckpt")))


def test_evaluate_never_reuses_results_of_other_samples(checkpoint, tmp_path, monkeypatch):
    """Each setting that selects the samples changes the key: nothing stale is counted."""
    computed = []
    original = RobustnessEvaluation.count_batch
    monkeypatch.setattr(RobustnessEvaluation, "count_batch",
                        lambda self, m, x, y, b: computed.append(b) or original(self, m, x, y, b))
    common = [*SYNTHETIC, "--model.backbone", "mnist_small", "--ckpt_path", checkpoint, *EVAL,
              "--trainer.default_root_dir", str(tmp_path / "root")]
    logger = ["--trainer.logger", "pytorch_lightning.loggers.CSVLogger", "--trainer.logger.save_dir"]

    def evaluate(name, *extra):
        computed.clear()
        main(["evaluate", *common, *extra, *logger, str(tmp_path / name)])
        (path,) = (tmp_path / name).rglob("robustness.json")
        return json.loads(path.read_text())["evaluations"][0]

    first = evaluate("first")
    assert first["num_samples"] == 96 and computed == list(range(6))
    assert evaluate("again")["rows"] == first["rows"] and computed == []  # same command: all from the cache
    assert evaluate("fewer", "--data.num_test", "90")["num_samples"] == 90 and computed == list(range(6))
    assert evaluate("subset", "--data.test_size", "50")["num_samples"] == 50 and len(computed) == 4
    evaluate("seed", "--data.seed", "1")
    assert computed == list(range(6))

    # the entry of the last evaluation above (--data.seed 1): the newest folder of the cache
    batch = max((tmp_path / "root").rglob("batch_000002.pt"), key=lambda p: p.stat().st_mtime)
    batch.write_bytes(b"not a cache entry")
    with pytest.warns(UserWarning, match=f"evaluation cache entry {batch} is unreadable"):
        evaluate("repaired", "--data.seed", "1")
    assert computed == [2]
