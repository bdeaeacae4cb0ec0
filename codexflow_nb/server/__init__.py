"""The demo endpoint behind ``codex-flow serve`` (needs the ``serve`` extra: starlette, uvicorn)."""

from __future__ import annotations

from .app import MAX_BODY_BYTES, create_app
from .providers import PROVIDER_NAMES

__all__ = ["MAX_BODY_BYTES", "PROVIDER_NAMES", "create_app"]
