"""Task-specific parts of a report, one module each. A module here that defines
``applies(expected) -> bool`` and ``section(expected, runs, tracker, out_dir) -> {"md": [...],
"images": [...]}`` is appended (in module-name order) to every study report it applies to, so
adding a task's section is adding one module. ``decoding`` is the whole report of a
``kind: decoding`` study."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def sections() -> list[ModuleType]:
    """The section modules of this package (those with ``applies`` and ``section``)."""
    modules = [importlib.import_module(f"{__name__}.{m.name}") for m in sorted(pkgutil.iter_modules(__path__),
                                                                              key=lambda m: m.name)]
    return [m for m in modules if hasattr(m, "applies") and hasattr(m, "section")]
