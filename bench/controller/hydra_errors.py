"""Hydra's and OmegaConf's errors about a command line, said in one line with what is allowed.

Hydra prints these as tracebacks or as several lines listing its search path and internal schema
names (``base_*``); a user needs the bad value, the allowed ones and, for a typo, the likely key.
"""
from __future__ import annotations

import dataclasses
import difflib
import re

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from bench.controller.config import Config


def _options(text: str) -> list[str]:
    """The names Hydra lists under "Available options in '<group>':", internal schemas left out."""
    block = text.split("Available options in", 1)[1].split("\n", 1)[1] if "Available options in" in text else ""
    names = []
    for line in block.splitlines():
        if not line.startswith("\t"):
            break
        name = line.strip()
        if name and not name.startswith("base_"):
            names.append(name)
    return names


def _settings(path: str) -> list[str] | None:
    """The keys the schema has at ``path`` ("" is the root), or None where the schema does not say."""
    node = Config()
    for part in filter(None, path.split(".")):
        if part == "backend" or not dataclasses.is_dataclass(node):
            return None
        field = next((f for f in dataclasses.fields(node) if f.name == part), None)
        if field is None or not callable(field.default_factory):
            return None
        node = field.default_factory()
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else None


def _unknown_key(key: str) -> str:
    group, _, name = key.rpartition(".")
    known = _settings(group)
    if group == "backend" or group.startswith("backend."):
        return (f"{key} is not an option of the chosen backend (its options are listed in "
                "conf/backend/<name>.yaml)")
    if known is None:
        return f"{key} is not a setting"
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {group + '.' if group else ''}{close[0]}? " if close else ""
    return f"{key} is not a setting ({hint}{group or 'the top level'} has: {', '.join(known)})"


def one_line(exc: BaseException) -> str | None:
    """The error in one line, or None when it is not one of Hydra's or OmegaConf's about the command line."""
    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    text = str(exc)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = _options(text)
        allowed = f"; {group} is one of: {', '.join(options)}" if options else ""
        return f"{group}={option} is not an option{allowed}"
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        return _unknown_key(override.group(1))
    merging = re.search(r"Error merging override (\S+)", text)
    cause = exc.__cause__
    if merging and cause is not None:
        reason = str(cause).strip().splitlines()[0]
        return f"{merging.group(1)}: {reason}"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return re.sub(r"\s+", " ", first)
