"""Every file in its room: dependencies point one way, and the transfer attack needs nothing but attacks/.

attacks <- lightning_modules, datamodules <- callbacks <- experiments: a package imports
only the packages below it, anywhere in its files (imports inside functions included).
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from attacks import create_attack
from datamodules import PregeneratedAdversarialDataModule, SyntheticDataModule
from lightning_modules.checkpoints import load_classifier
from tests.conftest import REPO, subprocess_env
from tests.test_untrusted_files import save_checkpoint

PACKAGES = ("attacks", "lightning_modules", "datamodules", "callbacks", "experiments")
MAY_IMPORT = {
    "attacks": set(),
    "lightning_modules": {"attacks"},
    "datamodules": {"attacks"},
    "callbacks": {"attacks", "lightning_modules", "datamodules"},
    "experiments": {"attacks", "lightning_modules", "datamodules", "callbacks"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """For each file of ``package``: the other project packages its import statements name."""
    found = {}
    for file in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(file.relative_to(REPO))] = (names & set(PACKAGES)) - {package}
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package):
    wrong = {file: sorted(names - MAY_IMPORT[package]) for file, names in imported_packages(package).items()
             if names - MAY_IMPORT[package]}
    assert not wrong, f"{package} may import only {sorted(MAY_IMPORT[package])}: {wrong}"


def test_transfer_attack_from_a_checkpoint_path_imports_only_attacks(tmp_path):
    """In a fresh process: `create_attack("transfer", ...)` builds from a path with only attacks/ imported;
    the first call loads the source through the injected checkpoint loader and equals the inner attack
    run on that checkpoint."""
    source = save_checkpoint(tmp_path / "source.ckpt")
    script = textwrap.dedent(f"""
        import json, sys
        import torch
        import attacks
        attack = attacks.create_attack({{"name": "transfer", "source": {str(source)!r}, "eps": 0.1, "seed": 3,
                                         "attack": {{"name": "pgd", "steps": 3}}}})
        built_with = sorted(m for m in ("callbacks", "datamodules", "lightning_modules", "experiments")
                            if m in sys.modules)
        target = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
        x, y = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
        x_adv = attack(target, x, y)
        from lightning_modules.checkpoints import load_classifier
        inner = attacks.create_attack({{"name": "pgd", "steps": 3, "eps": 0.1, "seed": 3}})
        expected = inner(load_classifier({str(source)!r}), x, y)
        print(json.dumps({{"built_with": built_with, "callbacks_loaded": "callbacks" in sys.modules,
                          "max_change": float((x_adv - x).abs().max()), "in_range": bool(x_adv.min() >= 0
                          and x_adv.max() <= 1), "equal": bool(torch.equal(x_adv, expected))}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**subprocess_env(), "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["built_with"] == [] and not result["callbacks_loaded"]
    assert 0 < result["max_change"] <= 0.1 + 1e-6 and result["in_range"]
    assert result["equal"], "the transfer attack must be the inner attack run on the source checkpoint"


def test_transfer_attack_takes_a_loaded_source_model(tmp_path):
    source = load_classifier(save_checkpoint(tmp_path / "source.ckpt"))
    x, y = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3])
    target = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    transfer = create_attack({"name": "transfer", "source": source, "eps": 0.1, "seed": 3,
                              "attack": {"name": "pgd", "steps": 3}})
    expected = create_attack({"name": "pgd", "steps": 3, "eps": 0.1, "seed": 3})(source, x, y)
    assert torch.equal(transfer(target, x, y), expected)


def test_adversarial_set_loads_its_checkpoint_through_the_injected_loader(tmp_path):
    """The datamodule imports no model code: the loader it is given loads the checkpoint, checked for its data."""
    calls = []

    def loader(path, **kwargs):
        calls.append((path, kwargs))
        return load_classifier(path, **kwargs)

    checkpoint = str(save_checkpoint(tmp_path / "source.ckpt"))
    base = SyntheticDataModule(num_train=48, num_test=8, val_size=8, batch_size=16)
    dm = PregeneratedAdversarialDataModule(base, checkpoint, {"name": "fgsm", "eps": 0.1},
                                           cache_dir=str(tmp_path / "cache"), checkpoint_loader=loader)
    dm.setup("fit")
    assert calls == [(checkpoint, {"data": (base.input_shape, base.num_classes)})]
    assert len(dm.dataset("train")) == len(base.dataset("train"))
    with pytest.raises(ValueError, match="outside the project's packages"):
        PregeneratedAdversarialDataModule(base, checkpoint, {"name": "fgsm", "eps": 0.1},
                                          checkpoint_loader="os.system").setup("fit")
