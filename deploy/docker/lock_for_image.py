"""Print a lock file without the packages already installed in this Python environment.

Used while building the GPU image (Dockerfile.gpu): requirements.lock was resolved for the CPU
stack, and the vLLM base image has pinned its own versions of what it ships (torch, fastapi,
...). Pinning those again would fight vLLM's; every other package keeps the lock's version.
Standard library only: it runs in the base image before ragtune is installed.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock_path: str) -> None:
    installed = {canonical(dist.metadata["Name"]) for dist in distributions()}
    with open(lock_path) as lock:
        for line in lock:
            name = line.split("==", 1)[0].strip()
            if name and canonical(name) not in installed:
                print(line, end="")


if __name__ == "__main__":
    main(sys.argv[1])
