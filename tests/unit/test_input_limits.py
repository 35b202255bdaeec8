"""The gateway's input limits (issue 21, item 5): from config, every string, list and map of a
public request bounded, each refusal naming the field and the limit."""

from __future__ import annotations

import pytest

from ragtune.common.errors import InvalidArgument
from ragtune.gateway.config import GatewayConfig
from ragtune.gateway.input_limits import Limits, check_ingest_size, check_request
from ragtune.v1 import common_pb2, gateway_pb2, generation_pb2

LIMITS = Limits()
DOC = gateway_pb2.Document


@pytest.mark.parametrize(
    ("request_", "field", "limit"),
    [
        (gateway_pb2.AnswerRequest(question="q" * 4001), "question", "4000"),
        (gateway_pb2.AnswerRequest(top_k=101), "top_k", "100"),
        (gateway_pb2.AnswerRequest(top_k=-1), "top_k", "100"),
        (
            gateway_pb2.AnswerRequest(sampling=common_pb2.SamplingParams(max_tokens=2049)),
            "sampling.max_tokens",
            "2048",
        ),
        (
            gateway_pb2.AnswerRequest(sampling=common_pb2.SamplingParams(stop=["."] * 9)),
            "sampling.stop",
            "8",
        ),
        (
            gateway_pb2.AnswerRequest(sampling=common_pb2.SamplingParams(temperature=float("nan"))),
            "sampling.temperature",
            "finite",
        ),
        (gateway_pb2.AnswerRequest(filter={f"k{i}": "v" for i in range(17)}), "filter", "16"),
        (gateway_pb2.AnswerRequest(filter={"k" * 129: "v"}), "filter (a key)", "128"),
        (gateway_pb2.AnswerRequest(filter={"k": "v" * 1025}), "filter (a value)", "1024"),
        (gateway_pb2.AnswerRequest(path=7), "path", "PATH_AUTO"),
        (gateway_pb2.AnswerRequest(collection="c" * 257), "collection", "256"),
        (gateway_pb2.IngestRequest(documents=[DOC(doc_id="d")] * 1001), "documents", "1000"),
        (
            gateway_pb2.IngestRequest(documents=[DOC(doc_id="d", text="t" * 2_000_001)]),
            "documents[0].text",
            "2000000",
        ),
        (
            gateway_pb2.IngestRequest(documents=[DOC(doc_id="d" * 513)]),
            "documents[0].doc_id",
            "512",
        ),
        (
            gateway_pb2.IngestRequest(documents=[DOC(metadata={f"k{i}": "v" for i in range(33)})]),
            "documents[0].metadata",
            "32",
        ),
        (gateway_pb2.DeleteDocumentsRequest(doc_ids=["d"] * 1001), "doc_ids", "1000"),
        (gateway_pb2.FeedbackRequest(comment="c" * 2001), "comment", "2000"),
        (gateway_pb2.UsageRequest(until="é" * 300_000), "until", "256"),
        (generation_pb2.LoadAdapterRequest(source="/x" * 2500), "source", "1024"),
        (generation_pb2.UnloadAdapterRequest(name="n" * 257), "name", "256"),
    ],
)
def test_each_limit_is_refused_naming_the_field_and_the_limit(request_, field, limit):
    with pytest.raises(InvalidArgument) as err:
        check_request(request_, LIMITS)
    assert err.value.field == field and limit in err.value.message
    assert len(str(err.value)) < 200


def test_requests_within_the_limits_pass():
    check_request(
        gateway_pb2.AnswerRequest(
            question="q" * 4000,
            top_k=100,
            filter={"team": "it"},
            sampling=common_pb2.SamplingParams(max_tokens=2048, stop=["\n"]),
        ),
        LIMITS,
    )
    check_request(gateway_pb2.IngestRequest(documents=[DOC(doc_id="d", text="t" * 1000)]), LIMITS)


def test_message_and_ingest_sizes():
    small = Limits(max_message_bytes=100, max_ingest_bytes=50)
    with pytest.raises(InvalidArgument, match="request: is 1003 bytes; the limit is 100"):
        check_request(gateway_pb2.AnswerRequest(question="q" * 1000), small)
    docs = [DOC(doc_id="a", text="t" * 30), DOC(doc_id="b", text="t" * 30)]
    with pytest.raises(InvalidArgument, match="documents: are 70 bytes in all; the limit"):
        check_ingest_size(docs, small)


def test_limits_come_from_config_and_old_top_level_keys_still_work():
    config = GatewayConfig(keys_file="k", max_question_chars=10, limits={"max_top_k": 5})
    assert config.limits.max_question_chars == 10 and config.limits.max_top_k == 5
    assert GatewayConfig(keys_file="k").limits == Limits()
