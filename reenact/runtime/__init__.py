"""The service runtime shared by every reenact service: config, server, health, metrics, logs, errors."""

from reenact.runtime.config import ServiceConfig, parse_config
from reenact.runtime.server import ServiceServer

__all__ = ["ServiceConfig", "ServiceServer", "parse_config"]
