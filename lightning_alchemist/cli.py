"""Hydra entry points for the recipes, with every check done before the job starts and one-line errors.

Hydra reports a bad override as a multi-line block and an exception inside a task as a traceback.
:func:`hydra_main` composes the config from the command line first (every key, type and string
choice is checked by the schemas registered in :mod:`lightning_alchemist.schema`), runs the
recipe's cross-field ``check`` on it (for a ``-m`` sweep: on every value of every swept key), and
turns any failure, and any :class:`~lightning_alchemist.errors.AlchemistError` raised by the task,
into one line on stderr with exit status 2.

The package never reads ``conf/``: a recipe passes its own config folder.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from lightning_alchemist.config import one_line
from lightning_alchemist.errors import AlchemistError, ConfigError

__all__ = ["FAILED_JOBS", "check_overrides", "hydra_main", "sweep_variants"]

# One line per job of this process's ``-m`` sweep that failed: the sweep goes on with the other jobs, and its
# comparison table (lightning_alchemist.pipeline.sweep.ComparisonTable) reports them and ends with status 2.
FAILED_JOBS: list[str] = []


def _sweep_job() -> Optional[str]:
    """``job N (overrides)`` when running as a job of a ``-m`` sweep, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        return f"job {hc.job.num} ({' '.join(hc.overrides.task)})"
    except (ImportError, ValueError):
        return None

_QUOTE_HINT = "quote values with braces, commas or spaces, e.g. \"data.urls='/data/{00000..00099}.tar'\""


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # the override grammar itself
        raise ConfigError(f"cannot parse overrides {overrides}: {one_line(err)}; {_QUOTE_HINT}") from None


def proxy_override(argv: list[str]) -> list[str]:
    """``rater.proxy=NAME`` (a conf/model entry) → Hydra's ``model@rater.proxy=NAME``; other values stay."""
    out = []
    for arg in argv:
        m = re.fullmatch(r"(\+{0,2})rater\.proxy=([A-Za-z0-9_.\-]+(?:,[A-Za-z0-9_.\-]+)*)", arg)
        out.append(f"model@rater.proxy={m.group(2)}" if m and m.group(2) != "null" and not m.group(1) else arg)
    return out


def _check_repeats(parsed: list[Any]) -> None:
    seen: dict[str, str] = {}
    for ov in parsed:
        key = ov.get_key_element()
        if ov.key_or_group == "hydra" or ov.key_or_group.startswith("hydra."):
            continue  # Hydra's own keys: Lightning's DDP launcher re-passes hydra.run.dir to its child processes
        if key in seen:
            raise ConfigError(
                f"config '{key}' is given more than once ({seen[key]!r} and {ov.input_line!r}): the shell may have expanded "
                f"an unquoted brace pattern into several arguments; {_QUOTE_HINT}")
        seen[key] = ov.input_line


def sweep_variants(overrides: list[str], extra_sweeps: Optional[dict[str, list[str]]] = None) -> list[list[str]]:
    """Override lists that together try every value of every swept key (each value once, the rest at their first).

    ``extra_sweeps``: swept keys of the config itself (an experiment's ``hydra.sweeper.params``).
    """
    parsed = _parse(overrides)
    _check_repeats(parsed)
    base: list[str] = []
    sweeps: list[tuple[str, list[str]]] = []
    for ov in parsed:
        key = ov.get_key_element()
        if ov.key_or_group == "hydra" or ov.key_or_group.startswith("hydra."):
            continue
        if ov.is_sweep_override():
            values = list(ov.sweep_string_iterator())
            if not values:
                continue
            base.append(f"{key}={values[0]}")
            sweeps.append((key, values))
        else:
            base.append(ov.input_line)
    for key, values in (extra_sweeps or {}).items():
        if not any(k == key for k, _ in sweeps) and not any(b.split("=", 1)[0] == key for b in base):
            base.append(f"{key}={values[0]}")
            sweeps.append((key, values))
    variants = [base]
    for key, values in sweeps:
        for value in values[1:]:
            variants.append([f"{key}={value}" if b.split("=", 1)[0] == key else b for b in base])
    return variants


def _compose(config_name: str, overrides: list[str], conf_dir: Path, with_hydra: bool = False) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lightning_alchemist.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides, return_hydra_config=with_hydra)
    except Exception as err:
        cause = err.__cause__
        key = getattr(cause, "full_key", None)
        if key:  # a key, type or choice error of a schema: name the key and what was wrong
            msg = str(cause).strip().splitlines()[0]
            raise ConfigError(f"config '{key}': {msg} (the schemas: lightning_alchemist.schema)") from None
        detail = one_line(err)
        if cause is not None and one_line(cause) not in detail:
            detail = f"{detail} ({one_line(cause)})"
        raise ConfigError(f"invalid config: {detail}. Valid groups and keys are under {conf_dir}") from None
    finally:
        GlobalHydra.instance().clear()


def _config_sweeps(cfg: Any) -> dict[str, list[str]]:
    """The swept keys an experiment config sets itself (``hydra.sweeper.params``), as value lists."""
    params = cfg.get("hydra", {}).get("sweeper", {}).get("params") if cfg.get("hydra") is not None else None
    out = {}
    for key, spec in (params or {}).items():
        # Hydra's own grammar, so range(...), choice(...) and quoted commas mean what they mean to the sweeper
        (ov,) = _parse([f"{key}={spec}"])
        out[str(key)] = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [str(ov.value())]
    return out


def check_overrides(config_name: str, overrides: list[str], conf_dir: Path,
                    check: Optional[Callable[[Any], Any]] = None) -> Any:
    """Compose the config with ``overrides`` and run ``check`` on it; for a sweep, on every value of every swept key.

    Returns the config of the first variant. Raises :class:`ConfigError` (one line) on the first failure,
    naming the variant of a sweep that failed.
    """
    conf_dir = Path(conf_dir).resolve()
    overrides = proxy_override(list(overrides))
    first = _compose(config_name, sweep_variants(overrides)[0], conf_dir, with_hydra=True)
    variants = sweep_variants(overrides, _config_sweeps(first))
    result = None
    for i, variant in enumerate(variants):
        cfg = _compose(config_name, variant, conf_dir)
        if check is not None:
            try:
                check(cfg)
            except AlchemistError as err:
                where = f" (in the sweep job with {' '.join(variant)})" if len(variants) > 1 else ""
                raise type(err)(f"{one_line(err)}{where}") from None
        if i == 0:
            result = cfg
    return result


def _quiet_duplicate_logs() -> None:
    """Lightning logs through its own handler *and* propagates to the root handler Hydra installs: keep one."""
    root = logging.getLogger()
    if not root.handlers:
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def hydra_main(config_name: str, conf_dir: str | Path, check: Optional[Callable[[Any], Any]] = None,
               rewrite_argv: Optional[Callable[[list[str]], list[str]]] = None) -> Callable:
    """Decorate a recipe's task function ``task(cfg)`` as a Hydra app with checks up front and one-line errors.

    Args:
        config_name: the primary config (``config``, ``score``, ...) in ``conf_dir``.
        conf_dir: the recipe's config folder (recipes pass ``<repo>/conf``).
        check: cross-field validation of a composed config (e.g. :func:`lightning_alchemist.schema.validate`),
            run on every variant of a sweep before the first job starts.
        rewrite_argv: maps documented shorthands (``selection=PATH``) onto config keys before parsing.

    Supports everything ``@hydra.main`` does (``-m`` sweeps, ``--cfg job``).
    """
    import hydra

    config_dir = Path(conf_dir).resolve()

    def decorator(task: Callable[[Any], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def guarded(cfg: Any) -> Any:
            _quiet_duplicate_logs()
            try:
                return task(cfg)
            except AlchemistError as err:
                job = _sweep_job()
                if job is None:
                    _fail(one_line(err))
                # in a sweep: one line, then the other jobs run; the sweep's end reports it and exits with 2
                FAILED_JOBS.append(f"{job}: {one_line(err)}")
                print(f"error: sweep {job}: {one_line(err)}", file=sys.stderr, flush=True)
                return None

        app = hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(guarded)

        @functools.wraps(task)
        def entry() -> Any:
            from hydra._internal.utils import get_args_parser

            from lightning_alchemist.schema import register_configs

            register_configs()
            argv = list(sys.argv[1:])
            if rewrite_argv is not None:
                argv = rewrite_argv(argv)
            argv = proxy_override(argv)
            sys.argv[1:] = argv
            args, _ = get_args_parser().parse_known_args(argv)
            if not (args.help or args.hydra_help or args.info or args.shell_completion):
                try:
                    check_overrides(config_name, list(args.overrides or []), config_dir, check=check)
                except AlchemistError as err:
                    _fail(one_line(err))
            return app()

        entry.task = task  # type: ignore[attr-defined]  # the undecorated function, for tests
        return entry

    return decorator
