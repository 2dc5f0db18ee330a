"""Post-train at inference (Zheng et al., "Adaptive Modelling Against Adversarial Attacks
using post-train"): a test-time defence that fine-tunes the model on two classes per input.

For a batch of inputs x' ([0, 1] pixels), with the trained base model:

1. y' = base(x').argmax: the "original" class.
2. x'' = an untargeted attack on x' against the base model, with y' as the label (the
   defender's self-inflicted attack; by default the authors' PGD-20, L-inf eps 8/255,
   step 2/255, no random start), and y'' = base(x'').argmax: the "neighbour" class.
   The paper's argument: whether x' is natural, a failed or a successful adversarial
   input, its true class is y' or y''.
3. For every distinct class pair {y', y''} with y' != y'', a deep copy of the base model
   is fine-tuned for ``steps`` steps on training images of those two classes only (each
   step ``samples_per_class`` images of each class, drawn without replacement), then
   classifies the pair's inputs. With ``restrict_to_pair`` (default) the answer is the
   higher of the two pair logits, else the copy's argmax over all classes (the authors'
   code does the latter); :meth:`PostTrain.answers` gives both from the same copies.
4. y' == y'' (the self-inflicted attack failed): the input is far from a boundary and
   no fine-tuning is done; the answer is y'. This is what the authors' code does (it
   returns the base model unchanged for such inputs).

``direction: pos`` is the authors' ``pt_method: dir_adv, adv_dir: pos``: every training
image is moved by the defended input's own self-attack perturbation x'' - x' (``neg``: by
its negation), clipped to [0, 1], before the objective sees it. The fine-tune then depends
on the input, not only on its pair, so each input gets its own copy (no cache).

Deterministic and order-free: the fine-tune of a pair depends only on (seed, pair, base
weights): its training draws come from a generator seeded by a hash of (seed, y', y''),
its optional adversarial fine-tuning attack from the same seed, and dropout is off.
Pairs are unordered ({3, 5} and {5, 3} are one fine-tune: same two classes). So any
batch order, batch size or process gives the same predictions (on GPU, up to
non-deterministic kernels). Fine-tuned copies are kept in an LRU cache of ``cache_size``
pairs, so the cost grows with the number of distinct pairs, not of inputs;
``cache_size: 0`` fine-tunes once per input, as the authors' code does. Under DDP a
:class:`~lightning_modules.defences.pair_exchange.PairExchange` shares the fine-tuned pairs
between the processes, so each pair is fine-tuned once in all.

BatchNorm during fine-tuning: ``bn_mode: eval`` (default, as in the authors' code, whose
copy stays in eval mode) keeps the running statistics frozen, so 2-class batches do not
skew them; ``train`` normalises with the 2-class batch statistics and updates the copy's
running statistics. Dropout is off either way; predictions use the copy in eval mode.
The base model is never modified.
"""
from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional, Union

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from attacks import as_float, attack_mode, create_attack
from attacks.model_mode import BN_MODES
from attacks.seeding import derive_seed
from lightning_modules.objectives import create_objective
from lightning_modules.defences.pair_exchange import PairExchange
from lightning_modules.optimizers import check_optimizer, create_optimizer

# the authors' neighbour search (post_test_rep.py): PGD-20, eps 8/255, step 2/255, from x' itself
NEIGHBOUR_ATTACK = {"name": "pgd", "eps": 8 / 255, "alpha": 2 / 255, "steps": 20, "random_start": False}
# their "adv" post-train variant: uniform start in the eps-ball, one signed step of 2/255
TRAIN_ATTACK = {"name": "fgsm_rs", "eps": 8 / 255, "alpha": 2 / 255}

# None: the training images as they are; pos / neg: moved by +/- the input's self-attack perturbation
DIRECTIONS = (None, "pos", "neg")

AttackSpec = Union[str, dict[str, Any]]


def _spec(spec: AttackSpec) -> dict[str, Any]:
    return {"name": spec} if isinstance(spec, str) else dict(spec)


@dataclass
class PostTrainConfig:
    """Settings of the defence (the ``defence`` dict of callbacks.PostTrainEvaluation).

    neighbour_attack: untargeted attack that finds y'' (eps and step in pixel units).
    samples_per_class: training images of each of the two classes per fine-tuning step.
    steps, lr, optimizer (sgd | adam | adamw), momentum, nesterov, weight_decay: the
        fine-tuning (authors: 50 steps of SGD, lr 0.001, Nesterov momentum 0.9).
    objective: a training objective spec: ``clean`` (cross-entropy on the training images, the
        paper's method), ``adversarial`` (on ``train_attack`` examples of them, the authors'
        "adv" variant), or any other of lightning_modules.objectives (``{name: trades, beta: 6}``).
    direction: None, or ``pos`` / ``neg``: the authors' ``dir_adv`` fine-tuning, training images
        moved by +/- the defended input's self-attack perturbation x'' - x' (one copy per input).
    restrict_to_pair: answer y' or y'' only (else the fine-tuned copy's argmax).
    bn_mode: BatchNorm during fine-tuning, ``eval`` (frozen statistics) or ``train``.
    cache_size: fine-tuned pairs kept (LRU); 0 = one fine-tune per input.
    seed: seeds the per-pair training draws and the attacks.
    """

    neighbour_attack: AttackSpec = field(default_factory=lambda: dict(NEIGHBOUR_ATTACK))
    samples_per_class: int = 100
    steps: int = 50
    lr: float = 1e-3
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    objective: Union[str, dict[str, Any]] = "clean"
    train_attack: AttackSpec = field(default_factory=lambda: dict(TRAIN_ATTACK))
    direction: Optional[str] = None
    restrict_to_pair: bool = True
    bn_mode: str = "eval"
    cache_size: int = 256
    seed: int = 0

    def __post_init__(self):
        self.neighbour_attack, self.train_attack = _spec(self.neighbour_attack), _spec(self.train_attack)
        create_attack(self.neighbour_attack)  # unknown names/options fail here, before any work
        objective = create_objective(self.objective)  # an unknown name is an error listing the valid ones
        if objective.needs_attack:
            objective.check_attack(create_attack(self.train_attack))
        check_optimizer(self.optimizer, "post-train optimizer")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"post-train direction must be one of {DIRECTIONS} (the authors' dir_adv adv_dir), "
                             f"got {self.direction!r}")
        if self.bn_mode not in BN_MODES:
            raise ValueError(f"post-train bn_mode must be one of {BN_MODES}, got {self.bn_mode!r}")
        if self.steps < 1 or self.samples_per_class < 1 or self.cache_size < 0:
            raise ValueError(f"post-train needs steps >= 1, samples_per_class >= 1 and cache_size >= 0 (got "
                             f"{self.steps}, {self.samples_per_class}, {self.cache_size})")
        self.lr = as_float(self.lr)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pair_seed(seed: int, a: int, b: int) -> int:
    """Seed of the fine-tune of the unordered pair {a, b}: a stable hash, the same on every process."""
    a, b = sorted((int(a), int(b)))
    return derive_seed("post-train", seed, a, b)


def read_labels(dataset: Dataset) -> torch.Tensor:
    """The label of every item, by loading each item once (for datasets that do not keep their
    labels; callers that can read them cheaply pass ``labels`` to :class:`PostTrain` instead)."""
    items = tqdm(range(len(dataset)), desc="post-train: reading training labels", leave=False)
    return torch.tensor([int(dataset[i][1]) for i in items], dtype=torch.long)


class PostTrain:
    """The post-train defence around a trained ``model`` ([0, 1] pixels -> logits).

    Args:
        model: the base model; never modified.
        train_set: the training images (items ``(image, label)``, images in [0, 1]),
            e.g. the datamodule's train split; indexed per class once.
        config: a :class:`PostTrainConfig` or its fields as a dict.
        labels: the labels of ``train_set`` when known (e.g. ``datamodules.splits.labels_of``);
            None reads them by loading every item once.
        exchange: under DDP, the :class:`~lightning_modules.defences.pair_exchange.PairExchange` of the
            evaluation: each pair is fine-tuned by one process and loaded by the others (None: alone).

    ``predict(x)`` gives the defended predictions; ``fine_tunes``, ``cache_hits`` and ``pairs_loaded``
    (fine-tuned by another process) count the work done.
    """

    def __init__(self, model: nn.Module, train_set: Dataset,
                 config: Union[PostTrainConfig, dict[str, Any], None] = None, labels: Optional[torch.Tensor] = None,
                 exchange: Optional[PairExchange] = None):
        self.model = model
        self.train_set = train_set
        self.config = config if isinstance(config, PostTrainConfig) else PostTrainConfig(**(config or {}))
        labels = read_labels(train_set) if labels is None else torch.as_tensor(labels, dtype=torch.long).cpu()
        if len(labels) != len(train_set):
            raise ValueError(f"post-train: {len(labels)} labels for {len(train_set)} training items")
        self.num_classes = int(labels.max()) + 1 if labels.numel() else 0
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=self.num_classes).tolist()
        self.class_indices = dict(enumerate(order.split(counts)))
        self._cache: OrderedDict[tuple[int, int], nn.Module] = OrderedDict()
        self.exchange = exchange
        self.fine_tunes = 0
        self.cache_hits = 0
        self.pairs_loaded = 0

    # -- the defence -------------------------------------------------------------------
    def predict(self, x: torch.Tensor, seed: Optional[int] = None) -> torch.Tensor:
        """Defended predictions (N,) for inputs x: [0, 1] pixels (N, C, H, W)."""
        return self.classify(x, *self.neighbour_inputs(x, seed))

    def neighbour_inputs(self, x: torch.Tensor, seed: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y', x''): the base model's class of x and the defender's self-attacked x''. ``seed`` seeds
        the neighbour attack (only matters when it has a random start)."""
        self._check_grad_mode()
        attack = create_attack({**self.config.neighbour_attack, "seed": self.config.seed if seed is None else seed})
        with attack_mode(self.model), torch.no_grad():
            original = self.model(x).argmax(1)
        return original, attack(self.model, x, original)

    def neighbours(self, x: torch.Tensor, seed: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y', y''): the base model's class of x and of its self-attacked x''."""
        original, x_neighbour = self.neighbour_inputs(x, seed)
        return original, self.neighbour_class(x_neighbour)

    def neighbour_class(self, x_neighbour: torch.Tensor) -> torch.Tensor:
        """y'': the base model's class of the self-attacked x''."""
        with attack_mode(self.model), torch.no_grad():
            return self.model(x_neighbour).argmax(1)

    def classify(self, x: torch.Tensor, original: torch.Tensor, x_neighbour: torch.Tensor) -> torch.Tensor:
        """Each input classified by the copy fine-tuned for it (``restrict_to_pair`` says the answer rule);
        y' where y' == y''."""
        pair, argmax = self.answers(x, original, x_neighbour)
        return pair if self.config.restrict_to_pair else argmax

    def answers(self, x: torch.Tensor, original: torch.Tensor,
                x_neighbour: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both answer rules from the same fine-tuned copies: (the higher of the two pair logits,
        the copy's argmax over all classes); y' for both where y' == y''."""
        pair_answer, argmax_answer = original.clone(), original.clone()
        for rows, (a, b), model in self.answering_models(x, original, x_neighbour):
            with torch.no_grad():
                logits = model(x[rows])
            pair = torch.tensor([a, b], device=logits.device)
            pair_answer[rows] = pair[logits[:, pair].argmax(1)].to(original.device)
            argmax_answer[rows] = logits.argmax(1).to(original.device)
        return pair_answer, argmax_answer

    def answering_models(self, x: torch.Tensor, original: torch.Tensor,
                         x_neighbour: torch.Tensor) -> Iterator[tuple[torch.Tensor, tuple[int, int], nn.Module]]:
        """(rows, sorted pair, fine-tuned copy) for every group of inputs that one copy answers: all the
        inputs of a pair, or one input at a time (``cache_size: 0`` or a ``direction``). Inputs with
        y' == y'' are in no group (the base model answers them)."""
        neighbour = self.neighbour_class(x_neighbour)
        low, high = torch.minimum(original, neighbour), torch.maximum(original, neighbour)
        per_input = self.config.cache_size == 0 or self.config.direction is not None
        for a, b in sorted({(a, b) for a, b in zip(low.tolist(), high.tolist()) if a != b}):
            members = ((low == a) & (high == b)).nonzero().flatten()
            for rows in (members.split(1) if per_input else [members]):
                shift = None if self.config.direction is None else (x_neighbour[rows] - x[rows])[0]
                yield rows, (a, b), self.fine_tuned(a, b, shift)

    def fine_tuned(self, a: int, b: int, shift: Optional[torch.Tensor] = None) -> nn.Module:
        """The copy of the base model fine-tuned on classes {a, b} (from the cache when there, else from the
        process that claimed it in the ``exchange``); with a ``direction``, on training images moved by +/-
        ``shift`` (x'' - x' of one input; never cached nor shared)."""
        key = tuple(sorted((int(a), int(b))))
        if shift is None and key in self._cache:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return self._cache[key]
        shared = shift is None and self.exchange is not None
        if shared and not self.exchange.claim(key):
            model = self._frozen(self.exchange.load(key, copy.deepcopy(self.model)))
            self.pairs_loaded += 1
        else:
            model = self._fine_tune(*key, shift=shift)
            self.fine_tunes += 1
            if shared:
                self.exchange.publish(key, model)
        if shift is None and self.config.cache_size > 0:
            self._cache[key] = model
            while len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return model

    # -- fine-tuning -------------------------------------------------------------------
    def _fine_tune(self, a: int, b: int, shift: Optional[torch.Tensor] = None) -> nn.Module:
        cfg = self.config
        self._check_grad_mode()
        seed = pair_seed(cfg.seed, a, b)
        images, labels, draws = self._training_draws(a, b, seed)
        if shift is not None:  # the authors' dir_adv: towards (pos) or away from (neg) the neighbour class
            sign = 1.0 if cfg.direction == "pos" else -1.0
            images = (images + sign * shift.to(images.device)).clamp(0, 1)
        model = copy.deepcopy(self.model)
        model.eval()
        if cfg.bn_mode == "train":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.train()
        for p in model.parameters():
            p.requires_grad_(True)
        optimizer = create_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum,
                                     cfg.nesterov)
        objective = create_objective(cfg.objective)
        attack = create_attack({**cfg.train_attack, "seed": seed}) if objective.needs_attack else None
        with torch.enable_grad():
            for rows in draws:
                loss = objective(model, attack, images[rows], labels[rows]).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return self._frozen(model)

    @staticmethod
    def _frozen(model: nn.Module) -> nn.Module:
        """A copy ready to answer: eval mode, no parameter gradients."""
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    def _training_draws(self, a: int, b: int, seed: int):
        """The images of classes a and b used by this pair's fine-tune (each loaded once, on the
        model's device), their labels, and per step the rows drawn: ``samples_per_class`` of each
        class without replacement, from a generator seeded by the pair only."""
        k = self.config.samples_per_class
        generator = torch.Generator().manual_seed(seed)
        pools = []
        for c in (a, b):
            pool = self.class_indices.get(c)
            if pool is None or pool.numel() == 0:
                raise ValueError(f"post-train: the training set has no image of class {c}; pass the full training "
                                 "split (train_set) of the data the model was trained on")
            pools.append(pool)
        steps = [torch.cat([pool[torch.randperm(len(pool), generator=generator)[:k]] for pool in pools])
                 for _ in range(self.config.steps)]
        used, rows = torch.unique(torch.stack(steps) if steps else torch.empty(0, dtype=torch.long),
                                  return_inverse=True)
        device = next(self.model.parameters()).device
        items = [self.train_set[i] for i in used.tolist()]
        images = torch.stack([torch.as_tensor(image) for image, _ in items]).to(device)
        labels = torch.tensor([int(label) for _, label in items], device=device)
        return images, labels, rows.to(device)

    @staticmethod
    def _check_grad_mode() -> None:
        if torch.is_inference_mode_enabled():
            raise RuntimeError("post-train fine-tunes and attacks at inference: set --trainer.inference_mode false")
