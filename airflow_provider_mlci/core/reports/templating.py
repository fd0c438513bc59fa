"""The Jinja2 templates of the HTML the provider writes: ``report.html`` and the UI plugin's pages.

Each part ships its templates (``*.html.j2``) in a ``templates`` folder next to its code; a user
folder (``[mlci] report_templates``, read by the caller: ``core`` reads no Airflow setting) comes
first, so a template there replaces the packaged one of the same name. Every template is
autoescaped: what goes into one is text unless a template says otherwise with ``|safe``, which the
packaged ones do only for HTML the provider built itself (a section body, rendered Markdown).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

__all__ = ["REPORT_TEMPLATES", "environment", "render"]

log = logging.getLogger(__name__)

#: The report's own templates (``report.html.j2``, ``section.html.j2``, ``table.html.j2``).
REPORT_TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.lru_cache(maxsize=16)
def environment(packaged: str | Path = REPORT_TEMPLATES, templates_dir: str | None = None) -> Any:
    """The Jinja2 environment for the templates in ``packaged``, with ``templates_dir`` first.

    One environment per pair, kept for the process; Jinja2 reloads a template whose file changed.

    :param packaged: the folder of the packaged templates
    :param templates_dir: a folder whose templates replace the packaged ones of the same name
        (``None`` or empty: the packaged ones only); a folder that does not exist is skipped
    """
    import jinja2

    folders = []
    if templates_dir:
        if not Path(templates_dir).is_dir():
            log.warning("The templates folder %s does not exist: using the packaged templates", templates_dir)
        folders.append(str(templates_dir))
    folders.append(str(packaged))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        autoescape=True,  # every template here is HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(
    name: str, *, packaged: str | Path = REPORT_TEMPLATES, templates_dir: str | None = None, **values: Any
) -> str:
    """Render the template ``name`` with ``values``.

    :param name: the template's file name, e.g. ``report.html.j2``
    :param packaged: the folder of the packaged templates
    :param templates_dir: a folder whose templates replace the packaged ones of the same name
    :param values: what the template reads
    """
    return environment(str(packaged), templates_dir or None).get_template(name).render(**values)
