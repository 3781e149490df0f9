"""A base for the small value classes made once per request.

Strategy: the per-request values (request heads, body pieces, outbound
requests, pool checkouts, mux commands) were dataclasses.  Compiled by mypyc
(setup.py), a dataclass keeps the `__init__` that the dataclass decorator
generates at import time, and that `__init__` is interpreted bytecode: a
profile of the compiled build under load (perf, README "Profile") found 7 % of
the proxy's CPU in those five constructors alone.  A class with a written-out
`__init__` compiles to a C constructor instead.

`Record` gives such a class what the dataclass gave besides `__init__`: field
equality, a readable repr, and no hash (the values are mutable by
construction; treat them as immutable all the same).  A subclass lists its
field names in `FIELDS`, in constructor order, and uses them as `__slots__`.
Rarely made values (config, constants, pause/resume commands) stay
dataclasses: their construction cost does not matter.
"""

from __future__ import annotations

from typing import ClassVar


class Record:
    __slots__ = ()

    #: Field names in constructor order; each subclass sets its own.
    FIELDS: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        for name in self.FIELDS:
            if getattr(self, name) != getattr(other, name):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # mutable by construction, like a non-frozen dataclass

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"{type(self).__name__}({inner})"

    def replace(self, **changes: object) -> Record:
        """A copy with some fields changed (dataclasses.replace for records)."""
        values = {name: getattr(self, name) for name in self.FIELDS}
        values.update(changes)
        return type(self)(**values)
