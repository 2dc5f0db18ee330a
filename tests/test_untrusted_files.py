"""Untrusted files never run code; bad checkpoints and models that do not fit the data are clear errors.

A crafted pickle is served by a real ``http.server`` on 127.0.0.1 and written to disk; its
payload would create a marker file, which must never appear.
"""
from __future__ import annotations

import http.server
import sys
import threading
from functools import partial
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from attacks import create_attack
from datamodules import SyntheticDataModule
from experiments.cli import main
from experiments.trainer import EvaluatingTrainer
from lightning_modules import AdversarialClassifier
from lightning_modules.checkpoints import CheckpointError, load_classifier, read_checkpoint
from tests.test_cli import SYNTHETIC, csv_logger

MNIST_LIKE = ["--data.input_shape", "[1, 28, 28]"]


def save_checkpoint(path: Path, **hparams) -> Path:
    """A real advtrain checkpoint (Lightning's own format) of an untrained small model."""
    model = AdversarialClassifier(**{"backbone": "mnist_small", "mean": (0.5,), "std": (0.25,), **hparams})
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.strategy.connect(model)
    trainer.save_checkpoint(path)
    return path


class Payload:
    """Unpickling this object (weights_only=False) creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture
def crafted(tmp_path):
    """(path of a checkpoint carrying the payload, marker path): a valid checkpoint plus one pickled object."""
    marker = tmp_path / "PAYLOAD_RAN"
    good = torch.load(save_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    path = tmp_path / "site" / "x.ckpt"
    path.parent.mkdir()
    torch.save({**good, "extra": Payload(marker)}, path)
    return path, marker


@pytest.fixture
def server(crafted):
    """A real HTTP server on 127.0.0.1 serving the crafted checkpoint's folder; counts requests."""
    path, _ = crafted
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(path.parent)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{path.name}", requests
    httpd.shutdown()
    httpd.server_close()


def test_crafted_pickle_is_really_a_payload(crafted):
    """The fixture is real: an unrestricted load runs it (so its absence below means something)."""
    path, marker = crafted
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_url_ckpt_path_is_refused_without_running_the_payload(crafted, server, tmp_path):
    url, requests = server
    _, marker = crafted
    with pytest.raises(CheckpointError, match=r"is a URL.*Download it first \(curl -fL -o model.ckpt"):
        main(["test", *SYNTHETIC, *MNIST_LIKE, *csv_logger(tmp_path / "run"), "--ckpt_path", url])
    assert not marker.exists() and requests == []  # nothing ran, nothing was even fetched


def test_url_transfer_source_is_refused_without_running_the_payload(crafted, server):
    url, _ = server
    _, marker = crafted
    model = load_classifier(save_checkpoint(crafted[0].parent.parent / "target.ckpt"))
    attack = create_attack({"name": "transfer", "source": url, "eps": 0.1})
    with pytest.raises(CheckpointError, match="is a URL"):
        attack(model, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))
    with pytest.raises(CheckpointError, match="is a URL"):
        main(["transfer_matrix", *SYNTHETIC, *MNIST_LIKE, *csv_logger(crafted[0].parent.parent / "matrix"),
              "--checkpoints", f"[{url}, {url}]"])
    assert not marker.exists()


def test_local_crafted_pickle_is_refused_everywhere(crafted, tmp_path):
    path, marker = crafted
    with pytest.raises(CheckpointError, match=f"checkpoint {path} holds Python objects .*weights_only=True"):
        load_classifier(path)
    with pytest.raises(CheckpointError, match="holds Python objects"):
        main(["test", *SYNTHETIC, *MNIST_LIKE, *csv_logger(tmp_path / "run"), "--ckpt_path", str(path)])
    trainer = EvaluatingTrainer(logger=False, enable_progress_bar=False, accelerator="cpu", default_root_dir=tmp_path,
                         inference_mode=False)
    with pytest.raises(CheckpointError, match="holds Python objects"):  # Lightning's own load, in the suite's Trainer
        trainer.test(AdversarialClassifier(backbone="mnist_small", mean=(0.5,), std=(0.25,)),
                     datamodule=SyntheticDataModule(num_test=8), ckpt_path=str(path))
    assert not marker.exists()


def test_hyperparameter_class_paths_outside_the_project_are_never_imported(tmp_path, monkeypatch):
    """A checkpoint naming a module whose import has a side effect: refused before the import."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Evil: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for hparams in ({"_class_path": "evil_module.Evil"},
                    {"attack": {"class_path": "evil_module.Evil", "init_args": {}}},
                    {"val_attack": {"class_path": "os.system"}}):
        path = save_checkpoint(tmp_path / "hp.ckpt")
        ckpt = torch.load(path, weights_only=True)
        ckpt["hyper_parameters"].update(hparams)
        torch.save(ckpt, path)
        with pytest.raises(ValueError, match="outside the project's packages .*refused without importing it"):
            load_classifier(path)
        with pytest.raises(ValueError, match="outside the project's packages"):
            main(["test", *SYNTHETIC, *MNIST_LIKE, *csv_logger(tmp_path / "run"), "--ckpt_path", str(path)])
        if "attack" in hparams:  # even Lightning's plain load_from_checkpoint, through the attack registry
            with pytest.raises(ValueError, match="refused without importing it"):
                AdversarialClassifier.load_from_checkpoint(path, weights_only=True)
    assert not marker.exists() and "evil_module" not in sys.modules


@pytest.mark.parametrize("content,why", [(b"", "is empty"), (b"epoch,loss\n1,0.5\n", "is not a torch checkpoint"),
                                         (None, "is truncated or corrupt"), ("list", "is not a Lightning checkpoint")])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, content, why):
    path = tmp_path / "bad.ckpt"
    if content is None:  # the first half of a real checkpoint
        good = save_checkpoint(tmp_path / "good.ckpt").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    message = str(err.value)
    assert why in message and str(path) in message and "\n" not in message
    with pytest.raises(CheckpointError, match=why):
        main(["test", *SYNTHETIC, *MNIST_LIKE, *csv_logger(tmp_path / "run"), "--ckpt_path", str(path)])


def test_transfer_source_for_other_data_is_refused(tmp_path):
    """A 3-channel, 100-class source must not silently attack 1-channel, 10-class (MNIST-shaped) data."""
    source = save_checkpoint(tmp_path / "cifar100.ckpt", backbone="preact_resnet18", num_classes=100,
                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    target = load_classifier(save_checkpoint(tmp_path / "mnist.ckpt"))
    attack = create_attack({"name": "transfer", "source": str(source), "eps": 0.1})
    with pytest.raises(ValueError, match=r"transfer source .*cifar100.ckpt .*3-channel images and predicts 100 "
                                         r"classes but the dataset has 10 classes and images shaped \(1, 28, 28\)"):
        attack(target, torch.rand(2, 1, 28, 28), torch.tensor([0, 1]))


def test_ckpt_path_for_other_data_is_an_error_naming_both(tmp_path):
    path = save_checkpoint(tmp_path / "c100.ckpt", num_classes=100, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    with pytest.raises(ValueError, match=r"c100.ckpt was trained for 100 classes on 3-channel images, but the data "
                                         r"has 10 classes and 1-channel images"):
        main(["test", *SYNTHETIC, *MNIST_LIKE, *csv_logger(tmp_path / "run"), "--ckpt_path", str(path)])


def test_model_that_does_not_fit_the_data_fails_before_training(tmp_path):
    """mnist_small expects 28x28 inputs: on 3x32x32 data it must fail in setup, naming both shapes."""
    with pytest.raises(ValueError, match=r"backbone mnist_small\) takes 3-channel images .* images shaped "
                                         r"\(3, 32, 32\) \(.*\): use a backbone made for this image size"):
        main(["fit", *SYNTHETIC, "--data.input_shape", "[3, 32, 32]", *csv_logger(tmp_path),
              "--model.backbone", "mnist_small", "--trainer.max_epochs", "1"])
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.csv"))
