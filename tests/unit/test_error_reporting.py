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
from ragtune.common.serving import RpcTelemetry, _streaming, _unary
from ragtune.gateway.ledger import day_range

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


def test_a_burst_of_abandoned_calls_counts_no_server_error():
    telemetry = RpcTelemetry.__new__(RpcTelemetry)
    telemetry.service, telemetry.package = "gateway", "ragtune.v1.Gateway"
    telemetry.requests, telemetry.latency = Recorder(), Recorder()
    ingress = type("Ingress", (), {"telemetry": telemetry, "service": Slow(), "public": True})()
    answer, stream = _unary("Answer", False), _streaming("AnswerStream", False)

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
