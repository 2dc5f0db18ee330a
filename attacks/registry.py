"""Attacks by name, so YAML and the CLI can say ``{name: pgd, eps: 8/255, steps: 40}``."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

_ATTACKS: dict[str, type] = {}


def register_attack(name: str):
    """Class decorator: make an Attack subclass available under ``name``."""

    def decorate(cls):
        if name in _ATTACKS:
            raise ValueError(f"attack name {name!r} is already registered by {_ATTACKS[name].__name__}")
        cls.name = name
        _ATTACKS[name] = cls
        return cls

    return decorate


def available_attacks() -> list[str]:
    return sorted(_ATTACKS)


def attack_options(name: str) -> list[str]:
    params = inspect.signature(_ATTACKS[name].__init__).parameters
    return [p for p in params if p != "self"]


def create_attack(spec: "str | Mapping[str, Any] | Any"):
    """Build an attack from a name, a ``{name: ..., **options}`` mapping, or pass an Attack through."""
    from attacks.base import Attack

    if isinstance(spec, Attack):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, Mapping) and "class_path" in spec:
        spec = _from_class_path(spec)
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"an attack is given as a name, a mapping with a 'name' key or a class_path form, got {spec!r}")
    options = dict(spec)
    name = str(options.pop("name")).lower().replace("-", "_")
    if name not in _ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(available_attacks())}")
    valid = attack_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for attack {name!r}; valid options: {', '.join(valid)}")
    return _ATTACKS[name](**options)


# the project's own packages: the only ones a class_path from a config or checkpoint may import
PROJECT_PACKAGES = ("attacks", "callbacks", "datamodules", "lightning_modules")


def check_class_path(class_path: Any, what: str) -> None:
    """Refuse, before anything is imported, a class_path outside the project's own packages."""
    if not isinstance(class_path, str) or class_path.split(".", 1)[0] not in PROJECT_PACKAGES:
        raise ValueError(f"{what}: class_path {class_path!r} is outside the project's packages "
                         f"({', '.join(PROJECT_PACKAGES)}); refused without importing it")


def import_project_object(dotted: str, what: str) -> Any:
    """The class or function a dotted name (``package.module.name``) gives, from the project's own
    packages only: how configs name classes and how callers inject functions by name."""
    import importlib

    check_class_path(dotted, what)
    module_name, _, attribute = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"{what}: cannot import {dotted!r}") from None


def _from_class_path(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``{class_path: attacks.PGD, init_args: {...}}`` -> ``{name: pgd, ...}`` (registered classes only)."""
    class_path = str(spec["class_path"])
    cls = import_project_object(class_path if "." in class_path else f"attacks.{class_path}",
                                f"{class_path} is not a registered attack")
    names = [name for name, registered in _ATTACKS.items() if registered is cls]
    if not names:
        raise ValueError(f"{spec['class_path']} is not a registered attack; valid attacks: {', '.join(available_attacks())}")
    return {"name": names[0], **dict(spec.get("init_args") or {})}
