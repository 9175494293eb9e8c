"""Settings read from the environment, in one place.

``PLANNER_SHARED_DATA`` points at the folder of real development images (see
``../shared/data/README.md``); it defaults to ``../shared/data`` relative to the
project root. Code and tests find real data only through :func:`shared_data_dir`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_ENV = "PLANNER_SHARED_DATA"


def shared_data_dir() -> Path:
    """Folder holding the shared real imaging data (may not exist on a user's machine)."""
    configured = os.environ.get(SHARED_DATA_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()


def shared_data_path(*parts: str) -> Path | None:
    """Path inside the shared data folder, or ``None`` when it is absent."""
    path = shared_data_dir().joinpath(*parts)
    return path if path.exists() else None


def reject_unknown_keys(schema: type, values: Mapping[str, Any], what: str,
                        error: Callable[[str], Exception], allowed: Iterable[str] = ()) -> None:
    """Raise ``error(message)`` naming every key of ``values`` that is not a field of the dataclass ``schema``.

    Settings files and JSON inputs use it so a misspelt key is an error, never silently ignored.
    """
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(values) - known - set(allowed))
    if unknown:
        raise error(f"unknown {what} {', '.join(unknown)}; known: {', '.join(sorted(known))}")
