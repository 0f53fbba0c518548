"""HTML from Jinja2 templates (pipeline/analysis/templates/): the report page and the tables the notebooks
show. Templates only lay out what the stages computed; numbers are formatted by pipeline/analysis/formats.py,
registered here as filters."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from pipeline.analysis import formats

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update({name: getattr(formats, name) for name in formats.__all__})
    return env


def page(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def table(name: str, *args) -> str:
    """One table macro of tables.html.j2 (comparison, gains, variants, ...) as HTML, for a notebook."""
    return str(getattr(environment().get_template("tables.html.j2").module, name)(*args))
