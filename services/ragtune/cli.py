"""The ``ragtune`` command. Environment variables are read here, at the entry point, only."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import grpc

from ragtune.client import PATHS, GatewayClient
from ragtune.deployment import DEFAULT_GRPC_PORT, DEV_MODEL
from ragtune.evaluation.commands import add_eval_commands
from ragtune.local import DEFAULT_INGRESS, INGRESS_MODES, use_process_env
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
    from ragtune.tuning.devdata import default_dev_corpus
    from ragtune.tuning.devmodel import DEV_ADAPTERS, build_devmodel

    out = Path(args.out or Path(args.data_dir) / "devmodel")
    built = [out / DEV_MODEL / "config.json"]
    built += [out / "adapters" / spec.name / "ragtune-adapter.yaml" for spec in DEV_ADAPTERS]
    if args.if_missing and all(path.is_file() for path in built):
        print(f"dev model already in {out}")
        return 0
    model = build_devmodel(out, default_dev_corpus(Path(args.corpus)), seed=args.seed)
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
    from ragtune.common.auth import create_key

    keys_file = Path(args.keys_file or Path(args.data_dir) / "keys.yaml")
    dev_key = Path(args.data_dir) / DEV_KEY_FILE
    if args.dev:
        if dev_key.is_file() and keys_file.is_file():
            print(dev_key.read_text().strip())
            return 0
        key = create_key(keys_file, args.tenant, admin=True)
        dev_key.write_text(key + "\n")
        dev_key.chmod(0o600)
    else:
        adapters = [a for a in args.adapters.split(",") if a] if args.adapters is not None else None
        key = create_key(keys_file, args.tenant, admin=args.admin, adapters=adapters)
    print(key)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from ragtune.deployment import local_config

    config = local_config(
        Path(args.data_dir),
        grpc_port=args.grpc_port,
        rerank_model=args.rerank_model,
        rerank=not args.no_rerank,
    )
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from ragtune.deployment import load_config, local_config
    from ragtune.local import start_local, stop_local

    use_process_env(local_ray=True)
    data_dir = Path(args.data_dir)
    config = (
        load_config(Path(args.config))
        if args.config
        else local_config(
            data_dir,
            grpc_port=args.grpc_port,
            rerank_model=args.rerank_model,
            rerank=not args.no_rerank,
            telemetry={"tracing": args.trace, "otlp_endpoint": args.otlp_endpoint},
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


def _print_answer(reply, *, with_answer: bool = True) -> None:
    route = reply.route
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
        + (f"; probe top score {route.probe.top_score:.3f}" if route.HasField("probe") else "")
    )
    if with_answer:
        print(f"answer: {reply.answer.strip()}")
    for c in reply.citations:
        print(
            f"  [{c.marker}] {c.doc_id} ({c.chunk_id}, score {c.score:.3f}): "
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


def cmd_ask(args: argparse.Namespace) -> int:
    fields = {
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
        }.items()
        if v
    }
    if args.max_tokens:
        fields["sampling"] = {"max_tokens": args.max_tokens}
    with _client(args) as client:
        if args.stream:
            for event in client.answer_stream(args.question, path=args.path, **fields):
                kind = event.WhichOneof("event")
                if kind == "route":
                    print(
                        f"[route {_path_name(event.route.path)}: {event.route.explanation}]",
                        flush=True,
                    )
                elif kind == "delta":
                    print(event.delta, end="", flush=True)
                else:
                    print()
                    _print_answer(event.done, with_answer=False)
            return 0
        reply = client.answer(args.question, path=args.path, **fields)
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(reply), indent=2))
    else:
        _print_answer(reply)
    return 0


def _batches(items: Iterable, size: int):
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ragtune import documents

    if args.beir:
        docs, total = (
            documents.from_beir(Path(args.beir)),
            documents.count_lines(Path(args.beir) / "corpus.jsonl"),
        )
    elif args.paths:
        paths = [Path(p) for p in args.paths]
        docs = itertools.chain.from_iterable(documents.from_path(p) for p in paths)
        total = sum(documents.count(p) for p in paths)
    else:
        print("ragtune ingest: give files/folders or --beir DIR", file=sys.stderr)
        return 2
    n_docs = n_chunks = seq = 0
    with (
        _client(args) as client,
        tqdm(total=total, unit="doc", desc=f"ingest → {args.collection}") as bar,
    ):
        for batch in _batches(docs, args.batch):
            reply = client.ingest(args.collection, batch, create=True)
            n_docs, n_chunks, seq = n_docs + reply.documents, n_chunks + reply.chunks, reply.seq
            bar.update(len(batch))
    print(f"ingested {n_docs} documents as {n_chunks} chunks into {args.collection!r} (seq {seq})")
    return 0


def cmd_adapters(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.action == "load":
            reply = client.load_adapter(args.name, args.source or "")
            print(f"loaded {reply.adapter.name} in {reply.load_ms:.0f} ms")
        elif args.action == "unload":
            print(f"unloaded {client.unload_adapter(args.name).adapter.name}")
        for a in client.list_adapters().adapters:
            state = "loaded" if a.loaded else "not loaded"
            print(
                f"{a.name:16} {state:11} rank {a.rank:<3} {a.output_format or '-':8} {a.tone or '-':10} {a.description}"
            )
    return 0


def cmd_collections(args: argparse.Namespace) -> int:
    with _client(args) as client:
        for c in client.list_collections().collections:
            print(
                f"{c.name:20} {c.document_count:6} docs {c.chunk_count:7} chunks  {c.dims} dims  {c.embedding_model}"
            )
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.feedback(args.request_id, args.rating, args.comment or "")
    print(f"stored: rating {args.rating} for a {_path_name(reply.path)} answer")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    with _client(args) as client:
        reply = client.usage(args.since or "", args.until or "")
    if args.json:
        from google.protobuf.json_format import MessageToDict

        print(json.dumps(MessageToDict(reply, always_print_fields_with_no_presence=True), indent=2))
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

    def client_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--target",
            help=f"gateway address (default: $RAGTUNE_TARGET or localhost:{DEFAULT_GRPC_PORT})",
        )
        p.add_argument(
            "--api-key", help="API key (default: $RAGTUNE_API_KEY or DATA_DIR/dev-api-key)"
        )
        p.add_argument("--timeout", type=float, default=120, help="seconds per call (default 120)")

    p = sub.add_parser(
        "serve",
        help="start every service on a local Ray Serve and serve gRPC",
        description="Deploy a Serve multi-application config locally and keep serving.",
    )
    p.add_argument(
        "--config",
        help="Serve config YAML (default: the built-in local CPU config; see `ragtune config`)",
    )
    p.add_argument(
        "--grpc-port", type=int, default=DEFAULT_GRPC_PORT, help="gRPC port of the built-in config"
    )
    p.add_argument(
        "--rerank-model",
        help="local CrossEncoder directory to rerank with instead of the default (MaxSim)",
    )
    p.add_argument("--no-rerank", action="store_true", help="deploy no rerank application")
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
    p.add_argument("--grpc-port", type=int, default=DEFAULT_GRPC_PORT)
    p.add_argument("--rerank-model", help="local CrossEncoder directory (default: MaxSim)")
    p.add_argument("--no-rerank", action="store_true", help="leave the rerank application out")
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

    p = sub.add_parser("keys", help="create API keys (stored hashed in the keys file)")
    p.add_argument("action", choices=["create"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--admin", action="store_true", help="may load and unload adapters")
    p.add_argument(
        "--adapters",
        help="comma-separated adapters this key may use (default: every registered adapter; "
        "'' for none); others are refused with PERMISSION_DENIED",
    )
    p.add_argument("--keys-file", help="default: DATA_DIR/keys.yaml")
    p.add_argument(
        "--dev",
        action="store_true",
        help="local development: reuse DATA_DIR/dev-api-key if present, else create an admin key and save it there",
    )
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser(
        "ingest", help="chunk, embed and store documents (files, folders, JSONL or BEIR)"
    )
    p.add_argument("paths", nargs="*", help="Markdown/text files or folders, or .jsonl files")
    p.add_argument("--beir", help="BEIR folder (corpus.jsonl)")
    p.add_argument("--collection", required=True)
    p.add_argument("--batch", type=int, default=32, help="documents per Ingest call")
    client_opts(p)
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("ask", help="ask the gateway a question")
    p.add_argument("question")
    p.add_argument("--path", choices=sorted(PATHS), default="auto")
    p.add_argument("--adapter")
    p.add_argument("--collection")
    p.add_argument("--top-k", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--cite", action="store_true", help="citations required: always retrieve")
    p.add_argument("--fresh", action="store_true", help="facts may have changed: always retrieve")
    p.add_argument("--format", help="wanted output format, e.g. json (picks the adapter)")
    p.add_argument("--task", help="wanted task, e.g. summarization (picks the adapter)")
    p.add_argument("--tone", help="wanted tone, e.g. pirate (picks the adapter)")
    p.add_argument("--budget-ms", type=int, help="latency budget: slower paths are avoided")
    p.add_argument("--max-cost", type=int, help="cost budget in micro-USD")
    p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    p.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    client_opts(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("adapters", help="list, load or unload LoRA adapters")
    p.add_argument("action", choices=["list", "load", "unload"])
    p.add_argument("name", nargs="?")
    p.add_argument(
        "--source",
        help="adapter directory or fsspec URL (s3://...) to load from (default: the adapters dir)",
    )
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
    client_opts(p)
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("usage", help="your cost and traffic per day and path (the usage ledger)")
    p.add_argument("--since", help="first day, YYYY-MM-DD (default: 30 days before --until)")
    p.add_argument("--until", help="last day, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--json", action="store_true")
    client_opts(p)
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("collections", help="list your collections")
    client_opts(p)
    p.set_defaults(func=cmd_collections)
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
        return 1
    except (FileNotFoundError, ValueError) as err:
        print(f"ragtune: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
