"""Tables and JSON as gdfree writes them: TSV with ``n/a`` for missing values (BIDS), JSON without NaN.

Both writers are atomic (temporary file + rename).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gdfree.io.images import write_text

__all__ = ["json_ready", "read_json", "write_json", "write_tsv"]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float | np.floating) and not math.isfinite(value)):
        return "n/a" if value is None or math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    text = str(value)
    if "\t" in text or "\n" in text:
        raise ValueError(f"a TSV cell cannot hold a tab or newline: {text!r}")
    return text


def write_tsv(path: Path | str, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as a tab-separated table; ``columns`` default to the keys in order of first appearance.

    Missing keys, None and NaN are written ``n/a``; booleans ``true``/``false``; floats with 6 significant
    digits.
    """
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["\t".join(columns)] + ["\t".join(_cell(row.get(c)) for c in columns) for row in rows]
    return write_text(path, "\n".join(lines) + "\n")


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python ones and NaN/inf into None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path | str, value: Any) -> Path:
    """Write ``value`` as indented strict JSON (see :func:`json_ready`)."""
    return write_text(path, json.dumps(json_ready(value), indent=2, allow_nan=False) + "\n")


def read_json(path: Path | str) -> Any:
    """The parsed content of a JSON file. Raises ValueError naming the file when it is not valid JSON text (and
    OSError when it cannot be read)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
