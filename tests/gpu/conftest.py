"""GPU tests: vLLM on a real NVIDIA GPU. Each module skips itself where there is no GPU or vLLM
is not installed, so CI machines without one collect them as skipped."""

from __future__ import annotations


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU and vllm")
