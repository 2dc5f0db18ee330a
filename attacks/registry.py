"""Components by name: one small registry for attacks, objectives, preprocessing and augmentations.

Every component is configured with one spelling, a *spec*: ``{name: pgd, eps: 8/255, steps: 40}``
(the name plus the constructor's options); a bare name (``pgd``) means ``{name: pgd}``. A
:class:`Registry` checks the name and the options before building anything and lists the
valid choices in its errors and in :meth:`Registry.describe` (``advtrain list``). It lives in
``attacks/``, which imports nothing else from the project, so every package may use it.

``{class_path: attacks.PGD, init_args: {...}}`` is also accepted for registered classes only
(what ``--print_config`` writes for a class); a class_path outside the project's packages is
refused before anything is imported.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Iterator, Mapping, Optional

from attacks.base import Attack


def spec_name(spec: Any, default: str = "") -> str:
    """The name of a spec (``"pgd"`` or ``{name: pgd, ...}``), for labels and run names."""
    if isinstance(spec, Mapping):
        return str(spec.get("name", default))
    return default if spec is None else str(spec)


class Registry:
    """Names -> classes for one kind of component (``kind``: "attack", "objective", ...).

    ``base``: instances of it are passed through :meth:`create` unchanged. ``register`` sets
    the class attribute ``name`` to the registered name.
    """

    def __init__(self, kind: str, plural: Optional[str] = None, base: Optional[type] = None):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.base = base
        self._classes: dict[str, type] = {}

    # -- registering and looking up ----------------------------------------------------
    def register(self, name: str) -> Callable[[type], type]:
        """Class decorator: make ``cls`` available under ``name``."""

        def decorate(cls: type) -> type:
            if name in self._classes:
                raise ValueError(f"{self.kind} name {name!r} is already registered by {self._classes[name].__name__}")
            cls.name = name
            self._classes[name] = cls
            return cls

        return decorate

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __getitem__(self, name: str) -> type:
        return self._classes[self._check_name(name)]

    def options(self, name: str) -> list[str]:
        """The options a spec of ``name`` may give (the constructor's parameters)."""
        return list(self._parameters(self[name]))

    # -- specs ---------------------------------------------------------------------------
    def parse(self, spec: Any) -> tuple[str, dict[str, Any]]:
        """``(name, options)`` of a spec, both checked; nothing is built."""
        if isinstance(spec, str):
            spec = {"name": spec}
        if isinstance(spec, Mapping) and "class_path" in spec:
            spec = self._from_class_path(spec)
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"a {self.kind} is given as a name or as {{name: ..., **options}}, got {spec!r}")
        options = dict(spec)
        name = self._check_name(options.pop("name"))
        valid = self.options(name)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for {self.kind} {name!r}; valid options: {', '.join(valid)}")
        return name, options

    def create(self, spec: Any) -> Any:
        """Build a component from a name or a ``{name: ..., **options}`` spec."""
        if self.base is not None and isinstance(spec, self.base):
            return spec
        name, options = self.parse(spec)
        return self._classes[name](**options)

    def describe(self) -> str:
        """A ``--help``-style listing: each name, its options with defaults, its docstring's first line."""
        lines = [f"{self.plural}: {{name: <one of these>, **options}}"]
        for name in self.names():
            cls = self._classes[name]
            options = ", ".join(p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
                                for p in self._parameters(cls).values())
            summary = (inspect.getdoc(cls) or "").split("\n", 1)[0]
            lines.append(f"  {name}({options})" + (f"\n      {summary}" if summary else ""))
        return "\n".join(lines)

    # -- helpers -------------------------------------------------------------------------
    def _check_name(self, name: Any) -> str:
        key = str(name).lower().replace("-", "_")
        if key not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; valid {self.plural}: {', '.join(self.names())}")
        return key

    @staticmethod
    def _parameters(cls: type) -> dict[str, inspect.Parameter]:
        params = inspect.signature(cls).parameters
        return {k: p for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def _from_class_path(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``{class_path: attacks.PGD, init_args: {...}}`` -> ``{name: pgd, ...}`` (registered classes only)."""
        class_path = str(spec["class_path"])
        cls = import_project_object(class_path if "." in class_path else f"attacks.{class_path}",
                                    f"{class_path} is not a registered {self.kind}")
        names = [name for name, registered in self._classes.items() if registered is cls]
        if not names:
            raise ValueError(f"{class_path} is not a registered {self.kind}; valid {self.plural}: {', '.join(self.names())}")
        return {"name": names[0], **dict(spec.get("init_args") or {})}


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
    check_class_path(dotted, what)
    module_name, _, attribute = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        raise ValueError(f"{what}: cannot import {dotted!r}") from None


ATTACKS = Registry("attack", base=Attack)
# the attack registry's methods under the names the project uses
register_attack = ATTACKS.register
create_attack = ATTACKS.create
available_attacks = ATTACKS.names
attack_options = ATTACKS.options
