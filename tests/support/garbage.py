"""Which objects a piece of work leaves to the garbage collector.

An object in a reference cycle is not freed when its last outside reference
goes; it waits for a collection, and under load those collections cost CPU
in proportion to how much such garbage each request makes (docs/performance.md,
"the plain proxy's reference cycle").  The proxy's per-request objects must
be freed by reference counting alone.

`CyclicGarbage` finds out without guessing: while it is active the collector
keeps (gc.DEBUG_SAVEALL) everything it would have freed, whether a collection
runs on its own during the work or at the end, so `count(types)` is exactly
the number of those objects that were only collectable as cycles.
"""

from __future__ import annotations

import gc
from collections import Counter


def type_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


class CyclicGarbage:
    """`with CyclicGarbage() as garbage: ...work...; garbage.collect()`."""

    def __init__(self) -> None:
        self.found: Counter[str] = Counter()
        self._debug_before = 0

    def __enter__(self) -> "CyclicGarbage":
        gc.collect()  # what earlier tests left is not this work's
        gc.garbage.clear()
        self._debug_before = gc.get_debug()
        gc.set_debug(self._debug_before | gc.DEBUG_SAVEALL)
        return self

    def collect(self) -> Counter[str]:
        """Collect now; the types (qualified names) of what was kept, counted."""
        gc.collect()
        self.found = Counter(type_name(type(item)) for item in gc.garbage)
        return self.found

    def count(self, *types: type) -> dict[str, int]:
        """How many of each of these types were in cycles (zero counts left out)."""
        names = {type_name(kind) for kind in types}
        return {name: number for name, number in self.found.items() if name in names}

    def __exit__(self, *exc_info) -> None:
        gc.set_debug(self._debug_before)
        gc.garbage.clear()
