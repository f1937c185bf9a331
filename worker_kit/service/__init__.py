"""The queue service: the client API and the native worker API over HTTP (docs/service.md)."""

from __future__ import annotations

from .app import create_app
from .config import EndpointConfig, RateLimit, ServiceConfig
from .runner import RunningService, run_service

__all__ = ["EndpointConfig", "RateLimit", "RunningService", "ServiceConfig", "create_app", "run_service"]
