"""One generation replica's side of the platform's adapter catalog (``catalog.py``): it applies
what other replicas registered or removed, reports what it holds, and waits for the others
when it removes an adapter. Design and guarantees: docs/generation.md."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING

from ragtune.common.errors import RagtuneError, Unavailable
from ragtune.generation.catalog import Catalog, Entry

if TYPE_CHECKING:
    from ragtune.generation.service import GenerationService

log = logging.getLogger(__name__)


class SharedAdapters:
    def __init__(self, service: GenerationService, url: str) -> None:
        self.service = service
        self.catalog = Catalog(url)
        self.replica_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.interval = service.config.sync_interval_s
        self._versions: dict[str, int] = {}  # catalog version of each adapter as applied here
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    @property
    def _live_within_s(self) -> float:
        """A replica silent for longer counts as gone (it died without saying so)."""
        return max(5.0, 5 * self.interval)

    def follow(self) -> None:
        """Keep applying the catalog, every ``sync_interval_s``, on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except Exception:
                log.warning("reading the adapter catalog failed", exc_info=True)

    async def sync(self) -> None:
        """Apply the catalog here: register adapters loaded elsewhere (new weights replace
        old ones on next use), stop serving removed ones (after their running requests), then
        report what this replica holds."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a new loop: tests run several
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:
            for name, entry in (await asyncio.to_thread(self.catalog.entries)).items():
                if self._versions.get(name) != entry.version:
                    await self._apply(entry)
            await self.heartbeat()

    async def _apply(self, entry: Entry) -> None:
        svc, name = self.service, entry.name
        # The registry first, so a request arriving meanwhile sees the new state.
        if entry.removed:
            svc.registry.known.pop(name, None)
            svc.registry.removed.add(name)
        else:
            try:
                await asyncio.to_thread(svc.registry.register, name, entry.source)
            except RagtuneError as exc:  # e.g. the source is not readable from this replica
                log.warning("adapter %s from the catalog refused here: %s", name, exc)
        await svc.drop_resident(name)  # removed, or new weights: after its running requests
        self._versions[name] = entry.version

    async def heartbeat(self) -> None:
        resident = list(self.service.resident_adapters())
        await asyncio.to_thread(self.catalog.heartbeat, self.replica_id, resident)

    async def register(self, name: str, source: str, registered_by: str) -> None:
        """Make ``name`` the platform's (this replica already checked and holds it)."""
        entry = await asyncio.to_thread(self.catalog.register, name, source, registered_by)
        self._versions[name] = entry.version

    async def remove(self, name: str) -> None:
        """Remove ``name`` everywhere: here first, then wait until every live replica has
        synced since and holds it no more (UNAVAILABLE after ``unload_timeout_s``)."""
        entry = await asyncio.to_thread(self.catalog.remove, name)
        await self.sync()
        deadline = time.monotonic() + self.service.config.unload_timeout_s
        while True:
            live = await asyncio.to_thread(self.catalog.live_replicas, self._live_within_s)
            holding = [
                r.replica for r in live if r.synced_at < entry.removed_at or name in r.resident
            ]
            if not holding:
                return
            if time.monotonic() > deadline:
                raise Unavailable(f"adapter {name!r} is still served by replicas {holding}")
            await asyncio.sleep(self.interval / 4)

    async def placement(self) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Adapter -> the live replicas holding it, and adapter -> who registered it."""
        live = await asyncio.to_thread(self.catalog.live_replicas, self._live_within_s)
        where: dict[str, list[str]] = {}
        for state in sorted(live, key=lambda r: r.replica):
            for name in state.resident:
                where.setdefault(name, []).append(state.replica)
        entries = await asyncio.to_thread(self.catalog.entries)
        return where, {n: e.registered_by for n, e in entries.items()}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await asyncio.to_thread(self.catalog.forget, self.replica_id)
