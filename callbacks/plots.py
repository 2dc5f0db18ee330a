"""PNG pictures of results (matplotlib's object API with the Agg canvas: no display, no global state)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from callbacks.summary import attack_keys


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` without overwriting: an existing file gets a ``-1``, ``-2``... sibling."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    target, n = path, 1
    while target.exists():
        target, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    figure.savefig(target, format="png")
    return target


def plot_curves(ax, curves: Sequence[tuple], title: str) -> None:
    """One accuracy-vs-eps line per (label, eps, accuracy[, matplotlib style dict]) on ``ax``."""
    for label, eps, acc, *style in curves:
        ax.plot(eps, acc, **{"marker": "o", "label": label, **(style[0] if style else {})})
    ax.set_xlabel("eps (pixel units, [0, 1] images)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9)
    if curves:
        ax.legend(fontsize=7)


def robustness_curve(result: Mapping[str, Any], path: Path) -> Path:
    """Accuracy vs eps, one line per attack and the worst case, for one robustness result."""
    keys = attack_keys(result)
    by_attack: dict[str, list[tuple[float, float]]] = {}
    for row in result["rows"]:
        by_attack.setdefault(row["attack"], []).append((row["eps"], row["accuracy"]))
    worst = {"color": "black", "linestyle": "--", "marker": "x"}  # drawn over the attack it equals
    curves = [(keys[a], *zip(*sorted(points)), worst if a == "worst_case" else {}) for a, points in by_attack.items()]
    figure = new_figure(6, 4)
    data = result.get("data", {})
    plot_curves(figure.add_subplot(), curves,
                f"{data.get('dataset', '')} {result.get('split', '')}, n={result.get('num_samples')}, "
                f"{result.get('stage', '')} step {result.get('global_step')}")
    return save_png(figure, path)
