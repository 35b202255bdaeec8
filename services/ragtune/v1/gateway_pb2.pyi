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
    __slots__ = ("question", "path", "adapter", "collection", "top_k", "sampling", "filter")
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
    question: str
    path: _common_pb2.Path
    adapter: str
    collection: str
    top_k: int
    sampling: _common_pb2.SamplingParams
    filter: _containers.ScalarMap[str, str]
    def __init__(self, question: _Optional[str] = ..., path: _Optional[_Union[_common_pb2.Path, str]] = ..., adapter: _Optional[str] = ..., collection: _Optional[str] = ..., top_k: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., filter: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("answer", "route", "citations", "usage", "timings", "finish_reason")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    answer: str
    route: _common_pb2.RouteDecision
    citations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Citation]
    usage: _common_pb2.Usage
    timings: _containers.RepeatedCompositeFieldContainer[_common_pb2.StageTiming]
    finish_reason: str
    def __init__(self, answer: _Optional[str] = ..., route: _Optional[_Union[_common_pb2.RouteDecision, _Mapping]] = ..., citations: _Optional[_Iterable[_Union[_common_pb2.Citation, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[_common_pb2.StageTiming, _Mapping]]] = ..., finish_reason: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("collection", "documents", "create_collection")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    create_collection: bool
    def __init__(self, collection: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., create_collection: _Optional[bool] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("documents", "chunks", "seq", "usage")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    documents: int
    chunks: int
    seq: int
    usage: _common_pb2.Usage
    def __init__(self, documents: _Optional[int] = ..., chunks: _Optional[int] = ..., seq: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class GatewayCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GatewayListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
