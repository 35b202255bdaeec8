"""CPU threads for torch and FAISS inside a replica.

Ray sets OMP_NUM_THREADS to a replica's whole ``num_cpus`` (1 for fractional CPUs), which
leaves a model replica on one core. The local default packs several replicas on few cores with
fractional CPUs, yet only one model is busy at a time, so model replicas choose explicitly.
"""

from __future__ import annotations

import os


def set_torch_threads(count: int | None) -> int:
    """Use ``count`` threads, or every core this process may run on when None."""
    import torch

    count = count or len(os.sched_getaffinity(0))
    torch.set_num_threads(count)
    return count


def set_faiss_threads(count: int | None) -> int:
    """FAISS's OpenMP threads for the calling thread (OpenMP keeps the setting per thread):
    ``count``, or every core this process may run on when None."""
    import faiss

    count = count or len(os.sched_getaffinity(0))
    faiss.omp_set_num_threads(count)
    return count
