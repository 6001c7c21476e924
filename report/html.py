"""report.html: report.md as one self-contained page (CSS inline, every chart embedded as a data URI)."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from pathlib import Path

import markdown

HTML_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; color: #1f2328; }
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 64px; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: 8px; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 40px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; font-size: 90%; }
img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
pre { background: #f6f8fa; padding: 8px 12px; overflow-x: auto; font-size: 12px; }
summary { cursor: pointer; }
"""

_IMG_SRC = re.compile(r'<img\b[^>]*?\bsrc="([^"]*)"')


class ReportError(RuntimeError):
    """The report could not be produced as promised (e.g. an image the HTML cannot embed)."""


def render_html(markdown_text: str, title: str, image_files: Mapping[str, Path]) -> str:
    """A single file that opens anywhere offline: every chart embedded as a data URI, CSS inline.

    The HTML is made from report.md itself, so the two can never say different things.
    ``image_files`` maps the image reference used in the Markdown (a file name) to the PNG to embed.
    """
    body = markdown.markdown(
        markdown_text, extensions=["tables", "fenced_code", "md_in_html"], output_format="html"
    )
    for reference, png in image_files.items():
        encoded = base64.b64encode(png.read_bytes()).decode("ascii")
        body = body.replace(f'src="{reference}"', f'src="data:image/png;base64,{encoded}"')
    external = [src for src in _IMG_SRC.findall(body) if not src.startswith("data:")]
    if external:
        raise ReportError(f"images the HTML report cannot embed: {', '.join(external)}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )
