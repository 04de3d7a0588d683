"""Public names that load on first use, so that a light path (the command line's --help, a config)
does not pay for the heavy modules (torch, transformers, peft) of the box it touches.

    # forgetless/models/__init__.py
    lazy_package(__name__, {"PRESETS": "presets", "load_model": "loading", ...})

`from forgetless.models import load_model` works as before; it imports `forgetless.models.loading`
at that moment instead of when `forgetless.models` is imported (PEP 562).

`Names` is the other half: the names of a registry (optimizers, model presets) for validation and
help texts, read from a fixed list until the registry's module has been imported and from the
registry itself after, so a name registered at run time is accepted.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator


class LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their submodules when first read."""

    _exports: dict[str, str]
    _modules: tuple[str, ...]

    def __getattr__(self, name: str):
        exports = self.__dict__.get("_exports", {})
        if name in exports:
            value = getattr(importlib.import_module(f"{self.__name__}.{exports[name]}"), name)
        elif name in self.__dict__.get("_modules", ()):
            value = importlib.import_module(f"{self.__name__}.{name}")
        else:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        self.__dict__[name] = value  # read once: later reads skip __getattr__
        return value

    def __setattr__(self, name: str, value) -> None:
        # Importing a submodule binds it to the package's attribute of its name. Where a public
        # name is a function of the same name (forgetless.train.pretrain, in train/pretrain.py),
        # the function keeps the name, as it did when __init__ imported it eagerly.
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_exports", {}):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self._exports, *self._modules})


def lazy_package(package: str, exports: dict[str, str], modules: tuple[str, ...] = ()) -> list[str]:
    """Make `package` (an __init__'s __name__) load each name of `exports` (name -> the submodule
    that defines it) and each submodule of `modules` when first read. Returns the names, for
    `__all__`."""
    module = sys.modules[package]
    module.__class__ = LazyPackage
    module.__dict__["_exports"] = dict(exports)
    module.__dict__["_modules"] = tuple(modules)
    return sorted({*exports, *modules})


class Names:
    """The keys of `registry` (a dict attribute of `module`, as "forgetless.optim.registry:OPTIMIZERS"),
    without importing that module: `fixed` until it is imported, then the dict's own keys.
    tests/test_cli_light.py checks that `fixed` equals the registry's keys."""

    def __init__(self, registry: str, fixed: tuple[str, ...]):
        self.module, self.attr = registry.split(":")
        self.fixed = fixed

    def _names(self):
        module = sys.modules.get(self.module)
        registry = getattr(module, self.attr, None) if module is not None else None
        return self.fixed if registry is None else registry

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names()))

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"Names({', '.join(self)})"
