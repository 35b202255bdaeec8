from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Path(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PATH_AUTO: _ClassVar[Path]
    PATH_RAG: _ClassVar[Path]
    PATH_TUNED: _ClassVar[Path]
    PATH_HYBRID: _ClassVar[Path]
PATH_AUTO: Path
PATH_RAG: Path
PATH_TUNED: Path
PATH_HYBRID: Path

class RouteDecision(_message.Message):
    __slots__ = ("path", "adapter", "collection", "reasons", "explanation", "confidence", "expected_latency_ms", "expected_cost_micro_usd", "probe", "cue")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    PROBE_FIELD_NUMBER: _ClassVar[int]
    CUE_FIELD_NUMBER: _ClassVar[int]
    path: Path
    adapter: str
    collection: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    explanation: str
    confidence: float
    expected_latency_ms: float
    expected_cost_micro_usd: int
    probe: RetrievalProbe
    cue: CueMatch
    def __init__(self, path: _Optional[_Union[Path, str]] = ..., adapter: _Optional[str] = ..., collection: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., explanation: _Optional[str] = ..., confidence: _Optional[float] = ..., expected_latency_ms: _Optional[float] = ..., expected_cost_micro_usd: _Optional[int] = ..., probe: _Optional[_Union[RetrievalProbe, _Mapping]] = ..., cue: _Optional[_Union[CueMatch, _Mapping]] = ...) -> None: ...

class RetrievalProbe(_message.Message):
    __slots__ = ("top_score", "margin", "confident", "ms", "probability", "threshold", "calibrated", "feedback_offset")
    TOP_SCORE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENT_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CALIBRATED_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_OFFSET_FIELD_NUMBER: _ClassVar[int]
    top_score: float
    margin: float
    confident: bool
    ms: float
    probability: float
    threshold: float
    calibrated: bool
    feedback_offset: float
    def __init__(self, top_score: _Optional[float] = ..., margin: _Optional[float] = ..., confident: _Optional[bool] = ..., ms: _Optional[float] = ..., probability: _Optional[float] = ..., threshold: _Optional[float] = ..., calibrated: _Optional[bool] = ..., feedback_offset: _Optional[float] = ...) -> None: ...

class CueMatch(_message.Message):
    __slots__ = ("adapter", "similarity", "example", "threshold", "counter_similarity", "support", "topic_similarity")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COUNTER_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SUPPORT_FIELD_NUMBER: _ClassVar[int]
    TOPIC_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    similarity: float
    example: str
    threshold: float
    counter_similarity: float
    support: float
    topic_similarity: float
    def __init__(self, adapter: _Optional[str] = ..., similarity: _Optional[float] = ..., example: _Optional[str] = ..., threshold: _Optional[float] = ..., counter_similarity: _Optional[float] = ..., support: _Optional[float] = ..., topic_similarity: _Optional[float] = ...) -> None: ...

class StageCost(_message.Message):
    __slots__ = ("stage", "worker", "busy_ms", "tokens", "micro_usd")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BUSY_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    stage: str
    worker: str
    busy_ms: float
    tokens: int
    micro_usd: int
    def __init__(self, stage: _Optional[str] = ..., worker: _Optional[str] = ..., busy_ms: _Optional[float] = ..., tokens: _Optional[int] = ..., micro_usd: _Optional[int] = ...) -> None: ...

class Cost(_message.Message):
    __slots__ = ("total_micro_usd", "stages", "list_price_micro_usd")
    TOTAL_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    LIST_PRICE_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    total_micro_usd: int
    stages: _containers.RepeatedCompositeFieldContainer[StageCost]
    list_price_micro_usd: int
    def __init__(self, total_micro_usd: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[StageCost, _Mapping]]] = ..., list_price_micro_usd: _Optional[int] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("marker", "doc_id", "chunk_id", "score", "snippet", "metadata", "score_kind")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MARKER_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    marker: int
    doc_id: str
    chunk_id: str
    score: float
    snippet: str
    metadata: _containers.ScalarMap[str, str]
    score_kind: str
    def __init__(self, marker: _Optional[int] = ..., doc_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., score: _Optional[float] = ..., snippet: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., score_kind: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("embedding_tokens", "rerank_tokens", "prompt_tokens", "completion_tokens")
    EMBEDDING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RERANK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    embedding_tokens: int
    rerank_tokens: int
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, embedding_tokens: _Optional[int] = ..., rerank_tokens: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ms: float
    def __init__(self, stage: _Optional[str] = ..., ms: _Optional[float] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("max_tokens", "temperature", "top_p", "seed", "stop", "ignore_eos")
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    ignore_eos: bool
    def __init__(self, max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., ignore_eos: _Optional[bool] = ...) -> None: ...
