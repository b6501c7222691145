"""`earmark report`: a self-contained HTML page (inline SVG charts) describing a run's output.

Entry point for the CLI: `render_report(output, html_path) -> Path` (`output`: a path, URL
or storage.Location).
"""

from earmark.report.html import build_html, render_report

__all__ = ["build_html", "render_report"]
