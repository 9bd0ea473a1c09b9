"""Page rendering: Jinja2 templates with autoescaping on for every value, and the report's shared assets.

Every string that reaches a page (subject ids, file names, table cells, metadata) goes through Jinja2's
HTML escaping; data for scripts goes through :func:`gdfree.report.viewer.script_json`. No template marks
anything ``|safe``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from gdfree.io.images import atomic_path, write_text

__all__ = ["ASSETS", "copy_assets", "fmt", "render_page"]

ASSETS = Path(__file__).parent / "assets"
TEMPLATES = Path(__file__).parent / "templates"
_SHARED = ("report.css", "report.js")


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` significant places, NaN and None as ``n/a``, booleans as yes/no."""
    if value is None or value == "":
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("true", "false"):
            return "yes" if low == "true" else "no"
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            return value
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"
    return str(value)


def _environment() -> Any:
    import jinja2

    loader = jinja2.FileSystemLoader(TEMPLATES)
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)  # fmt: skip
    env.filters["fmt"] = fmt
    return env


def render_page(template: str, path: Path, **context: Any) -> Path:
    """Render ``template`` (a file in templates/) with ``context`` into ``path`` atomically."""
    import gdfree

    html = _environment().get_template(template).render(version=gdfree.__version__, **context)
    return write_text(path, html)


def copy_assets(report: Path, viewer: bool) -> Path:
    """Copy the stylesheet, the page script and (``viewer``) NiiVue into ``report/assets``; returns that folder."""
    from gdfree.report.viewer import niivue_asset

    sources = [ASSETS / name for name in _SHARED] + ([niivue_asset()] if viewer else [])
    folder = report / "assets"
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = folder / source.name
        if (
            target.is_file()
            and target.stat().st_size == source.stat().st_size
            and target.read_bytes() == source.read_bytes()
        ):
            continue
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    return folder
