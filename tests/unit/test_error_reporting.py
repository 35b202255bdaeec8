"""Errors as clients and metrics see them (issue 21): details capped and quoting little of the
caller's input, usage dates that cannot overflow, and calls the client abandoned counted as
cancelled, never as server errors."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest

from ragtune.common.errors import (
    MAX_DETAILS_CHARS,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    outcome,
    quote,
    to_status,
)
from ragtune.common.serving import RETRY_AFTER, Admission, RpcTelemetry, _streaming, _unary
from ragtune.gateway.ledger import day_range
from ragtune.gateway.quotas import QuotaExceeded
from ragtune.v1 import common_pb2

TODAY = dt.date(2026, 6, 1)


def usage_days(since: str = "", until: str = "") -> tuple[dt.date, dt.date]:
    return day_range(since, until, today=TODAY, default_days=30, max_days=366)


def test_usage_days_at_the_ends_of_the_calendar_are_answered_not_internal():
    assert usage_days(until="0001-01-01") == (dt.date(1, 1, 1), dt.date(1, 1, 1))
    assert usage_days(until="0001-01-05") == (dt.date(1, 1, 1), dt.date(1, 1, 5))
    assert usage_days(since="9999-12-01", until="9999-12-31")[1] == dt.date(9999, 12, 31)
    assert usage_days() == (dt.date(2026, 5, 2), TODAY)


@pytest.mark.parametrize(
    ("since", "until", "field", "message"),
    [
        ("0001-01-01", "9999-12-31", "since", "spans 3652058 days; the limit is 366"),
        ("2026-05-02", "2026-05-01", "since", "is after until"),
        ("", "20260101", "until", "is not a YYYY-MM-DD date"),
        ("2026-02-30", "", "since", "is not a YYYY-MM-DD date"),
        ("", "é" * 300_000, "until", "... (300000 characters) is not a YYYY-MM-DD date"),
    ],
)
def test_bad_usage_ranges_are_invalid_arguments(since, until, field, message):
    with pytest.raises(InvalidArgument) as err:
        usage_days(since, until)
    assert err.value.field == field and message in str(err.value)
    assert len(str(err.value)) < 200  # quotes at most 100 characters of the input


def test_quote_cuts_the_callers_input():
    assert quote("kb") == "'kb'"
    assert quote("x" * 4096) == f"{'x' * 100!r}... (4096 characters)"


def test_status_details_are_capped_and_cross_the_wire():
    huge = NotFound("é" * 300_000)
    code, details = to_status(huge)
    assert code == grpc.StatusCode.NOT_FOUND and len(details) == MAX_DETAILS_CHARS

    async def main() -> grpc.aio.AioRpcError:
        async def fail(request, context):
            await context.abort(*to_status(huge))

        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(fail)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("t.T", {"F": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await channel.unary_unary("/t.T/F")(b"")
                return err.value
        finally:
            await server.stop(None)

    err = asyncio.run(main())
    # Not a reset stream (UNAVAILABLE/INTERNAL): the client gets the code and the details.
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.details() == details


def test_outcomes_blame_the_client_only_for_what_the_client_did():
    assert outcome(None) == "ok"
    assert outcome(asyncio.CancelledError()) == "cancelled"
    assert outcome(GeneratorExit()) == "cancelled"
    assert outcome(DeadlineExceeded("the latency budget ran out")) == "cancelled"
    assert outcome(InvalidArgument("bad", field="question")) == "client_error"
    assert outcome(TimeoutError()) == "server_error"  # ragtune's own timeout
    assert outcome(RuntimeError("boom")) == "server_error"
    assert to_status(asyncio.CancelledError())[0] == grpc.StatusCode.CANCELLED


class Recorder:
    def __init__(self) -> None:
        self.tags: list[dict[str, str]] = []

    def inc(self, tags):
        self.tags.append(tags)

    def observe(self, value, tags):
        pass


class Slow:
    """A service whose RPCs take long enough for their callers to give up."""

    async def Answer(self, request):
        await asyncio.sleep(10)

    async def AnswerStream(self, request):
        yield "first"
        await asyncio.sleep(10)
        yield "never"


def fake_ingress(service: object) -> tuple[object, RpcTelemetry]:
    """What ``ingress_class`` builds around ``service``, with metrics recorded in memory."""
    telemetry = RpcTelemetry.__new__(RpcTelemetry)
    telemetry.service, telemetry.package = "gateway", "ragtune.v1.Gateway"
    telemetry.requests, telemetry.latency = Recorder(), Recorder()
    members = {"telemetry": telemetry, "service": service, "public": True}
    return type("Ingress", (), {**members, "admission": Admission(None)})(), telemetry


def test_a_burst_of_abandoned_calls_counts_no_server_error():
    ingress, telemetry = fake_ingress(Slow())
    answer = _unary("Answer", False, "ragtune.v1.AnswerResponse")
    stream = _streaming("AnswerStream", False)

    async def abandon_unary():
        task = asyncio.ensure_future(answer(ingress, object()))
        await asyncio.sleep(0.01)
        task.cancel()  # the client cancelled, or its deadline passed: Serve cancels the call
        with pytest.raises(asyncio.CancelledError):
            await task

    async def abandon_stream():
        events = stream(ingress, object())
        assert await events.__anext__() == "first"
        await events.aclose()  # the stream's consumer went away

    async def burst():
        await asyncio.gather(*[abandon_unary() for _ in range(50)])
        await asyncio.gather(*[abandon_stream() for _ in range(50)])

    asyncio.run(burst())
    tags = telemetry.requests.tags
    assert len(tags) == 100
    assert {(t["code"], t["outcome"]) for t in tags} == {("CANCELLED", "cancelled")}


class FakeGrpcContext:
    """What a Serve replica's gRPC context records: code, details and trailing metadata."""

    def __init__(self) -> None:
        self.code, self.details, self.trailing = None, None, []

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details

    def set_trailing_metadata(self, metadata):
        self.trailing = list(metadata)

    def invocation_metadata(self):
        return []

    def request_id(self):
        return "r-1"


class Busy:
    """A service whose RPCs are refused for a while (a quota or a full replica)."""

    async def Route(self, request):
        raise QuotaExceeded("over the rate limit", retry_after_s=2.5)

    async def AnswerStream(self, request):
        yield "first"
        raise QuotaExceeded("over the token quota", retry_after_s=1)


def test_a_refusal_with_a_retry_hint_reaches_a_network_caller_with_its_trailing_metadata():
    """Serve's direct ingress drops the trailers of a call that raised: a refusal that carries
    retry-after-ms is returned with its status on the context instead, still counted as the
    refusal it is; a handle caller (no gRPC context) gets the exception as before."""
    ingress, telemetry = fake_ingress(Busy())
    route = _unary("Route", False, "ragtune.v1.RouteDecision")
    stream = _streaming("AnswerStream", False)

    async def calls():
        context = FakeGrpcContext()
        reply = await route(ingress, object(), context)
        assert reply == common_pb2.RouteDecision()  # an empty payload: the status is the answer
        assert context.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert context.trailing == [(RETRY_AFTER, "2500")]
        streamed = FakeGrpcContext()
        assert [m async for m in stream(ingress, object(), streamed)] == ["first"]
        assert streamed.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert streamed.trailing == [(RETRY_AFTER, "1000")]
        with pytest.raises(QuotaExceeded):
            await route(ingress, object())  # a handle call: no context to carry the status

    asyncio.run(calls())
    assert [(t["rpc"], t["code"]) for t in telemetry.requests.tags] == [
        ("Route", "RESOURCE_EXHAUSTED"),
        ("AnswerStream", "RESOURCE_EXHAUSTED"),
        ("Route", "RESOURCE_EXHAUSTED"),
    ]
