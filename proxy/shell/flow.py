"""Why a client socket is paused: independent reasons, kept apart.

`ClientConnection.set_reading(reason, on)` pauses the socket while any
reason holds, so one reason ending never resumes reading that another still
needs (the bug uvicorn's flow control guards against with one flag).
"""

from typing import Final

# Bits of one int (a set would cost 216 bytes per idle connection).
PIPELINE: Final = 1  # a pipelined request waits for the current response
HANDLER: Final = 2  # the handler's own backpressure (mux in-flight/buffer marks)
ORIGIN: Final = 4  # the origin's socket is full (streamed request body)
