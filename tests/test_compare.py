"""`advtrain compare` on real tiny runs of two defences; provenance in every result file."""
from __future__ import annotations

import base64
import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from matplotlib.image import imread

from experiments.cli import main
from tests.conftest import REPO
from tests.test_cli import SHORT, SYNTHETIC, csv_logger

SWEEP = ["--trainer.callbacks+=callbacks.RobustnessEvaluation", "--trainer.callbacks.attacks",
         '[{"name": "pgd", "steps": 3}, {"name": "fgsm"}]', "--trainer.callbacks.epsilons", "[0.1, 0.2]",
         "--trainer.callbacks.masking_checks", "false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A clean and an FGSM-trained model (synthetic data, 4 steps each), swept at eps 0.1 and 0.2."""
    root = tmp_path_factory.mktemp("runs")
    for name, defence in (("clean", []), ("fgsm_at", ["--model.objective", "adversarial", "--model.attack",
                                                      '{"name": "fgsm", "eps": 0.2}'])):
        main(["fit", *SYNTHETIC, *SHORT, *csv_logger(root / name), *SWEEP, "--model.backbone", "mnist_small",
              "--trainer.limit_train_batches", "4", *defence])
    return root


def result_of(root: Path) -> dict:
    (path,) = root.rglob("robustness.json")
    return json.loads(path.read_text())["evaluations"][-1]


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.links, self.rows, self.headers = [], [], [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.rows += tag == "tr"
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if attrs.get(key) and not attrs[key].startswith("data:"):
                self.links.append(attrs[key])


@pytest.mark.slow
def test_compare_two_defences(runs, tmp_path, capsys):
    # a third evaluation on another eps grid must land in its own table
    ckpt = next((runs / "fgsm_at").rglob("*.ckpt"))
    main(["evaluate", *SYNTHETIC, *csv_logger(runs / "eval"), "--model.backbone", "mnist_small",
          "--ckpt_path", str(ckpt), "--attacks", '[{"name": "pgd", "steps": 3}]', "--epsilons", "[0.05, 0.3]",
          "--resume", "false", "--trainer.enable_progress_bar", "false"])
    out = tmp_path / "leaderboard"
    main(["compare", str(runs / "clean"), str(runs / "fgsm*"), str(runs / "eval"), "--out", str(out)])
    printed = capsys.readouterr().out

    clean, fgsm = result_of(runs / "clean"), result_of(runs / "fgsm_at")
    with (out / "leaderboard.csv").open() as f:
        rows = list(csv.DictReader(f))
    tables = {r["table"] for r in rows}
    assert tables == {"Synthetic, test split, linf, eps 0.1, 0.2", "Synthetic, test split, linf, eps 0.05, 0.3"}
    main_rows = [r for r in rows if r["table"].endswith("0.1, 0.2")]
    assert sorted(r["objective"] for r in main_rows) == ["adversarial", "clean"]
    for result in (clean, fgsm):
        (row,) = [r for r in main_rows if r["objective"] == result["model"]["objective"]]
        acc = {(r["attack"], r["eps"]): r["accuracy"] for r in result["rows"]}
        assert float(row["clean"]) == pytest.approx(result["clean_accuracy"])
        assert float(row["pgd3 @0.1"]) == pytest.approx(acc[("pgd(steps=3)", 0.1)])
        assert float(row["fgsm @0.2"]) == pytest.approx(acc[("fgsm", 0.2)])
        assert float(row["worst @0.2"]) == pytest.approx(acc[("worst_case", 0.2)])
        assert row["n"] == "96" and row["evaluation"] == "adaptive (white-box)"
    worst = [float(r["worst @0.2"]) for r in main_rows]
    assert worst == sorted(worst, reverse=True), "best worst case first"
    (other,) = [r for r in rows if r["table"].endswith("0.05, 0.3")]
    assert other["pgd3 @0.3"] and not other["pgd3 @0.1"] and not other["fgsm @0.2"], "eps grids never share a column"
    assert main_rows[0]["pgd3 @0.3"] == ""

    markdown = (out / "leaderboard.md").read_text()
    assert markdown.count("\n## ") == 2 and markdown.strip() in printed
    assert f"{100 * clean['clean_accuracy']:.2f}" in markdown

    png = (out / "robustness_vs_eps.png").read_bytes()
    image = imread(out / "robustness_vs_eps.png")
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 300

    page = Page()
    page.feed((out / "leaderboard.html").read_text())
    page.close()
    assert page.tags.count("table") == 2 and page.rows == 2 + 3  # header rows + one per model
    (src,) = page.images
    assert src.startswith("data:image/png;base64,") and base64.b64decode(src.split(",", 1)[1]) == png
    assert page.links == [] and "script" in page.tags, "self-contained: no external resources, sorting inline"


def test_compare_without_results_names_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="no evaluations found.*advtrain compare runs/advtrain"):
        main(["compare", str(tmp_path), "--out", str(tmp_path / "out")])


@pytest.mark.slow
def test_every_result_file_has_provenance(runs, tmp_path):
    ckpt = next((runs / "clean").rglob("*.ckpt"))
    fingerprint = result_of(runs / "clean")["provenance"]["checkpoint"]["fingerprint"]
    main(["test", *SYNTHETIC, *csv_logger(tmp_path), "--model.backbone", "mnist_small", "--ckpt_path", str(ckpt),
          "--trainer.enable_progress_bar", "false",
          "--trainer.callbacks+=callbacks.PerturbationScore", "--trainer.callbacks.num_samples", "8",
          "--trainer.callbacks.attack", '{"name": "l2_iterative_targeted", "max_steps": 5}',
          "--trainer.callbacks+=callbacks.PostTrainEvaluation", "--trainer.callbacks.num_samples", "4",
          "--trainer.callbacks.defence", '{"steps": 1, "samples_per_class": 2}',
          "--trainer.callbacks.attack", '{"name": "pgd", "eps": 0.1, "steps": 2}'])
    for name in ("perturbation_score.json", "post_train.json"):
        (path,) = tmp_path.rglob(name)
        prov = json.loads(path.read_text())["evaluations"][0]["provenance"]
        assert prov["checkpoint"]["path"] == str(ckpt.resolve()) and prov["checkpoint"]["fingerprint"] == fingerprint
        assert prov["checkpoint"]["global_step"] == 4 and prov["training_run"]["id"] == ckpt.parents[1].name
        assert prov["data"]["split"] == "test" and prov["world_size"] == 1
    # compare lists the post-train defence as non-adaptive, with its defended numbers
    main(["compare", str(tmp_path), "--out", str(tmp_path / "board")])
    with (tmp_path / "board" / "leaderboard.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    (result,) = json.loads(next(tmp_path.rglob("post_train.json")).read_text())["evaluations"]
    assert row["evaluation"] == "non-adaptive" and row["defence"] == "clean + post-train"
    assert float(row["worst @0.1"]) == pytest.approx(result["robust_accuracy_post_train"])
    assert float(row["clean"]) == pytest.approx(result["clean_accuracy_post_train"])


@pytest.mark.slow
def test_sweep_file_commands_are_valid_advtrain_fit_runs(capsys, monkeypatch):
    """Each grid point of the W&B sweep, expanded as the agent does, is a valid `advtrain fit` config."""
    import itertools

    import yaml

    monkeypatch.chdir(REPO)
    sweep = yaml.safe_load((REPO / "experiments" / "sweeps" / "mnist_objective_eps.yaml").read_text())
    assert sweep["method"] == "grid" and sweep["metric"]["name"] == "robust/worst/eps_0.3"
    names = list(sweep["parameters"])
    grid = list(itertools.product(*(sweep["parameters"][n]["values"] for n in names)))
    assert len(grid) == 6
    for values in grid:
        args = [f"--{n}={v}" for n, v in zip(names, values)]
        command = [a for a in sweep["command"] if a != "${env}"]
        assert command[0] == "advtrain" and command[1] == "fit"
        argv = [x for a in command[1:] for x in (args if a == "${args}" else [a])]
        with pytest.raises(SystemExit):
            main([*argv, "--print_config"])
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["objective"] == values[0]
        assert printed["model"]["attack"] == yaml.safe_load(values[1])
