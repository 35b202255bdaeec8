"""Heavy models loaded on first use, and the libraries they need imported only then.

A service warms its backends up when its replica starts, but tests, benchmarks and the CLI use
backends directly, so each loads on first use too; the first uses may come at once from the
event loop (counting tokens) and from worker threads (running batches), and must load once.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType
from typing import Any


def require(module: str, package: str, purpose: str, *, otherwise: str = "") -> ModuleType:
    """Import ``module`` when it is first needed, or fail saying which package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs the {package!r} package: pip install {package}{otherwise}"
        ) from exc


class LazyModel:
    """A backend whose model loads on first use: ``warm_up()`` runs ``_load()`` once, in
    whichever thread gets there first; a load that fails is tried again on the next call."""

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._model: Any = None

    @property
    def model(self) -> Any:
        self.warm_up()
        return self._model

    def warm_up(self) -> None:
        if self._model is not None:  # every call after the first: no lock
            return
        with self._load_lock:
            if self._model is None:
                # Published only once loaded, with all that _load set up around it.
                self._model = self._load()

    def _load(self) -> Any:
        """Load the model and return it."""
        raise NotImplementedError
