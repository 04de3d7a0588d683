"""Write a report as Markdown and as one self-contained HTML file (figures embedded).

A report is a list of `Section`s; each holds paragraphs, tables and figure files. Both formats
are rendered from the same sections, so they never disagree. The HTML inlines every figure as a
base64 PNG and carries its own style sheet, so it opens in any browser with no network.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    headers: list[str]
    rows: list[list]
    caption: str = ""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png path, caption)
    markdown: list[str] = field(default_factory=list)  # ready Markdown: as is in .md, <pre> in .html


_STATUS_COLOURS = {"holds": "#1a7f37", "does not hold": "#cf222e", "inconclusive": "#9a6700",
                   "not measured": "#6e7781", "partial": "#0969da"}

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 4px 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: 0.9em; color: #57606a; }
.status { font-weight: 700; }
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def to_markdown(title: str, sections: list[Section], out_dir: Path) -> str:
    # Labels are the user's text: no HTML of theirs may reach a Markdown renderer (`<script>`);
    # the report's own Markdown has no HTML, so escaping all of it changes nothing else.
    def esc(text: str) -> str:
        return html.escape(str(text), quote=False)

    lines = [f"# {esc(title)}", ""]
    for section in sections:
        lines += [f"## {esc(section.title)}", ""]
        for paragraph in section.paragraphs:
            lines += [esc(paragraph), ""]
        for block in section.markdown:
            lines += [esc(block), ""]
        for table in section.tables:
            if table.caption:
                lines += [f"**{esc(table.caption)}**", ""]
            lines.append("| " + " | ".join(esc(h) for h in table.headers) + " |")
            lines.append("|" + "---|" * len(table.headers))
            for row in table.rows:
                cells = [esc(_cell(v)).replace("|", "\\|").replace("\n", " ") for v in row]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        for path, caption in section.figures:
            rel = Path(path).resolve().relative_to(out_dir.resolve()) if _inside(path, out_dir) else path
            lines += [f"![{caption}]({rel})", "", f"*{caption}*", ""]
    return "\n".join(lines)


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def to_html(title: str, sections: list[Section]) -> str:
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for paragraph in section.paragraphs:
            parts.append(f"<p>{html.escape(paragraph)}</p>")
        for block in section.markdown:
            parts.append(f"<pre>{html.escape(block)}</pre>")
        for table in section.tables:
            parts.append("<table>")
            if table.caption:
                parts.append(f"<caption>{html.escape(table.caption)}</caption>")
            parts.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in table.headers) + "</tr>")
            for row in table.rows:
                cells = []
                for value in row:
                    text = html.escape(_cell(value))
                    colour = _STATUS_COLOURS.get(_cell(value))
                    if colour:
                        text = f"<span class='status' style='color:{colour}'>{text}</span>"
                    cells.append(f"<td>{text}</td>")
                parts.append("<tr>" + "".join(cells) + "</tr>")
            parts.append("</table>")
        for path, caption in section.figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(title: str, sections: list[Section], out_dir: Path) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `out_dir`; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    for path, text in ((md_path, to_markdown(title, sections, out_dir)), (html_path, to_html(title, sections))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # a reader never sees half a report
    return md_path, html_path
