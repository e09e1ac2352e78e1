"""Environment registry: ids like ``toy/calculator-v0`` mapped to lazy entry points, on top of
Gymnasium's registry.

Each id is registered with Gymnasium twice: under itself (so ``gymnasium.make("agentgym:toy/calculator-v0")``
works, the module prefix importing agentgym first) and under the ``agentgym`` namespace with the
family joined by a dot (``gymnasium.make("agentgym/toy.calculator-v0")`` after ``import agentgym``),
since Gymnasium ids cannot hold a second slash.

Third-party packages add environments through the entry-point group ``agentgym.envs``: each entry
point names a function that calls ``agentgym.register``; it runs the first time the registry is
read.
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import gymnasium

ENTRY_POINT_GROUP = "agentgym.envs"


@dataclass(frozen=True)
class EnvEntry:
    id: str
    entry_point: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    requires: str | None = None
    """the pip extra that provides its dependencies, named in errors when an import fails"""


_REGISTRY: dict[str, EnvEntry] = {}
_SCHEMES: dict[str, tuple[str, str]] = {}
_plugins_loaded = False
plugin_errors: dict[str, str] = {}
"""entry point name -> why it failed to load (a broken plugin never breaks the registry)"""


def gymnasium_id(env_id: str) -> str:
    """The id in Gymnasium's ``agentgym`` namespace: ``toy/calculator-v0`` -> ``agentgym/toy.calculator-v0``."""
    return "agentgym/" + env_id.replace("/", ".")


def agentgym_id(gym_id: str) -> str:
    """The inverse of ``gymnasium_id``."""
    if gym_id.startswith("agentgym/"):
        return gym_id[len("agentgym/") :].replace(".", "/", 1)
    return gym_id


def register(id: str, entry_point: str, *, requires: str | None = None, **kwargs: Any) -> None:
    """Register an environment under ``id`` (``family/name-vN``); ``entry_point`` is
    ``"module:Class"``, imported only when the env is made; ``kwargs`` are the defaults passed to
    the class. Registering an id again replaces it, with a warning when the entry changes (a
    plugin shadowing a built-in env, say)."""
    if "/" not in id or not id.split("/", 1)[1]:
        raise ValueError(f"env ids look like 'family/name-v0', got {id!r}")
    if ":" not in entry_point:
        raise ValueError(f"entry_point must be 'module:Class', got {entry_point!r}")
    entry = EnvEntry(id, entry_point, dict(kwargs), requires)
    old = _REGISTRY.get(id)
    if old is not None and old != entry:
        warnings.warn(
            f"env {id!r} registered again: {old.entry_point} {old.kwargs} is replaced by "
            f"{entry_point} {kwargs}",
            stacklevel=2,
        )
    _REGISTRY[id] = entry
    for gid in (id, gymnasium_id(id)):
        gymnasium.registry.pop(gid, None)
        gymnasium.register(id=gid, entry_point=entry_point, kwargs=dict(kwargs), disable_env_checker=True)


def register_scheme(prefix: str, env_id: str, kwarg: str) -> None:
    """Let ``PREFIX:VALUE`` stand for ``make(env_id, **{kwarg: VALUE})`` (``openenv:ws://host:8000``),
    and a bare ``PREFIX`` for ``env_id`` itself (``mcp`` for ``mcp/server-v0``)."""
    _SCHEMES[prefix] = (env_id, kwarg)


def resolve_scheme(env_id: str) -> tuple[str, dict[str, Any]]:
    """``(registered id, kwargs)`` for an id written with a scheme; other ids come back as they are."""
    if env_id in _SCHEMES:
        return _SCHEMES[env_id][0], {}
    prefix, colon, value = env_id.partition(":")
    if colon and prefix in _SCHEMES and prefix not in _REGISTRY:
        target, kwarg = _SCHEMES[prefix]
        return target, {kwarg: value}
    return env_id, {}


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            fn = ep.load()
            if callable(fn):
                fn()
        except Exception as e:
            plugin_errors[ep.name] = f"{type(e).__name__}: {e}"
            print(f"agentgym: plugin {ep.name!r} ({ep.value}) failed to load: {e}", file=sys.stderr)


def reload_plugins() -> None:
    """Look for ``agentgym.envs`` entry points again (after installing a plugin at run time)."""
    global _plugins_loaded
    _plugins_loaded = False
    _load_plugins()


def list_envs() -> list[str]:
    """Every registered id, sorted."""
    _load_plugins()
    return sorted(_REGISTRY)


def spec(env_id: str) -> EnvEntry:
    _load_plugins()
    if env_id not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(env_id, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no env {env_id!r}.{hint} `agentgym list` shows the registered ids.")
    return _REGISTRY[env_id]


def make(env_id: str, **kwargs: Any):
    """Build the environment registered under ``env_id`` (keyword arguments override defaults).

    An id that is not registered but names a class, ``path/to/file.py:ClassName`` or
    ``package.module:ClassName``, builds that class with ``kwargs``; its records carry the id
    as given, so the same string builds it again in ``eval`` and the trainers."""
    _load_plugins()
    if env_id not in _REGISTRY:
        target, from_scheme = resolve_scheme(env_id)
        if target != env_id:
            return make(target, **{**from_scheme, **kwargs})
    if env_id not in _REGISTRY and ":" in env_id:
        env = load_env_class(env_id)(**kwargs)
        env._made_as = (env_id, dict(kwargs))
        return env
    entry = spec(env_id)
    module = entry.entry_point.split(":", 1)[0]
    try:
        importlib.import_module(module)
    except ImportError as e:
        extra = entry.requires
        hint = f" Install it with: pip install 'agentgym[{extra}]'" if extra else ""
        raise ImportError(f"env {env_id!r} needs a package that is not installed ({e}).{hint}") from e
    env = gymnasium.make(env_id, disable_env_checker=True, **kwargs)
    return env.unwrapped


def import_source(where: str):
    """The module ``where`` names: a dotted module name, or the path of a ``.py`` file (imported
    once per path, as a module of its own). Raises ``FileNotFoundError`` for a missing file,
    ``ImportError`` for a module that cannot be imported, and ``ValueError`` for a file that fails
    to run."""
    import importlib.util
    import os

    if not (where.endswith(".py") or os.sep in where):
        return importlib.import_module(where)
    path = os.path.abspath(where)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file {where!r}")
    mod_name = f"agentgym_user_{abs(hash(path)):x}"
    module = sys.modules.get(mod_name)
    if module is None:
        file_spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[mod_name] = module
        try:
            file_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[mod_name]
            raise ValueError(f"{where} failed to load: {type(e).__name__}: {e}") from e
        except BaseException:
            del sys.modules[mod_name]
            raise
    return module


def load_env_class(ref: str) -> type:
    """The env class that ``file.py:ClassName`` or ``module:ClassName`` names (a file is imported
    once per path, as a module of its own)."""
    from agentgym.env import ToolEnv

    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise KeyError(f"{ref!r} is neither a registered env id nor 'file.py:ClassName' / 'module:ClassName'")
    try:
        module = import_source(where)
    except FileNotFoundError:
        raise KeyError(
            f"no file {where!r} (from --env {ref!r}); give the path to a .py file and a class in it"
        ) from None
    except ValueError as e:
        raise ValueError(f"{e} (from --env {ref!r})") from e
    except ImportError as e:
        raise KeyError(f"cannot import module {where!r} for --env {ref!r}: {e}") from e
    cls = getattr(module, name, None)
    if not (isinstance(cls, type) and issubclass(cls, ToolEnv)):
        found = sorted(
            k
            for k, v in vars(module).items()
            if isinstance(v, type) and issubclass(v, ToolEnv) and v is not ToolEnv
        )
        raise KeyError(
            f"{where} has no ToolEnv subclass {name!r}" + (f"; it has {', '.join(found)}" if found else "")
        )
    return cls


_TOOL_SCHEMAS: dict[str, list[dict[str, Any]]] = {}


def env_tool_schemas(env_id: str, env_kwargs: dict[str, Any] | None = None) -> list[dict[str, Any]] | None:
    """The tool schemas of ``env_id`` made with ``env_kwargs`` (cached), for records written before
    records carried their own ``tools``; None for an empty id. Raises ``ValueError`` saying what
    to do when the env cannot be made here."""
    if not env_id:
        return None
    key = json.dumps([env_id, env_kwargs or {}], sort_keys=True, default=repr)
    if key not in _TOOL_SCHEMAS:
        try:
            env = make(env_id, **(env_kwargs or {}))
        except Exception as e:
            raise ValueError(
                f"the records of {env_id!r} carry no tool schemas, and the env cannot be made to read "
                f"them ({type(e).__name__}: {e}); write the records again with this version of agentgym "
                "(they then carry 'tools' and 'env_kwargs'), or add the env's kwargs to each record "
                "as 'env_kwargs'"
            ) from e
        try:
            _TOOL_SCHEMAS[key] = list(env.tool_schemas)
        finally:
            env.close()
    return _TOOL_SCHEMAS[key]
