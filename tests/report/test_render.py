"""The report renders the same sections to Markdown and to a self-contained HTML file."""

import base64
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from forgetless.report.render import Section, Table, write_report  # noqa: E402


def test_markdown_and_html_carry_the_same_content(tmp_path):
    fig_path = tmp_path / "figures" / "f.png"
    fig_path.parent.mkdir()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    fig.savefig(fig_path)
    plt.close(fig)
    sections = [Section("Verdicts", paragraphs=["One line <b>escaped</b>."],
                        tables=[Table(["claim", "status"], [[1, "holds"], [2, "a|b"]], caption="T")],
                        figures=[(fig_path, "a figure")])]
    md, page = write_report("Title", sections, tmp_path)
    text = md.read_text()
    assert "| claim | status |" in text and "| 1 | holds |" in text and "a\\|b" in text
    assert "![a figure](figures/f.png)" in text
    html = page.read_text()
    assert "&lt;b&gt;escaped&lt;/b&gt;" in html  # user text never becomes markup
    embedded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    assert base64.b64decode(embedded) == fig_path.read_bytes()  # the figure itself, inline
    assert "http" not in html  # nothing to fetch: opens offline
    assert "color:#1a7f37" in html  # 'holds' is coloured
