"""Routing: deployments, strategies, retries, fallbacks and cooldowns (see :class:`Router`)."""

from __future__ import annotations

from .router import Router

__all__ = ["Router"]
