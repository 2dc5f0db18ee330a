"""An image gallery of adversarial examples: look at what the attacks do to a fixed set of images.

For ``num_images`` test images picked with ``seed`` (the same images in every run with that
seed), one row each: the clean image, the adversarial image at every eps, and the
perturbation at the largest eps amplified to the full grey range, each titled with the true
and predicted label. Written as ``gallery_<stage>_step<N>.png`` in the run folder and logged to
W&B as a ``wandb.Image`` (key ``gallery/<split>``). Computed on rank zero only (a handful of
images; no collectives).

```yaml
trainer:
  callbacks:
    - class_path: callbacks.ImageGallery
      init_args: {num_images: 8}          # attack and epsilons: the RobustnessEvaluation's by default
```
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import Subset

from attacks import as_float, attack_mode, create_attack
from callbacks.evaluation import EvaluationCallback
from callbacks.plots import new_figure, save_png
from callbacks.run_dir import run_directory
from callbacks.summary import attack_key
from datamodules.splits import seeded_subset


class ImageGallery(EvaluationCallback):
    """Clean, adversarial and amplified-perturbation images with true/predicted labels.

    Args:
        attack: attack spec (its eps is set per column); default: the first attack of the
            trainer's RobustnessEvaluation, else ``{name: pgd, steps: 10}``.
        epsilons: budgets in pixel units; default: the RobustnessEvaluation's.
        num_images: rows of the gallery. split: ``test`` or ``val``. seed: picks the images
            and seeds the attack. run_on: ``fit_end`` and/or ``test_end``.
        class_names: labels to print instead of class indices.
        run_under_fast_dev_run: draw it in a ``fast_dev_run`` smoke run too (default: stand down).
    """

    def __init__(self, attack: Optional[Union[str, dict[str, Any]]] = None,
                 epsilons: Optional[Sequence[Union[float, str]]] = None, num_images: int = 8, split: str = "test",
                 seed: int = 0, run_on: Sequence[str] = ("fit_end", "test_end"),
                 class_names: Optional[Sequence[str]] = None, filename: str = "gallery",
                 run_under_fast_dev_run: bool = False):
        self.attack = {"name": attack} if isinstance(attack, str) else (dict(attack) if attack else None)
        if self.attack is not None:
            create_attack({**self.attack, "eps": 0.0})  # unknown names/options fail now, not after training
        self.epsilons = None if epsilons is None else [as_float(e) for e in epsilons]
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        super().__init__(split, num_images, num_images, run_on, seed, filename, run_under_fast_dev_run)
        self.class_names = list(class_names) if class_names else None

    def _settings(self, trainer) -> tuple[dict[str, Any], list[float]]:
        from callbacks.robustness import RobustnessEvaluation

        sweep = next((c for c in trainer.callbacks if isinstance(c, RobustnessEvaluation)), None)
        attack = self.attack or (sweep.attacks[0] if sweep and sweep.attacks else {"name": "pgd", "steps": 10})
        epsilons = self.epsilons or ([e for e in sweep.epsilons if e > 0] if sweep else [8 / 255])
        return attack, sorted(epsilons)

    def _label(self, index: int) -> str:
        return self.class_names[index] if self.class_names and index < len(self.class_names) else str(index)

    def evaluate(self, trainer, pl_module, stage: str) -> dict[str, Any]:
        if not trainer.is_global_zero:
            return {}
        self.require_gradients()
        attack, epsilons = self._settings(trainer)
        images = seeded_subset(trainer.datamodule.dataset(self.split), self.num_samples, self.seed)
        indices = images.indices if isinstance(images, Subset) else list(range(len(images)))
        x = torch.stack([image for image, _ in images]).to(pl_module.device)
        y = torch.as_tensor([int(label) for _, label in images], device=pl_module.device)
        columns = [("clean", 0.0, x)]
        with attack_mode(pl_module):
            for e, eps in enumerate(epsilons):
                adv = create_attack({**attack, "eps": eps, "seed": self.seed + e})(pl_module, x, y)
                columns.append((f"{attack_key(attack)} eps={eps:.4g}", eps, adv.detach()))
            with torch.no_grad():
                preds = [pl_module(images).argmax(1).cpu() for _, _, images in columns]
        delta = columns[-1][2] - x
        scale = delta.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        amplified = 0.5 + 0.5 * delta / scale  # each image's perturbation stretched to [0, 1]
        path = self._draw(trainer, stage, columns, preds, amplified, y.cpu(), epsilons[-1] if epsilons else 0.0)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                logger.experiment.log({f"gallery/{self.split}": wandb.Image(str(path), caption=path.name)})
        rank_zero_info(f"image gallery written to {path}")
        result = {"stage": stage, "path": str(path), "indices": indices, "attack": attack, "epsilons": epsilons}
        self.results.append(result)
        return result

    def _draw(self, trainer, stage, columns, preds, amplified, y, last_eps):
        rows, cols = y.numel(), len(columns) + 1
        figure = new_figure(1.7 * cols, 1.8 * rows + 0.4)
        axes = figure.subplots(rows, cols, squeeze=False)
        for r in range(rows):
            panels = [(title, images[r], preds[c][r]) for c, (title, _, images) in enumerate(columns)]
            panels.append((f"perturbation eps={last_eps:.4g}\n(amplified, grey = 0)", amplified[r], None))
            for c, (title, image, pred) in enumerate(panels):
                ax = axes[r][c]
                picture = image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
                ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if pred is not None:
                    ok = int(pred) == int(y[r])
                    ax.set_xlabel(f"true {self._label(int(y[r]))} / pred {self._label(int(pred))}", fontsize=7,
                                  color="green" if ok else "red")
                if r == 0:
                    ax.set_title(title, fontsize=8)
        figure.suptitle(f"{self.split} images (seed {self.seed}), {stage}, step {trainer.global_step}", fontsize=9)
        return save_png(figure, run_directory(trainer) / f"{self.filename}_{stage}_step{trainer.global_step}.png")
