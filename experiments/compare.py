"""``advtrain compare``: a leaderboard of defences from many runs' results.

    advtrain compare runs/advtrain                      # every robustness.json / post_train.json below
    advtrain compare 'runs/advtrain/*' other/run --out runs/leaderboard
    advtrain compare --wandb <entity>/<project>         # W&B runs' summaries (online, public API)

One row per evaluated model (the latest evaluation of each set of weights): run, defence,
dataset, backbone, objective, clean accuracy, each attack and the per-sample worst case at each
eps, n, adaptive / non-adaptive, date. Evaluations on different datasets, splits, norms or eps
grids go to separate tables, never into one column. Rows are sorted by worst-case accuracy at
the largest eps. Writes ``leaderboard.md``, ``leaderboard.csv``, ``robustness_vs_eps.png`` (one
worst-case curve per row, a panel per table) and ``leaderboard.html`` (sortable tables and the
plot embedded: opens without network), and prints the tables.
"""
from __future__ import annotations

import argparse
import base64
import csv
import glob
import html
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional

from attacks import spec_name
from callbacks.plots import new_figure, plot_curves
from callbacks.summary import attack_key, attack_keys

RESULT_FILES = ("robustness.json", "post_train.json")


@dataclass
class Entry:
    """One evaluated model in one comparable setting."""

    group: tuple  # (dataset, split, norm, eps grid)
    identity: str  # the weights (fingerprint) or, without provenance, the run folder and step
    run: str
    defence: str
    dataset: str
    backbone: str
    objective: str
    clean: float
    acc: dict[tuple[str, float], float] = field(default_factory=dict)  # (attack key, eps) -> accuracy
    n: Optional[int] = None
    evaluation: str = "adaptive"
    date: str = ""
    step: Optional[int] = None
    source: str = ""

    def worst(self, eps: float) -> Optional[float]:
        return self.acc.get(("worst", eps))


# -- reading results -------------------------------------------------------------------
def result_files(paths: Iterable[str]) -> list[Path]:
    """Result files under the given run folders, result files or glob patterns."""
    files: list[Path] = []
    for pattern in paths:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            print(f"advtrain compare: {pattern} matches nothing; skipped", file=sys.stderr)
        for match in map(Path, matches):
            if match.is_file():
                files.append(match)
            elif match.is_dir():
                files += sorted(p for name in RESULT_FILES for p in match.rglob(name))
    return list(dict.fromkeys(files))


def _defence(model: dict[str, Any]) -> str:
    objective = spec_name(model.get("objective"), "clean")
    text = objective
    attack = model.get("attack")
    if attack and objective != "clean":
        text += f" ({attack_key(attack)}, eps {attack.get('eps')})"
    if model.get("preprocessing"):
        text += f" + {model['preprocessing'].get('name')} blur"
    if model.get("source"):
        text = f"external {model['source']}"
    return text


def _date(result: dict[str, Any], path: Path) -> str:
    finished = result.get("provenance", {}).get("timing", {}).get("finished")
    if finished:
        return finished[:16].replace("T", " ")
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M")


def entry_from_result(result: dict[str, Any], path: Path) -> Optional[Entry]:
    """An Entry from one evaluation of robustness.json or post_train.json (None for other files)."""
    if "rows" not in result or "clean_accuracy" not in result:
        return None
    prov = result.get("provenance", {})
    model = result.get("model", {})
    training = prov.get("training_run") or {}
    run = training.get("name") or training.get("id") or path.parent.name
    dataset = str(result.get("data", {}).get("dataset", "?")).replace("DataModule", "")
    step = prov.get("checkpoint", {}).get("global_step", result.get("global_step"))
    identity = prov.get("checkpoint", {}).get("fingerprint") or f"{path.parent}@{step}"
    common = dict(run=run, dataset=dataset, backbone=str(model.get("backbone", "")),
                  objective=spec_name(model.get("objective")),
                  n=result.get("num_samples"), date=_date(result, path), step=step, source=str(path))
    if "robust_accuracy_post_train" in result:  # post-train: the defended model's numbers
        eps = float(result["attack"]["eps"])
        key = attack_key(result["attack"])
        worst = result.get("robust_accuracy_post_train_worst", result["robust_accuracy_post_train"])
        acc = {(key, eps): result["robust_accuracy_post_train"], ("worst", eps): worst}
        norm = result["attack"].get("norm", "linf")
        return Entry(group=(dataset, result.get("split", "test"), norm, (eps,)), identity=identity + "+post_train",
                     defence=_defence(model) + " + post-train", clean=result["clean_accuracy_post_train"], acc=acc,
                     evaluation=result["evaluation"], **common)
    keys = attack_keys(result)
    acc = {(keys[r["attack"]], float(r["eps"])): r["accuracy"] for r in result["rows"] if r["eps"] > 0}
    grid = tuple(sorted({e for _, e in acc}))
    norm = "+".join(result.get("norms", [])) or "linf"
    kinds = dict.fromkeys(a.get("threat_model", "white-box") for a in result.get("attacks", [])) or ["white-box"]
    return Entry(group=(dataset, result.get("split", "test"), norm, grid), identity=identity, defence=_defence(model),
                 clean=result["clean_accuracy"], acc=acc, evaluation=f"adaptive ({' + '.join(kinds)})", **common)


def entries_from_files(files: Iterable[Path]) -> list[Entry]:
    entries = []
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"advtrain compare: cannot read {path}: {err}; remove it or fix the file") from err
        for result in doc.get("evaluations", []):
            entry = entry_from_result(result, path)
            if entry is not None:
                entries.append(entry)
    return entries


def entries_from_wandb(project: str) -> list[Entry]:
    """Entries from the summaries of a W&B project's runs (``robust/<attack>/eps_<eps>``, ``clean``)."""
    import wandb

    entries = []
    for run in wandb.Api().runs(project):
        summary = dict(run.summary)
        if "clean" not in summary:
            continue
        acc = {}
        for key, value in summary.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "robust" and parts[2].startswith("eps_"):
                acc[(parts[1], float(parts[2][4:]))] = float(value)
        config = run.config
        model, data = config.get("model", {}), config.get("data", {})
        dataset = str(data.get("class", "?")).replace("DataModule", "")
        norm = "l2" if any(k.endswith("_l2") for k, _ in acc) else "linf"
        entries.append(Entry(group=(dataset, "test", norm, tuple(sorted({e for _, e in acc}))), identity=str(run.id),
                             run=run.name, defence=_defence(model), dataset=dataset,
                             backbone=str(model.get("backbone", "")),
                             objective=spec_name(model.get("objective")), clean=float(summary["clean"]), acc=acc,
                             date=str(run.created_at)[:16].replace("T", " "), source=run.url))
    return entries


def latest_per_model(entries: list[Entry]) -> list[Entry]:
    """One entry per (setting, weights): the latest evaluation."""
    chosen: dict[tuple, Entry] = {}
    for entry in entries:
        key = (entry.group, entry.identity)
        if key not in chosen or entry.date >= chosen[key].date:
            chosen[key] = entry
    return list(chosen.values())


# -- tables ----------------------------------------------------------------------------
def group_title(group: tuple) -> str:
    dataset, split, norm, grid = group
    return f"{dataset}, {split} split, {norm}, eps {', '.join(f'{e:.4g}' for e in grid)}"


def columns_of(entries: list[Entry]) -> list[tuple[str, float]]:
    """(attack key, eps) columns: per eps, each attack in first-seen order, then the worst case."""
    attacks = list(dict.fromkeys(a for e in entries for a, _ in e.acc if a != "worst"))
    grid = sorted({eps for e in entries for _, eps in e.acc})
    return [(a, eps) for eps in grid for a in [*attacks, "worst"] if any((a, eps) in e.acc for e in entries)]


INFO = ("run", "defence", "dataset", "backbone", "objective", "clean")
TAIL = ("n", "evaluation", "date", "step")


def table(entries: list[Entry]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (accuracies as fractions, None where not measured), best worst case first."""
    cols = columns_of(entries)
    header = [*INFO, *(f"{a} @{eps:.4g}" for a, eps in cols), *TAIL]
    rows = [[e.run, e.defence, e.dataset, e.backbone, e.objective, e.clean, *(e.acc.get(c) for c in cols),
             e.n, e.evaluation, e.date, e.step] for e in table_order(entries)]
    return header, rows


def _cell(value: Any, header: str) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and (header == "clean" or "@" in header):
        return f"{100 * value:.2f}"
    return str(value)


def markdown(groups: dict[tuple, list[Entry]]) -> str:
    parts = ["# advtrain leaderboard", "",
             "Accuracy in % (clean, each attack and the per-sample worst case at each eps); one table per "
             "dataset, split, norm and eps grid; best worst case at the largest eps first.", ""]
    for group, entries in groups.items():
        header, rows = table(entries)
        parts += [f"## {group_title(group)}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        parts += ["| " + " | ".join(_cell(v, h).replace("|", "/") for v, h in zip(row, header)) + " |" for row in rows]
        parts.append("")
    return "\n".join(parts)


def write_csv(groups: dict[tuple, list[Entry]], path: Path) -> None:
    """One csv: a ``table`` column names the setting; accuracy columns are fractions."""
    tables = [(group_title(g), *table(entries)) for g, entries in groups.items()]
    header = ["table"] + list(dict.fromkeys(h for _, hs, _ in tables for h in hs))
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for title, hs, rows in tables:
            for row in rows:
                values = dict(zip(hs, row))
                writer.writerow([title] + ["" if values.get(h) is None else values[h] for h in header[1:]])


def plot(groups: dict[tuple, list[Entry]], path: Path) -> Path:
    """One panel per table, one worst-case accuracy-vs-eps curve per row (eps 0 = clean accuracy)."""
    figure = new_figure(7, 4.2 * len(groups))
    axes = figure.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (group, entries) in zip(axes, groups.items()):
        curves = []
        for e in table_order(entries):
            grid = [eps for eps in group[3] if e.worst(eps) is not None]
            curves.append((f"{e.run}: {e.defence}"[:60], [0.0, *grid], [e.clean, *(e.worst(eps) for eps in grid)]))
        plot_curves(ax, curves, f"worst case: {group_title(group)}")
    path.unlink(missing_ok=True)  # a leaderboard is regenerated, not appended to
    figure.savefig(path, format="png")
    return path


def table_order(entries: list[Entry]) -> list[Entry]:
    """Best worst-case accuracy at the largest eps first, then best clean accuracy."""
    last = max((eps for e in entries for _, eps in e.acc), default=0.0)
    return sorted(entries, key=lambda e: (-(e.worst(last) if e.worst(last) is not None else -1.0), -e.clean))


SORT_JS = """
document.querySelectorAll('table.lb').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, i) {
    th.addEventListener('click', function () {
      var body = t.tBodies[0], rows = Array.from(body.rows), up = th.dataset.dir !== 'asc';
      t.querySelectorAll('th').forEach(function (h) { h.dataset.dir = ''; h.classList.remove('asc', 'desc'); });
      th.dataset.dir = up ? 'asc' : 'desc'; th.classList.add(up ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return up ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
div.wrap { overflow-x: auto; margin-bottom: 28px; }
table.lb { border-collapse: collapse; font-size: 13px; white-space: nowrap; }
table.lb th, table.lb td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
table.lb td.text, table.lb th { text-align: left; }
table.lb th { background: #f0f3f7; cursor: pointer; user-select: none; white-space: nowrap; }
table.lb th.asc::after { content: ' \\25B2'; } table.lb th.desc::after { content: ' \\25BC'; }
table.lb tr:nth-child(even) td { background: #fafafa; }
td.worst { font-weight: bold; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
"""


def write_html(groups: dict[tuple, list[Entry]], png: Path, path: Path) -> None:
    """Self-contained: inline CSS and JS, the plot as a base64 data URI."""
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'><title>advtrain leaderboard</title>",
             f"<style>{CSS}</style></head><body>", "<h1>advtrain leaderboard</h1>",
             "<p>Accuracy in % (clean, each attack and the per-sample worst case at each eps); one table per dataset, "
             "split, norm and eps grid. Click a column header to sort.</p>"]
    for group, entries in groups.items():
        header, rows = table(entries)
        parts.append(f"<h2>{html.escape(group_title(group))}</h2><div class='wrap'><table class='lb'><thead><tr>")
        parts += [f"<th>{html.escape(h)}</th>" for h in header]
        parts.append("</tr></thead><tbody>")
        for row in rows:
            cells = []
            for value, h in zip(row, header):
                sort_value = "" if value is None else str(value)
                css = "worst" if h.startswith("worst") else ("text" if not isinstance(value, (int, float)) else "")
                cells.append(f"<td class='{css}' data-v='{html.escape(sort_value, quote=True)}'>"
                             f"{html.escape(_cell(value, h))}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table></div>")
    data = base64.b64encode(png.read_bytes()).decode()
    parts += ["<h2>Worst-case robust accuracy vs eps</h2>",
              f"<img class='plot' alt='robustness vs eps' src='data:image/png;base64,{data}'>",
              f"<script>{SORT_JS}</script></body></html>"]
    path.write_text("\n".join(parts))


# -- the command -----------------------------------------------------------------------
def compare(paths: list[str], out: Path, wandb_project: Optional[str] = None) -> dict[tuple, list[Entry]]:
    """Build the leaderboard files in ``out`` and return the tables (entries per setting)."""
    files = result_files(paths)
    entries = entries_from_files(files)
    if wandb_project:
        entries += entries_from_wandb(wandb_project)
    if not entries:
        raise SystemExit(f"advtrain compare: no evaluations found in {paths or [wandb_project]}; give run folders "
                         f"(holding {' or '.join(RESULT_FILES)}), such files, or glob patterns, e.g. "
                         "advtrain compare runs/advtrain")
    groups: dict[tuple, list[Entry]] = {}
    for entry in latest_per_model(entries):
        groups.setdefault(entry.group, []).append(entry)
    groups = dict(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3])))
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(groups)
    (out / "leaderboard.md").write_text(text)
    write_csv(groups, out / "leaderboard.csv")
    png = plot(groups, out / "robustness_vs_eps.png")
    write_html(groups, png, out / "leaderboard.html")
    print(text)
    print(f"written to {out}/: leaderboard.md, leaderboard.csv, robustness_vs_eps.png, leaderboard.html")
    return groups


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="advtrain compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("paths", nargs="*", help="run folders, result files or glob patterns")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also read the runs of this W&B project (online)")
    parser.add_argument("--out", default="runs/leaderboard", help="output folder (default: runs/leaderboard)")
    args = parser.parse_args(argv)
    if not args.paths and not args.wandb:
        parser.error("give run folders (e.g. runs/advtrain) and/or --wandb ENTITY/PROJECT")
    compare(args.paths, Path(args.out), args.wandb)


if __name__ == "__main__":
    main()
