from ragtune.v1 import common_pb2 as _common_pb2
from ragtune.v1 import generation_pb2 as _generation_pb2
from ragtune.v1 import retrieval_pb2 as _retrieval_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AnswerRequest(_message.Message):
    __slots__ = ("question", "path", "adapter", "collection", "top_k", "sampling", "filter", "require_citations", "freshness_sensitive", "output_format", "task", "tone", "latency_budget_ms", "max_cost_micro_usd")
    class FilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_CITATIONS_FIELD_NUMBER: _ClassVar[int]
    FRESHNESS_SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    TONE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    question: str
    path: _common_pb2.Path
    adapter: str
    collection: str
    top_k: int
    sampling: _common_pb2.SamplingParams
    filter: _containers.ScalarMap[str, str]
    require_citations: bool
    freshness_sensitive: bool
    output_format: str
    task: str
    tone: str
    latency_budget_ms: int
    max_cost_micro_usd: int
    def __init__(self, question: _Optional[str] = ..., path: _Optional[_Union[_common_pb2.Path, str]] = ..., adapter: _Optional[str] = ..., collection: _Optional[str] = ..., top_k: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., filter: _Optional[_Mapping[str, str]] = ..., require_citations: _Optional[bool] = ..., freshness_sensitive: _Optional[bool] = ..., output_format: _Optional[str] = ..., task: _Optional[str] = ..., tone: _Optional[str] = ..., latency_budget_ms: _Optional[int] = ..., max_cost_micro_usd: _Optional[int] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("answer", "route", "citations", "usage", "timings", "finish_reason", "cost", "request_id", "model")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    answer: str
    route: _common_pb2.RouteDecision
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    usage: _common_pb2.Usage
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    finish_reason: str
    cost: _common_pb2.Cost
    request_id: str
    model: str
    def __init__(self, answer: _Optional[str] = ..., route: _Optional[_Union[_common_pb2.RouteDecision, _Mapping]] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., finish_reason: _Optional[str] = ..., cost: _Optional[_Union[_common_pb2.Cost, _Mapping]] = ..., request_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class AnswerEvent(_message.Message):
    __slots__ = ("route", "delta", "done")
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    route: _common_pb2.RouteDecision
    delta: str
    done: AnswerResponse
    def __init__(self, route: _Optional[_Union[_common_pb2.RouteDecision, _Mapping]] = ..., delta: _Optional[str] = ..., done: _Optional[_Union[AnswerResponse, _Mapping]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("doc_id", "title", "text", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    doc_id: str
    title: str
    text: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, doc_id: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("collection", "documents", "create_collection", "ingest_id", "source", "final")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    INGEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    create_collection: bool
    ingest_id: str
    source: str
    final: bool
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., create_collection: _Optional[bool] = ..., ingest_id: _Optional[str] = ..., source: _Optional[str] = ..., final: _Optional[bool] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("documents", "chunks", "seq", "usage", "run")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    documents: int
    chunks: int
    seq: int
    usage: _common_pb2.Usage
    run: IngestRun
    def __init__(self, documents: _Optional[int] = ..., chunks: _Optional[int] = ..., seq: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., run: _Optional[_Union[IngestRun, _Mapping]] = ...) -> None: ...

class IngestRun(_message.Message):
    __slots__ = ("ingest_id", "source", "documents", "chunks", "started_at", "updated_at", "complete")
    INGEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ingest_id: str
    source: str
    documents: int
    chunks: int
    started_at: str
    updated_at: str
    complete: bool
    def __init__(self, ingest_id: _Optional[str] = ..., source: _Optional[str] = ..., documents: _Optional[int] = ..., chunks: _Optional[int] = ..., started_at: _Optional[str] = ..., updated_at: _Optional[str] = ..., complete: _Optional[bool] = ...) -> None: ...

class GatewayCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GatewayCreateCollectionRequest(_message.Message):
    __slots__ = ("name", "index_type", "metric", "lexical")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INDEX_TYPE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LEXICAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    index_type: str
    metric: str
    lexical: bool
    def __init__(self, name: _Optional[str] = ..., index_type: _Optional[str] = ..., metric: _Optional[str] = ..., lexical: _Optional[bool] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection", "last_ingest")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    LAST_INGEST_FIELD_NUMBER: _ClassVar[int]
    collection: _retrieval_pb2.Collection
    last_ingest: IngestRun
    def __init__(self, collection: _Optional[_Union[_retrieval_pb2.Collection, _Mapping]] = ..., last_ingest: _Optional[_Union[IngestRun, _Mapping]] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("collection", "doc_ids")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOC_IDS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    doc_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., doc_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteDocumentsResponse(_message.Message):
    __slots__ = ("chunks", "seq")
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    chunks: int
    seq: int
    def __init__(self, chunks: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class GatewayListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("request_id", "rating", "comment", "preferred_path")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_PATH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    rating: int
    comment: str
    preferred_path: _common_pb2.Path
    def __init__(self, request_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., preferred_path: _Optional[_Union[_common_pb2.Path, str]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("path", "adjustments")
    PATH_FIELD_NUMBER: _ClassVar[int]
    ADJUSTMENTS_FIELD_NUMBER: _ClassVar[int]
    path: _common_pb2.Path
    adjustments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, path: _Optional[_Union[_common_pb2.Path, str]] = ..., adjustments: _Optional[_Iterable[str]] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ("since", "until")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    since: str
    until: str
    def __init__(self, since: _Optional[str] = ..., until: _Optional[str] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("day", "path", "requests", "cost_micro_usd", "prompt_tokens", "completion_tokens", "rated", "mean_rating")
    DAY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RATED_FIELD_NUMBER: _ClassVar[int]
    MEAN_RATING_FIELD_NUMBER: _ClassVar[int]
    day: str
    path: _common_pb2.Path
    requests: int
    cost_micro_usd: int
    prompt_tokens: int
    completion_tokens: int
    rated: int
    mean_rating: float
    def __init__(self, day: _Optional[str] = ..., path: _Optional[_Union[_common_pb2.Path, str]] = ..., requests: _Optional[int] = ..., cost_micro_usd: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., rated: _Optional[int] = ..., mean_rating: _Optional[float] = ...) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("tenant", "rows", "total_cost_micro_usd", "quota")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_COST_MICRO_USD_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    total_cost_micro_usd: int
    quota: Quota
    def __init__(self, tenant: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., total_cost_micro_usd: _Optional[int] = ..., quota: _Optional[_Union[Quota, _Mapping]] = ...) -> None: ...

class Quota(_message.Message):
    __slots__ = ("requests_per_minute", "tokens_per_day", "tokens_used_today")
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_USED_TODAY_FIELD_NUMBER: _ClassVar[int]
    requests_per_minute: int
    tokens_per_day: int
    tokens_used_today: int
    def __init__(self, requests_per_minute: _Optional[int] = ..., tokens_per_day: _Optional[int] = ..., tokens_used_today: _Optional[int] = ...) -> None: ...
