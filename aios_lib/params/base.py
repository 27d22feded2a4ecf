"""Shared pieces of the parameter schema."""
from __future__ import annotations

from contextvars import ContextVar

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationInfo, model_validator

#: while a section validates: field name -> the warnings its validator noted
_noted: ContextVar[dict[str, list[str]] | None] = ContextVar("_noted", default=None)


def note_warnings(info: ValidationInfo, warnings: list[str]) -> None:
    """Called by a field validator: keep ``warnings`` about the value it just validated on the section.

    For what normalising leaves no trace of (``nodiratime`` dropped) and for values that are allowed
    but worth a word in the record (``mitigations=off``). A later assignment of the same field
    replaces them.
    """
    noted = _noted.get()
    if noted is not None and info.field_name:
        noted[info.field_name] = list(warnings)


class Section(BaseModel):
    """A parameter section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    #: field name -> warnings its validator noted (see :func:`note_warnings`)
    _field_warnings: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_noted_warnings(cls, data, handler):
        noted: dict[str, list[str]] = {}
        token = _noted.set(noted)
        try:
            section = handler(data)
        finally:
            _noted.reset(token)
        # on assignment ``section`` is the same object: only the assigned field's warnings change
        section._field_warnings = {**section._field_warnings, **noted}
        return section

    def field_warnings(self, prefix: str = "") -> list[tuple[str, str]]:
        """(dotted key, warning) for this section and every section inside it, in field order."""
        out: list[tuple[str, str]] = []
        for name in type(self).model_fields:
            out += [(prefix + name, w) for w in self._field_warnings.get(name, [])]
            value = getattr(self, name)
            if isinstance(value, Section):
                out += value.field_warnings(f"{prefix}{name}.")
        return out


def refuse(problems) -> None:
    """Raise one ValueError listing every problem (``None`` entries are no problem): a validator's
    refusal names all that is wrong at once, each on its own line."""
    found = [p for p in problems if p]
    if found:
        raise ValueError("\n".join(found))
