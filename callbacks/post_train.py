"""Evaluation of the post-train defence (lightning_modules.defences.post_train) as a Lightning callback.

On the test (or val) split it measures, per sample: the base model's clean and robust
accuracy, and the same with post-train. The adversarial inputs are crafted by PGD on
the BASE model against the true labels, on every sample as in the authors' code
(default L-inf eps 8/255, step 10/255, 20 steps: the paper's Table 1 attack), which does
not know about the post-train step: this is a NON-ADAPTIVE evaluation of the defence, an
upper bound on its robustness against an attacker who adapts to it. The result says so
in ``post_train.json`` (``evaluation``) and in the log.

``adaptive: true`` (or an attack spec, default ``{name: post_train_adaptive}``, see
attacks/post_train_adaptive.py) also runs the adaptive attack, which knows the neighbour
search and the pair fine-tuning, at the same eps, and reports it beside the non-adaptive
figure, with the per-sample worst case over both (``robust_accuracy_post_train_worst``):
the result is then labelled ``adaptive``.

Both answer rules (``pair``: the higher of the two pair logits; ``argmax``: over all
classes) are counted from the same fine-tuned copies (``answer_rules``); the headline
figures use the configured ``restrict_to_pair`` rule, the one the adaptive attack targets.

Distributed exactly like RobustnessEvaluation: the same global batches whatever the
number of processes, process r takes batches r, r + W, ...; every seed depends on the
batch index only and the defence is deterministic per class pair, so the summed counts
equal a one-process run's. The processes share their fine-tuned pairs through a
PairExchange folder under ``default_root_dir`` (removed at the end): each pair is fine-tuned
by the first process that needs it (for its batches or its adaptive attack) and loaded by
the others, so the fine-tunes of all processes add up to one process's. The result reports
them per process (``fine_tunes_per_process``; ``pairs_loaded_per_process``: loaded instead).

In ``predict`` the predictions of ``predict_step`` are replaced by the defended ones.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from pytorch_lightning.utilities import rank_zero_info

from attacks import attack_mode, create_attack
from callbacks.evaluation import Counts, EvaluationCallback, zeros
from callbacks.report import format_table, log_to_loggers
from datamodules.splits import labels_of
from lightning_modules.defences.pair_exchange import PairExchange
from lightning_modules.defences.post_train import PostTrain, PostTrainConfig

PAPER_ATTACK = {"name": "pgd", "eps": "8/255", "alpha": "10/255", "steps": 20}
NON_ADAPTIVE = ("NON-ADAPTIVE evaluation of the post-train defence: the adversarial inputs are crafted on the base "
                "model, without knowledge of the post-train step; robust accuracy with post-train is an upper "
                "bound on its robustness against an adaptive attacker")
ADAPTIVE = ("ADAPTIVE evaluation of the post-train defence: beside the attack crafted on the base model, an "
            "attack that knows the neighbour search and the pair fine-tuning; robust accuracy with post-train is "
            "the per-sample worst case over both")
ADAPTIVE_ATTACK = {"name": "post_train_adaptive"}
#: input kind -> the prefix of its accuracy counts
ACCURACY = {"clean": "clean", "adversarial": "robust", "adaptive": "adaptive"}
RULES = ("pair", "argmax")  # restrict_to_pair true / false
WORK = ("fine_tunes", "cache_hits", "pairs_loaded")  # PostTrain's counters, reported per process


class PostTrainEvaluation(EvaluationCallback):
    """Clean and robust accuracy without and with post-train, written to post_train.json and the loggers.

    Args:
        defence: the post-train settings (lightning_modules.defences.post_train.PostTrainConfig fields,
            e.g. ``{steps: 50, lr: 0.001, samples_per_class: 100}``).
        attack: the evaluation attack on the base model (pixel units); default the paper's
            PGD, L-inf eps 8/255, step 10/255, 20 steps.
        split: ``test`` or ``val``; ``train_split``: where the fine-tuning images come from.
        num_samples: evaluate a fixed, seeded subset of this size (None = the whole split).
        batch_size: evaluation batch size (the global batching, not per process).
        run_on: ``fit_end`` and/or ``test_end``.
        adaptive: also run the adaptive attack on the defence (true, or its spec; its eps is ``attack``'s).
        seed: seed of the subset and of the evaluation attack.
        filename: results file, in the run directory.
        run_under_fast_dev_run: evaluate in a ``fast_dev_run`` smoke run too (default: stand down).
    """

    def __init__(
        self,
        defence: Optional[dict[str, Any]] = None,
        attack: dict[str, Any] = PAPER_ATTACK,  # noqa: B006 - read only
        adaptive: Union[bool, dict[str, Any], None] = None,
        split: str = "test",
        train_split: str = "train",
        num_samples: Optional[int] = None,
        batch_size: int = 128,
        run_on: Sequence[str] = ("test_end",),
        seed: int = 0,
        filename: str = "post_train.json",
        run_under_fast_dev_run: bool = False,
    ):
        self.defence = PostTrainConfig(**(defence or {}))  # bad settings fail now, not after training
        self.attack = dict(attack)
        budget = create_attack(self.attack)
        self.adaptive = _adaptive_spec(adaptive, budget.eps, budget.norm)
        if self.adaptive:
            create_attack(self.adaptive)
        super().__init__(split, num_samples, batch_size, run_on, seed, filename, run_under_fast_dev_run)
        self.train_split = train_split
        self._predictor: Optional[PostTrain] = None  # the defence of the running predict or evaluation
        self._exchange: Optional[PairExchange] = None  # the running evaluation's, under DDP
        self._classes, self._rank, self._world = 0, 0, 1

    # -- hooks (fit_end / test_end: EvaluationCallback) ----------------------------------
    def on_predict_start(self, trainer, pl_module):
        self._predictor = self._defence(trainer, pl_module)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not isinstance(outputs, torch.Tensor) or outputs.dim() != 1:
            raise TypeError("PostTrainEvaluation replaces predict_step's class predictions, a (N,) tensor; "
                            f"got {type(outputs).__name__}")
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        outputs.copy_(self._predictor.predict(x.to(pl_module.device), seed=self.seed + batch_idx))

    def on_predict_end(self, trainer, pl_module):
        self._predictor = None

    # -- the template's steps ----------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        adaptive = {"adaptive": self.adaptive} if self.adaptive else {}  # absent: the state key of older runs
        return {"attack": self.attack, **adaptive, "defence": self.defence.to_dict(), **super().settings()}

    def progress_label(self) -> str:
        return f"post-train ({self.split}, {self._evaluation()})"

    def _evaluation(self) -> str:
        return "adaptive" if self.adaptive else "non-adaptive"

    def _inputs(self) -> tuple[str, ...]:
        return ("clean", "adversarial", "adaptive") if self.adaptive else ("clean", "adversarial")

    def _count_names(self) -> tuple[str, ...]:
        """The counts a result reports (``counts``), summed over batches and processes."""
        accuracies = [ACCURACY[kind] for kind in self._inputs()] + (["worst"] if self.adaptive else [])
        return ("samples", *(f"{a}_correct{suffix}" for a in accuracies
                             for suffix in ("", "_post_train", *(f"_post_train_{rule}" for rule in RULES))),
                *(f"{kind}_{what}" for kind in self._inputs() for what in ("label_in_pair", "no_neighbour")))

    def prepare(self, trainer, pl_module) -> None:
        rank_zero_info(ADAPTIVE if self.adaptive else NON_ADAPTIVE)
        self._rank, self._world = trainer.global_rank, trainer.world_size
        self._exchange = self._pair_exchange(trainer)
        self._predictor = self._defence(trainer, pl_module, self._exchange)
        self._classes = getattr(trainer.datamodule, "num_classes", None) or self._predictor.num_classes

    def evaluate(self, trainer, pl_module, stage: str) -> dict[str, Any]:
        result = super().evaluate(trainer, pl_module, stage)
        if self._exchange is not None and trainer.is_global_zero:  # every process is past the sum of the counts
            self._exchange.remove()
        return result

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._predictor, self._exchange = None, None  # its cache of fine-tuned copies

    def zero_counts(self, trainer, pl_module) -> Counts:
        """The count names; per input kind, samples per sorted class pair (row: the smaller class); per process
        (a vector, this process's entry filled) its fine-tunes, cache hits and pairs loaded from the others
        (they depend on the sharding, so they stay out of ``counts``)."""
        return zeros(**dict.fromkeys(self._count_names(), ()), **dict.fromkeys(WORK, (self._world,)),
                     **{f"{kind}_pairs": (self._classes, self._classes) for kind in self._inputs()})

    def count_batch(self, pl_module, x, y, batch_index: int) -> Counts:
        net, defence, seed = getattr(pl_module, "net", pl_module), self._predictor, self.seed + batch_index
        work = {name: getattr(defence, name) for name in WORK}
        inputs = {"clean": x, "adversarial": create_attack({**self.attack, "seed": seed})(net, x, y)}
        if self.adaptive:
            inputs["adaptive"] = create_attack({**self.adaptive, "seed": seed})(net, x, y, defence=defence,
                                                                                 defence_seed=seed)
        counts, correct = {"samples": torch.tensor(y.numel())}, {}
        for kind, images in inputs.items():
            with attack_mode(net), torch.no_grad():
                base = net(images).argmax(1)
            original, x_neighbour = defence.neighbour_inputs(images, seed)
            neighbour = defence.neighbour_class(x_neighbour)
            answers = dict(zip(RULES, defence.answers(images, original, x_neighbour)))
            correct[kind] = {"": base == y, **{f"_post_train_{rule}": answers[rule] == y for rule in RULES}}
            correct[kind]["_post_train"] = correct[kind]["_post_train_pair" if self.defence.restrict_to_pair
                                                         else "_post_train_argmax"]
            counts[f"{kind}_label_in_pair"] = ((original == y) | (neighbour == y)).sum()
            counts[f"{kind}_no_neighbour"] = (original == neighbour).sum()
            low, high = torch.minimum(original, neighbour), torch.maximum(original, neighbour)
            pairs = torch.zeros(self._classes, self._classes, dtype=torch.long, device=y.device)
            counts[f"{kind}_pairs"] = pairs.index_put_((low, high), torch.ones_like(low), accumulate=True)
        if self.adaptive:  # per sample: correct under both attacks
            correct["worst"] = {k: v & correct["adaptive"][k] for k, v in correct["adversarial"].items()}
        for kind, flags in correct.items():
            counts.update({f"{ACCURACY.get(kind, kind)}_correct{suffix}": f.sum() for suffix, f in flags.items()})
        for name, before in work.items():
            counts[name] = torch.zeros(self._world, dtype=torch.long)
            counts[name][self._rank] = getattr(defence, name) - before
        return counts

    def summarise(self, trainer, pl_module, counts: Counts) -> dict[str, Any]:
        c = {name: int(counts[name]) for name in self._count_names()}
        total = max(c["samples"], 1)
        eps = create_attack(self.attack).eps
        keys = [("base", "clean_correct", "robust_correct"),
                ("post_train", "clean_correct_post_train", "robust_correct_post_train")]
        if self.adaptive:  # the attacks do not touch clean inputs: eps 0 is post-train's clean accuracy
            keys += [("post_train_adaptive", "clean_correct_post_train", "adaptive_correct_post_train"),
                     ("post_train_worst", "clean_correct_post_train", "worst_correct_post_train")]
        rows = [{"attack": label, "eps": e, "accuracy": c[key] / total, "correct": c[key], "total": c["samples"]}
                for label, clean, robust in keys for e, key in ((0.0, clean), (eps, robust))]
        accuracies = [ACCURACY[kind] for kind in self._inputs()] + (["worst"] if self.adaptive else [])
        result = {
            "evaluation": self._evaluation(), "threat_model": ADAPTIVE if self.adaptive else NON_ADAPTIVE,
            "num_samples": c["samples"],
            "clean_correct": c["clean_correct"], "clean_accuracy": c["clean_correct"] / total,
            "clean_accuracy_post_train": c["clean_correct_post_train"] / total,
            "robust_accuracy": c["robust_correct"] / total,
            "robust_accuracy_post_train": c["robust_correct_post_train"] / total,
            "answer_rules": {rule: {a: c[f"{a}_correct_post_train_{rule}"] / total for a in accuracies} for rule in RULES},
            "counts": c,
            "label_in_pair": {kind: c[f"{kind}_label_in_pair"] / total for kind in self._inputs()},
            "no_neighbour": {kind: c[f"{kind}_no_neighbour"] / total for kind in self._inputs()},
            "distinct_pairs": {**{kind: _distinct(counts[f"{kind}_pairs"]) for kind in self._inputs()},
                               "all": _distinct(sum(counts[f"{kind}_pairs"] for kind in self._inputs()))},
            "fine_tunes_all_processes": int(counts["fine_tunes"].sum()),
            "cache_hits_all_processes": int(counts["cache_hits"].sum()),
            **{f"{name}_per_process": counts[name].tolist() for name in WORK},
            "attack": {**self.attack, "eps": eps}, "defence": self.defence.to_dict(),
            "rows": rows,
        }
        if self.adaptive:
            result.update(adaptive_attack=self.adaptive,
                          robust_accuracy_post_train_adaptive=c["adaptive_correct_post_train"] / total,
                          robust_accuracy_post_train_worst=c["worst_correct_post_train"] / total)
        return result

    def report(self, trainer, result: dict[str, Any], path: Path) -> None:
        log_to_loggers(trainer.loggers, {**result, "split": f"{self.split}/post_train"}, trainer.global_step)
        grid = format_table(result).split("\n", 1)[1]  # the accuracy grid, without the sweep's header line
        adaptive = (f"; post_train_adaptive: the adaptive attack {self.adaptive['name']}, post_train_worst: the "
                    "per-sample worst case of both" if self.adaptive else "")
        rank_zero_info(f"post-train defence on {result['num_samples']} {self.split} images; {result['threat_model']}\n"
                       f"rows: base model, post-train; eps 0 = clean inputs, eps > 0 = {self.attack['name']} on the "
                       f"base model{adaptive}\n{grid}\nanswer rules (pair / argmax over all classes): "
                       f"{result['answer_rules']}\nwritten to {path}")

    def _defence(self, trainer, pl_module, exchange: Optional[PairExchange] = None) -> PostTrain:
        train_set = trainer.datamodule.dataset(self.train_split)
        try:
            labels = labels_of(train_set)
        except TypeError:  # a dataset that keeps no labels: PostTrain reads them item by item
            labels = None
        return PostTrain(getattr(pl_module, "net", pl_module), train_set, self.defence, labels=labels,
                         exchange=exchange)

    @staticmethod
    def _pair_exchange(trainer) -> Optional[PairExchange]:
        """Under DDP, a fresh folder (named by rank zero) where the processes share their fine-tuned pairs."""
        if trainer.world_size == 1:
            return None
        name = trainer.strategy.broadcast(uuid.uuid4().hex if trainer.is_global_zero else None)
        return PairExchange(Path(trainer.default_root_dir) / f"post_train_pairs-{name}")


def _distinct(pairs: torch.Tensor) -> int:
    """Distinct unordered pairs y' != y'' in a (classes, classes) count matrix (row: the smaller class)."""
    return int((pairs > 0).triu(diagonal=1).sum())


def _adaptive_spec(adaptive: Union[bool, dict[str, Any], None], eps: float, norm: str) -> Optional[dict[str, Any]]:
    """The adaptive attack's spec at the evaluation attack's budget (None: no adaptive attack)."""
    if not adaptive:
        return None
    spec = dict(ADAPTIVE_ATTACK) if adaptive is True else {**ADAPTIVE_ATTACK, **adaptive}
    if "eps" in spec or "norm" in spec:
        raise ValueError("post-train adaptive attack: give eps and norm on `attack` only; the adaptive attack "
                         "uses the same budget, so the worst case over both is one threat model")
    return {**spec, "eps": eps, "norm": norm}
