"""One short training run per new dataset through the CLI, from its experiments/data YAML, on
tiny fixtures in torchvision's (or the layout's) on-disk format: offline, no downloads."""
from __future__ import annotations

import json
import re

import pytest

from experiments.cli import main
from tests.conftest import TWO_BATCHES, REPO
from tests.test_data_pipeline import write_cifar100, write_fashion_mnist, write_imagenet, write_oxford_pet

RUN = [*TWO_BATCHES, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
       "--trainer.enable_model_summary", "false", "--data.num_workers", "0", "--data.batch_size", "4"]

CASES = {
    # name: (fixture writer, extra args shrinking the run; the YAML's model and options stay)
    "fashion_mnist": (write_fashion_mnist, ["--data.download", "false", "--data.val_size", "8"]),
    "cifar100": (lambda root: write_cifar100(root, n_train=24, n_test=2),
                 ["--data.download", "false", "--data.val_size", "4",
                  "--model.attack", "{name: pgd, eps: 8/255, alpha: 2/255, steps: 2}", "--model.val_attack", "null"]),
    "oxford_pet": (lambda root: write_oxford_pet(root, per_breed=(2, 1)),
                   ["--data.download", "false", "--data.image_size", "32"]),
    "imagenet_subset": (lambda root: write_imagenet(root, per_class=(4, 2)),
                        ["--data.num_classes", "2", "--data.image_size", "32", "--data.val_size", "2",
                         "--model.backbone", "resnet18"]),
}


def test_every_data_experiment_has_a_run():
    assert sorted(p.stem for p in (REPO / "experiments" / "data").glob("*.yaml")) == sorted(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_one_batch_from_the_data_yaml(name, tmp_path):
    write, extra = CASES[name]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write(data_dir)
    root = tmp_path / "run"
    main(["fit", "--config", str(REPO / "experiments" / "data" / f"{name}.yaml"), "--data.data_dir", str(data_dir),
          "--trainer.default_root_dir", str(root), *RUN, *extra])
    results = [e for f in root.rglob("robustness.json") for e in json.loads(f.read_text())["evaluations"]]
    assert len(results) == 2, "the YAML's APGD evaluation on a subset, then its sweep"
    for result in results:
        assert result["stage"] == "fit_end" and result["num_samples"] > 0
        assert result["data"]["data_dir"] == str(data_dir)


BASE_OPTIONS = ("augment:", "balance:", "split:", "in_memory:", "pin_memory:", "persistent_workers:",
                "prefetch_factor:", "train_size:", "test_size:", "seed:", "batch_size:", "num_workers:")


@pytest.mark.parametrize("name", ["MNISTDataModule", "FashionMNISTDataModule", "CIFAR100DataModule",
                                  "OxfordPetDataModule", "ImageNetSubsetDataModule", "CatsVsDogsDataModule",
                                  "TinyImageNetDataModule", "ImageFolderDataModule", "SyntheticDataModule"])
def test_print_config_shows_the_base_options(name, capsys):
    """Subclasses pass the base options through **kwargs; the CLI must still list every one."""
    with pytest.raises(SystemExit):
        main(["fit", "--data", f"datamodules.{name}", "--print_config"])
    after = capsys.readouterr().out.split("\ndata:\n", 1)[1]
    data = re.split(r"\n(?=\S)", after, maxsplit=1)[0]  # up to the next top-level key
    missing = [option for option in BASE_OPTIONS if f"    {option}" not in data]
    assert not missing, f"{name} hides {missing} from the CLI"
