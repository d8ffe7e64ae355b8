"""Policies of your own in every migbed process: MIGBED_POLICY_MODULES.

A policy registered in a Python module (migbed.core.policy.register_policy) exists in the
process that imports it. `migbed run` starts its source service as another process, and
containers and lab hosts run `migbed serve` on their own: each `migbed` process imports the
modules named in MIGBED_POLICY_MODULES (comma-separated, importable from its sys.path)
before it reads its arguments, so the engine, the model and every `--policy` take the name.
"""

from __future__ import annotations

import importlib
import os

ENV = "MIGBED_POLICY_MODULES"


class PluginError(ValueError):
    """A module named in MIGBED_POLICY_MODULES that does not import; names it."""


def load_policy_modules(environ: dict[str, str] | None = None) -> list[str]:
    """Import every module MIGBED_POLICY_MODULES names; returns their names."""
    env = os.environ if environ is None else environ
    names = [n.strip() for n in env.get(ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # any failure of someone else's module: name it, no traceback
            raise PluginError(f"{ENV}: module {name!r} does not import: "
                              f"{type(e).__name__}: {e}") from None
    return names
