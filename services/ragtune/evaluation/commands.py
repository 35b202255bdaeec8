"""`ragtune eval ...`: retrieval quality, routing accuracy, and the routing set's builder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragtune.resources import ROUTING_DIR, ROUTING_PYREF_DIR, ROUTING_PYREF_FRESH_DIR

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
        ignore_identical_ids=not args.keep_identical_ids,
    )
    result = run_eval(Path(args.beir), settings)
    suffix = "-rerank" if settings.rerank else ""
    out = Path(args.out or f"results/eval-retrieval-{args.mode}{suffix}-{args.split}.json")
    _write(result, out)
    for name, m in result["metrics"].items():
        print(f"{name:16} nDCG@10 {m['nDCG@10']:.4f}  Recall@100 {m['Recall@100']:.4f}")
    print(_identical_ids_line(result["identical_ids"]))
    print(f"({result['queries']} {args.split} queries, {result['seconds']:.0f} s; JSON: {out})")
    print(f"nDCG@10: {result['final']['nDCG@10']:.4f}")
    print(f"Recall@100: {result['final']['Recall@100']:.4f}")
    return 0


def _identical_ids_line(info: dict) -> str:
    hits = sum(info["own_hits"].values())
    found = ", ".join(f"{name} {n}" for name, n in info["own_hits"].items())
    if info["ignored"]:
        return (
            f"identical query/document ids ignored as in BEIR: applied to {info['queries']} "
            f"queries, {hits} own-document hits dropped ({found})"
        )
    return (
        f"identical query/document ids kept (--keep-identical-ids): {info['queries']} queries "
        f"are also documents, {hits} own-document hits scored ({found})"
    )


def _router_config(path: str | None):
    import yaml

    from ragtune.gateway.config import RouterConfig

    if path is None:
        return RouterConfig()
    data = yaml.safe_load(Path(path).read_text()) or {}
    return RouterConfig.model_validate(data.get("router", data))


def _routing_sets(args: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    """(name, requests file, corpus folder) of each set to score."""
    if args.dataset or args.beir:
        dataset = Path(args.dataset or ROUTING_DIR / "requests.jsonl")
        return [(dataset.parent.name, dataset, Path(args.beir or DEFAULT_BEIR))]
    sets = {
        "scifact": (ROUTING_DIR / "requests.jsonl", DEFAULT_BEIR),
        "pyref": (ROUTING_PYREF_DIR / "requests.jsonl", ROUTING_PYREF_DIR),
        "pyref-fresh": (ROUTING_PYREF_FRESH_DIR / "requests.jsonl", ROUTING_PYREF_DIR),
    }
    chosen = sorted(sets) if args.set == "all" else [args.set]
    return [(name, *sets[name]) for name in chosen]


def _print_routing(name: str, result: dict, out: Path) -> None:
    labels = result["labels"]
    fitted = result["calibration"]
    print(f"== {name}: {result['requests']} {result['split']} requests; "
          "rows: expected, columns: predicted")  # fmt: skip
    print(" " * 10 + "".join(f"{label:>9}" for label in labels))
    for label, row in zip(labels, result["confusion_matrix"], strict=True):
        print(f"{label:10}" + "".join(f"{n:9d}" for n in row))
    for kind, accuracy in result["accuracy_by_kind"].items():
        print(f"  {kind:18} {accuracy:.3f}")
    if fitted:
        print(f"  collection threshold {fitted['threshold']:.4f} (calibrated on its own text: "
              f"{fitted['positives']} pseudo-queries, {fitted['negatives']} negatives; "
              f"default {result['default_threshold']})")  # fmt: skip
    else:
        print(f"  collection not calibrated: default threshold {result['default_threshold']}")
    cq = result["cost_quality"]
    router = cq["router"]
    print(f"  router: accuracy {router['accuracy']:.3f}, retrieval share "
          f"{router['retrieval_share']:.2f}, {router['cost_micro_usd_per_request']:.1f} "
          "micro-USD/request")  # fmt: skip
    for base, point in cq["baselines"].items():
        print(f"  {base}: accuracy {point['accuracy']:.3f}, "
              f"{point['cost_micro_usd_per_request']:.1f} micro-USD/request; router saves "
              f"{cq['cost_saved_vs'][base]:.0%}")  # fmt: skip
    for m in result["mistakes"][:10]:
        print(f"  miss {m['id']} ({m['kind']}): expected {m['expected']}, got {m['got']} "
              f"(top {m['top_score']}): {m['question'][:70]}")  # fmt: skip
    print(f"  (JSON: {out})")
    print(f"{name} routing accuracy: {result['accuracy']:.4f}")


def cmd_routing(args: argparse.Namespace) -> int:
    from ragtune.evaluation import routing, routing_set

    config = _router_config(args.config)
    adapters = Path(args.adapters_dir or Path(args.data_dir) / "devmodel" / "adapters")
    worst = 1.0
    for name, dataset, beir_dir in _routing_sets(args):
        items = routing_set.read(dataset, args.split)
        settings = routing.RoutingSettings(
            beir_dir=beir_dir,
            adapters_dir=adapters,
            split=args.split,
            cache_dir=Path(args.data_dir) / "cache",
            collection=name,
        )
        if args.calibrate:
            result = routing.calibrate(items, config, settings)
            _write(result, Path(args.out or f"results/calibrate-routing-{args.split}.json"))
            print(json.dumps(result, indent=2))
            print("router config (the default for collections not calibrated yet):")
            print(f"  probe: {{min_top_score: {result['min_top_score']}, "
                  f"min_margin: {result['min_margin']}}}")  # fmt: skip
            print(f"calibration train accuracy: {result['train_accuracy']:.4f}")
            return 0
        if not items:
            print(f"== {name}: no {args.split} requests")
            continue
        result = routing.evaluate_routing(items, config, settings)
        out = Path(args.out or f"results/eval-routing-{name}-{args.split}.json")
        if args.out and len(_routing_sets(args)) > 1:
            out = out.with_name(f"{out.stem}-{name}{out.suffix}")
        _write(result, out)
        _print_routing(name, result, out)
        worst = min(worst, result["accuracy"])
    print(
        f"routing accuracy: {worst:.4f}"
        + (
            " (the lowest of the sets)"
            if args.set == "all" and not (args.dataset or args.beir)
            else ""
        )
    )
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
    p.add_argument(
        "--keep-identical-ids",
        action="store_true",
        help="let a query whose id is also a corpus id find that document "
        "(default: leave it out of its ranking, as BEIR's ignore_identical_ids does)",
    )
    p.add_argument("--out", help="JSON result path (default: results/eval-retrieval-...json)")
    p.set_defaults(func=cmd_retrieval)

    p = what.add_parser(
        "routing",
        help="router accuracy and confusion matrix on labelled requests",
        description="Run the gateway's router over labelled requests with everything it reads "
        "computed in-process: the corpus chunked and embedded as Ingest does, the collection "
        "calibrated on its own text, the probe's search, the adapters' example requests. "
        "Prints a confusion matrix, accuracy per kind and the cost/quality view (accuracy vs "
        "share of requests retrieving, cost vs always-RAG / always-HYBRID) per set. "
        "--calibrate instead fits the default threshold for uncalibrated collections (train "
        "split only).",
    )
    p.add_argument(
        "--set",
        choices=["scifact", "pyref", "pyref-fresh", "all"],
        default="all",
        help="shipped set(s) to score: SciFact claims vs everyday questions; the Python "
        "Language Reference set no threshold was fitted on; new questions on that corpus "
        "written after the router's last change (default: all three)",
    )
    p.add_argument("--dataset", help="your own labelled requests (JSONL) instead of --set")
    p.add_argument("--split", default="test", choices=["train", "test"])
    p.add_argument("--beir", help="the corpus (corpus.jsonl) your --dataset is routed against")
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
