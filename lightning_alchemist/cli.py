"""Hydra entry points for the recipes, with one-line errors.

Hydra reports a bad override as a multi-line block and an exception inside a task as a traceback.
:func:`hydra_main` checks the command-line overrides by composing the config first and turns
both kinds of failure, and any :class:`~lightning_alchemist.errors.AlchemistError` raised by the
task, into one line on stderr with exit status 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from lightning_alchemist.config import one_line, register_configs
from lightning_alchemist.errors import AlchemistError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _first_of_sweeps(overrides: list[str]) -> list[str]:
    """Each override with a sweep (``keep=0.2,0.5``) reduced to its first value, for checking."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    out = []
    for ov in parsed:
        key = ov.get_key_element()
        if ov.key_or_group.startswith("hydra.") or ov.key_or_group == "hydra":
            continue
        if ov.is_sweep_override():
            first = next(iter(ov.sweep_string_iterator()), None)
            if first is None:
                continue
            out.append(f"{key}={first}")
        else:
            out.append(ov.input_line)
    return out


def check_overrides(config_name: str, overrides: list[str], conf_dir: Path = CONF_DIR) -> Any:
    """Compose the config with ``overrides``; raise :class:`ConfigError` (one line) if that fails."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lightning_alchemist.errors import ConfigError

    register_configs()
    try:
        reduced = _first_of_sweeps(overrides)
    except Exception as err:  # the override grammar itself
        raise ConfigError(
            f"cannot parse overrides {overrides}: {one_line(err)}; quote values with braces, commas or "
            f"spaces, e.g. \"data.urls='/data/{{00000..00099}}.tar'\""
        ) from None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(config_name=config_name, overrides=reduced)
    except Exception as err:
        cause = err.__cause__ if err.__cause__ is not None else None
        detail = one_line(err)
        if cause is not None and one_line(cause) not in detail:
            detail = f"{detail} ({one_line(cause)})"
        raise ConfigError(f"invalid config: {detail}. Valid groups and keys are under {conf_dir}") from None
    finally:
        GlobalHydra.instance().clear()


def hydra_main(config_name: str = "config", conf_dir: Optional[Path] = None) -> Callable:
    """Decorate a recipe's task function ``task(cfg)`` as a Hydra app with one-line errors.

    Supports everything ``@hydra.main`` does (``-m`` sweeps, ``--cfg job``), using ``conf/``.
    """
    import hydra

    config_dir = Path(conf_dir) if conf_dir is not None else CONF_DIR

    def decorator(task: Callable[[Any], Any]) -> Callable[[], Any]:
        @functools.wraps(task)
        def guarded(cfg: Any) -> Any:
            try:
                return task(cfg)
            except AlchemistError as err:
                _fail(one_line(err))

        app = hydra.main(version_base="1.3", config_path=str(config_dir), config_name=config_name)(guarded)

        @functools.wraps(task)
        def entry() -> Any:
            register_configs()
            from hydra._internal.utils import get_args_parser

            args, _ = get_args_parser().parse_known_args(sys.argv[1:])
            if not (args.help or args.hydra_help or args.info or args.shell_completion):
                try:
                    check_overrides(config_name, list(args.overrides or []), config_dir)
                except AlchemistError as err:
                    _fail(one_line(err))
            return app()

        entry.task = task  # type: ignore[attr-defined]  # the undecorated function, for tests
        return entry

    return decorator
