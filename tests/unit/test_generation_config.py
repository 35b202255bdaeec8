"""GenerationConfig's engine_kwargs: checked once against vLLM's AsyncEngineArgs, then passed to
it as they are. vLLM is not installed here: a fake ``vllm`` module with a small AsyncEngineArgs
stands in for it."""

from __future__ import annotations

import dataclasses
import importlib.machinery
import sys
import types

import pytest
from pydantic import ValidationError

from ragtune.generation.config import GenerationConfig
from ragtune.generation.service import make_engine


@dataclasses.dataclass
class FakeEngineArgs:
    """A few of vLLM's AsyncEngineArgs fields, enough for the checks."""

    model: str = ""
    served_model_name: str | None = None
    dtype: str = "auto"
    enable_lora: bool = False
    max_lora_rank: int = 16
    max_loras: int = 1
    max_cpu_loras: int | None = None
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    distributed_executor_backend: str | None = None


class FakePlatform:
    def __init__(self, cpu: bool) -> None:
        self.cpu = cpu

    def is_cpu(self) -> bool:
        return self.cpu


@pytest.fixture
def fake_vllm(monkeypatch):
    """vLLM as on a GPU machine (``vllm.platforms.current_platform`` is not the CPU)."""
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", loader=None)  # find_spec sees it
    module.AsyncEngineArgs = FakeEngineArgs
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = FakePlatform(cpu=False)
    module.platforms = platforms
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    return module


def vllm_config(**engine_kwargs) -> GenerationConfig:
    return GenerationConfig(
        model_path="/models/m", model_name="m", engine="vllm", engine_kwargs=engine_kwargs
    )


def test_engine_kwargs_vllm_takes_pass(fake_vllm):
    config = vllm_config(max_loras=8, gpu_memory_utilization=0.5, enforce_eager=True)
    assert config.engine_kwargs == {
        "max_loras": 8,
        "gpu_memory_utilization": 0.5,
        "enforce_eager": True,
    }


def test_a_misspelt_engine_kwarg_is_named_with_the_closest_valid_one(fake_vllm):
    with pytest.raises(ValidationError, match="has no 'gpu_memory_utilisation'") as err:
        vllm_config(gpu_memory_utilisation=0.5)
    assert "did you mean 'gpu_memory_utilization'?" in str(err.value)
    with pytest.raises(ValidationError, match="has no 'speculative_everything'"):
        vllm_config(speculative_everything=True)


@pytest.mark.parametrize(
    ("key", "instead"),
    [
        ("model", "set the config's 'model_path' instead"),
        ("served_model_name", "set the config's 'model_name' instead"),
        ("max_lora_rank", "set the config's 'max_lora_rank' instead"),
        ("dtype", "set the config's 'dtype' instead"),
        ("enable_lora", "ragtune always sets it"),
    ],
)
def test_engine_kwargs_ragtune_sets_itself_are_refused(fake_vllm, key, instead):
    with pytest.raises(ValidationError, match=f"'{key}' is set by ragtune; {instead}"):
        vllm_config(**{key: 1})


def test_without_vllm_only_reserved_keys_are_checked(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec: not installed
    assert vllm_config(some_future_setting=1).engine_kwargs == {"some_future_setting": 1}
    with pytest.raises(ValidationError, match="'model' is set by ragtune"):
        vllm_config(model="/elsewhere")


def test_engine_kwargs_are_refused_for_the_transformers_engine():
    with pytest.raises(ValidationError, match="engine_kwargs is for engine 'vllm'"):
        GenerationConfig(model_path="/models/m", model_name="m", engine_kwargs={"max_loras": 2})
    assert GenerationConfig(model_path="/models/m", model_name="m").engine_kwargs == {}


def test_engine_kwargs_reach_async_engine_args_as_they_are(fake_vllm):
    """A vLLM setting ragtune never heard of needs no code: it goes straight through."""
    engine = make_engine(vllm_config(max_model_len=512, enforce_eager=True))
    assert engine.engine_args() == FakeEngineArgs(
        model="/models/m",
        served_model_name="m",
        dtype="float32",
        enable_lora=True,
        max_lora_rank=64,
        max_loras=4,  # ragtune's default: several adapters in one batch
        max_model_len=512,
        enforce_eager=True,
    )
    assert make_engine(vllm_config(max_loras=2)).engine_args().max_loras == 2


def test_on_cpu_one_worker_runs_inside_the_engine_core_unless_told_otherwise(
    fake_vllm, monkeypatch
):
    """vLLM's CPU build would start its worker in a third process (a replica's slowest start,
    docs/generation.md#start-up); ragtune asks for the single-process executor where vLLM
    allows it, and leaves GPUs, several workers and an explicit choice alone."""
    import os

    assert make_engine(vllm_config()).engine_args().distributed_executor_backend is None  # GPU
    fake_vllm.platforms.current_platform = FakePlatform(cpu=True)
    assert make_engine(vllm_config()).engine_args().distributed_executor_backend == "uni"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # what vLLM's CPU check reads
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING")
    two = make_engine(vllm_config(tensor_parallel_size=2)).engine_args()
    assert two.distributed_executor_backend is None
    chosen = make_engine(vllm_config(distributed_executor_backend="mp")).engine_args()
    assert chosen.distributed_executor_backend == "mp"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # the operator's own setting
    assert make_engine(vllm_config()).engine_args().distributed_executor_backend is None
