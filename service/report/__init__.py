"""The sweep report: one HTML page that answers the note's two claims.

Pure functions over the store's frozen records, shared by ``idem report`` and
``GET /sweeps/{id}/report``:

- :func:`load_report_data` reads a sweep, its trials and their epoch curves (store queries);
- :func:`build_report` turns that :class:`ReportData` into a :class:`Report` (the HTML page
  with its figures embedded, plus each figure as PNG bytes);
- :func:`write_report` writes ``index.html`` and the PNG files into a directory.
"""

from __future__ import annotations

from service.report.build import Report, build_report, write_report
from service.report.model import ReportData, load_report_data

__all__ = ["Report", "ReportData", "build_report", "load_report_data", "write_report"]
