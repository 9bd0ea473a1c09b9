"""A prepared case's ``_prepare.json`` as a typed record, written and read through :class:`PrepareRecord`.

It says what was done (config and its digest, the source files and their SHA-256), where everything went
(``outputs``: role -> path relative to the prepare folder), the grids needed to map results back onto each exam's
acquired grid (``native_grid``, ``output_grid``, ``reference``), the enhancing labels' summary and review, and the
brain mask's source and checks (``brain_mask``: the ``brain_mask_*`` entries, written at the top level as
before). ``schema_version`` 1 is this layout; a file without it (written before the record existed) loads as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gdfree.io.tables import read_json, write_json

__all__ = ["PREPARE_SCHEMA_VERSION", "PrepareRecord"]

PREPARE_SCHEMA_VERSION = 1
_GRID_KEYS = ("shape", "affine")


def _grid(value: Any, where: str, key: str) -> dict[str, Any]:
    if not (isinstance(value, dict) and all(k in value for k in _GRID_KEYS) and isinstance(value["shape"], list)
            and isinstance(value["affine"], list) and len(value["affine"]) == 4):  # fmt: skip
        raise ValueError(f"{where}: {key}: expected {{'shape': [x, y, z], 'affine': 4x4}}, got {value!r}")
    return value


@dataclass(frozen=True)
class PrepareRecord:
    """The content of one case's ``_prepare.json``.

    Attributes:
        case: the case id. status: ``done``. config_digest, config: the :class:`PrepareConfig` it was made with.
        sources, sources_sha256: role -> source file and its SHA-256. reference: the role the others were
        registered to. native_grid: role -> its acquired grid; output_grid: the prepared grid. outputs: what was
        written, role -> path relative to the prepare folder. normalisation: role -> its parameters.
        enhancing: the derived enhancing labels' summary (and ``review``), or None. brain_mask: the
        ``brain_mask_*`` entries (source, Dice checks, deepbet's error). timings_s: seconds per step.
        gdfree_version: who wrote it. schema_version: the layout (0: before the record).
    """

    case: str
    config_digest: str
    config: dict[str, Any]
    sources: dict[str, str]
    sources_sha256: dict[str, str]
    reference: str
    native_grid: dict[str, dict[str, Any]]
    output_grid: dict[str, Any]
    outputs: dict[str, str]
    status: str = "done"
    normalisation: dict[str, Any] = field(default_factory=dict)
    enhancing: dict[str, Any] | None = None
    brain_mask: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    gdfree_version: str = ""
    schema_version: int = PREPARE_SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: Path | str = "_prepare.json") -> PrepareRecord:
        """The record of a parsed ``_prepare.json``, each field checked.

        Raises:
            ValueError: a field missing or of another type (naming ``where`` and the field).
        """
        where = str(where)
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        missing = [k for k in ("case", "config_digest", "reference", "native_grid", "output_grid", "outputs")
                   if k not in data]  # fmt: skip
        if missing:
            raise ValueError(f"{where}: lacks {', '.join(missing)}; not a gdfree prepare record")
        for key in ("config", "sources", "sources_sha256", "native_grid", "outputs", "normalisation", "timings_s"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{where}: {key}: expected a JSON object, got {data.get(key)!r}")
        if not all(isinstance(v, str) for v in data["outputs"].values()):
            raise ValueError(f"{where}: outputs: expected role -> relative path")
        version = data.get("schema_version", 0)
        if not isinstance(version, int) or not 0 <= version <= PREPARE_SCHEMA_VERSION:
            raise ValueError(f"{where}: schema_version: expected 0 to {PREPARE_SCHEMA_VERSION}, got {version!r}")
        if data.get("enhancing") is not None and not isinstance(data["enhancing"], dict):
            raise ValueError(f"{where}: enhancing: expected a JSON object or null")
        return cls(
            case=str(data["case"]), config_digest=str(data["config_digest"]), config=dict(data.get("config", {})),
            sources=dict(data.get("sources", {})), sources_sha256=dict(data.get("sources_sha256", {})),
            reference=str(data["reference"]),
            native_grid={r: _grid(g, where, f"native_grid.{r}") for r, g in data["native_grid"].items()},
            output_grid=_grid(data["output_grid"], where, "output_grid"), outputs=dict(data["outputs"]),
            status=str(data.get("status", "done")), normalisation=dict(data.get("normalisation", {})),
            enhancing=data.get("enhancing"), timings_s=dict(data.get("timings_s", {})),
            brain_mask={k: v for k, v in data.items() if k.startswith("brain_mask_")},
            gdfree_version=str(data.get("gdfree_version", "")), schema_version=version,
        )  # fmt: skip

    @classmethod
    def read(cls, path: Path | str) -> PrepareRecord:
        """Read and check ``path``. Raises ValueError (naming the file) for bad content."""
        return cls.from_json(read_json(path), path)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``_prepare.json`` (the layout of before the record, plus ``schema_version``)."""
        return {
            "schema_version": PREPARE_SCHEMA_VERSION, "status": self.status, "case": self.case,
            "config_digest": self.config_digest, "config": self.config, "gdfree_version": self.gdfree_version,
            "sources": self.sources, "sources_sha256": self.sources_sha256, "reference": self.reference,
            "native_grid": self.native_grid, "output_grid": self.output_grid, "outputs": self.outputs,
            "normalisation": self.normalisation, "timings_s": self.timings_s,
            **({"enhancing": self.enhancing} if self.enhancing is not None else {}), **self.brain_mask,
        }  # fmt: skip

    def updated(self, **changes: Any) -> PrepareRecord:
        """A copy with ``changes``, checked again."""
        return PrepareRecord.from_json(replace(self, **changes).to_json(), "prepare record")

    def write(self, path: Path) -> Path:
        """Write ``path`` (atomically)."""
        return write_json(path, self.to_json())
