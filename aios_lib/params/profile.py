"""A tuned profile (written by ``aios tune``) named by ``service.profile``, applied once at load.

The profile's values become ordinary parameters, so every later step (the unit, the image, the
checks, the cache keys) uses them without knowing where they came from: ``service.threads`` (when
"auto"), ``service.nice``, the llama-server flags appended to ``service.extra_args`` (those the file
does not already set), ``system.thp``. Which value came from which tune run is kept for the record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROFILE_VERSIONS = (1,)


class ProfileProcess(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: Literal["batch", "other", "idle"] | None = None
    nice: int | None = Field(None, ge=-20, le=19)
    cpus: list[int] | None = None


class ProfileSystem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    thp: Literal["always", "madvise", "never"] | None = None


class TunedProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile_version: Literal[1]
    machine: str
    tune_run: str
    commit: str | None = None
    created: str
    model: str
    label: str
    threads: int | None = Field(None, ge=1, le=4096)
    server_flags: dict[str, str | None] = Field(default_factory=dict)
    process: ProfileProcess = ProfileProcess()
    system: ProfileSystem = ProfileSystem()
    evidence: dict = Field(default_factory=dict)


def read_profile(path: Path, where: str) -> TunedProfile:
    """The profile at ``path``; a one-line error naming ``where`` (file and key) otherwise."""
    from . import ParamsError

    if not path.exists():
        raise ParamsError([f"{where}: {path} does not exist; run `aios tune` and name the tuned-profile.yaml it "
                           "writes, or remove service.profile"])
    try:
        data = yaml.safe_load(path.read_text())
        return TunedProfile.model_validate(data)
    except (yaml.YAMLError, ValidationError) as e:
        first = e.errors()[0] if isinstance(e, ValidationError) else {"loc": (), "msg": str(e).splitlines()[0]}
        key = ".".join(str(x) for x in first["loc"])
        raise ParamsError([f"{where}: {path} is not a tuned profile ({key + ': ' if key else ''}{first['msg']}); "
                           "use the tuned-profile.yaml `aios tune` writes"]) from None


def apply_profile(params, file: str, base_dir: Path | None = None):
    """Apply ``service.profile`` to ``params`` (in place); returns ``params``."""
    sp = params.service
    if not sp.profile:
        return params
    path = Path(sp.profile).expanduser()
    if not path.is_absolute():
        from ..core.paths import resolve_in_project

        path = (base_dir / path) if base_dir and (base_dir / path).exists() else resolve_in_project(path)
    prof = read_profile(path, f"{file}: key `service.profile`")
    origin = f"tune run {prof.tune_run}"  # the profile file and its label are in params.profile
    applied: dict[str, tuple[object, str]] = {}
    if prof.threads is not None and sp.threads == "auto":
        sp.threads = prof.threads
        applied["service.threads"] = (prof.threads, origin)
    if prof.process.nice is not None:
        sp.nice = prof.process.nice
        applied["service.nice"] = (prof.process.nice, origin)
    if prof.process.cpus is not None and sp.cpus == "auto":
        sp.cpus = list(prof.process.cpus)
        applied["service.cpus"] = (prof.process.cpus, origin)
    extra = list(sp.extra_args)
    for flag, value in prof.server_flags.items():
        if flag in extra or flag == "-t":
            continue
        extra += [flag] if value is None else [flag, str(value)]
        applied[f"llama-server {flag}"] = (value, origin)
    sp.extra_args = extra
    if prof.system.thp is not None:
        params.system.thp = prof.system.thp
        applied["system.thp"] = (prof.system.thp, origin)
    params._profile = {"path": str(path), "tune_run": prof.tune_run, "label": prof.label, "applied": applied,
                       "evidence": prof.evidence}
    return params
