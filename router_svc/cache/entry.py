"""One cached answer as ``HnswCache`` keeps it and a snapshot writes it."""

from __future__ import annotations

from dataclasses import dataclass

from router_svc.cache.response import CachedResponse

__all__ = ["Entry"]


@dataclass
class Entry:
    id: int
    partition: str
    text: str
    response: CachedResponse
    created_at: float
    expires_at: float
    touched: int  # global recency tick (LRU order survives a snapshot)
    hits: int = 0
    tenant: str = ""  # whose quota it counts against (``HnswCache.tenant_quota``)
