"""Where muxproxy's configuration is read: one TOML file, validated once.

Strategy: `model.py` holds the frozen pydantic models (the schema, every
default with its reason), `load.py` turns a file into a `Config` or into one
`ConfigError` listing every problem as "file: key: problem".  The rest of the
proxy only ever sees a validated, immutable `Config`.
"""

from __future__ import annotations

from proxy.config.load import default_config_path, load_config, load_default_config, parse_config_text
from proxy.config.model import (
    Address,
    AdminSettings,
    Config,
    LimitSettings,
    ListenerSettings,
    LogSettings,
    MuxSettings,
    OriginSettings,
    RouteSettings,
    ServerSettings,
)

__all__ = [
    "Address",
    "AdminSettings",
    "Config",
    "LimitSettings",
    "ListenerSettings",
    "LogSettings",
    "MuxSettings",
    "OriginSettings",
    "RouteSettings",
    "ServerSettings",
    "default_config_path",
    "load_config",
    "load_default_config",
    "parse_config_text",
]

