"""The end every benchmark shares: the command that reproduces it, the machine and its load, and the
results written side by side as ``<stem>.md`` (for people) and ``<stem>.json`` (for scripts)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Optional


def command(script: str, argv: Optional[list[str]] = None) -> str:
    """``python benchmarks/<script> ARGS``: this run's command line, quoted for a shell."""
    args = sys.argv[1:] if argv is None else argv
    return f"python benchmarks/{script} " + " ".join(shlex.quote(a) for a in args)


def machine() -> str:
    """Architecture, CPU count and the 1-minute load average now (the machine is shared: report the load)."""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"


def save(out: str | Path, stem: str, markdown: str, data: Any) -> Path:
    """Write ``out/<stem>.md`` and ``out/<stem>.json``; returns the markdown's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(markdown.rstrip("\n") + "\n")
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {out / f'{stem}.md'} and {stem}.json", flush=True)
    return out / f"{stem}.md"
