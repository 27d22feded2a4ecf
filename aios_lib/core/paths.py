"""Where things live: the project root, outputs/, and the build cache."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # aios_lib/ (this file is aios_lib/core/paths.py)


def project_root() -> Path:
    """The checkout that holds notebooks/ and parameters/ (AIOS_ROOT overrides)."""
    env = os.environ.get("AIOS_ROOT")
    if env:
        return Path(env).resolve()
    for base in (Path.cwd(), *Path.cwd().parents, PACKAGE_DIR.parent):
        if (base / "pyproject.toml").exists() and (base / "aios_lib").is_dir():
            return base
    return PACKAGE_DIR.parent


def resolve_in_project(path: str | os.PathLike) -> Path:
    """Relative paths in parameters and on the command line are taken from the project root,
    so a notebook (whose cwd is notebooks/) and the CLI mean the same file."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if p.exists():
        return p.resolve()
    return (project_root() / p).resolve()


def outputs_dir() -> Path:
    """outputs/ of the project; AIOS_OUTPUTS redirects it (tests use a temporary folder)."""
    env = os.environ.get("AIOS_OUTPUTS")
    return Path(env).resolve() if env else project_root() / "outputs"


def cache_path(*parts: str) -> Path:
    """~/.cache/synapse/<parts> without creating it (AIOS_CACHE overrides the base)."""
    base = Path(os.environ.get("AIOS_CACHE") or Path.home() / ".cache" / "synapse")
    return base.joinpath(*parts)


def cache_dir(*parts: str) -> Path:
    """~/.cache/synapse/<parts>, created: heavy builds keyed by their inputs (AIOS_CACHE overrides)."""
    d = cache_path(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def notebooks_dir() -> Path:
    return project_root() / "notebooks"
