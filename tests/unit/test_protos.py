"""The checked-in generated code must be exactly what protos/ generates."""

import re
from pathlib import Path

from ragtune.protogen import generate

REPO = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos(tmp_path):
    generate(REPO / "protos", tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "ragtune" / "v1").iterdir()}
    checked_in = {
        p.name: p.read_bytes()
        for p in (REPO / "services" / "ragtune" / "v1").iterdir()
        if p.is_file()
    }
    assert sorted(fresh) == sorted(checked_in), "run `make protos`"
    stale = [name for name in fresh if fresh[name] != checked_in[name]]
    assert not stale, f"generated code differs from protos/ for {stale}: run `make protos`"


FIELD_OR_RPC = re.compile(r"^\s+((repeated |map<[^>]+> )?[\w.]+ \w+ = \d+;|rpc )")


def test_every_field_and_rpc_is_commented():
    """The protos are the API reference: every field and RPC has a comment just above it."""
    bare = []
    for proto in sorted((REPO / "protos" / "ragtune" / "v1").glob("*.proto")):
        lines = proto.read_text().splitlines()
        assert lines[0].startswith("//"), f"{proto.name} has no header comment"
        bare += [
            f"{proto.name}:{n + 1}: {line.strip()}"
            for n, line in enumerate(lines)
            if FIELD_OR_RPC.match(line) and not lines[n - 1].strip().startswith("//")
        ]
    assert not bare, "uncommented:\n" + "\n".join(bare)
