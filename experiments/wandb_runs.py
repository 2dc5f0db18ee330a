"""W&B runs that sort and filter: group, job type, readable name, nested config, training-run link.

- ``group``: the experiment, the stem of the first ``--config`` YAML (``mnist_pgd_at``); without
  one, ``<dataset>_<objective>``. ``advtrain evaluate`` joins its training run's group.
- ``job_type``: the subcommand (``fit``, ``evaluate``, ...).
- ``name``: ``<experiment>-<objective>[-<attack>-eps<eps>][-<preprocessing>]-s<seed>``; evaluations add ``-<subcommand>``.
- config: nested (``model.lr``, ``data.batch_size``, ``trainer.callbacks.RobustnessEvaluation.epsilons``),
  see :func:`nested_config`; an evaluation also records ``training_run`` (id, W&B path, ...).

Anything set explicitly (``--trainer.logger.init_args.group``, ``WANDB_RUN_GROUP``, ...) wins.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from attacks import spec_name


def _get(ns: Any, key: str, default=None):
    if ns is None:
        return default
    value = ns.get(key, default) if hasattr(ns, "get") else getattr(ns, key, default)
    return default if value is None else value


def _short(class_path: Any) -> str:
    return str(class_path).rsplit(".", 1)[-1]


def _plain(value: Any) -> Any:
    """jsonargparse namespaces, paths and tuples as plain dicts, strings and lists."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _nest(value: Any) -> Any:
    """``{class_path, init_args}`` -> ``{class: <short name>, **init_args}``; lists of such objects
    (or of ``{name: ...}`` specs) -> a dict keyed by class or name, so every setting has its own key."""
    if isinstance(value, dict):
        if "class_path" in value:
            init_args = value.get("init_args") or {}
            return {"class": _short(value["class_path"]), **{k: _nest(v) for k, v in init_args.items()},
                    **{k: _nest(v) for k, v in (value.get("dict_kwargs") or {}).items()}}
        return {k: _nest(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keyed: dict[str, Any] = {}
        for item in value:
            base = _short(item["class_path"]) if "class_path" in item else str(item.get("name", "item"))
            key, n = base, 2
            while key in keyed:
                key, n = f"{base}_{n}", n + 1
            keyed[key] = _nest(item)
        return keyed
    return value


def nested_config(config: Any) -> dict[str, Any]:
    """The resolved config as nested dicts, one key per setting (see the module docstring)."""
    plain = _plain(config)
    files = plain.pop("config", None) or []
    plain.pop("__default_config__", None)
    nested = _nest(plain)
    nested["config_files"] = [str(f) for f in files]
    return nested


def experiment_name(config: Any) -> str:
    """The stem of the first ``--config`` file, else ``<dataset>_<objective>``."""
    files = [Path(str(f)) for f in (_get(config, "config") or [])]
    if files:
        return files[0].stem
    dataset = _short(_get(_get(config, "data"), "class_path", "data")).replace("DataModule", "").lower()
    return f"{dataset}_{spec_name(_get(_get(config, 'model'), 'objective'), 'clean')}"


def run_name(config: Any, subcommand: Optional[str]) -> str:
    model = _get(config, "model")
    parts = [experiment_name(config), spec_name(_get(model, "objective"), "clean")]
    attack = _get(model, "attack")
    if attack and parts[1] != "clean":
        parts += [str(_get(attack, "name", "attack")), f"eps{_get(attack, 'eps', '')}"]
    preprocessing = _plain(_get(model, "preprocessing"))
    if preprocessing:  # gaussian1.5, median3: the runs of a blur sweep get distinct names
        parts.append(f"{preprocessing.get('name')}" + "".join(str(v) for k, v in preprocessing.items() if k != "name"))
    parts.append(f"s{_get(config, 'seed_everything', 0)}")
    if subcommand and subcommand != "fit":
        parts.append(subcommand)
    return "-".join(parts)


def training_run_of(config: Any) -> Optional[dict[str, Any]]:
    """The training run stored in the checkpoint an evaluation reads (``--ckpt_path``), if any."""
    from callbacks.provenance import checkpoint_header

    ckpt = _get(config, "ckpt_path")
    if not ckpt or not Path(str(ckpt)).is_file():
        return None
    try:
        return checkpoint_header(str(ckpt))["run"]
    except Exception as err:  # a corrupt or foreign checkpoint fails later with Lightning's own error
        rank_zero_warn(f"could not read the training run from {ckpt}: {err}")
        return None


def wandb_run_settings(config: Any, subcommand: Optional[str]) -> dict[str, Any]:
    """``group``, ``job_type``, ``name`` and ``config`` for wandb.init (see the module docstring)."""
    settings: dict[str, Any] = {"job_type": subcommand or "fit", "name": run_name(config, subcommand)}
    config_extra: dict[str, Any] = {"experiment": experiment_name(config)}
    training = training_run_of(config) if subcommand not in (None, "fit") else None
    if training:
        config_extra["training_run"] = {k: training.get(k) for k in ("id", "wandb_path", "group", "name", "run_dir")}
        settings["group"] = training.get("group") or experiment_name(config)
        if training.get("name"):
            settings["name"] = f"{training['name']}-{subcommand}"
    else:
        settings["group"] = experiment_name(config)
    if os.environ.get("WANDB_RUN_GROUP"):
        settings.pop("group")
    if os.environ.get("WANDB_JOB_TYPE"):
        settings.pop("job_type")
    settings["config"] = config_extra
    return settings


def declare_model_artifact(logger: Any, training_run: Optional[dict[str, Any]], ckpt_path: Optional[str]) -> None:
    """With ``log_model`` on in the training run, mark its checkpoint artifact as this run's input
    (W&B lineage). Online only: an offline run cannot resolve artifacts by name."""
    if not training_run or not training_run.get("log_model") or not training_run.get("id"):
        return
    experiment = logger.experiment
    if getattr(experiment, "offline", False):
        rank_zero_info("W&B offline: the evaluated model artifact is not linked (use_artifact needs W&B online)")
        return
    entity_project = "/".join(str(training_run.get("wandb_path", "")).split("/")[:-1])
    name = f"model-{training_run['id']}"
    version = "latest"
    try:  # the artifact version holding exactly this checkpoint file, else the latest one
        import wandb

        target = Path(str(ckpt_path)).name if ckpt_path else None
        for artifact in wandb.Api().artifacts("model", f"{entity_project}/{name}"):
            if target and artifact.metadata.get("original_filename") == target:
                version = artifact.version
                break
        logger.use_artifact(f"{entity_project}/{name}:{version}", artifact_type="model")
    except Exception as err:  # lineage is a convenience: never fail the evaluation over it
        rank_zero_warn(f"could not declare the model artifact {name}: {err}")
