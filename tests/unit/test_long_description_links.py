"""scripts/check_long_description.py: relative links and images in the long description are refused."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    """scripts/check_long_description.py, imported by path (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location(
        "check_long_description", ROOT / "scripts" / "check_long_description.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cld = _load()


GOOD = [
    "[docs](https://airflow-provider-cex.readthedocs.io/en/latest/)",
    "[plain http](http://example.com/a_(b))",
    "[mail](mailto:maintainers@example.com)",
    "[section](#saving-to-s3-and-s3-compatible-stores)",
    '[titled](https://example.com/x "a title")',
    "[angle](<https://example.com/a b>)",
    "![form](https://raw.githubusercontent.com/o/r/v1/docs/connection-form.png)",
    "[![badge](https://img.shields.io/pypi/v/x.svg)](https://pypi.org/project/x/)",
    "[ref]: https://example.com/ref",
    '[ref]: <https://example.com/ref> "title"',
    '<img src="https://example.com/a.png" alt="a">',
    "<a href='https://example.com'>x</a>",
    '<a HREF="#anchor">x</a>',
    '<source srcset="https://e.com/a.png 1x, https://e.com/b.png 2x">',
    "[HTTPS upper](HTTPS://EXAMPLE.COM/)",
    # Not links: code, comments, footnotes, prose.
    "```markdown\n[not a link](docs/x.md)\n![nor](img.png)\n```",
    "~~~\n<img src='a.png'>\n~~~",
    "Inline `[code](docs/x.md)` and ``![x](y.png)`` spans.",
    "<!-- [hidden](docs/x.md) -->",
    "[^1]: a footnote, not a link definition",
    "Just [brackets] and (parentheses), and a list[0] index.",
    '<div data-src="local.png">lazy, not rendered</div>',
]

BAD = [
    ("[changelog](CHANGELOG.md)", "link", "CHANGELOG.md"),
    ("![form](docs/connection-form.png)", "image", "docs/connection-form.png"),
    ("[up](../README.md)", "link", "../README.md"),
    ("[root](/docs/index.md)", "link", "/docs/index.md"),
    ("[page and anchor](docs/x.md#part)", "link", "docs/x.md#part"),
    ("[angle](<docs/a b.md>)", "link", "docs/a b.md"),
    ("[empty]()", "link", ""),
    ("[bare anchor](#)", "link", "#"),
    ("[protocol-relative](//example.com/x)", "link", "//example.com/x"),
    ("[ftp](ftp://example.com/x)", "link", "ftp://example.com/x"),
    ("[file](file:///etc/passwd)", "link", "file:///etc/passwd"),
    ("[no host](https:///x)", "link", "https:///x"),
    ("[no scheme slashes](https:example.com)", "link", "https:example.com"),
    ("[empty mailto](mailto:)", "link", "mailto:"),
    ("[![badge](badge.svg)](https://example.com)", "image", "badge.svg"),
    ("[![badge](https://example.com/b.svg)](docs/)", "link", "docs/"),
    ("[ref]: docs/ref.md", "reference definition", "docs/ref.md"),
    ("   [ref]: <docs/ref.md>", "reference definition", "docs/ref.md"),
    ('<img src="docs/form.png" width="600">', "html src", "docs/form.png"),
    ("<a href='CHANGELOG.md'>changes</a>", "html href", "CHANGELOG.md"),
    ("<a href=docs/x.html>x</a>", "html href", "docs/x.html"),
    ('<IMG SRC = "logo.svg">', "html src", "logo.svg"),
    ('<source srcset="https://e.com/a.png 1x, b.png 2x">', "html srcset", "b.png"),
    ("Text with `code` then [a link](docs/x.md) after it.", "link", "docs/x.md"),
]


@pytest.mark.parametrize("markdown", GOOD)
def test_absolute_links_anchors_and_non_links_pass(markdown):
    assert cld.relative_links(markdown) == []


@pytest.mark.parametrize(("markdown", "kind", "target"), BAD)
def test_relative_links_are_reported_with_kind_and_target(markdown, kind, target):
    assert [(link.kind, link.target) for link in cld.relative_links(markdown)] == [(kind, target)]


def test_every_link_is_reported_with_its_line():
    readme = "\n".join(
        [
            "# Title",
            "[![ci](https://e.com/ci.svg)](https://e.com/ci)",
            "",
            "![form](docs/connection-form.png)",
            "```bash",
            "cat [x](not-a-link.md)",
            "```",
            "See the [changelog](CHANGELOG.md) and [docs][d].",
            "",
            "[d]: docs/index.md",
            '<p align="center"><img src="docs/logo.png"></p>',
        ]
    )
    assert [str(link) for link in cld.relative_links(readme)] == [
        "line 4: image 'docs/connection-form.png'",
        "line 8: link 'CHANGELOG.md'",
        "line 10: reference definition 'docs/index.md'",
        "line 11: html src 'docs/logo.png'",
    ]


def test_the_long_description_is_read_from_the_wheel_metadata(tmp_path, capsys):
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    metadata = (
        "Metadata-Version: 2.4\nName: x\nVersion: 1.0\nDescription-Content-Type: text/markdown\n\n"
        "# x\n\n![form](docs/form.png) and [ok](https://e.com)\n"
    )
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr("x-1.0.dist-info/METADATA", metadata)
    assert "![form](docs/form.png)" in cld.long_description(str(wheel))
    assert cld.main([str(wheel)]) == 1
    err = capsys.readouterr().err
    assert "relative line 3: image 'docs/form.png'" in err and "FAIL: 1 relative link(s)" in err

    fine = tmp_path / "README.md"
    fine.write_text("[ok](https://e.com) [top](#x)\n")
    assert cld.main([str(fine)]) == 0
