"""Closing composed widgets: every model below a widget, not just its own comm.

``ipywidgets.Widget.close()`` closes one comm; a box's children and every widget's ``layout``
and ``style`` are models of their own and stay alive (in the kernel and in the front end)
unless they are closed too. :func:`close_tree` walks everything reachable through synced
traits, plus what composed widgets own outside their children (:meth:`Composed._owned`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import ipywidgets as w


def live_models() -> int:
    """How many widget models are alive in this kernel (``len(Widget.widgets)``)."""
    from ipywidgets.widgets import widget as module

    instances = getattr(module, "_instances", None)
    return len(instances if instances is not None else w.Widget.widgets)


def _reachable(widget: w.Widget) -> Iterable[w.Widget]:
    for name in widget.keys:
        try:
            value = getattr(widget, name)
        except Exception:  # noqa: BLE001 - a trait that cannot be read holds no widget
            continue
        if isinstance(value, w.Widget):
            yield value
        elif isinstance(value, (tuple, list)):
            yield from (v for v in value if isinstance(v, w.Widget))
    owned = getattr(widget, "_owned", None)
    if callable(owned):
        yield from owned()


def close_tree(*roots: Any) -> int:
    """Close ``roots`` and every widget below them; returns how many comms were closed.
    Composed widgets first stop their timers (:meth:`Composed._stop`)."""
    seen: set[int] = set()
    stack = [r for r in roots if isinstance(r, w.Widget)]
    closed = 0
    while stack:
        widget = stack.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        stop = getattr(widget, "_stop", None)
        if callable(stop):
            stop()
        stack.extend(_reachable(widget))
        if widget.comm is not None:
            closed += 1
        w.Widget.close(widget)
    return closed


class Composed:
    """Mixin for widgets made of widgets: ``close()`` closes all of them."""

    def _owned(self) -> Iterable[w.Widget]:
        """Widgets this one made that are not (always) among its children."""
        return ()

    def _stop(self) -> None:
        """Stop timers and runs before the widgets go away."""

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        close_tree(self)
