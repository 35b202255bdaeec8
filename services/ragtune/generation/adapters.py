"""Adapter registry: which LoRA adapters exist, what they are for, and whether they may be served.

An adapter is a directory with PEFT's ``adapter_config.json`` and weights, plus a
``ragtune-adapter.yaml`` metadata file declaring its base model and purpose (read by the router).
This module owns that format; the trainer writes it, the registry checks it before serving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ragtune.common.errors import InvalidArgument, NotFound
from ragtune.common.validation import check_name
from ragtune.generation.sources import SourceRoots

ADAPTER_METADATA_FILE = "ragtune-adapter.yaml"
BASE_METADATA_FILE = "ragtune-base.yaml"

MAX_EXAMPLES = 64  # example requests (and counter-examples) an adapter may declare

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
    for key in ("examples", "counter_examples"):  # optional: the router's semantic cues
        values = metadata.get(key, [])
        if (
            not isinstance(values, list)
            or len(values) > MAX_EXAMPLES
            or not all(isinstance(v, str) and 0 < len(v.strip()) <= 300 for v in values)
        ):
            raise ValueError(
                f"adapter metadata field {key!r} must be a list of at most {MAX_EXAMPLES} "
                "requests, each 1-300 characters"
            )
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
    source: str  # local directory the engine loads from
    base_model: str
    rank: int
    description: str = ""
    tasks: list[str] = field(default_factory=list)
    output_format: str = ""
    tone: str = ""
    size_bytes: int = 0
    origin: str = ""  # where it came from: the directory, or an fsspec URL it was copied from
    examples: list[str] = field(default_factory=list)  # requests that want it (router cues)
    counter_examples: list[str] = field(default_factory=list)  # look-alikes that do not


def _check_weights(name: str, path: Path) -> None:
    """Refuse weights that cannot be read: a truncated or garbled file fails here, not mid-serve."""
    safetensors_file = path / WEIGHT_FILES[0]
    if safetensors_file.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(safetensors_file), framework="pt") as f:
                keys = list(f.keys())
                for key in keys:
                    f.get_slice(key).get_shape()
        except Exception as exc:
            raise InvalidArgument(
                f"adapter {name!r}: {safetensors_file.name} is unreadable ({exc})", field="source"
            ) from exc
        if not any("lora_" in k for k in keys):
            raise InvalidArgument(
                f"adapter {name!r}: {safetensors_file.name} holds no LoRA weights", field="source"
            )
    elif not (path / WEIGHT_FILES[1]).is_file():
        raise InvalidArgument(
            f"adapter {name!r}: no weights ({' or '.join(WEIGHT_FILES)}) in {path}",
            field="source",
        )


def inspect_adapter(name: str, source: str, *, base_model: str, max_rank: int) -> AdapterInfo:
    """Read and check an adapter directory; raise a clear error if it must not be served.

    Missing directory: NotFound. Incomplete or unreadable files, metadata for another base
    model, or a rank over the limit: InvalidArgument (the request named a bad adapter).
    """
    path = Path(source)
    if not path.is_dir():
        raise NotFound(f"adapter {name!r}: no directory at {source}")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise InvalidArgument(
            f"adapter {name!r}: {config_file.name} missing in {source}", field="source"
        )
    try:
        peft_config = json.loads(config_file.read_text())
        rank = int(peft_config.get("r", 0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidArgument(
            f"adapter {name!r}: {config_file.name} is not valid PEFT config JSON ({exc})",
            field="source",
        ) from exc
    try:
        meta = read_adapter_metadata(path)
    except (FileNotFoundError, ValueError, yaml.YAMLError) as exc:
        raise InvalidArgument(
            f"adapter {name!r}: {ADAPTER_METADATA_FILE}: {exc}", field="source"
        ) from exc
    declared_base = meta["base_model"]
    if declared_base != base_model:
        raise InvalidArgument(
            f"adapter {name!r} was trained on base model {declared_base!r}, "
            f"this service runs {base_model!r}",
            field="source",
        )
    if not 1 <= rank <= max_rank:
        raise InvalidArgument(
            f"adapter {name!r} has rank {rank}; the limit is {max_rank}", field="source"
        )
    _check_weights(name, path)
    return AdapterInfo(
        name=name,
        source=str(path),
        base_model=declared_base,
        rank=rank,
        description=meta["description"],
        tasks=list(meta["tasks"]),
        output_format=meta["output_format"],
        tone=meta["tone"],
        size_bytes=sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        origin=str(path),
        examples=list(meta.get("examples", [])),
        counter_examples=list(meta.get("counter_examples", [])),
    )


def is_url(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def fetch_adapter(name: str, url: str, cache_dir: Path) -> Path:
    """Copy an adapter directory from object storage (any fsspec URL: s3://, gs://, memory://,
    ...) into ``cache_dir`` and return the local copy. A failed copy leaves no partial folder."""
    import shutil
    import tempfile

    import fsspec

    staging: Path | None = None
    try:
        fs, root = fsspec.core.url_to_fs(url)
        if not fs.isdir(root):
            raise NotFound(f"adapter {name!r}: nothing at {url}")
        cache_dir.mkdir(parents=True, exist_ok=True)
        target = cache_dir / name
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir))
        for remote in fs.find(root):
            local = staging / Path(remote).relative_to(Path(root))
            local.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(local))
    except (ImportError, ValueError, OSError) as exc:  # unknown protocol, missing driver, I/O
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise InvalidArgument(
            f"cannot read adapter {name!r} from {url}: {exc}", field="source"
        ) from exc
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


class AdapterRegistry:
    """Adapters that may be served: found in ``adapters_dir`` or loaded from an explicit source.

    ``UnloadAdapter`` removes an adapter from here: requests naming it get NotFound, and a
    rescan of the directory does not bring it back until ``LoadAdapter`` names it again.
    """

    def __init__(
        self,
        adapters_dir: str | None,
        *,
        base_model: str,
        max_rank: int,
        cache_dir: str | None = None,
        roots: Sequence[str] = (),
    ) -> None:
        self.base_model = base_model
        self.max_rank = max_rank
        self.known: dict[str, AdapterInfo] = {}
        self.removed: set[str] = set()
        self.adapters_dir = Path(adapters_dir) if adapters_dir else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        # Where a caller's source may point: adapters_dir and the configured roots.
        self.roots = SourceRoots([adapters_dir or "", *roots])

    def scan(self) -> dict[str, str]:
        """Register every new adapter under ``adapters_dir``; return {name: why} of refusals."""
        refused: dict[str, str] = {}
        if self.adapters_dir is None or not self.adapters_dir.is_dir():
            return refused
        for path in sorted(p for p in self.adapters_dir.iterdir() if p.is_dir()):
            if path.name in self.known or path.name in self.removed:
                continue
            try:
                self.register(path.name, str(path))
            except (NotFound, InvalidArgument) as exc:
                refused[path.name] = str(exc)
        return refused

    def register(self, name: str, source: str) -> AdapterInfo:
        """Check the adapter at ``source`` (a directory or an fsspec URL) and make it servable."""
        check_name(name, "name")
        origin = source
        if source.startswith("file://"):
            source = source[len("file://") :]
        if is_url(source):
            if self.cache_dir is None:  # made on first use: most services never need one
                import tempfile

                self.cache_dir = Path(tempfile.mkdtemp(prefix="ragtune-adapters-"))
            source = str(fetch_adapter(name, source, self.cache_dir))
        try:
            info = inspect_adapter(name, source, base_model=self.base_model, max_rank=self.max_rank)
        except OSError as exc:  # e.g. a folder this service may not read
            raise InvalidArgument(
                f"adapter {name!r}: cannot read {source} ({exc.strerror})", field="source"
            ) from exc
        info.origin = origin
        self.known[name] = info
        self.removed.discard(name)
        return info

    def resolve(self, name: str, source: str = "", *, reload: bool = False) -> AdapterInfo:
        """The adapter's info; ``source`` (confined to the roots) registers it from there
        first. Only an explicit load (``reload``) brings back an adapter that UnloadAdapter
        removed."""
        if source:
            return self.register(name, self.roots.confine(source))
        if name not in self.known and (reload or name not in self.removed) and self.adapters_dir:
            candidate = self.adapters_dir / name
            if candidate.is_dir():
                return self.register(name, str(candidate))
        if name not in self.known:
            raise NotFound(f"adapter {name!r} not found")
        return self.known[name]

    def remove(self, name: str) -> AdapterInfo:
        if name not in self.known:
            raise NotFound(f"adapter {name!r} not found")
        self.removed.add(name)
        return self.known.pop(name)
