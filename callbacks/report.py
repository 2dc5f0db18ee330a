"""Reporting a robustness evaluation: sanity checks, robustness.json, loggers, a table."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, WandbLogger

from callbacks.summary import attack_keys, summary_metrics
from datamodules.storage import exclusive_lock, write_atomically


def sanity_warnings(result: dict[str, Any]) -> list[str]:
    """Checks every evaluation runs: eps = 0 equals clean accuracy; accuracy never rises with eps."""
    warnings = []
    by_attack: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_attack.setdefault(row["attack"], []).append(row)
    for attack, rows in by_attack.items():
        rows = sorted(rows, key=lambda r: r["eps"])
        for row in rows:
            if row["eps"] == 0 and row["correct"] != result["clean_correct"]:
                warnings.append(
                    f"{attack}: accuracy at eps=0 ({row['accuracy']:.4f}) differs from clean accuracy "
                    f"({result['clean_accuracy']:.4f}); is the model stochastic (dropout, random defence)?"
                )
        for lo, hi in zip(rows, rows[1:]):
            if hi["correct"] > lo["correct"]:
                warnings.append(
                    f"{attack}: accuracy rises from {lo['accuracy']:.4f} at eps={lo['eps']:g} to "
                    f"{hi['accuracy']:.4f} at eps={hi['eps']:g}; the attack is failing (gradient masking?)"
                )
    return warnings + masking_warnings(result.get("gradient_masking_checks", {}))


UNBOUNDED_ACCURACY_LIMIT = 0.05


def masking_warnings(checks: dict[str, Any]) -> list[str]:
    """Gradient-masking checks (Athalye et al. 2018; Croce & Hein 2020)."""
    warnings = []
    for eps, count in checks.get("black_box_only", {}).items():
        if count:
            warnings.append(f"eps={float(eps):g}: {count} samples were fooled by a black-box attack where every "
                            "white-box attack failed; gradients are likely masked, the white-box numbers overstate "
                            "robustness")
    if "probe_samples" in checks:
        if checks["unbounded_pgd20_accuracy"] > UNBOUNDED_ACCURACY_LIMIT:
            warnings.append(f"PGD-20 at an unbounded eps leaves {checks['unbounded_pgd20_accuracy']:.2%} accuracy "
                            f"on {checks['probe_samples']} samples (expected about 0%); gradients are likely masked")
        slack = 1 / checks["probe_samples"]
        if checks["pgd50_accuracy"] > checks["pgd10_accuracy"] + slack:
            warnings.append(f"PGD-50 leaves higher accuracy ({checks['pgd50_accuracy']:.2%}) than PGD-10 "
                            f"({checks['pgd10_accuracy']:.2%}) at eps={checks['probe_eps']:g}: more attack steps "
                            "must not help the model; the attack is unreliable here")
    return warnings


def append_json(path: Path, result: dict[str, Any]) -> None:
    """Add ``result`` to the file's list of evaluations; earlier evaluations are kept.

    The read-modify-write holds an exclusive lock on ``.<name>.lock`` beside the file, so
    processes appending to one file at once (several evaluations of one run folder) lose nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.parent / f".{path.name}.lock"):
        doc = json.loads(path.read_text()) if path.exists() else {"evaluations": []}
        doc["evaluations"].append(result)
        write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2)))


def accuracy_grid(result: dict[str, Any]) -> tuple[list[str], list[float], dict[tuple[str, float], float]]:
    """(attacks in order, sorted epsilons, accuracy by (attack, eps)) from a result's rows."""
    rows = result["rows"]
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    return attacks, sorted({r["eps"] for r in rows}), {(r["attack"], r["eps"]): r["accuracy"] for r in rows}


def log_to_loggers(loggers: list[Logger], result: dict[str, Any], step: int) -> None:
    """W&B: a table, a robust-accuracy-vs-eps chart and the short summary keys; every other logger:
    scalars, the short keys (callbacks.summary) included."""
    prefix = f"robustness/{result['split']}"
    scalars = {f"{prefix}/clean_accuracy": result["clean_accuracy"], **summary_metrics(result)}
    for row in result["rows"]:
        scalars[f"{prefix}/{row['attack']}/eps_{row['eps']:.4g}"] = row["accuracy"]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            _log_wandb(logger, result, prefix)
        else:
            logger.log_metrics(scalars, step=step)


def _log_wandb(logger: WandbLogger, result: dict[str, Any], prefix: str) -> None:
    import wandb

    columns = ["attack", "eps", "robust_accuracy", "correct", "total"]
    table = wandb.Table(columns=columns, data=[[r["attack"], r["eps"], r["accuracy"], r["correct"], r["total"]]
                                               for r in result["rows"]])
    attacks, eps, acc = accuracy_grid(result)
    short = attack_keys(result)
    chart = wandb.plot.line_series(xs=eps, ys=[[acc[(a, e)] for e in eps] for a in attacks],
                                   keys=[short[a] for a in attacks], title="robust accuracy vs eps", xname="eps")
    logger.experiment.log({f"{prefix}/table": table, f"{prefix}/accuracy_vs_eps": chart,
                           f"{prefix}/clean_accuracy": result["clean_accuracy"]})
    logger.experiment.summary.update(summary_metrics(result))


def format_table(result: dict[str, Any]) -> str:
    attacks, eps, acc = accuracy_grid(result)
    width = max(len(a) for a in attacks + ["attack"])
    lines = [f"robust accuracy on {result['num_samples']} {result['split']} images "
             f"(clean accuracy {result['clean_accuracy']:.4f})",
             "attack".ljust(width) + "".join(f"  eps={e:<8.4g}" for e in eps)]
    for a in attacks:
        lines.append(a.ljust(width) + "".join(f"  {acc[(a, e)]:<12.4f}" for e in eps))
    return "\n".join(lines)
