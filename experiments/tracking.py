"""Weights & Biases defaults: offline without credentials, runs grouped, named and tagged.

Runs are grouped by experiment, typed by subcommand and named readably
(experiments/wandb_runs.py), and tagged by dataset, training objective and attack, so the
W&B UI can compare defences. Without credentials (no WANDB_API_KEY, no netrc entry, no
WANDB_MODE) the logger runs offline and says how to sync the run afterwards.
"""
from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_info

from attacks import spec_name

from experiments.wandb_runs import wandb_run_settings


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _get(ns: Any, key: str, default=None):
    if ns is None:
        return default
    return ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)


def run_labels(config: Any) -> tuple[str, list[str]]:
    """(dataset, tags) of a run: tags = objective, dataset, backbone, attack, eps, preprocessing."""
    data = _get(config, "data")
    dataset = str(_get(data, "class_path", "data")).rsplit(".", 1)[-1].replace("DataModule", "")
    model = _get(config, "model")
    objective = spec_name(_get(model, "objective"), "clean")
    attack = _get(model, "attack")
    tags = [f"objective:{objective}", f"dataset:{dataset}", f"backbone:{_get(model, 'backbone')}"]
    if attack:
        tags.append(f"attack:{_get(attack, 'name')}")
        tags.append(f"eps:{_get(attack, 'eps')}")
    preprocessing = _get(model, "preprocessing")
    if preprocessing:
        tags.append(f"preprocessing:{_get(preprocessing, 'name')}")
    return dataset, tags


def configure_wandb_logger(config: Any, subcommand: str | None = None) -> bool:
    """Fill in group, job type, name, tags, offline mode and save_dir (``default_root_dir`` unless
    given) of a WandbLogger in ``config``; True if offline."""
    trainer = _get(config, "trainer")
    loggers = _get(trainer, "logger")
    loggers = loggers if isinstance(loggers, list) else [loggers]
    offline = False
    for logger in loggers:
        if str(_get(logger, "class_path", "")).rsplit(".", 1)[-1] != "WandbLogger":
            continue
        _, tags = run_labels(config)
        kwargs = _get(logger, "dict_kwargs") or {}
        kwargs.setdefault("tags", tags)
        logger["dict_kwargs"] = kwargs
        init_args = _get(logger, "init_args")
        if _get(init_args, "save_dir") in (None, "", "."):  # one run, one folder: W&B files under default_root_dir
            init_args["save_dir"] = str(_get(trainer, "default_root_dir") or ".")
        for key, value in wandb_run_settings(config, subcommand).items():
            if _get(init_args, key) is None and key not in kwargs:  # explicit settings win
                init_args[key] = value
        if not has_wandb_credentials() and not _get(init_args, "offline", False):
            init_args["offline"] = True
        offline = offline or bool(_get(init_args, "offline", False))
    return offline


def resolve_last_checkpoint(config: Any, continue_run: bool) -> None:
    """``--ckpt_path last``: the newest ``last.ckpt`` under ``default_root_dir`` (none yet: start
    afresh, as a requeued job's first start does). With ``continue_run`` (fit), the W&B logger
    also continues that run (same id, ``resume: allow``), so its files and checkpoints stay in
    one folder and one W&B run."""
    trainer = _get(config, "trainer")
    root = Path(str(_get(trainer, "default_root_dir") or "."))
    found = sorted(root.glob("**/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        rank_zero_info(f"--ckpt_path last: no last.ckpt under {root} yet, starting a new run")
        config["ckpt_path"] = None
        return
    config["ckpt_path"] = str(found[-1])
    rank_zero_info(f"--ckpt_path last: resuming {found[-1]}")
    loggers = _get(trainer, "logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        if continue_run and str(_get(logger, "class_path", "")).rsplit(".", 1)[-1] == "WandbLogger":
            init_args = _get(logger, "init_args")
            if not _get(init_args, "id"):
                init_args["id"] = found[-1].parent.parent.name  # <save_dir>/<project>/<run id>/checkpoints
                logger["dict_kwargs"] = {**(_get(logger, "dict_kwargs") or {}), "resume": "allow"}


def sync_hint(save_dir: str | Path) -> str:
    runs = sorted(Path(save_dir).glob("wandb/offline-run-*"), key=lambda p: p.stat().st_mtime)
    where = runs[-1] if runs else Path(save_dir) / "wandb" / "offline-run-*"
    return (f"W&B ran offline (no credentials). Upload the run with:\n    wandb login && wandb sync {where}\n"
            "or set WANDB_API_KEY before training to log online.")
