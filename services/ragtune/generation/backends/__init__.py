"""The generation engines (``ragtune.generation.backend.Engine``): transformers + PEFT and vLLM."""
