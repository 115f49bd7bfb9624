"""Python's cyclic garbage collector while a worker starts.

A worker's start-up makes a few hundred thousand objects that live as long as the process: modules,
classes, SQLAlchemy's mappers, pydantic's validators. Left on, the collector walks them again and
again as they pile up, and frees next to nothing: several percent of the start-up's CPU. So, as
Python's documentation of `gc.freeze` advises for a process that forks without exec:
`pause()` before the first import, and `resume()` right before the first fork: everything made so
far goes into the permanent generation, where collections never look again (so a forked work horse
leaves those pages shared instead of copying them as it collects), and the collector runs again.

Standard library only: it is imported before everything else.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Hold the collector off while the process starts (`resume()` ends it)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """End of start-up: what it made is frozen out of every later collection, and the collector runs
    again. Nothing when `pause()` did not pause it (a test running a worker in its own process)."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False
