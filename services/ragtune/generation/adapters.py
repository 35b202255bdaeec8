"""Adapter registry: which LoRA adapters exist, what they are for, and whether they may be served.

An adapter is a directory with PEFT's ``adapter_config.json`` and weights, plus a
``ragtune-adapter.yaml`` metadata file declaring its base model and purpose (read by the router).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ragtune.common.errors import FailedPrecondition, InvalidArgument, NotFound
from ragtune.common.validation import check_name

METADATA_FILE = "ragtune-adapter.yaml"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@dataclass
class AdapterInfo:
    name: str
    source: str
    base_model: str
    rank: int
    description: str = ""
    tasks: list[str] = field(default_factory=list)
    output_format: str = ""
    tone: str = ""


def inspect_adapter(name: str, source: str, *, base_model: str, max_rank: int) -> AdapterInfo:
    """Read and check an adapter directory; raise a clear error if it must not be served."""
    path = Path(source)
    if not path.is_dir():
        raise NotFound(f"adapter {name!r}: no directory at {source}")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise FailedPrecondition(f"adapter {name!r}: {config_file.name} missing in {source}")
    if not any((path / w).is_file() for w in WEIGHT_FILES):
        raise FailedPrecondition(f"adapter {name!r}: no weights ({' or '.join(WEIGHT_FILES)}) in {source}")
    peft_config = json.loads(config_file.read_text())
    meta_file = path / METADATA_FILE
    meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
    declared_base = str(meta.get("base_model", ""))
    if declared_base != base_model:
        raise FailedPrecondition(
            f"adapter {name!r} was trained on base model {declared_base or '(undeclared)'!r}, "
            f"this service runs {base_model!r}"
        )
    rank = int(peft_config.get("r", 0))
    if not 1 <= rank <= max_rank:
        raise FailedPrecondition(f"adapter {name!r} has rank {rank}; the limit is {max_rank}")
    return AdapterInfo(
        name=name,
        source=str(path),
        base_model=declared_base,
        rank=rank,
        description=str(meta.get("description", "")),
        tasks=[str(t) for t in meta.get("tasks", [])],
        output_format=str(meta.get("output_format", "")),
        tone=str(meta.get("tone", "")),
    )


class AdapterRegistry:
    """Known adapters (found in ``adapters_dir`` or loaded from an explicit source)."""

    def __init__(self, adapters_dir: str | None, *, base_model: str, max_rank: int) -> None:
        self.base_model = base_model
        self.max_rank = max_rank
        self.known: dict[str, AdapterInfo] = {}
        self.adapters_dir = Path(adapters_dir) if adapters_dir else None

    def scan(self) -> list[str]:
        """Register every adapter under ``adapters_dir``; return the names of those refused."""
        refused = []
        if self.adapters_dir is None or not self.adapters_dir.is_dir():
            return refused
        for path in sorted(p for p in self.adapters_dir.iterdir() if p.is_dir()):
            try:
                self.register(path.name, str(path))
            except (NotFound, FailedPrecondition, InvalidArgument):
                refused.append(path.name)
        return refused

    def register(self, name: str, source: str) -> AdapterInfo:
        check_name(name, "name")
        info = inspect_adapter(name, source, base_model=self.base_model, max_rank=self.max_rank)
        self.known[name] = info
        return info

    def resolve(self, name: str, source: str = "") -> AdapterInfo:
        if source:
            return self.register(name, source)
        if name not in self.known and self.adapters_dir is not None:
            candidate = self.adapters_dir / name
            if candidate.is_dir():
                return self.register(name, str(candidate))
        if name not in self.known:
            raise NotFound(f"adapter {name!r} not found")
        return self.known[name]
