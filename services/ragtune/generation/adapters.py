"""Adapter registry: which LoRA adapters exist, what they are for, and whether they may be served.

An adapter is a directory with PEFT's ``adapter_config.json`` and weights, plus a
``ragtune-adapter.yaml`` metadata file declaring its base model and purpose (read by the router).
This module owns that format; the trainer writes it, the registry checks it before serving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ragtune.common.errors import FailedPrecondition, InvalidArgument, NotFound
from ragtune.common.validation import check_name

ADAPTER_METADATA_FILE = "ragtune-adapter.yaml"
BASE_METADATA_FILE = "ragtune-base.yaml"

REQUIRED_METADATA_FIELDS = (
    "name",
    "base_model",
    "rank",
    "description",
    "tasks",
    "output_format",
    "tone",
)


def validate_adapter_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Check the fields the router relies on, so a bad file fails at write time, not at routing."""
    missing = [key for key in REQUIRED_METADATA_FIELDS if key not in metadata]
    if missing:
        raise ValueError(f"adapter metadata is missing required field(s): {', '.join(missing)}")
    for key in ("name", "base_model", "description", "output_format", "tone"):
        if not isinstance(metadata[key], str) or not metadata[key].strip():
            raise ValueError(f"adapter metadata field {key!r} must be a non-empty string")
    rank = metadata["rank"]
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"adapter metadata field 'rank' must be an integer >= 1, got {rank!r}")
    tasks = metadata["tasks"]
    if not isinstance(tasks, list) or not all(isinstance(t, str) and t for t in tasks):
        raise ValueError("adapter metadata field 'tasks' must be a list of non-empty strings")
    return dict(metadata)


def write_adapter_metadata(adapter_dir: Path, metadata: Mapping[str, Any]) -> Path:
    """Write `ragtune-adapter.yaml` next to the PEFT weights; returns the file's path."""
    data = validate_adapter_metadata(metadata)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    path = adapter_dir / ADAPTER_METADATA_FILE
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def read_adapter_metadata(adapter_dir: Path) -> dict[str, Any]:
    """Read and validate `ragtune-adapter.yaml`; raises FileNotFoundError or ValueError."""
    path = adapter_dir / ADAPTER_METADATA_FILE
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping")
    return validate_adapter_metadata(data)


def base_model_name(base_dir: Path) -> str:
    """The name adapters record as `base_model`: the base's own label if it has one.

    A base built by ragtune carries `ragtune-base.yaml` with a stable name; any other model
    directory is identified by its folder name.
    """
    path = base_dir / BASE_METADATA_FILE
    if path.is_file():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(name, str) and name:
            return name
    return base_dir.name


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
        raise FailedPrecondition(
            f"adapter {name!r}: no weights ({' or '.join(WEIGHT_FILES)}) in {source}"
        )
    peft_config = json.loads(config_file.read_text())
    try:
        meta = read_adapter_metadata(path)
    except (FileNotFoundError, ValueError) as exc:
        raise FailedPrecondition(f"adapter {name!r}: {ADAPTER_METADATA_FILE}: {exc}") from exc
    declared_base = meta["base_model"]
    if declared_base != base_model:
        raise FailedPrecondition(
            f"adapter {name!r} was trained on base model {declared_base!r}, "
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
        description=meta["description"],
        tasks=list(meta["tasks"]),
        output_format=meta["output_format"],
        tone=meta["tone"],
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
