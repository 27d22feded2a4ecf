"""The gate a model passes before the service may load it: its sha256 equals the pin in the
parameters and its GGUF structure parses (header, tensor table, every tensor inside the file).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path


# ---- the untrusted-model gate ---------------------------------------------------------------------
@dataclass
class ModelGate:
    path: str
    sha256_pinned: str
    sha256_actual: str | None
    structure_ok: bool
    detail: str
    accepted: bool

    def _repr_markdown_(self) -> str:
        verdict = "**accepted**" if self.accepted else "**REFUSED**"
        return (f"model `{self.path}`: {verdict}\n\n- sha256 pinned `{self.sha256_pinned}`\n"
                f"- sha256 actual `{self.sha256_actual}`\n- GGUF structure: {self.detail}")


class ModelRefused(ValueError):
    pass


def gate_model(path: Path, sha256: str, raise_on_refusal: bool = True, llama_cpp: dict | None = None) -> ModelGate:
    """Refuse a model whose hash is not the pinned one or whose GGUF structure is malformed;
    ``llama_cpp`` (:func:`aios_lib.runtime.model.supported`) also refuses an architecture or tensor
    type the built llama.cpp does not know."""
    from ..runtime import model as model_mod

    path = Path(path)
    actual = model_mod.sha256_file(path) if path.exists() else None
    structure_ok, detail = False, "not checked (hash mismatch)"
    if actual == sha256:
        try:
            info = model_mod.inspect_gguf(path, sha256=actual, llama_cpp=llama_cpp)
            structure_ok = True
            detail = f"valid ({info.architecture}, {info.n_tensors} tensors)"
        except model_mod.ModelError as e:
            detail = f"malformed: {e}"
    elif actual is None:
        detail = "file missing"
    gate = ModelGate(str(path), sha256, actual, structure_ok, detail, accepted=actual == sha256 and structure_ok)
    if raise_on_refusal and not gate.accepted:
        raise ModelRefused(f"model {path} refused: "
                           + ("sha256 mismatch" if actual != sha256 else detail))
    return gate


def asdict_gate(g: ModelGate) -> dict:
    return asdict(g)


def gate_provisioned(run, info) -> ModelGate | str:
    """The gate for the model phase 04 provisioned (``runtime.model``), or why it cannot run yet."""
    if getattr(info, "planned", False) or not Path(str(info.path)).exists():
        return f"planned: `{Path(str(info.path)).name}` is checked against sha256 `{run.params.runtime.model.sha256}` once fetched"
    from ..runtime import model as model_mod

    gate = gate_model(Path(str(info.path)), run.params.runtime.model.sha256, raise_on_refusal=False,
                      llama_cpp=model_mod.run_supported(run))
    run.record("model_gate", asdict(gate))
    if not gate.accepted:
        raise ModelRefused(f"model {info.path} refused: {gate.detail}")
    return gate
