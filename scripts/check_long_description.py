"""Find relative links and images in a Markdown long description (the README as PyPI shows it).

On PyPI a relative link (``docs/x.md``) or image (``docs/form.png``) in the long description is broken:
there is no repository next to the page. Every link target must be absolute, ``http(s)://`` or
``mailto:``; an in-page ``#anchor`` is fine.

Checked: inline links ``[text](target)`` and images ``![alt](target)`` (also nested, as in
``[![badge](img)](link)``), reference definitions ``[id]: target``, and HTML ``href=``, ``src=`` and
``srcset=`` attributes. Not checked (they are not rendered as links): fenced code blocks, inline code
spans and HTML comments; GFM footnote definitions (``[^1]: text``) are not links either.

Used by scripts/check_packaging.sh (imported by path; standard library only, so any Python runs it) and
on its own::

    python scripts/check_long_description.py README.md          # a Markdown file
    python scripts/check_long_description.py dist/x-1.0-py3-none-any.whl   # the wheel's METADATA
"""

from __future__ import annotations

import email.parser
import re
import sys
import zipfile
from typing import NamedTuple
from urllib.parse import urlsplit


class Link(NamedTuple):
    line: int  # 1-based, in the long description
    kind: str  # "link", "image", "reference definition", "html href", "html src", "html srcset"
    target: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind} {self.target!r}"


def is_allowed(target: str) -> bool:
    """Absolute ``http(s)://host...`` or ``mailto:address``, or an in-page anchor (``#section``)."""
    target = target.strip()
    if target.startswith("#"):
        return len(target) > 1
    parts = urlsplit(target)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return target[len(scheme) :].startswith("://") and bool(parts.netloc)
    return scheme == "mailto" and bool(parts.path)


# --- code and comments are not rendered as links: blank them out, keeping the line numbers ---------------

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _blank(match: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


def without_code(markdown: str) -> str:
    """``markdown`` with fenced code blocks, code spans and HTML comments replaced by spaces."""
    lines = markdown.split("\n")
    fence: str | None = None
    for i, line in enumerate(lines):
        if fence is None:
            opened = _FENCE_OPEN.match(line)
            if opened:
                marker = opened.group(1)
                # A backtick fence's info string may not contain a backtick (else it is a code span).
                if marker[0] == "~" or "`" not in line[opened.end() :]:
                    fence = marker
                    lines[i] = ""
        else:
            closing = line.strip()
            indented = line.startswith("    ")
            if closing and set(closing) == {fence[0]} and len(closing) >= len(fence) and not indented:
                fence = None
            lines[i] = ""
    text = "\n".join(lines)
    text = _HTML_COMMENT.sub(_blank, text)
    return _CODE_SPAN.sub(_blank, text)


# --- the link forms ---------------------------------------------------------------------------------------

# [text]( or ![alt]( : the text may hold one level of brackets (an image inside a link: a badge).
_INLINE_START = re.compile(r"(!?)\[((?:[^\[\]\\]|\\.|\[(?:[^\[\]\\]|\\.)*\])*)\]\(")
_REFERENCE_DEFINITION = re.compile(
    r"^ {0,3}\[(?!\^)((?:[^\[\]\\]|\\.)+)\]:[ \t]*(<[^>\n]*>|\S*)", re.MULTILINE
)
_HTML_ATTRIBUTE = re.compile(r"""<[A-Za-z][^>]*?>""", re.DOTALL)
_ATTRIBUTE = re.compile(
    r"""(?<![\w-])(href|src|srcset)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE
)


def _inline_target(text: str, start: int) -> str:
    """The destination of an inline link whose ``(`` is just before ``start`` (CommonMark's rules)."""
    i = start
    while i < len(text) and text[i] in " \t\n":
        i += 1
    if i < len(text) and text[i] == "<":
        end = text.find(">", i)
        return text[i + 1 : end] if end != -1 else text[i + 1 :]
    depth, j = 0, i
    while j < len(text):
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char in " \t\n":
            break
        if char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        j += 1
    return text[i:j]


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _inline_links(text: str, start: int = 0, end: int | None = None) -> list[Link]:
    found = []
    for match in _INLINE_START.finditer(text, start, len(text) if end is None else end):
        kind = "image" if match.group(1) else "link"
        found.append(Link(_line_of(text, match.start()), kind, _inline_target(text, match.end())))
        # An image (or link) inside the text of this one: [![badge](img.svg)](https://...)
        found.extend(_inline_links(text, match.start(2), match.end(2)))
    return found


def links(markdown: str) -> list[Link]:
    """Every link, image, reference definition and HTML href/src/srcset target, in order."""
    text = without_code(markdown)
    found = _inline_links(text)
    for match in _REFERENCE_DEFINITION.finditer(text):
        target = match.group(2)
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        found.append(Link(_line_of(text, match.start()), "reference definition", target))
    for tag in _HTML_ATTRIBUTE.finditer(text):
        for attribute in _ATTRIBUTE.finditer(tag.group(0)):
            name = attribute.group(1).lower()
            value = next(v for v in attribute.groups()[1:] if v is not None)
            line = _line_of(text, tag.start() + attribute.start())
            if name == "srcset":  # "a.png 1x, b.png 2x": each candidate's URL
                for candidate in value.split(","):
                    if candidate.strip():
                        found.append(Link(line, "html srcset", candidate.split()[0]))
            else:
                found.append(Link(line, f"html {name}", value))
    return sorted(found, key=lambda link: link.line)


def relative_links(markdown: str) -> list[Link]:
    """The links that are not absolute http(s)/mailto and not an in-page anchor: broken on PyPI."""
    return [link for link in links(markdown) if not is_allowed(link.target)]


def long_description(path: str) -> str:
    """A wheel's long description (its METADATA body), or a Markdown file as it is."""
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as whl:
            (metadata,) = [
                n for n in whl.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1
            ]
            parsed = email.parser.Parser().parsestr(whl.read(metadata).decode())
        return str(parsed.get_payload())
    with open(path, encoding="utf-8") as f:
        return f.read()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    bad = relative_links(long_description(argv[0]))
    for link in bad:
        print(f"relative {link}", file=sys.stderr)
    if bad:
        print(f"FAIL: {len(bad)} relative link(s) in the long description of {argv[0]}", file=sys.stderr)
        return 1
    print(f"ok: no relative links in the long description of {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
