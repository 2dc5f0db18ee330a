"""Bad input is a clear error or is counted right: DDP test metrics, corrupt image files, missing datasets."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from datamodules import CatsVsDogsDataModule, ImageFolderDataModule
from datamodules.image_files import CorruptImageError
from experiments.cli import main
from tests.conftest import REPO
from tests.test_cli import SHORT, SWEEP, SYNTHETIC, _advtrain, csv_logger, evaluations


def _test_metrics(root) -> dict[str, float]:
    (path,) = root.rglob("metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("test/clean_acc")]
    return {k: float(v) for k, v in rows[-1].items() if k.startswith("test/") and v}


@pytest.mark.slow
def test_ddp_test_metrics_count_each_sample_once(tmp_path):
    """301 test samples over 2 gloo processes: Lightning's padding sampler would count 302."""
    data = SYNTHETIC[:4] + ["--data.num_test", "301", "--data.batch_size", "32"]
    common = ["test", *data, "--model.backbone", "mnist_small", "--trainer.accelerator", "cpu",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    accuracy = {}
    for devices in ("1", "2"):
        root = tmp_path / devices
        extra = ["--trainer.devices", devices] + (["--trainer.strategy", "ddp"] if devices == "2" else [])
        _advtrain([*common, *csv_logger(root), *extra], tmp_path)  # untrained: accuracy neither 0 nor 1
        accuracy[devices] = _test_metrics(root)["test/clean_acc"]
    correct = accuracy["1"] * 301
    assert 0 < accuracy["1"] < 1 and abs(correct - round(correct)) < 1e-3
    assert accuracy["2"] == pytest.approx(accuracy["1"], abs=1e-7)


# -- corrupt image files -------------------------------------------------------------------
def _image_folder(root, per_class=4, size=28):
    """An image-folder dataset (2 classes) whose test split holds one truncated JPEG."""
    for split in ("train", "test"):
        for c, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for k in range(per_class):
                pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
                Image.fromarray(pixels.numpy()).save(root / split / cls / f"{k}.jpg", quality=95)
    bad = root / "test" / "b" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    return bad


def test_a_corrupt_file_is_named_or_skipped_and_counted(tmp_path):
    bad = _image_folder(tmp_path)
    strict = ImageFolderDataModule(str(tmp_path), val_size=2, num_workers=0)
    test = strict.dataset("test")
    with pytest.raises(CorruptImageError, match=f"cannot decode image file {bad} .*--data.skip_corrupt true"):
        [test[i] for i in range(len(test))]
    with pytest.raises(CorruptImageError, match=str(bad)):  # also when decoding everything into memory
        ImageFolderDataModule(str(tmp_path), val_size=2, num_workers=0, in_memory=True).dataset("test")
    with pytest.warns(UserWarning, match=f"skipped 1 unreadable image file\\(s\\) of 8, e.g. {bad}"):
        lenient = ImageFolderDataModule(str(tmp_path), val_size=2, num_workers=0, skip_corrupt=True).dataset("test")
    assert len(lenient) == 7 and lenient.skipped == [str(bad)] and str(bad) not in map(str, lenient.paths)


def test_cats_vs_dogs_skips_under_the_same_option(tmp_path):
    for label, cls in enumerate(("Cat", "Dog")):
        (tmp_path / "PetImages" / cls).mkdir(parents=True)
        for j in range(4):
            Image.new("RGB", (20, 20), (200 * label, 20 * j, 90)).save(tmp_path / "PetImages" / cls / f"{j}.jpg")
    (tmp_path / "PetImages" / "Dog" / "9.jpg").write_bytes(b"")
    with pytest.raises(CorruptImageError, match=r"1 image file\(s\) cannot be decoded, e.g. .*Dog/9.jpg"):
        CatsVsDogsDataModule(str(tmp_path), image_size=12, num_workers=0, skip_corrupt=False).dataset("test")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert len(CatsVsDogsDataModule(str(tmp_path), image_size=12, num_workers=0).all_images()) == 8


def test_truncated_test_image_after_training(tmp_path):
    """The final evaluation after training names the file, or with skip_corrupt evaluates the rest."""
    bad = _image_folder(tmp_path / "data")
    args = ["fit", "--data", "datamodules.ImageFolderDataModule", "--data.data_dir", str(tmp_path / "data"),
            "--data.val_size", "2", "--data.num_workers", "0", "--data.batch_size", "4",
            "--model.backbone", "mnist_small", *SHORT, *SWEEP]
    with pytest.raises(CorruptImageError, match=str(bad)):
        main([*args, *csv_logger(tmp_path / "strict")])
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        main([*args, *csv_logger(tmp_path / "lenient"), "--data.skip_corrupt", "true"])
    (result,) = evaluations(tmp_path / "lenient")
    assert result["stage"] == "fit_end" and result["num_samples"] == 7


# -- missing datasets offline --------------------------------------------------------------
def test_missing_dataset_offline_creates_nothing(tmp_path):
    """Offline (every URL goes to a closed local port): DatasetNotFoundError, and no folder is left behind."""
    script = (
        "import sys\nfrom datamodules import *\n"
        "for cls in (MNISTDataModule, CIFAR10DataModule, OxfordPetDataModule, TinyImageNetDataModule):\n"
        "    try:\n        cls(data_dir=f'{sys.argv[1]}/{cls.__name__}/data').setup('fit')\n"
        "    except DatasetNotFoundError as err:\n        print(cls.__name__, 'download failed' in str(err))\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), **{k: "http://127.0.0.1:9" for k in
                                                      ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}}
    env.pop("no_proxy", None), env.pop("NO_PROXY", None)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [w for cls in ("MNIST", "CIFAR10", "OxfordPet", "TinyImageNet")
                                   for w in (f"{cls}DataModule", "True")]
    assert list(tmp_path.iterdir()) == []
