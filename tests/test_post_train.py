"""Post-train at inference: one cached fine-tune per class pair, order-free, base model untouched,
exact under DDP, and on real MNIST it raises accuracy under PGD crafted on the base model."""
from __future__ import annotations

import json

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from attacks import create_attack
from callbacks import PostTrainEvaluation
from datamodules import MNISTDataModule, SyntheticDataModule
from experiments.cli import main
from lightning_modules import AdversarialClassifier
from lightning_modules.defences.pair_exchange import PairExchange
from lightning_modules.defences.post_train import PostTrain, PostTrainConfig, pair_seed
from tests.conftest import REPO, SHARED_DATASETS, needs_mnist
from tests.invariants import check_threat_model
from tests.test_cli import _advtrain, csv_logger

NEIGHBOUR = {"name": "pgd", "eps": 0.3, "alpha": 0.1, "steps": 5, "random_start": False}
SMALL = {"neighbour_attack": NEIGHBOUR, "steps": 4, "samples_per_class": 16, "lr": 0.05}


@pytest.fixture(scope="module")
def toy(trained_toy, one_torch_thread):
    """The conftest ToyNet (BatchNorm + dropout), its training set, and 48 inputs to defend."""
    model, x, y = trained_toy
    return model, TensorDataset(x, y), x[:48], y[:48]


def distinct_pairs(original: torch.Tensor, neighbour: torch.Tensor) -> set[tuple[int, int]]:
    return {tuple(sorted(p)) for p in zip(original.tolist(), neighbour.tolist()) if p[0] != p[1]}


def test_one_fine_tune_per_distinct_pair_and_the_cache_is_reused(toy):
    model, train, x, _ = toy
    defence = PostTrain(model, train, SMALL)
    pairs = distinct_pairs(*defence.neighbours(x))
    assert len(pairs) >= 2 and len(pairs) < x.shape[0], "the fixture must give several pairs shared by inputs"
    first = defence.predict(x)
    assert defence.fine_tunes == len(pairs) and defence.cache_hits == 0
    second = defence.predict(x)
    assert defence.fine_tunes == len(pairs) and defence.cache_hits == len(pairs)
    assert torch.equal(first, second)


def test_defences_sharing_an_exchange_fine_tune_each_pair_once_with_the_same_answers(toy, tmp_path):
    """Two defences (as two processes would) split the inputs and share one PairExchange folder: each pair is
    fine-tuned by one of them and loaded by the other, and the answers equal one defence's."""
    model, train, x, _ = toy
    alone = PostTrain(model, train, SMALL)
    expected = alone.predict(x)
    first, second = (PostTrain(model, train, SMALL, exchange=PairExchange(tmp_path / "pairs")) for _ in range(2))
    halves = first.predict(x[:24]), second.predict(x[24:])
    assert torch.equal(torch.cat(halves), expected)
    assert first.fine_tunes + second.fine_tunes == alone.fine_tunes == len(distinct_pairs(*alone.neighbours(x)))
    assert second.pairs_loaded > 0, "the fixture must give pairs that both halves need"
    for pair, copy in second._cache.items():  # a loaded copy is bitwise the one its owner fine-tuned
        assert all(torch.equal(p, q) for p, q in zip(copy.state_dict().values(),
                                                      alone.fine_tuned(*pair).state_dict().values()))
    assert not any(p.requires_grad for copy in second._cache.values() for p in copy.parameters())
    first.exchange.remove()
    assert not (tmp_path / "pairs").exists()


def test_without_cache_every_input_is_fine_tuned_with_the_same_answers(toy):
    model, train, x, _ = toy
    cached = PostTrain(model, train, SMALL)
    expected = cached.predict(x)
    original, neighbour = cached.neighbours(x)
    uncached = PostTrain(model, train, {**SMALL, "cache_size": 0})
    assert torch.equal(uncached.predict(x), expected)
    assert uncached.fine_tunes == int((original != neighbour).sum()) > cached.fine_tunes
    lru = PostTrain(model, train, {**SMALL, "cache_size": 1})  # evictions retrain the same copies
    assert torch.equal(lru.predict(x), expected) and len(lru._cache) == 1


@pytest.mark.parametrize("settings", [{}, {"objective": "adversarial", "bn_mode": "train",
                                           "train_attack": {"name": "fgsm_rs", "eps": 0.1}}],
                         ids=["clean-bn_eval", "adversarial-bn_train"])
def test_results_do_not_depend_on_batch_order_or_size(toy, settings):
    model, train, x, _ = toy
    expected = PostTrain(model, train, {**SMALL, **settings}).predict(x)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    shuffled = PostTrain(model, train, {**SMALL, **settings})
    permuted = torch.empty_like(expected)
    permuted[order] = shuffled.predict(x[order])
    assert torch.equal(permuted, expected)
    in_sevens = PostTrain(model, train, {**SMALL, **settings})  # fresh: every pair fine-tuned again, in another order
    assert torch.equal(torch.cat([in_sevens.predict(chunk) for chunk in x.flip(0).split(7)]).flip(0), expected)


def test_pair_seed_and_training_draws_depend_on_the_pair_only(toy):
    model, train, _, _ = toy
    assert pair_seed(0, 1, 3) == pair_seed(0, 3, 1) != pair_seed(1, 1, 3)
    assert pair_seed(0, 1, 3) != pair_seed(0, 1, 2)
    draws = [PostTrain(model, train, SMALL)._training_draws(1, 3, pair_seed(0, 1, 3)) for _ in range(2)]
    for a, b in zip(*draws):
        assert torch.equal(a, b)
    images, labels, rows = draws[0]
    assert rows.shape == (SMALL["steps"], 2 * SMALL["samples_per_class"])
    assert set(labels.tolist()) == {1, 3} and (labels[rows] == 1).sum(1).eq(SMALL["samples_per_class"]).all()


class Constant(nn.Module):
    """Logits that always favour one class, whatever the input."""

    def __init__(self, num_classes: int, favourite: int):
        super().__init__()
        self.logits = torch.zeros(num_classes)
        self.logits[favourite] = 10.0

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_the_answer_is_restricted_to_the_pair(toy):
    model, train, x, _ = toy
    original, x_neighbour = PostTrain(model, train, SMALL).neighbour_inputs(x)
    neighbour = PostTrain(model, train, SMALL).neighbour_class(x_neighbour)
    paired = original != neighbour
    outsider = next(c for c in range(4) if c not in distinct_pairs(original, neighbour).pop())
    for restrict in (True, False):
        defence = PostTrain(model, train, {**SMALL, "restrict_to_pair": restrict})
        defence.fine_tuned = lambda a, b, shift=None: Constant(4, outsider)  # a copy that prefers a third class
        answer = defence.classify(x, original, x_neighbour)
        assert torch.equal(answer[~paired], original[~paired]), "no neighbour: the base model's class"
        in_pair = (answer == original) | (answer == neighbour)
        assert in_pair.all() if restrict else (answer[paired] == outsider).all()
        assert torch.equal(defence.answers(x, original, x_neighbour)[0 if restrict else 1], answer), \
            "answers gives both rules from the same copies"


ADVERSARIAL_FINE_TUNE = {**SMALL, "steps": 10, "objective": "adversarial", "train_attack": {"name": "fgsm_rs", "eps": 0.2}}


def test_the_adaptive_attack_leaves_fewer_robust_samples_than_the_base_model_attack(toy):
    """Same budget (L-inf 0.2): PGD on the base model vs post_train_adaptive, both judged by the real defence
    (the adversarial fine-tuning variant, where post-train raises robust accuracy non-adaptively)."""
    model, train, x, y = toy
    defence = PostTrain(model, train, ADVERSARIAL_FINE_TUNE)
    non_adaptive = create_attack({"name": "pgd", "eps": 0.2, "steps": 10, "seed": 0})(model, x, y)
    adaptive = check_threat_model(create_attack({"name": "post_train_adaptive", "eps": 0.2, "steps": 10, "seed": 0}),
                                  model, x, y, defence=defence)
    with torch.no_grad():
        base_robust = int((model(non_adaptive).argmax(1) == y).sum())
    robust = {name: int((defence.predict(inputs) == y).sum()) for name, inputs in
              (("non-adaptive", non_adaptive), ("adaptive", adaptive))}
    print(f"robust of {len(y)}: base model {base_robust}, post-train {robust}")
    assert base_robust < robust["non-adaptive"], "the fixture must show post-train's non-adaptive gain"
    assert robust["adaptive"] < robust["non-adaptive"], robust
    with pytest.raises(ValueError, match="defence=PostTrain"):
        create_attack({"name": "post_train_adaptive", "eps": 0.2})(model, x, y)


def test_dir_adv_fine_tunes_each_input_on_images_moved_by_its_own_self_attack(toy):
    """The authors' dir_adv: one copy per input with a neighbour (never cached), its training images moved by
    +/- that input's x'' - x' (so pos and neg copies differ), order-free like the per-pair mode."""
    model, train, x, _ = toy
    pos = PostTrain(model, train, {**SMALL, "direction": "pos"})
    original, x_neighbour = pos.neighbour_inputs(x)
    paired = int((original != pos.neighbour_class(x_neighbour)).sum())
    expected = pos.predict(x)
    assert pos.fine_tunes == paired > len(distinct_pairs(original, pos.neighbour_class(x_neighbour)))
    assert pos.cache_hits == 0 and not pos._cache
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1))
    permuted = torch.empty_like(expected)
    permuted[order] = PostTrain(model, train, {**SMALL, "direction": "pos"}).predict(x[order])
    assert torch.equal(permuted, expected)
    rows, (a, b), _ = next(pos.answering_models(x, original, x_neighbour))
    shift = (x_neighbour[rows] - x[rows])[0]
    copies = [PostTrain(model, train, {**SMALL, "direction": d}).fine_tuned(a, b, shift) for d in ("pos", "neg")]
    assert not torch.equal(copies[0].features[0].weight, copies[1].features[0].weight)
    with pytest.raises(ValueError, match="dir_adv"):
        PostTrainConfig(direction="both")


def test_the_base_model_is_never_modified_and_the_copy_is(toy):
    model, train, x, _ = toy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # the caller's mode and flags must come back as they were
    modes = [m.training for m in model.modules()]
    defence = PostTrain(model, train, {**SMALL, "bn_mode": "train", "objective": "adversarial"})
    defence.predict(x)
    assert [m.training for m in model.modules()] == modes
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    a, b = next(iter(defence._cache))
    copy_state = defence.fine_tuned(a, b).state_dict()
    assert not torch.equal(copy_state["features.0.weight"], before["features.0.weight"])
    assert not torch.equal(copy_state["features.1.running_mean"], before["features.1.running_mean"]), \
        "bn_mode train updates the copy's statistics"


def test_training_images_are_indexed_per_class_with_or_without_given_labels(toy):
    model, _, _, _ = toy
    images, labels = torch.rand(10, 1, 8, 8), torch.tensor([2, 0, 1, 2, 2, 0, 3, 1, 3, 0])

    class Plain(Dataset):  # keeps no labels: PostTrain reads them item by item
        def __len__(self):
            return 10

        def __getitem__(self, i):
            return images[i], labels[i]

    for given in (None, labels):
        index = PostTrain(model, Plain(), SMALL, labels=given).class_indices
        assert {c: index[c].tolist() for c in index} == {0: [1, 5, 9], 1: [2, 7], 2: [0, 3, 4], 3: [6, 8]}
    with pytest.raises(ValueError, match="labels for 10 training items"):
        PostTrain(model, Plain(), SMALL, labels=labels[:5])


def test_bad_settings_fail_with_the_fix():
    for settings, message in (({"objective": "nonsense"}, "valid objectives"), ({"optimizer": "nonsense"}, "valid: sgd"),
                              ({"bn_mode": "frozen"}, "eval"), ({"neighbour_attack": "pgdd"}, "valid attacks"),
                              ({"steps": 0}, "steps >= 1")):
        with pytest.raises(ValueError, match=message):
            PostTrainConfig(**settings)
    with pytest.raises(ValueError, match="valid: fit_end"):
        PostTrainEvaluation(run_on=["validation_epoch"])


def test_a_class_missing_from_the_training_set_is_named(toy):
    model, train, x, _ = toy
    only_two = Subset(train, [i for i in range(len(train)) if int(train[i][1]) in (0, 1)])
    defence = PostTrain(model, only_two, SMALL)
    original, x_neighbour = defence.neighbour_inputs(x)
    neighbour = defence.neighbour_class(x_neighbour)
    if not (original > 1).any() and not (neighbour > 1).any():
        pytest.skip("the fixture's inputs only involve classes 0 and 1")
    with pytest.raises(ValueError, match="no image of class"):
        defence.classify(x, original, x_neighbour)


# -- the callback ------------------------------------------------------------------------
FITTED_DATA = {"batch_size": 32, "noise": 0.3, "num_test": 100}  # 100 test samples: uneven over 2 ranks


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A classifier fitted on synthetic data, and its checkpoint for the CLI."""
    root = tmp_path_factory.mktemp("fit")
    dm = SyntheticDataModule(**FITTED_DATA)
    model = AdversarialClassifier(backbone="mnist_small", num_classes=10, mean=dm.mean, std=dm.std,
                                  optimizer="adam", lr=1e-3, weight_decay=0.0)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root)
    trainer.fit(model, dm)
    trainer.save_checkpoint(root / "fitted.ckpt")
    return model.eval(), dm, root / "fitted.ckpt"


CALLBACK = {"attack": {"name": "pgd", "eps": 0.2, "steps": 3}, "batch_size": 16,
            "defence": {"neighbour_attack": {**NEIGHBOUR, "eps": 0.2}, "steps": 2, "samples_per_class": 8}}
ADAPTIVE_CALLBACK = {**CALLBACK, "attack": {"name": "pgd", "eps": 0.12, "steps": 3}, "adaptive": {"steps": 3}}


def test_callback_writes_a_non_adaptive_result_and_defends_predictions(fitted, tmp_path):
    model, dm, _ = fitted
    callback = PostTrainEvaluation(**CALLBACK, num_samples=50)
    trainer = pl.Trainer(logger=CSVLogger(tmp_path, name="run"), callbacks=[callback], inference_mode=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.test(model, dm, verbose=False)
    (result,) = json.loads((tmp_path / "run" / "version_0" / "post_train.json").read_text())["evaluations"]
    assert result["evaluation"] == "non-adaptive" and "NON-ADAPTIVE" in result["threat_model"]
    assert result["num_samples"] == 50 and result["counts"]["samples"] == 50
    rows = {(r["attack"], r["eps"]): r["correct"] for r in result["rows"]}
    assert rows[("base", 0.0)] == result["clean_correct"] and rows[("base", 0.2)] < rows[("base", 0.0)]
    assert rows[("post_train", 0.2)] == result["counts"]["robust_correct_post_train"]
    assert 0 < result["distinct_pairs"]["adversarial"] <= result["fine_tunes_all_processes"] <= 45
    assert "robustness/test/post_train/post_train/eps_0.2" in (tmp_path / "run" / "version_0" / "metrics.csv").read_text()

    predicted = torch.cat(trainer.predict(model, dm))  # the predict hook replaces predict_step's classes
    defence = PostTrain(model.net, dm.dataset("train"), CALLBACK["defence"])
    expected = torch.cat([defence.predict(x) for x, _ in dm.predict_dataloader()])
    assert torch.equal(predicted, expected)


def test_the_adaptive_evaluation_reports_both_attacks_the_worst_case_and_both_answer_rules(fitted, tmp_path):
    model, dm, _ = fitted
    callback = PostTrainEvaluation(**ADAPTIVE_CALLBACK, num_samples=32)
    trainer = pl.Trainer(logger=False, callbacks=[callback], inference_mode=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.test(model, dm, verbose=False)
    result = callback.results[-1]
    c = result["counts"]
    print({k: v for k, v in c.items() if "correct" in k})
    assert result["evaluation"] == "adaptive" and "ADAPTIVE" in result["threat_model"]
    assert result["adaptive_attack"] == {"name": "post_train_adaptive", "steps": 3, "eps": 0.12, "norm": "linf"}
    assert c["worst_correct_post_train"] <= min(c["robust_correct_post_train"], c["adaptive_correct_post_train"])
    assert c["worst_correct_post_train"] < c["robust_correct_post_train"], "the adaptive attack adds nothing here"
    rows = {(r["attack"], r["eps"]): r["correct"] for r in result["rows"]}
    assert rows[("post_train_worst", 0.12)] == c["worst_correct_post_train"]
    assert set(result["answer_rules"]) == {"pair", "argmax"}
    assert set(result["answer_rules"]["argmax"]) == {"clean", "robust", "adaptive", "worst"}
    for kind in ("clean", "robust", "adaptive", "worst"):  # the configured rule (restrict_to_pair) is the headline
        assert c[f"{kind}_correct_post_train"] == c[f"{kind}_correct_post_train_pair"]
    with pytest.raises(ValueError, match="same budget"):
        PostTrainEvaluation(adaptive={"eps": 0.3})


@pytest.mark.slow
@pytest.mark.parametrize("callback", [CALLBACK, ADAPTIVE_CALLBACK], ids=["non-adaptive", "adaptive"])
def test_two_processes_count_what_one_counts_and_fine_tune_each_pair_once(fitted, callback, tmp_path):
    """`advtrain test` with the callback on 1 process and `advtrain evaluate --post_train` on 2 (gloo DDP), with
    and without the adaptive attack: identical counts and distinct pairs over 100 samples (uneven over the
    ranks), and the fine-tunes of the two processes add up to one process's (each pair fine-tuned once in all,
    the other process loading it), the exchange folder removed afterwards."""
    data = ["--data", "datamodules.SyntheticDataModule", *[f"--data.{k}={v}" for k, v in FITTED_DATA.items()]]
    common = [*data, "--model.backbone", "mnist_small", "--ckpt_path", str(fitted[2]),
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    main(["test", *common, *csv_logger(tmp_path / "one"), "--trainer.callbacks+=callbacks.PostTrainEvaluation",
          *[f"--trainer.callbacks.{k}={json.dumps(v)}" for k, v in callback.items()]])
    _advtrain(["evaluate", *common, *csv_logger(tmp_path / "two"), "--post_train", json.dumps(callback),
               "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"], tmp_path)
    one, two = ([*json.loads(next((tmp_path / name).rglob("post_train.json")).read_text())["evaluations"]]
                for name in ("one", "two"))
    assert len(one) == len(two) == 1 and (one[0]["world_size"], two[0]["world_size"]) == (1, 2)
    one, two = one[0], two[0]
    print({k: (one[k], two[k]) for k in ("fine_tunes_per_process", "pairs_loaded_per_process", "distinct_pairs")})
    assert one["counts"] == two["counts"] and one["counts"]["samples"] == 100
    assert one["evaluation"] == two["evaluation"] == ("adaptive" if "adaptive" in callback else "non-adaptive")
    assert one["distinct_pairs"] == two["distinct_pairs"]
    assert len(one["fine_tunes_per_process"]) == 1 and len(two["fine_tunes_per_process"]) == 2
    fine_tunes = one["fine_tunes_all_processes"]
    assert sum(two["fine_tunes_per_process"]) == two["fine_tunes_all_processes"] == fine_tunes
    if "adaptive" in callback:  # the attack's iterates may need pairs that no final input lands in
        assert fine_tunes >= one["distinct_pairs"]["all"]
    else:
        assert fine_tunes == one["distinct_pairs"]["all"] >= 2
    assert sum(two["pairs_loaded_per_process"]) > 0, "pairs both processes need are fine-tuned by one, loaded by the other"
    assert one["pairs_loaded_per_process"] == [0]
    assert not any((tmp_path / "two").glob("post_train_pairs*")), "the exchange folder is removed afterwards"
    assert not list((tmp_path / "two").rglob("robustness.json")), "--post_train alone runs no sweep"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["cifar10_post_train", "tinyimagenet_post_train"])
def test_experiment_runs_its_post_train_evaluation(experiment, tmp_path):
    """The YAML instantiates through the CLI and its callback runs, the adaptive attack included (tiny settings,
    synthetic data)."""
    shape = "[3, 32, 32]" if "cifar10" in experiment else "[3, 64, 64]"
    main(["test", "--config", str(REPO / "experiments" / f"{experiment}.yaml"), *csv_logger(tmp_path),
          "--data", "datamodules.SyntheticDataModule", "--data.input_shape", shape, "--data.num_test", "8",
          "--data.num_train", "64", "--data.batch_size", "8", "--data.val_size", "8", "--data.num_workers", "0",
          "--trainer.enable_progress_bar", "false", "--trainer.callbacks.num_samples", "6",
          "--trainer.callbacks.attack", '{"name": "pgd", "eps": "8/255", "steps": 1}',
          "--trainer.callbacks.adaptive", '{"steps": 1}',
          "--trainer.callbacks.defence", json.dumps({"neighbour_attack": {**NEIGHBOUR, "steps": 1},
                                                     "steps": 1, "samples_per_class": 2})])
    (result,) = json.loads(next(tmp_path.rglob("post_train.json")).read_text())["evaluations"]
    assert result["num_samples"] == 6 and result["evaluation"] == "adaptive", "the YAML runs the adaptive attack"


@pytest.mark.slow
@needs_mnist
def test_on_real_mnist_post_train_raises_accuracy_under_base_model_pgd(tmp_path):
    """The paper's claim, on a briefly trained MNIST model: under PGD crafted on the base model (L-inf
    eps 0.1, non-adaptive), post-train does not lower accuracy with the paper's clean fine-tuning and
    clearly raises it with the authors' adversarial fine-tuning variant."""
    torch.manual_seed(0)
    dm = MNISTDataModule(data_dir=str(SHARED_DATASETS), download=False, val_size=1000, train_size=10000,
                         test_size=300)
    model = AdversarialClassifier(backbone="mnist_small", mean=dm.mean, std=dm.std).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for x, y in DataLoader(dm.dataset("train"), batch_size=128, shuffle=True):  # one epoch
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    pgd = {"name": "pgd", "eps": 0.1, "alpha": 0.025, "steps": 20}
    defence = {"neighbour_attack": {**pgd, "random_start": False}, "steps": 20, "samples_per_class": 32}
    callbacks = {objective: PostTrainEvaluation(attack=pgd, batch_size=100, filename=f"{objective}.json", defence={
        **defence, "objective": objective, "train_attack": {"name": "fgsm_rs", "eps": 0.1}})
        for objective in ("clean", "adversarial")}
    trainer = pl.Trainer(logger=False, callbacks=list(callbacks.values()), inference_mode=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.test(model.eval(), dm, verbose=False)
    clean, adversarial = (callbacks[k].results[-1] for k in ("clean", "adversarial"))
    for result in (clean, adversarial):
        print({k: result[k] for k in ("clean_accuracy", "clean_accuracy_post_train", "robust_accuracy",
                                      "robust_accuracy_post_train", "label_in_pair", "distinct_pairs")})
        assert result["clean_accuracy"] > 0.85 and result["num_samples"] == 300
        assert result["clean_accuracy_post_train"] >= result["clean_accuracy"] - 0.03, result
    assert clean["robust_accuracy"] == adversarial["robust_accuracy"], "the same seeded base-model attack"
    assert clean["robust_accuracy_post_train"] >= clean["robust_accuracy"], clean
    assert adversarial["robust_accuracy_post_train"] >= adversarial["robust_accuracy"] + 0.05, adversarial
