"""The ``ragtune`` command. Environment variables are read here, at the entry point, only."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path

import grpc

from ragtune.client import PATHS, GatewayClient
from ragtune.deployment import (
    DEFAULT_ENGINE,
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEV_MODEL,
    ENGINES,
)
from ragtune.evaluation.commands import add_eval_commands
from ragtune.local import DEFAULT_INGRESS, INGRESS_MODES, use_process_env
from ragtune.output import hint, table, to_json
from ragtune.resources import DEMO_CORPUS

DATA_DIR = Path(os.environ.get("RAGTUNE_DATA", "data"))
DEV_KEY_FILE = "dev-api-key"


def _target(args: argparse.Namespace) -> str:
    return args.target or os.environ.get("RAGTUNE_TARGET", f"localhost:{DEFAULT_GRPC_PORT}")


def _api_key(args: argparse.Namespace) -> str:
    key = args.api_key or os.environ.get("RAGTUNE_API_KEY", "")
    dev_key = Path(args.data_dir) / DEV_KEY_FILE
    if not key and dev_key.is_file():
        key = dev_key.read_text().strip()
    return key


def _client(args: argparse.Namespace) -> GatewayClient:
    return GatewayClient(_target(args), _api_key(args), timeout_s=args.timeout)


# -- commands --------------------------------------------------------------------------------


def cmd_devmodel(args: argparse.Namespace) -> int:
    from ragtune.generation.prompting import PROMPT_FORMAT
    from ragtune.tuning.devdata import default_dev_corpus
    from ragtune.tuning.devmodel import DEV_ADAPTERS, build_devmodel, refresh_adapter_examples

    out = Path(args.out or Path(args.data_dir) / "devmodel")
    built = [out / DEV_MODEL / "config.json"]
    built += [out / "adapters" / spec.name / "ragtune-adapter.yaml" for spec in DEV_ADAPTERS]
    # The dev model learns the prompt format it is served with: one trained on an older
    # format (a data dir from before a prompt change) is trained again.
    stamp = out / "prompt-format"
    current = stamp.is_file() and stamp.read_text().strip() == PROMPT_FORMAT
    if args.if_missing and current and all(path.is_file() for path in built):
        for name in refresh_adapter_examples(out):
            print(f"adapter {name}: example requests updated")
        print(f"dev model already in {out}")
        return 0
    model = build_devmodel(out, default_dev_corpus(Path(args.corpus)), seed=args.seed)
    stamp.write_text(PROMPT_FORMAT + "\n")
    print(f"base model: {model.base_dir}")
    for name, path in sorted(model.adapters.items()):
        print(f"adapter {name}: {path}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from ragtune.tuning.training import tune

    base = Path(args.base)
    out = Path(args.out) if args.out else base.parent / "adapters" / args.name
    metadata = {
        "description": args.description,
        "tasks": args.task or ["chat"],
        "output_format": args.output_format,
        "tone": args.tone,
    }
    path = tune(
        base,
        Path(args.data),
        out,
        name=args.name,
        metadata=metadata,
        rank=args.rank,
        alpha=args.alpha,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        batch_size=args.batch_size,
        max_length=args.max_length,
        progress=True,
    )
    print(f"adapter {args.name}: {path}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """Keys live in the database (every gateway replica sees a change within seconds); with
    --keys-file, `create` writes a keys file instead (the Helm chart's Secret)."""
    import datetime as dt

    from ragtune.common.auth import KeyDatabase, KeyStore, create_key, read_keys_file
    from ragtune.common.errors import RagtuneError, Unauthenticated

    data_dir = Path(args.data_dir)
    url = args.database_url or f"sqlite:///{data_dir / 'ledger.db'}"
    keys_file = Path(args.keys_file) if args.keys_file else data_dir / "keys.yaml"
    adapters = getattr(args, "adapters", None)
    adapters = [a for a in adapters.split(",") if a] if adapters is not None else None
    try:
        if args.action == "create" and args.keys_file and not args.dev:
            print(
                create_key(
                    keys_file,
                    args.tenant,
                    admin=args.admin,
                    adapters=adapters,
                    description=args.description,
                )
            )
            return 0
        if args.action == "create":
            dev_key = data_dir / DEV_KEY_FILE
            if args.dev and dev_key.is_file():  # reused while the database or file knows it
                key = dev_key.read_text().strip()
                store = KeyStore.open(url, keys_file=keys_file)
                try:
                    store.principal_for({"authorization": f"Bearer {key}"})
                    print(key)
                    return 0
                except Unauthenticated:
                    pass
                finally:
                    store.close()
            db = KeyDatabase(url)
            try:
                description = args.description or ("local development" if args.dev else "")
                key, record = db.create(
                    args.tenant,
                    admin=args.admin or args.dev,
                    adapters=adapters,
                    description=description,
                )
            finally:
                db.close()
            if args.dev:
                dev_key.write_text(key + "\n")
                dev_key.chmod(0o600)
            else:
                print(
                    f"created API key {record.key_id} ({record.prefix}...) for tenant "
                    f"{record.tenant}; it is shown once:",
                    file=sys.stderr,
                )
            print(key)
            return 0
        file_records = read_keys_file(keys_file) if keys_file.is_file() else []
        db = KeyDatabase(url)
        try:
            if args.action == "revoke":
                record = db.revoke(args.key_id, file_records=file_records)
                print(f"revoked API key {record.key_id} of tenant {record.tenant}")
                return 0
            db_records = db.records()
        finally:
            db.close()
    except RagtuneError as err:
        print(f"ragtune: {err}", file=sys.stderr)
        return 2
    revoked = {r.sha256 for r in db_records if r.revoked_unix_ms is not None}
    records = [r for r in file_records if r.sha256 not in revoked] + db_records
    if not args.all:
        records = [r for r in records if r.revoked_unix_ms is None]
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0

    def when(ms: int | None) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M") if ms else ""

    rows = [
        [
            r.key_id,
            r.prefix or "-",
            r.tenant,
            "yes" if r.admin else "",
            "*" if r.adapters is None else ",".join(r.adapters),
            r.source,
            when(r.created_unix_ms),
            when(r.revoked_unix_ms),
            r.description,
        ]
        for r in records
    ]
    headers = ["ID", "PREFIX", "TENANT", "ADMIN", "ADAPTERS", "SOURCE", "CREATED", "REVOKED"]
    print(table([*headers, "DESCRIPTION"], rows))
    return 0


CHART_TABLE_HEADER = """\
# The service table as the Helm chart reads it: generated by `ragtune config --chart` from
# ragtune/common/services.py, ragtune/deployment.py and ragtune/local.py. Do not edit; run
# `make chart-files` (tests/unit/test_helm_chart.py fails when it drifts).
"""


def chart_table_text() -> str:
    """What `ragtune config --chart` prints: the service table plus the process environment
    and ingress modes every Ray container needs (``ragtune.local``)."""
    import yaml

    from ragtune.deployment import chart_table
    from ragtune.local import INGRESS_MODES, PROCESS_ENV

    table = {**chart_table(), "processEnv": PROCESS_ENV, "ingressModes": INGRESS_MODES}
    return CHART_TABLE_HEADER + yaml.safe_dump(table, sort_keys=False)


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from ragtune.deployment import local_config

    if args.chart:
        print(chart_table_text(), end="")
        return 0
    config = local_config(
        Path(args.data_dir),
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        rerank_model=args.rerank_model,
        rerank=not args.no_rerank,
        engine=args.engine,
        reflection=args.reflection,
    )
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ragtune.deployment import load_config, local_config, openai_base_url
    from ragtune.local import start_local, stop_local

    use_process_env(local_ray=True)
    data_dir = Path(args.data_dir)
    config = (
        load_config(Path(args.config))
        if args.config
        else local_config(
            data_dir,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            rerank_model=args.rerank_model,
            rerank=not args.no_rerank,
            engine=args.engine,
            telemetry={"tracing": args.trace, "otlp_endpoint": args.otlp_endpoint},
            reflection=args.reflection,
        )
    )
    port = config["grpc_options"]["port"]
    # SIGTERM (kill, Kubernetes, CI) stops as cleanly as Ctrl-C: Serve and Ray shut down.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"starting Ray Serve ({len(config['applications'])} applications)...", flush=True)
    start = time.monotonic()
    try:
        start_local(
            config,
            metrics_port=args.metrics_port,
            ingress=args.ingress,
            driver_logs=args.ray_logs,
        )
        print(
            f"serving gRPC on localhost:{port} ({args.ingress} ingress) after "
            f"{time.monotonic() - start:.0f}s (send metadata 'application: gateway'); "
            f"Prometheus metrics on "
            f"http://localhost:{args.metrics_port}/metrics",
            flush=True,
        )
        if base_url := openai_base_url(config):
            print(
                f"OpenAI-compatible API at {base_url} (the API key as bearer token; "
                "docs/openai-api.md)",
                flush=True,
            )
        if args.demo:
            args.target = f"localhost:{port}"
            _demo(args)
        print("Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping...")
    finally:
        stop_local()
    return 0


def _demo(args: argparse.Namespace) -> None:
    from ragtune import documents

    with _client(args) as client:
        docs = list(documents.from_path(DEMO_CORPUS))
        reply = client.ingest("demo", docs)
        print(
            f"\ningested {reply.documents} demo documents as {reply.chunks} chunks "
            f"into collection 'demo' (seq {reply.seq})\n"
        )
        # The router picks each path (AUTO): a fact the collection holds → RAG; the same fact
        # asked as JSON → HYBRID; a pirate-voiced question the collection cannot answer → TUNED.
        for question in [
            "How long is the warranty on the Atlas A2 robot arm?",
            "Answer in JSON: how long is the warranty on the Atlas A2 robot arm?",
            "Talk like a pirate: what is a good name for a parrot?",
        ]:
            print(f"$ ragtune ask {question!r} --collection demo")
            _print_answer(client.answer(question, collection="demo"))
            print()


def _path_name(path: int) -> str:
    from ragtune.v1 import common_pb2

    return common_pb2.Path.Name(path).removeprefix("PATH_")


def _print_route(route) -> None:
    print(
        f"route: {_path_name(route.path)}"
        + (f"  adapter={route.adapter}" if route.adapter else "")
        + (f"  collection={route.collection}" if route.collection else "")
        + f"  reasons={','.join(route.reasons)}"
    )
    print(f"why:   {route.explanation}")
    print(
        f"expect: {route.expected_latency_ms:.0f} ms, {route.expected_cost_micro_usd} micro-USD; "
        f"confidence {route.confidence:.2f}"
        + (
            f"; probe top score {route.probe.top_score:.3f} (cosine)"
            if route.HasField("probe")
            else ""
        ),
        flush=True,
    )


def _print_route_details(route) -> None:
    """What `route explain` adds: the probe against its threshold, the closest adapter cue."""
    if route.HasField("probe"):
        probe = route.probe
        source = (
            "calibrated on the collection" if probe.calibrated else "default: not calibrated yet"
        )
        moved = f", feedback moved it {probe.feedback_offset:+.3f}" if probe.feedback_offset else ""
        print(
            f"probe: top score {probe.top_score:.3f} vs threshold {probe.threshold:.3f} "
            f"({source}{moved}); P(collection can answer) = {probe.probability:.2f}; "
            f"{probe.ms:.0f} ms"
        )
    if route.HasField("cue"):
        cue = route.cue
        verdict = "passes" if cue.similarity >= cue.threshold else "below"
        topic = f"; the collection {cue.topic_similarity:.2f}" if cue.topic_similarity else ""
        print(
            f"cue:   closest adapter {cue.adapter!r}: similarity {cue.similarity:.2f} to "
            f"{cue.example!r} ({verdict} {cue.threshold:.2f}; examples {cue.support:.2f} vs "
            f"counter-examples {cue.counter_similarity:.2f}{topic})"
        )


def cmd_route(args: argparse.Namespace) -> int:
    if args.action == "explain":
        with _client(args) as client:
            route = client.route(args.question, path=args.path, **_answer_fields(args))
        if args.json:
            print(json.dumps(to_json(route), indent=2))
            return 0
        _print_route(route)
        _print_route_details(route)
        return 0
    from sqlalchemy import create_engine

    from ragtune.gateway.config import FeedbackConfig
    from ragtune.gateway.feedback import RouterFeedback

    url = args.database_url or f"sqlite:///{Path(args.data_dir) / 'ledger.db'}"
    store = RouterFeedback(create_engine(url), FeedbackConfig())
    if args.action == "reset":
        scope, name = (
            ("collection", args.collection) if args.collection else ("adapter", args.adapter)
        )
        changed = store.reset(args.tenant, scope, name)
        print(
            changed[0].describe() if changed else f"{scope} {name!r}: no feedback offset to reset"
        )
        return 0
    rows = store.adjustments(args.tenant, limit=args.limit)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    current = store.offsets(args.tenant) if args.tenant else {}
    for (scope, name), offset in sorted(current.items()):
        print(f"now: {scope} {name!r} threshold offset {offset:+.3f}")
    if not rows:
        print("no adjustments from feedback yet")
        hint("ratings of 1-2, or `ragtune feedback ID RATING --prefer PATH`, move thresholds")
    for r in rows:
        when = dt.datetime.fromtimestamp(r.created_unix_ms / 1000, dt.UTC).isoformat(
            timespec="seconds"
        )
        print(
            f"{when}  {r.tenant}  {r.describe()}"
            + (f"  (request {r.request_id})" if r.request_id else "")
        )
    return 0


def _print_answer(reply, *, with_answer: bool = True, with_route: bool = True) -> None:
    if with_route:
        _print_route(reply.route)
    if with_answer:
        print(f"answer: {reply.answer.strip()}")
    if reply.finish_reason == "length":
        print(
            f"finish: length (cut at max_tokens after {reply.usage.completion_tokens} tokens: "
            "the answer is incomplete; raise --max-tokens)"
        )
    for c in reply.citations:
        # doc_id and title, not a path: where the server read the file is its own business.
        title = c.metadata.get("title", "")
        label = f"{c.doc_id}" + (f' "{title}"' if title and title != c.doc_id else "")
        print(
            f"  [{c.marker}] {label} (score {c.score:.3f} {c.score_kind or 'cosine'}): "
            f"{' '.join(c.snippet.split())[:100]}"
        )
    print("timings: " + ", ".join(f"{t.stage} {t.ms:.0f} ms" for t in reply.timings))
    cost = reply.cost
    if cost.stages:
        stages = ", ".join(f"{s.stage} {s.micro_usd}" for s in cost.stages)
        print(f"cost:   {cost.total_micro_usd} micro-USD ({stages})")
    if reply.request_id:
        print(f"request: {reply.request_id} (rate it: ragtune feedback {reply.request_id} 1-5)")
    u = reply.usage
    print(
        f"tokens: embed {u.embedding_tokens}, rerank {u.rerank_tokens}, "
        f"prompt {u.prompt_tokens}, completion {u.completion_tokens}"
    )
    if reply.model:
        print(f"model:  {reply.model}" + (DEV_MODEL_NOTE if reply.model == DEV_MODEL else ""))


DEV_MODEL_NOTE = (
    " (the dev model `make run` trains in a minute on the demo corpus: it shows the "
    "mechanics, not answer quality; serve a real model with generation.model_path)"
)
SCORES_NOTE = (
    "scores: cosine = dense similarity (0-1); rrf = rank fusion (about 1/60 at best: hybrid "
    "search or the reranker fused with retrieval order); rerank-* = the reranker's own"
)


def _filters(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--filter {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _answer_fields(args: argparse.Namespace) -> dict:
    """AnswerRequest fields from `ask`/`route explain` options."""
    return {
        k: v
        for k, v in {
            "adapter": args.adapter,
            "collection": args.collection,
            "top_k": args.top_k,
            "require_citations": args.cite,
            "freshness_sensitive": args.fresh,
            "output_format": args.format,
            "task": args.task,
            "tone": args.tone,
            "latency_budget_ms": args.budget_ms,
            "max_cost_micro_usd": args.max_cost,
            "filter": _filters(args.filter),
        }.items()
        if v
    }


def cmd_ask(args: argparse.Namespace) -> int:
    fields = _answer_fields(args)
    if args.max_tokens:
        fields["sampling"] = {"max_tokens": args.max_tokens}
    with _client(args) as client:
        if args.stream:
            for event in client.answer_stream(args.question, path=args.path, **fields):
                kind = event.WhichOneof("event")
                if kind == "route":
                    _print_route(event.route)
                    print("answer: ", end="", flush=True)
                elif kind == "delta":
                    print(event.delta, end="", flush=True)
                else:
                    print()
                    _print_answer(event.done, with_answer=False, with_route=False)
            return 0
        reply = client.answer(args.question, path=args.path, **fields)
    if args.json:
        print(json.dumps(to_json(reply), indent=2))
    else:
        _print_answer(reply)
        if reply.citations and args.verbose:
            print(SCORES_NOTE)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from ragtune.documents.command import Options, ingest

    if bool(args.paths) == bool(args.beir):
        print("ragtune ingest: give files/folders, or --beir DIR", file=sys.stderr)
        return 2
    options = Options(
        args.collection,
        tuple(Path(p) for p in args.paths),
        Path(args.beir) if args.beir else None,
        batch=args.batch,
        in_flight=args.in_flight,
        force=args.force,
        json=args.json,
        every_file=args.every_file,
    )
    with _client(args) as client:
        return ingest(options, client.stub, metadata=client.metadata, timeout_s=client.timeout_s)


def cmd_adapters(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "load":
            reply = client.load_adapter(args.name, args.source or "")
            print(f"loaded {reply.adapter.name} in {reply.load_ms:.0f} ms")
        elif args.action == "unload":
            print(f"unloaded {client.unload_adapter(args.name).adapter.name}")
        listed = client.list_adapters()
    if args.json:
        print(json.dumps(to_json(listed), indent=2))
        return 0
    rows = []
    for a in listed.adapters:
        state = "loaded" if a.loaded else "not loaded"
        if a.resident_on:  # with a shared catalog: where, across the replicas
            n = len(a.resident_on)
            state = f"loaded on {n} replica" + ("s" if n > 1 else "")
        last = (
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(a.last_used_unix_ms / 1000))
            if a.last_used_unix_ms
            else "never"
        )
        rows.append([
            a.name, state, a.rank, a.output_format, a.tone, f"{a.size_bytes / 1e6:.1f} MB",
            last, f"{a.load_ms:.0f} ms" if a.load_ms else "-", a.registered_by or "shipped",
            a.description,
        ])  # fmt: skip
    headers = ["name", "state", "rank", "format", "tone", "size", "last used (UTC)", "load",
               "registered by", "description"]  # fmt: skip
    print(table(headers, rows))
    if listed.base_model:
        print(f"base model: {listed.base_model}")
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    action = args.action
    if action != "list" and not args.name:
        raise ValueError(f"collections {action} needs a collection name")
    with _client(args) as client:
        if action == "create":
            created = client.create_collection(
                args.name, index_type=args.index_type or "", metric=args.metric or "",
                lexical=args.lexical,
            )  # fmt: skip
            return _print_collection(created.collection, None, args.json)
        if action == "show":
            shown = client.get_collection(args.name)
            last = shown.last_ingest if shown.HasField("last_ingest") else None
            return _print_collection(shown.collection, last, args.json, shown)
        if action == "delete":
            if not args.yes:
                raise ValueError(
                    f"deleting {args.name!r} removes all its documents: add --yes to confirm"
                )
            client.delete_collection(args.name)
            print(f"deleted collection {args.name!r}")
            return 0
        listed = client.list_collections()
    if args.json:
        print(json.dumps(to_json(listed), indent=2))
        return 0
    rows = [
        [c.name, c.document_count, c.chunk_count, c.index_type or "flat", c.metric or "ip",
         "yes" if c.lexical else "no", c.dims, c.embedding_model]
        for c in listed.collections
    ]  # fmt: skip
    if not rows:
        print("no collections yet: `ragtune ingest PATH --collection NAME` creates one")
        return 0
    headers = ["name", "documents", "chunks", "index", "metric", "lexical", "dims", "embedder"]
    print(table(headers, rows))
    return 0


def _print_collection(c, last, as_json: bool, reply=None) -> int:
    if as_json:
        print(json.dumps(to_json(reply if reply is not None else c), indent=2))
        return 0
    print(f"collection {c.name}: {c.document_count} documents, {c.chunk_count} chunks")
    print(f"  index {c.index_type or 'flat'} (serving {c.active_index or c.index_type or 'flat'}),"
          f" metric {c.metric or 'ip'}, lexical {'yes (answers search hybrid)' if c.lexical else 'no'}")  # fmt: skip
    print(f"  embedder {c.embedding_model} ({c.dims} dims)")
    if last is not None:
        state = "complete" if last.complete else "INCOMPLETE (interrupted? run it again to resume)"
        print(
            f"  last ingest {last.ingest_id} ({last.source or 'no source given'}): {state}; "
            f"{last.documents} documents, {last.chunks} chunks, {last.started_at} - {last.updated_at}"
        )
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.delete_documents(args.collection, args.doc_ids)
    print(
        f"deleted {reply.chunks} chunks of {len(args.doc_ids)} document id(s) from "
        f"{args.collection!r} (seq {reply.seq})"
        + ("; none of those ids was stored" if not reply.chunks else "")
    )
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.feedback(
            args.request_id, args.rating, args.comment or "", preferred_path=args.prefer
        )
    print(f"stored: rating {args.rating} for a {_path_name(reply.path)} answer")
    for line in reply.adjustments:
        print(f"router: {line}")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.usage(args.since or "", args.until or "")
    if args.json:
        print(json.dumps(to_json(reply), indent=2))
        return 0
    print(f"tenant {reply.tenant}")
    print(
        f"{'day':10}  {'path':6}  {'requests':>8}  {'micro-USD':>10}  {'tokens in/out':>15}  rated"
    )
    for r in reply.rows:
        rating = f"{r.rated} (mean {r.mean_rating:.1f})" if r.rated else "0"
        tokens = f"{r.prompt_tokens}/{r.completion_tokens}"
        print(
            f"{r.day:10}  {_path_name(r.path):6}  {r.requests:8}  {r.cost_micro_usd:10}  "
            f"{tokens:>15}  {rating}"
        )
    print(
        f"total: {reply.total_cost_micro_usd} micro-USD (${reply.total_cost_micro_usd / 1e6:.6f})"
    )
    return 0


def cmd_dashboards(args: argparse.Namespace) -> int:
    from ragtune.observability import dashboards

    out = Path(args.out)
    if args.check:
        stale = [
            name
            for name in dashboards.DASHBOARDS
            if not (out / f"ragtune-{name}.json").is_file()
            or (out / f"ragtune-{name}.json").read_text() != dashboards.render(name)
        ]
        if stale:
            print(f"out of date in {out}: {', '.join(stale)} (run: ragtune dashboards)")
            return 1
        print(f"{len(dashboards.DASHBOARDS)} dashboards in {out} match the code")
        return 0
    for path in dashboards.write_all(out):
        print(path)
    return 0


# -- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Route LLM requests to RAG, a LoRA adapter, or both, on Ray Serve.",
    )
    parser.add_argument(
        "--data-dir",
        default=str(DATA_DIR),
        help="local state: database, keys, dev model (default: $RAGTUNE_DATA or ./data)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def answer_opts(p: argparse.ArgumentParser) -> None:
        """The AnswerRequest options `ask` and `route explain` share."""
        p.add_argument("question")
        p.add_argument("--path", choices=sorted(PATHS), default="auto")
        p.add_argument("--adapter", help="LoRA adapter for TUNED/HYBRID (`ragtune adapters list`)")
        p.add_argument(
            "--collection",
            help="collection to search (default: the gateway's default_collection, 'default'; "
            "`make run` ingests the demo into 'demo'; `ragtune collections` lists yours)",
        )
        p.add_argument(
            "--filter",
            action="append",
            metavar="KEY=VALUE",
            help="search only chunks whose metadata has KEY=VALUE (repeatable: all must hold)",
        )
        p.add_argument("--top-k", type=int)
        p.add_argument("--cite", action="store_true", help="citations required: always retrieve")
        p.add_argument(
            "--fresh", action="store_true", help="facts may have changed: always retrieve"
        )
        p.add_argument("--format", help="wanted output format, e.g. json (picks the adapter)")
        p.add_argument("--task", help="wanted task, e.g. summarization (picks the adapter)")
        p.add_argument("--tone", help="wanted tone, e.g. pirate (picks the adapter)")
        p.add_argument("--budget-ms", type=int, help="latency budget: slower paths are avoided")
        p.add_argument("--max-cost", type=int, help="cost budget in micro-USD")

    def client_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--target",
            help=f"gateway address (default: $RAGTUNE_TARGET or localhost:{DEFAULT_GRPC_PORT})",
        )
        p.add_argument(
            "--api-key", help="API key (default: $RAGTUNE_API_KEY or DATA_DIR/dev-api-key)"
        )
        p.add_argument("--timeout", type=float, default=120, help="seconds per call (default 120)")

    def local_config_opts(p: argparse.ArgumentParser) -> None:
        """The built-in local config's options (`serve` without --config, and `config`)."""
        p.add_argument(
            "--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port (default 9000)"
        )
        p.add_argument(
            "--http-port",
            type=int,
            default=DEFAULT_HTTP_PORT,
            help="Serve's HTTP port: the OpenAI-compatible API under /v1 (default 8000)",
        )
        p.add_argument(
            "--rerank-model",
            help="local CrossEncoder directory to rerank with instead of the default (MaxSim)",
        )
        p.add_argument("--no-rerank", action="store_true", help="leave the rerank application out")
        p.add_argument(
            "--engine",
            choices=ENGINES,
            default=DEFAULT_ENGINE,
            help="generation engine for the dev model (default: %(default)s; docs/generation.md)",
        )
        p.add_argument(
            "--reflection",
            action="store_true",
            help="answer gRPC server reflection (grpcurl) for the gateway; off by default",
        )

    p = sub.add_parser(
        "serve",
        help="start every service on a local Ray Serve; serve gRPC and the OpenAI-compatible API",
        description="Deploy a Serve multi-application config locally and keep serving.",
    )
    p.add_argument(
        "--config",
        help="Serve config YAML (default: the built-in local CPU config; see `ragtune config`)",
    )
    local_config_opts(p)
    p.add_argument(
        "--trace",
        choices=["off", "console", "otlp"],
        default="off",
        help="where every service sends its OpenTelemetry spans (built-in config only)",
    )
    p.add_argument("--otlp-endpoint", default="localhost:4317", help="OTLP/gRPC collector")
    p.add_argument(
        "--demo", action="store_true", help="ingest the demo corpus and print routed answers"
    )
    p.add_argument(
        "--ray-logs", action="store_true", help="print every replica's log here too (debugging)"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=8080,
        help="where Ray serves Prometheus metrics of every service, at /metrics (default 8080)",
    )
    p.add_argument(
        "--ingress",
        choices=sorted(INGRESS_MODES),
        default=DEFAULT_INGRESS,
        help="what answers on the gRPC port: haproxy (default; Ray Serve's high-throughput "
        "ingress, HAProxy straight to each replica) or proxy (Serve's Python gRPC proxy, "
        "several times the CPU per call); measured: docs/serving.md",
    )
    client_opts(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "config", help="print the built-in local Serve config (edit it, then serve --config)"
    )
    local_config_opts(p)
    p.add_argument(
        "--chart",
        action="store_true",
        help="print the service table as the Helm chart reads it instead "
        "(helm/ragtune/files/ragtune.yaml; `make chart-files` writes it)",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser(
        "devmodel",
        help="train the tiny dev model and its three demo LoRA adapters",
        description="Create a tiny Llama model, its tokenizer and the LoRA adapters "
        "'json-answer', 'pirate' and 'tldr' under DATA_DIR/devmodel (each trained as "
        "`ragtune tune` trains one). For mechanics, not quality.",
    )
    p.add_argument("--out", help="output folder (default: DATA_DIR/devmodel)")
    p.add_argument("--corpus", default=str(DEMO_CORPUS), help="folder of Markdown to train on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--if-missing", action="store_true", help="do nothing when the model exists")
    p.set_defaults(func=cmd_devmodel)

    p = sub.add_parser(
        "tune",
        help="train a LoRA adapter from a JSONL of chat examples",
        description="Train a LoRA adapter with PEFT on chat examples and write it with its "
        "ragtune-adapter.yaml (what the router reads). DATA has one JSON object per line: "
        '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}; only '
        "assistant turns are learned. Serve it with `ragtune adapters load NAME --source DIR`.",
    )
    p.add_argument("--base", required=True, help="base model directory (Hugging Face format)")
    p.add_argument("--data", required=True, help="JSONL file of chat examples")
    p.add_argument("--name", required=True, help="adapter name")
    p.add_argument("--out", help="output directory (default: BASE/../adapters/NAME)")
    p.add_argument("--description", default="A LoRA adapter.", help="what it is for")
    p.add_argument("--task", action="append", help="a task it suits (repeatable)")
    p.add_argument("--output-format", default="text", help="text, json, ...")
    p.add_argument("--tone", default="neutral", help="neutral, formal, pirate, ...")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=int, default=16, help="LoRA alpha (default 16)")
    p.add_argument("--steps", type=int, default=200, help="optimiser steps (default 200)")
    p.add_argument("--lr", type=float, default=5e-3, help="learning rate (default 5e-3)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512, help="tokens kept per example")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "keys",
        help="create, list and revoke API keys (stored hashed in the database)",
        description="API keys, stored as SHA-256 hashes in the gateway's database (default "
        "sqlite:///DATA_DIR/ledger.db, the local stack's): a key created or revoked here takes "
        "effect on every gateway replica within seconds. The gateway also accepts the keys of "
        "its keys file (DATA_DIR/keys.yaml locally; a Secret under the Helm chart).",
    )
    keys = p.add_subparsers(dest="action", required=True)

    def keys_opts(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--database-url",
            help="the gateway's database_url (default: sqlite:///DATA_DIR/ledger.db)",
        )
        q.add_argument(
            "--keys-file",
            help="a keys file (default DATA_DIR/keys.yaml): create writes the key there instead "
            "of the database (for the Helm chart's Secret); list and revoke include its keys",
        )
        q.set_defaults(func=cmd_keys)

    q = keys.add_parser("create", help="make a key; it is printed once")
    q.add_argument("--tenant", required=True)
    q.add_argument("--admin", action="store_true", help="may load and unload adapters")
    q.add_argument(
        "--adapters",
        help="comma-separated adapters this key may use (default: every registered adapter; "
        "'' for none); others are refused with PERMISSION_DENIED",
    )
    q.add_argument("--description", default="", help="who or what the key is for")
    q.add_argument(
        "--dev",
        action="store_true",
        help="local development: reuse DATA_DIR/dev-api-key while it is valid, else create an "
        "admin key and save it there",
    )
    keys_opts(q)
    q = keys.add_parser("list", help="the keys: id, prefix, tenant, flags (never the key)")
    q.add_argument("--all", action="store_true", help="revoked keys too")
    q.add_argument("--json", action="store_true", help="JSON instead of a table")
    keys_opts(q)
    q = keys.add_parser("revoke", help="refuse a key from now on (every replica within seconds)")
    q.add_argument("key_id", help="the key's ID, as `ragtune keys list` shows it")
    keys_opts(q)

    from ragtune.documents import command as ingest_command

    p = sub.add_parser(
        "ingest",
        help="chunk, embed and store documents (files, folders, JSONL or BEIR)",
        description=ingest_command.DESCRIPTION,
        epilog=ingest_command.EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", help="files or folders (types above), or .jsonl files")
    p.add_argument("--beir", help="BEIR folder (its corpus.jsonl)")
    p.add_argument("--collection", required=True)
    p.add_argument("--batch", type=int, default=ingest_command.DEFAULT_BATCH,
                   help=f"documents per Ingest call (default {ingest_command.DEFAULT_BATCH})")  # fmt: skip
    p.add_argument("--in-flight", type=int, default=2,
                   help="Ingest calls in flight at once (default 2)")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="send everything again, even when this same ingest completed before")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--every-file", action="store_true",
                   help="list every file in the report (by default, above 50 files, only "
                   "those skipped, failed or pending)")  # fmt: skip
    client_opts(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("ask", help="ask the gateway a question")
    answer_opts(p)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    p.add_argument("--verbose", action="store_true", help="also explain the citation scores")
    client_opts(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("adapters", help="list, load or unload LoRA adapters")
    p.add_argument("action", choices=["list", "load", "unload"])
    p.add_argument("name", nargs="?")
    p.add_argument(
        "--source",
        help="adapter directory or fsspec URL (s3://...) to load from (default: the adapters dir)",
    )
    p.add_argument("--json", action="store_true", help="the listing as JSON")
    client_opts(p)
    p.set_defaults(func=cmd_adapters)

    add_eval_commands(sub)

    p = sub.add_parser(
        "dashboards",
        help="write the Grafana dashboards (code in ragtune/observability/dashboards.py) as JSON",
    )
    p.add_argument(
        "--out", default="deploy/grafana", help="folder to write (default: deploy/grafana)"
    )
    p.add_argument("--check", action="store_true", help="only check that the files are current")
    p.set_defaults(func=cmd_dashboards)

    p = sub.add_parser("feedback", help="rate an answer (stored next to its route decision)")
    p.add_argument("request_id", help="the request id an answer printed")
    p.add_argument("rating", type=int, choices=range(1, 6), help="1 (bad) to 5 (good)")
    p.add_argument("--comment")
    p.add_argument(
        "--prefer",
        choices=["rag", "tuned", "hybrid"],
        help="the path that should have answered: moves the router's threshold for the "
        "collection or adapter a step (docs/routing.md)",
    )
    client_opts(p)
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser(
        "route",
        help="explain a routing decision; see or undo what feedback changed",
        description="`explain` asks the gateway which path it would take, and why, without "
        "answering (the probe runs; nothing is generated or billed). `adjustments` lists what "
        "feedback changed in the router's thresholds and `reset` takes one back, reading the "
        "gateway's database directly (default sqlite:///DATA_DIR/ledger.db).",
    )
    route = p.add_subparsers(dest="action", required=True)
    q = route.add_parser("explain", help="the route a question would take, with the probe and cue")
    answer_opts(q)
    q.add_argument("--json", action="store_true")
    client_opts(q)
    q.set_defaults(func=cmd_route)
    for action, text in (
        ("adjustments", "what feedback changed, newest first, and the offsets in force"),
        ("reset", "take a collection's or adapter's threshold back to its fit"),
    ):
        q = route.add_parser(action, help=text)
        q.add_argument("--database-url", help="the gateway's database_url")
        q.add_argument("--tenant", required=action == "reset", help="only this tenant's")
        if action == "reset":
            which = q.add_mutually_exclusive_group(required=True)
            which.add_argument("--collection")
            which.add_argument("--adapter")
        else:
            q.add_argument("--limit", type=int, default=50)
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=cmd_route)

    p = sub.add_parser("usage", help="your cost and traffic per day and path (the usage ledger)")
    p.add_argument("--since", help="first day, YYYY-MM-DD (default: 30 days before --until)")
    p.add_argument("--until", help="last day, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--json", action="store_true")
    client_opts(p)
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser(
        "collections",
        help="list, create, show or delete your collections",
        description="Collections of your tenant. `show` gives settings, counts and whether the "
        "last bulk ingest completed.",
    )
    p.add_argument("action", nargs="?", choices=["list", "create", "show", "delete"],
                   default="list")  # fmt: skip
    p.add_argument("name", nargs="?")
    p.add_argument(
        "--index-type", help="create: flat (default, exact), hnsw, ivf_pq (docs/retrieval.md)"
    )
    p.add_argument("--metric", choices=["ip", "l2"], help="create: ip (default: cosine) or l2")
    p.add_argument("--lexical", action="store_true",
                   help="create: keep a BM25 index too; answers then search hybrid")  # fmt: skip
    p.add_argument("--yes", action="store_true", help="delete: confirm")
    p.add_argument("--json", action="store_true", help="print as JSON")
    client_opts(p)
    p.set_defaults(func=cmd_collections)

    p = sub.add_parser("docs", help="delete documents from a collection")
    p.add_argument("action", choices=["delete"])
    p.add_argument("doc_ids", nargs="+", metavar="DOC_ID", help="ids given at ingest")
    p.add_argument("--collection", required=True)
    client_opts(p)
    p.set_defaults(func=cmd_docs)
    return parser


def main(argv: list[str] | None = None) -> int:
    use_process_env()  # the models this command loads are local files
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "adapters" and args.action != "list" and not args.name:
        parser.error(f"adapters {args.action} needs an adapter name")
    try:
        return args.func(args)
    except grpc.RpcError as err:
        print(f"ragtune: {err.code().name}: {err.details()}", file=sys.stderr)
        next_step = hint(err.code(), err.details() or "", _target(args) if "target" in args else "")
        if next_step:
            print(f"hint: {next_step}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ragtune: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as err:
        print(f"ragtune: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
