"""A robustness result in RobustBench's terms, so a row can stand beside a leaderboard entry.

RobustBench lists, per model: clean accuracy and AutoAttack robust accuracy (percent, on
``n_examples`` test images), the threat model (``Linf``, ``L2``), eps and the architecture.
:func:`leaderboard_entries` builds one such entry per reference-AutoAttack attack x eps
(``{name: autoattack}``, pyautoattack) of a robustness result; our own cascade
(``apgd_cascade``) never produces one. ``autoattack_acc`` is the reference's figure alone;
when the sweep ran other attacks too, their per-sample worst case is ``worst_case_acc``.
"""
from __future__ import annotations

from fractions import Fraction
from importlib import metadata
from pathlib import Path
from typing import Any

from callbacks.report import append_json

THREAT_MODELS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
FILENAME = "autoattack_leaderboard.json"


def eps_text(eps: float) -> str:
    """8/255 for 0.0313725..., as leaderboards write it; the decimal otherwise."""
    fraction = Fraction(eps).limit_denominator(255)
    return f"{fraction.numerator}/{fraction.denominator}" if fraction.denominator == 255 and \
        abs(float(fraction) - eps) < 1e-9 else f"{eps:g}"


def leaderboard_entries(result: dict[str, Any], model_identity: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per ``autoattack`` attack and eps > 0 of ``result`` (a robustness.json evaluation)."""
    try:
        implementation = f"pyautoattack {metadata.version('pyautoattack')}"
    except metadata.PackageNotFoundError:
        implementation = "pyautoattack"
    accuracy = {(r["attack"], r["eps"]): r for r in result["rows"]}
    others = [a for a in result["attacks"] if a["name"] != "autoattack"]
    entries = []
    for spec in result["attacks"]:
        if spec["name"] != "autoattack" or spec.get("components"):  # a subset is not AutoAttack's figure
            continue
        for (label, eps), row in accuracy.items():
            if label != spec["label"] or eps == 0:
                continue
            entry = {
                "dataset": result.get("data", {}).get("dataset"),
                "threat_model": THREAT_MODELS[spec.get("norm", "linf")],
                "eps": eps_text(eps), "eps_value": eps,
                "clean_acc": f"{100 * result['clean_accuracy']:.2f}",
                "autoattack_acc": f"{100 * row['accuracy']:.2f}",
                "n_examples": result["num_samples"], "split": result["split"],
                "version": spec.get("version", "standard"),
                "autoattack": implementation,
                "architecture": result.get("model", {}).get("backbone"),
                "model": model_identity,
                "seed": result.get("seed"), "world_size": result.get("world_size"),
                "warnings": [w for w in result.get("warnings", []) if spec["label"] in w or w.startswith("error")],
            }
            if others:
                entry["worst_case_acc"] = f"{100 * accuracy[('worst_case', eps)]['accuracy']:.2f}"
                entry["worst_case_attacks"] = [a["label"] for a in result["attacks"]]
            entries.append(entry)
    return entries


def write_leaderboard_entries(run_dir: Path, result: dict[str, Any], model_identity: dict[str, Any]) -> list[dict]:
    """Append the entries of ``result`` to ``<run_dir>/autoattack_leaderboard.json`` (none: nothing written)."""
    entries = leaderboard_entries(result, model_identity)
    for entry in entries:
        append_json(Path(run_dir) / FILENAME, entry)
    return entries
