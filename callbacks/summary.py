"""Short, stable summary keys of a robustness result, for the W&B runs table and `advtrain compare`.

    clean                       clean accuracy
    robust/<attack>/eps_<eps>   one attack at one eps, e.g. robust/pgd40/eps_0.3
    robust/worst/eps_<eps>      per-sample worst case over the attacks

``<attack>`` is the attack's name plus its step count (``pgd40``, ``apgd_ce100``, ``fgsm``),
``_l2`` for the L2 norm, wrappers as ``bpda_pgd40``, transfer attacks as
``transfer_<source run>_<attack>``; two specs that would share a key get ``_2``, ``_3``.
Results without attack specs (post-train's ``base`` and ``post_train`` rows) also get eps 0.
``<eps>`` is printed with 4 significant digits (8/255 -> 0.03137). Results
on another split than ``test`` get the split as a prefix (``val/clean``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

WRAPPERS = ("bpda", "autocast", "transfer")


def attack_key(spec: Mapping[str, Any]) -> str:
    """``pgd40`` for ``{name: pgd, steps: 40}``; see the module docstring."""
    name = str(spec.get("name", "attack"))
    inner = spec.get("attack")
    if name in WRAPPERS and isinstance(inner, Mapping):
        return f"{name}_{checkpoint_label(spec['source'])}_{attack_key(inner)}" if spec.get("source") \
            else f"{name}_{attack_key(inner)}"
    key = name + (str(spec["steps"]) if spec.get("steps") is not None else "")
    if spec.get("version") not in (None, "standard"):
        key += f"_{spec['version']}"
    if spec.get("norm") == "l2":
        key += "_l2"
    return key


def checkpoint_label(path: str) -> str:
    """``<run folder>`` for ``.../<run folder>/checkpoints/x.ckpt``, else the file's stem."""
    p = Path(str(path))
    return p.parents[1].name if p.parent.name == "checkpoints" and len(p.parents) > 1 else p.stem


def eps_key(eps: float) -> str:
    return f"eps_{float(eps):.4g}"


def attack_keys(result: Mapping[str, Any]) -> dict[str, str]:
    """Attack label in ``rows`` -> short key, unique within the result."""
    keys: dict[str, str] = {}
    for spec in result.get("attacks", []):
        key, n = attack_key(spec), 2
        while key in keys.values():
            key, n = f"{attack_key(spec)}_{n}", n + 1
        keys[spec["label"]] = key
    keys["worst_case"] = "worst"
    for row in result["rows"]:  # results without attack specs (post-train's base / post_train rows)
        keys.setdefault(row["attack"], str(row["attack"]))
    return keys


def summary_metrics(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{clean, robust/<attack>/eps_<eps>, robust/worst/eps_<eps>}`` of a result (eps > 0 only)."""
    split = result.get("split", "test")
    prefix = prefix or ("" if split == "test" else f"{split}/")
    keys = attack_keys(result)
    metrics = {f"{prefix}clean": float(result["clean_accuracy"])}
    with_specs = bool(result.get("attacks"))
    for row in result["rows"]:
        if row["eps"] > 0 or not with_specs:
            metrics[f"{prefix}robust/{keys[row['attack']]}/{eps_key(row['eps'])}"] = float(row["accuracy"])
    return metrics


def transfer_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """``transfer/<source>/<target>/eps_<eps>`` of a transfer matrix; checkpoints named by checkpoint_label,
    or ``ckpt<i>`` (their order in the matrix) where two labels collide."""
    paths = list(summary["matrix"])
    labels = [checkpoint_label(p) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"ckpt{i}" for i in range(len(paths))]
    name = dict(zip(paths, labels))
    return {f"transfer/{name[s]}/{name[t]}/{eps_key(float(e))}": float(acc)
            for s, targets in summary["matrix"].items() for t, by_eps in targets.items() for e, acc in by_eps.items()}
