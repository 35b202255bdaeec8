"""Bulk ingest through the platform vs raw batched encode of the same chunks, same run.

Platform: ``ragtune ingest --beir`` (the CLI's own code, in this process: ``--batch`` documents
per call, ``--in-flight`` calls at once) of the first N SciFact documents into a fresh
collection, through the real gateway on a local Serve with the applications Ingest needs
(embedding, retrieval, gateway: no generation, no rerank). The gateway chunks, embeds and
stores. Raw: the gateway's ``Chunker`` on the same documents, then
``SentenceTransformer(MiniLM).encode(chunks, batch_size=64)`` in this process; only the encode
is timed, as the speed the platform should keep. Rounds alternate raw and platform so a slow
spell hits both; the headline is the median of the rounds' ratios of documents/s. Prints it on
its last line and writes JSON.

    python -m load_tests.bench_ingest [--n 1000] [--batch 64] [--in-flight 2] [--rounds 2]
    python -m load_tests.bench_ingest --batch 16,32,64,128,256 --rounds 1   # pick a batch size
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

from load_tests.bench_common import SCIFACT, add_ingress, add_out_dir, local_serve, write_result
from ragtune.documents.command import DEFAULT_BATCH
from ragtune.local import use_process_env


def scifact_head(n: int, folder: Path) -> list[dict]:
    """The first ``n`` SciFact documents, also written as a BEIR folder at ``folder``."""
    with (SCIFACT / "corpus.jsonl").open() as f:
        lines = list(itertools.islice(f, n))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(lines))
    return [json.loads(line) for line in lines]


def gateway_chunks(records: list[dict]) -> list[str]:
    """The chunks the gateway makes of these documents (its Chunker, its title rule)."""
    from ragtune.gateway.chunking import Chunker
    from ragtune.gateway.config import ChunkingConfig

    chunker = Chunker(ChunkingConfig())
    chunks = []
    for r in records:
        text = r["text"] or r["title"]
        chunks += chunker.split(f"# {r['title']}\n\n{text}" if r["title"] else text)
    return chunks


class RawEncoder:
    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from ragtune.common.models import default_minilm_path

        self.model = SentenceTransformer(default_minilm_path(), device="cpu")
        self.model.encode(["warm-up"] * 64, batch_size=64)

    def seconds(self, chunks: list[str]) -> float:
        start = time.perf_counter()
        self.model.encode(chunks, batch_size=64, normalize_embeddings=True)
        return time.perf_counter() - start


def cli_ingest(
    target: str, key: str, beir: Path, collection: str, batch: int, in_flight: int
) -> tuple[float, dict]:
    """``ragtune ingest --beir`` in this process; (seconds, its --json report)."""
    from ragtune.cli import main

    argv = ["ingest", "--beir", str(beir), "--collection", collection, "--json",
            "--batch", str(batch), "--in-flight", str(in_flight),
            "--target", target, "--api-key", key, "--timeout", "600"]  # fmt: skip
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"ragtune ingest exited {code}: {out.getvalue()[-2000:]}")
    return seconds, json.loads(out.getvalue())


def applications(data: Path) -> list[dict]:
    from ragtune.common.services import EMBEDDING, GATEWAY, RETRIEVAL
    from ragtune.deployment import app_entry

    gateway = {
        "keys_file": str(data / "keys.yaml"),
        "rerank": False,
        "database_url": f"sqlite:///{data / 'ledger.db'}",
    }
    return [
        app_entry(EMBEDDING, {}),
        app_entry(RETRIEVAL, {"database_url": f"sqlite:///{data / 'ragtune.db'}"}),
        app_entry(GATEWAY, gateway),
    ]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="SciFact documents per round")
    parser.add_argument("--batch", type=_ints, default=[DEFAULT_BATCH],
                        help=f"documents per Ingest call; a list (32,64,128) compares them, "
                        f"the first giving the headline (default {DEFAULT_BATCH})")  # fmt: skip
    parser.add_argument("--in-flight", type=_ints, default=[2],
                        help="Ingest calls at once; a list compares them (default 2)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="raw/platform rounds (median)")
    add_ingress(parser)
    add_out_dir(parser)
    args = parser.parse_args()
    use_process_env(local_ray=True)
    from ragtune.common.auth import create_key

    settings = list(itertools.product(args.batch, args.in_flight))
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        data = Path(tmp)
        records = scifact_head(args.n, data / "scifact")
        chunks = gateway_chunks(records)
        key = create_key(data / "keys.yaml", "bench")
        raw = RawEncoder()
        rounds = []
        with local_serve(args.ingress, applications(data)) as port:
            target = f"localhost:{port}"
            # warm-up: the first calls resolve handles and load the tokenizer and model
            scifact_head(128, data / "warm")
            cli_ingest(target, key, data / "warm", "warm-up", 64, 2)
            for r in range(args.rounds):
                raw_s = raw.seconds(chunks)
                print(f"round {r + 1}: raw encode(batch_size=64) {len(records) / raw_s:.1f} "
                      f"docs/s ({len(chunks) / raw_s:.1f} chunks/s)", flush=True)  # fmt: skip
                for batch, in_flight in settings:
                    collection = f"r{r}-b{batch}-f{in_flight}"
                    seconds, report = cli_ingest(target, key, data / "scifact", collection,
                                                 batch, in_flight)  # fmt: skip
                    if report["documents"] != len(records):
                        raise RuntimeError(f"{collection}: {report['counts']}")
                    rounds.append({
                        "round": r, "batch": batch, "in_flight": in_flight,
                        "raw_seconds": raw_s, "platform_seconds": seconds,
                        "raw_docs_per_s": len(records) / raw_s,
                        "platform_docs_per_s": len(records) / seconds,
                        "platform_chunks": report["chunks"], "ratio": raw_s / seconds,
                    })  # fmt: skip
                    print(f"  platform ingest --batch {batch} --in-flight {in_flight}: "
                          f"{len(records) / seconds:.1f} docs/s; ratio {raw_s / seconds:.2f}",
                          flush=True)  # fmt: skip
    by_setting = {
        f"batch={b},in_flight={f}": statistics.median(
            x["ratio"] for x in rounds if (x["batch"], x["in_flight"]) == (b, f)
        )
        for b, f in settings
    }
    ratio = next(iter(by_setting.values()))
    result = {"benchmark": "ingest", "documents": len(records), "chunks": len(chunks),
              "ingress": args.ingress, "ratios": by_setting, "rounds": rounds,
              "ratio": ratio}  # fmt: skip
    batch, in_flight = settings[0]
    path = write_result(f"bench-ingest-b{batch}-f{in_flight}", result, args.out_dir)
    for name, value in by_setting.items():
        print(f"{name}: platform/raw {value:.2f}")
    print(f"JSON: {path}")
    print(f"ingest platform/raw throughput ratio (batch {batch}, {in_flight} in flight, median "
          f"of {args.rounds}): {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
