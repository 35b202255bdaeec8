"""GPU tests: FAISS on a real NVIDIA GPU. Each module skips itself where there is no GPU, so
machines without one collect them as skipped. (vLLM's tests are in tests/vllm: they need vLLM,
which runs on CPUs too.)"""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU")
