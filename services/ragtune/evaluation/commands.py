"""`ragtune eval ...`: retrieval quality, routing accuracy, and the routing set's builder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragtune.resources import ROUTING_DIR

# Relative to the working folder: a checkout has the shared datasets beside it.
DEFAULT_BEIR = Path("..") / "shared" / "datasets" / "scifact"


def _write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def cmd_retrieval(args: argparse.Namespace) -> int:
    from ragtune.evaluation.retrieval import EvalSettings, run_eval

    settings = EvalSettings(
        mode=args.mode,
        split=args.split,
        rerank=args.rerank or args.rerank_model is not None,
        rerank_kind=args.rerank_kind,
        rerank_model=args.rerank_model,
        rerank_depth=args.rerank_depth,
        rerank_input_weight=args.rerank_input_weight,
        cache_dir=Path(args.data_dir) / "cache",
    )
    result = run_eval(Path(args.beir), settings)
    suffix = "-rerank" if settings.rerank else ""
    out = Path(args.out or f"results/eval-retrieval-{args.mode}{suffix}-{args.split}.json")
    _write(result, out)
    for name, m in result["metrics"].items():
        print(f"{name:16} nDCG@10 {m['nDCG@10']:.4f}  Recall@100 {m['Recall@100']:.4f}")
    print(f"({result['queries']} {args.split} queries, {result['seconds']:.0f} s; JSON: {out})")
    print(f"nDCG@10: {result['final']['nDCG@10']:.4f}")
    print(f"Recall@100: {result['final']['Recall@100']:.4f}")
    return 0


def _router_config(path: str | None):
    import yaml

    from ragtune.gateway.config import RouterConfig

    if path is None:
        return RouterConfig()
    data = yaml.safe_load(Path(path).read_text()) or {}
    return RouterConfig.model_validate(data.get("router", data))


def cmd_routing(args: argparse.Namespace) -> int:
    from ragtune.evaluation import routing, routing_set

    settings = routing.RoutingSettings(
        beir_dir=Path(args.beir),
        adapters_dir=Path(args.adapters_dir or Path(args.data_dir) / "devmodel" / "adapters"),
        split=args.split,
        cache_dir=Path(args.data_dir) / "cache",
    )
    items = routing_set.read(Path(args.dataset), args.split)
    config = _router_config(args.config)
    if args.calibrate:
        result = routing.calibrate(items, config, settings)
        _write(result, Path(args.out or f"results/calibrate-routing-{args.split}.json"))
        print(json.dumps(result, indent=2))
        print("router config:")
        print(f"  probe: {{min_top_score: {result['min_top_score']}, "
              f"min_margin: {result['min_margin']}}}")  # fmt: skip
        print(f"calibration train accuracy: {result['train_accuracy']:.4f}")
        return 0
    result = routing.evaluate_routing(items, config, settings)
    out = Path(args.out or f"results/eval-routing-{args.split}.json")
    _write(result, out)
    labels = result["labels"]
    print(f"{result['requests']} {args.split} requests; rows: expected, columns: predicted")
    print(" " * 10 + "".join(f"{label:>9}" for label in labels))
    for label, row in zip(labels, result["confusion_matrix"], strict=True):
        print(f"{label:10}" + "".join(f"{n:9d}" for n in row))
    for kind, accuracy in result["accuracy_by_kind"].items():
        print(f"  {kind:16} {accuracy:.3f}")
    for m in result["mistakes"][:10]:
        print(f"  miss {m['id']}: expected {m['expected']}, got {m['got']} "
              f"(top {m['top_score']}): {m['question'][:70]}")  # fmt: skip
    print(f"(JSON: {out})")
    print(f"routing accuracy: {result['accuracy']:.4f}")
    return 0


def cmd_routing_set(args: argparse.Namespace) -> int:
    from ragtune.evaluation import routing_set

    items = routing_set.build(Path(args.beir), Path(args.questions), seed=args.seed)
    routing_set.write(items, Path(args.out))
    splits = {s: sum(1 for i in items if i["split"] == s) for s in ("train", "test")}
    print(f"{len(items)} requests ({splits['train']} train, {splits['test']} test) -> {args.out}")
    return 0


def add_eval_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="measure retrieval quality or routing accuracy")
    what = p.add_subparsers(dest="what", required=True, metavar="{retrieval,routing,routing-set}")

    p = what.add_parser("retrieval", help="nDCG@10 and Recall@100 on a BEIR dataset")
    p.add_argument(
        "--beir", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)"
    )
    p.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default="hybrid")
    p.add_argument("--split", default="test", help="qrels split to score (tune on train only)")
    p.add_argument(
        "--rerank", action="store_true", help="rerank with the default (MaxSim over MiniLM)"
    )
    p.add_argument("--rerank-kind", choices=["maxsim", "cross-encoder"], default="maxsim")
    p.add_argument("--rerank-model", help="local model directory for the reranker")
    p.add_argument("--rerank-depth", type=int, default=20, help="candidates reranked per query")
    p.add_argument(
        "--rerank-input-weight",
        type=float,
        help="weight of the first-stage order fused with the reranker's (default: config's)",
    )
    p.add_argument("--out", help="JSON result path (default: results/eval-retrieval-...json)")
    p.set_defaults(func=cmd_retrieval)

    p = what.add_parser(
        "routing",
        help="router accuracy and confusion matrix on labelled requests",
        description="Run the gateway's routing policy over labelled requests (JSONL from "
        "`ragtune eval routing-set`) with the retrieval probe computed in-process against the "
        "BEIR corpus. --calibrate instead fits the probe's thresholds (train split only).",
    )
    p.add_argument("--dataset", default=str(ROUTING_DIR / "requests.jsonl"))
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--beir", default=str(DEFAULT_BEIR), help="the corpus the probe searches")
    p.add_argument(
        "--adapters-dir", help="adapters to route to (default: DATA_DIR/devmodel/adapters)"
    )
    p.add_argument("--config", help="YAML with the router config (a gateway config's `router:`)")
    p.add_argument("--calibrate", action="store_true", help="fit the probe thresholds instead")
    p.add_argument("--out", help="JSON result path (default: results/eval-routing-SPLIT.json)")
    p.set_defaults(func=cmd_routing)

    p = what.add_parser("routing-set", help="build the labelled routing set (see routing_set.py)")
    p.add_argument("--beir", default=str(DEFAULT_BEIR), help="SciFact folder: claims and qrels")
    p.add_argument("--questions", default=str(ROUTING_DIR / "off-corpus-questions.txt"))
    p.add_argument("--out", default=str(ROUTING_DIR / "requests.jsonl"))
    p.add_argument("--seed", type=int, default=13)
    p.set_defaults(func=cmd_routing_set)
