"""LoadAdapter reads only under the configured adapter roots: anything else gets one answer,
whatever is or is not at that path, so no caller can probe the server's file system."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import grpc
import pydantic
import pytest

from ragtune.common.errors import InvalidArgument, NotFound, RagtuneError, to_status
from ragtune.generation.adapters import AdapterRegistry
from ragtune.generation.config import GenerationConfig
from ragtune.generation.sources import MAX_SOURCE_CHARS, SourceRoots
from ragtune.v1 import generation_pb2 as pb
from tests.conftest import run


@pytest.fixture(scope="module")
def outside(devmodel):
    """A folder outside every root (pytest's base folder is one in these tests), holding a
    valid adapter."""
    folder = Path(tempfile.mkdtemp(prefix="ragtune-outside-"))
    shutil.copytree(devmodel.adapters["pirate"], folder / "pirate")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def registry(devmodel, tmp_path):
    (tmp_path / "adapters").mkdir()
    (tmp_path / "extra").mkdir()
    return AdapterRegistry(
        str(tmp_path / "adapters"),
        base_model=devmodel.base_dir.name,
        max_rank=64,
        roots=[str(tmp_path / "extra"), "s3://bucket/adapters/"],
    )


def answer(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(RagtuneError) as err:
        call()
    return to_status(err.value)


def test_outside_sources_get_the_same_answer_whether_or_not_they_exist(registry, outside):
    root = registry.adapters_dir
    (root / "link").symlink_to(outside, target_is_directory=True)
    probes = [
        outside / "pirate",  # a valid adapter
        outside,  # an existing folder
        outside / "missing",  # nothing there
        Path("/etc/passwd"),  # a file
        Path("/nonexistent/really/not/here"),
        root / os.path.relpath(outside / "pirate", root),  # `..` out of a root
        root / "link" / "pirate",  # a symlink out of a root
        root / "link",
    ]
    answers = {answer(lambda p=p: registry.resolve("sea", str(p))) for p in probes}
    (code, details), *_ = answers
    assert len(answers) == 1, answers
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("source: ")
    assert "adapter roots" in details
    assert "sea" not in registry.known


def test_a_source_inside_a_root_loads_and_a_missing_one_is_not_found(registry, devmodel):
    extra = registry.roots.roots[1]
    shutil.copytree(devmodel.adapters["pirate"], Path(extra) / "sea")
    info = registry.resolve("sea", f"{extra}/sea")
    assert info.rank == 8 and info.origin == str(Path(extra, "sea").resolve())
    assert registry.resolve("sea2", f"file://{extra}/../extra/sea").name == "sea2"
    with pytest.raises(NotFound):
        registry.resolve("ghost", f"{extra}/ghost")
    code, _ = answer(lambda: registry.resolve("ghost", f"{extra}/a/../../ghost"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # .. leaves the root


def test_long_and_malformed_sources_are_invalid_arguments_naming_the_field(registry):
    inside = registry.roots.roots[1]
    for source, why in [
        ("/x" * 2500, f"is 5000 characters; the limit is {MAX_SOURCE_CHARS}"),
        (f"{inside}/{'a' * 300}", "has a path component over 255 characters"),
        (f"{inside}/a\x00b", "must not contain control characters"),
    ]:
        with pytest.raises(InvalidArgument, match=why) as err:
            registry.resolve("x", source)
        assert err.value.field == "source"


@pytest.mark.parametrize(
    ("source", "allowed"),
    [
        ("s3://bucket/adapters/pirate", True),
        ("S3://bucket/adapters/pirate/", True),
        ("s3://bucket/adapters//./pirate", True),
        ("s3://bucket/adapters-old/pirate", False),
        ("s3://bucket/adapters/../private/key", False),
        ("s3://other/adapters/pirate", False),
        ("gs://bucket/adapters/pirate", False),
        ("simplecache::s3://bucket/adapters/pirate", False),
        ("s3://bucket/adapters/x::file:///etc", False),
    ],
)
def test_object_store_sources_must_be_under_a_prefix(source, allowed):
    roots = SourceRoots(["/srv/adapters", "s3://bucket/adapters/"])
    if allowed:
        assert roots.confine(source) == source
    else:
        with pytest.raises(InvalidArgument, match="adapter roots") as err:
            roots.confine(source)
        assert err.value.field == "source"


def test_the_default_root_is_adapters_dir_only(tmp_path):
    config = GenerationConfig(model_path=str(tmp_path), adapters_dir=str(tmp_path / "adapters"))
    assert config.adapter_roots == []
    registry = AdapterRegistry(config.adapters_dir, base_model="m", max_rank=8)
    assert registry.roots.roots == [str(tmp_path / "adapters")]
    with pytest.raises(InvalidArgument):
        registry.resolve("x", str(tmp_path / "elsewhere"))
    nowhere = AdapterRegistry(None, base_model="m", max_rank=8)
    with pytest.raises(InvalidArgument, match="none configured"):
        nowhere.resolve("x", str(tmp_path))
    with pytest.raises(pydantic.ValidationError, match="adapter_roots"):
        GenerationConfig(model_path=str(tmp_path), adapter_roots=[""])


def test_load_adapter_answers_outside_probes_alike_and_loads_inside(
    generation_service, outside, devmodel, tmp_path
):
    def load(source: str):
        return generation_service.LoadAdapter(pb.LoadAdapterRequest(name="probe", source=source))

    probes = [str(outside / "pirate"), str(outside / "missing"), "/etc", "/" + "a" * 5000]
    answers = [answer(lambda s=s: run(load(s))) for s in probes]
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == answers[3][0] == grpc.StatusCode.INVALID_ARGUMENT
    assert answers[3][1].startswith("source: is 5001 characters")

    inside = tmp_path / "probe"  # under a root of the test service
    shutil.copytree(devmodel.adapters["pirate"], inside)
    reply = run(load(str(inside)))
    assert reply.adapter.loaded and reply.adapter.name == "probe"
    run(generation_service.UnloadAdapter(pb.UnloadAdapterRequest(name="probe")))
