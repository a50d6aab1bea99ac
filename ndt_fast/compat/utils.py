"""ndt's utilities: YAML tracker configurations and a console/file logger.

``load_config``/``save_config`` need PyYAML (``pip install "ndt-fast[config]"``), imported only
when called.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

__all__ = ["get_default_config", "load_config", "save_config", "setup_logger"]

logger = logging.getLogger(__name__)

DEFAULT_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as error:  # an optional dependency: say how to get it
        raise ImportError('load_config/save_config need PyYAML: pip install "ndt-fast[config]"') from error
    return yaml


def load_config(config_path: str | os.PathLike[str]) -> Any:
    """The YAML document in ``config_path`` (usually a dict of tracker arguments).

    Read with ``yaml.safe_load`` (no arbitrary Python objects). FileNotFoundError when the file
    does not exist; ``yaml.YAMLError`` when it is not valid YAML.
    """
    path = os.fspath(config_path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return _yaml().safe_load(f)


def save_config(config: dict[str, Any], output_path: str | os.PathLike[str]) -> None:
    """Write ``config`` to ``output_path`` as block-style YAML, keys in their given order.

    Written with ``yaml.safe_dump``, so ``load_config`` always reads it back (a tuple comes back
    as a list; ndt writes it as a Python tag that its own ``load_config`` refuses). A value plain
    YAML cannot hold (a tensor, a device, any custom object) → TypeError naming it, and no file
    is written.
    """
    yaml = _yaml()
    try:
        text = yaml.safe_dump(config, default_flow_style=False, sort_keys=False, allow_unicode=True)
    except yaml.representer.RepresenterError as error:
        raise TypeError(f"save_config: cannot write {error.args[-1]!r} as plain YAML "
                        "(use lists, dicts, strings, numbers, booleans or None)") from error
    with open(os.fspath(output_path), "w", encoding="utf-8") as f:
        f.write(text)
    logger.info("Saved configuration to %s", os.fspath(output_path))


def get_default_config() -> dict[str, Any]:
    """FastTracker's (and ndt's) defaults for the arguments a config file usually holds."""
    return {"sampling_frequency": 1, "enable_jump_detection": True, "jump_window_size": 50, "jump_z_threshold": 3.0}


def setup_logger(
    name: str = "ndt_fast",
    level: int = logging.INFO,
    log_file: str | os.PathLike[str] | None = None,
    format_string: str | None = None,
) -> logging.Logger:
    """The logger ``name`` at ``level``, printing to stdout (and appending to ``log_file``).

    The default name is "ndt_fast", the logger ndt_fast's own messages go to (ndt's default is
    "ndt", its package). Calling it again replaces the handlers an earlier call added (closing
    their files) instead of stacking duplicates; handlers added by anyone else are left alone.
    """
    log = logging.getLogger(name)
    log.setLevel(level)
    for handler in [h for h in log.handlers if getattr(h, "_added_by_setup_logger", False)]:
        log.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(format_string or DEFAULT_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        handlers.append(logging.FileHandler(os.fspath(log_file), encoding="utf-8"))
    for handler in handlers:
        handler.setLevel(level)
        handler.setFormatter(formatter)
        handler._added_by_setup_logger = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    return log
