"""CDC collections: an append-only change log and a current-state table per collection, both Iceberg.

    design.py      table names, partitioning and properties; Arrow schema helpers
    changes.py     change records → the change-log batch (pure)
    fold.py        the fold rule: greatest version per key wins (pure)
    state.py       the copy-on-write fold of the log into the state table
    collection.py  `Collection`: open, apply, repair, reads, time travel, tags, exports
    routing.py     CDC events of `events.raw` → their collections (a post-commit hook)
"""

from icebergdo.cdc.collection import Collection
from icebergdo.cdc.design import LOG_SUFFIX, P_BUCKETS, P_CHANGES, P_FOLDED, P_KEY, P_ROLE
from icebergdo.cdc.routing import CdcRouter, route_events, route_pending
from icebergdo.cdc.state import ApplyResult

__all__ = [
    "LOG_SUFFIX",
    "P_BUCKETS",
    "P_CHANGES",
    "P_FOLDED",
    "P_KEY",
    "P_ROLE",
    "ApplyResult",
    "CdcRouter",
    "Collection",
    "route_events",
    "route_pending",
]
