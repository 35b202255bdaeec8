"""CPU threads for torch and FAISS inside a replica.

Ray sets OMP_NUM_THREADS to a replica's whole ``num_cpus`` (1 for fractional CPUs), which
leaves a model replica on one core. The local default packs several replicas on few cores with
fractional CPUs, yet only one model is busy at a time, so model replicas choose explicitly.
"""

from __future__ import annotations

import os


def cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0))


def set_torch_threads(count: int | None) -> int:
    """Use ``count`` threads, or every core this process may run on when None."""
    import torch

    count = count or cores()
    torch.set_num_threads(count)
    return count


def reserved_threads() -> int:
    """Threads for the CPUs this process reserved: Ray sets OMP_NUM_THREADS in its workers to
    their whole ``num_cpus`` (1 for fractional CPUs); outside Ray, every core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else cores()


def threads_per_pass(parallel_passes: int) -> int:
    """torch threads for each of ``parallel_passes`` forward passes running at once: the
    cores shared out among them."""
    return max(1, cores() // parallel_passes)


def set_faiss_threads(count: int) -> None:
    """FAISS's OpenMP threads for the calling thread (OpenMP keeps the setting per thread)."""
    import faiss

    faiss.omp_set_num_threads(count)


def set_faiss_blas_threshold(threads: int, per_thread: int = 800) -> int:
    """Exact searches of ``nq`` queries use BLAS when ``nq * dims >= per_thread * threads``.

    FAISS 1.15 moved the switch to ``nq * dims >= 128000``, tuned for many-core servers; with
    few threads its per-query scan is far slower than one BLAS call for even a handful of
    queries. 800 per thread is the crossover FAISS's own analysis found
    (facebookresearch/faiss#5109) and ours at 384 dims (measured: docs/retrieval.md, "FAISS on
    few cores"). The setting is process-wide; returns it.
    """
    import faiss

    faiss.cvar.distance_compute_blas_threshold = per_thread * threads
    return per_thread * threads
