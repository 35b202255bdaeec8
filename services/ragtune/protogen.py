"""Generate the Python protobuf and gRPC modules in ``ragtune/v1`` from ``protos/``.

Used by ``make protos`` and by the test that fails when the checked-in code drifts.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_PACKAGE = Path("ragtune") / "v1"


def generate(proto_root: Path, out_root: Path) -> list[Path]:
    """Run grpcio-tools' protoc over every ``.proto`` under ``proto_root/ragtune/v1``."""
    from grpc_tools import protoc  # dev extra: pinned to the grpcio runtime version

    protos = sorted((proto_root / PROTO_PACKAGE).glob("*.proto"))
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_root / PROTO_PACKAGE}")
    (out_root / PROTO_PACKAGE).mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(str(p.relative_to(proto_root)) for p in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    init = out_root / PROTO_PACKAGE / "__init__.py"
    init.write_text('"""Generated from protos/ragtune/v1 by `make protos`; do not edit."""\n')
    return sorted((out_root / PROTO_PACKAGE).glob("*"))


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    for path in generate(root / "protos", root / "services"):
        print(path)


if __name__ == "__main__":
    main()
