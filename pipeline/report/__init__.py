"""``newsloom report``: one self-contained HTML page about an output folder.

``gather`` reads the dataset into plain figures (no HTML, tested without a
browser); ``render`` turns those figures into the page (charts as inline SVG).
"""

from datetime import date
from pathlib import Path
from typing import Optional

from pipeline.report.gather import Report, gather
from pipeline.report.render import render_page


def write_report(output: str, page: str, since: Optional[date] = None) -> Report:
    """Reads the dataset in ``output`` (rows of ``since`` and later) and writes the page
    to the local file ``page``; returns what the page shows."""
    report = gather(output, since)
    Path(page).write_text(render_page(report), encoding="utf-8")
    return report
