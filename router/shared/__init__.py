"""State shared by replicas and batch workers through Redis: budget ledger, rpm/tpm windows, router state.

Example::

    from router.shared import RedisLink, RedisLedger
    link = RedisLink("redis://127.0.0.1:6379/0", prefix="prod")
    ledger = RedisLedger(link, on_unavailable="refuse")
"""

from .ledger import RedisLedger
from .limits import SharedWindows
from .link import RedisLink, SharedStateUnavailable
from .router_state import SharedRouterState

__all__ = ["RedisLedger", "RedisLink", "SharedRouterState", "SharedStateUnavailable", "SharedWindows"]
