"""The scenario registry.

A scenario is a named list of *cases*; ``python -m bench NAME`` runs every case (or those
picked with ``--case``), ``--repeat`` times, interleaved, and reports each figure's median
and spread. To add one, drop a module into this package that registers a builder::

    from bench import patterns
    from bench.context import CaseResult, Options, RunContext
    from bench.harness import ServerSpec
    from bench.scenarios import Case, register

    RIVET = ServerSpec("rivet", ("{python}", "-m", "server.cli", "serve", "--host", "{host}",
                                 "--port", "{port}", "--data-dir", "{data_dir}"))

    def _echo(ctx: RunContext) -> CaseResult:
        load = patterns.Load(connections=ctx.pick(ctx.options.connections, 32, 4), ...)
        with ctx.server(RIVET) as server:
            return patterns.request_reply(ctx, server, load, workload="bench.rivet:echo")

    @register("rivet", "Rivet's own echo, against the bare baseline")
    def rivet_cases(options: Options) -> list[Case]:
        return [Case("rivet-echo", "...", _echo, reference="baseline:echo-plain")]

Modules here are imported on first use of the registry (``load_all``); a module whose name
starts with ``_`` is skipped. A case's ``reference`` names the case its figures are a ratio
against: ``"name"`` for a case of the same run, ``"scenario:name"`` for a case in another
results file (``--against PATH``, or by default the newest ``SCENARIO-*.json`` in the
results directory).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from bench.context import CaseResult, Options, RunContext

CaseFn = Callable[[RunContext], CaseResult]
Builder = Callable[[Options], list["Case"]]


@dataclass(frozen=True)
class Case:
    """One measured configuration: a server, a load shape, a unit."""

    name: str
    description: str
    run: CaseFn
    reference: str | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    help: str
    build: Builder


_REGISTRY: dict[str, Scenario] = {}
_loaded = False


def register(name: str, help: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(options) -> list[Case]`` as scenario ``name``."""

    def decorate(build: Builder) -> Builder:
        if name in _REGISTRY and _REGISTRY[name].build is not build:
            raise ValueError(f"scenario {name!r} is already registered")
        _REGISTRY[name] = Scenario(name, help, build)
        return build

    return decorate


def load_all() -> None:
    """Import every scenario module of this package (once)."""
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def get(name: str) -> Scenario:
    load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(names())}") from None


def names() -> list[str]:
    load_all()
    return sorted(_REGISTRY)
