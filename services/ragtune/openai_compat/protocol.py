"""The body of ``POST /v1/chat/completions``, validated with pydantic.

What ragtune honours maps onto the gateway's ``AnswerRequest`` (``mapping.py``); a parameter
it cannot honour is refused with a 400 naming it when it asks for anything but the default
(tools, logprobs, several choices, penalties...): silently ignoring it would hand back an
answer the caller did not ask for. Fields OpenAI or vLLM define that do not change the answer
(``user``, ``metadata``, ``store``, ...) and unknown fields are ignored, as OpenAI's and vLLM's
servers ignore what they do not know. The table is docs/openai-api.md's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Parameters refused unless absent or at one of these values (their defaults), by name.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "tools": ([],),
    "tool_choice": ("none", "auto"),
    "functions": ([],),
    "function_call": ("none", "auto"),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
    "audio": (),
    "prediction": (),
    "web_search_options": (),
    # vLLM's sampling extensions (`vllm bench serve --top-k ...` sends them)
    "top_k": (0, -1),
    "min_p": (0,),
    "repetition_penalty": (1,),
}

MAX_STOP_STRINGS = 16


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # `name` and the like

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # A string or a list of text parts, joined here. Checked by hand rather than typed as a
    # union: pydantic would name each union member in the error's location.
    content: str = ""

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        if value is None or isinstance(value, str):
            return value or ""
        if isinstance(value, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in value
        ):
            return "".join(p["text"] for p in value)
        raise ValueError(
            "must be a string or a list of text parts ({'type': 'text', 'text': ...}); "
            "images, audio and files are not supported"
        )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class RagtuneOptions(BaseModel):
    """The request's ``ragtune`` object: the gateway's own request fields, for callers that
    want them (``extra_body={"ragtune": {...}}`` with the openai client)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not a no-op

    path: Literal["auto", "rag", "tuned", "hybrid"] = "auto"
    collection: str = ""  # empty: the application's `collection`, else the gateway's default
    top_k: int = Field(default=0, ge=0, le=100)  # 0: the gateway's default
    filter: dict[str, str] = Field(default_factory=dict)
    require_citations: bool = False
    freshness_sensitive: bool = False
    output_format: str = ""
    task: str = ""
    tone: str = ""
    latency_budget_ms: int = Field(default=0, ge=0, le=2**31 - 1)
    max_cost_micro_usd: int = Field(default=0, ge=0, le=2**63 - 1)

    @field_validator("path", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2**31 - 1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: list[str] = Field(default_factory=list)  # a string or a list of strings
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says
    ragtune: RagtuneOptions = Field(default_factory=RagtuneOptions)

    # Refused unless neutral (NEUTRAL); typed loosely so that the refusal, not a type error,
    # is what the caller reads.
    n: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    response_format: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    top_k: Any = None
    min_p: Any = None
    repetition_penalty: Any = None

    @field_validator(*NEUTRAL)
    @classmethod
    def _neutral(cls, value: Any, info: Any) -> Any:
        allowed = NEUTRAL[info.field_name]
        if value is not None and value not in allowed:
            accepted = " or ".join(repr(a) for a in allowed) if allowed else "nothing"
            raise ValueError(f"is not supported by ragtune (accepted: {accepted}); see docs")
        return value

    @field_validator("messages")
    @classmethod
    def _one_question(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        # The gateway answers one question: it writes the model's prompt itself (its own
        # instructions, the retrieved passages), and its router reads the question alone.
        # Folding other turns into the question would change what it routes on, so they are
        # refused rather than dropped.
        if len(messages) != 1 or messages[0].role != "user":
            raise ValueError(
                "ragtune answers one question per request: send exactly one message, with role "
                "'user' (system prompts and earlier turns are not supported)"
            )
        if not messages[0].content.strip():
            raise ValueError("the user message's content must not be empty")
        return messages

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, value: Any) -> list[str]:
        stops = [value] if isinstance(value, str) else [] if value is None else value
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise ValueError("must be a non-empty string or a list of them")
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        return stops

    @property
    def question(self) -> str:
        return self.messages[-1].content

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage
