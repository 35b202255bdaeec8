"""The checked-in generated code must be exactly what protos/ generates."""

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


def test_every_proto_field_is_commented():
    """The protos are the API reference: each service file documents itself."""
    for proto in (REPO / "protos" / "ragtune" / "v1").glob("*.proto"):
        assert proto.read_text().lstrip().startswith("//"), f"{proto.name} has no header comment"
