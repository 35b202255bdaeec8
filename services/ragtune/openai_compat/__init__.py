"""The OpenAI-compatible HTTP API over the gateway: ``POST /v1/chat/completions`` and
``GET /v1/models`` on Serve's HTTP port, so OpenAI clients and benchmark tools (vLLM's
``vllm bench serve``, GuideLLM, AIPerf) drive ragtune unchanged. What maps to what:
docs/openai-api.md."""
