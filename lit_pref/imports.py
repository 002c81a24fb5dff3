"""Resolve 'package.module:function' targets given in YAML."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from lit_pref.errors import ConfigError


def import_callable(target: str, option: str) -> Callable:
    """The function named by `target`; a clear error naming `option` if it cannot be imported."""
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{option}: {target!r} cannot be imported ({exc}); give 'package.module:function'"
        ) from exc
