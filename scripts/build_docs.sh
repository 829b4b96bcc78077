#!/usr/bin/env bash
# Build the documentation site (docs/ -> docs/_build/html) and fail on any warning or broken internal link.
#
#   bash scripts/build_docs.sh
#
# 1. .venv-docs: its own venv with the pinned tools of requirements-docs.txt (Sphinx, MyST, sphinx-autoapi,
#    furo). Neither Airflow nor the provider is installed there: sphinx-autoapi reads the source statically.
#    Reinstalled only when requirements-docs.txt changed (its sha256 is kept in .venv-docs/.installed).
# 2. sphinx-build -W --keep-going -n: every warning fails the build, nitpicky, so every cross-reference
#    must resolve: Markdown links between pages ([...](connection.md), [...](connection.md#proxies)),
#    {doc}/{ref} roles and the API reference's Python references. A page link to a missing page or
#    heading is a MyST "cross-reference target not found" warning, hence an error.
# 3. The internal links of the built HTML, checked offline: every relative href must name a file of the
#    build, and its #fragment an id in that file. Sphinx's own `-b linkcheck` is no help for these: it
#    exists to fetch external URLs (it would need the network, which this check must not use) and
#    does not check the targets of resolved cross-references or their anchors.
# External links are never fetched.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-docs
STAMP=$VENV/.installed
OUT=docs/_build/html
UV_VERSION=0.13.9

want="$(sha256sum requirements-docs.txt | cut -d' ' -f1) uv==$UV_VERSION"
if [[ ! -x $VENV/bin/sphinx-build || ! -f $STAMP || "$(cat "$STAMP")" != "$want" ]]; then
    echo "== installing the docs tools into $VENV (requirements-docs.txt)"
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "uv==$UV_VERSION"
    "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -r requirements-docs.txt
    echo "$want" > "$STAMP"
fi

echo "== sphinx-build -W --keep-going -n -b html docs $OUT"
rm -rf "$OUT"
"$VENV/bin/sphinx-build" -W --keep-going -n -q -b html docs "$OUT"

echo "== internal links of $OUT (offline)"
"$VENV/bin/python" - "$OUT" <<'PY'
"""Every relative href/src of the built site points at a file of the build, and every #fragment at an id."""
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

root = Path(sys.argv[1]).resolve()


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if not value:
                continue
            if name in ("id", "name"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.links.append(value)


pages: dict[Path, Page] = {}
for path in root.rglob("*.html"):
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    pages[path] = page

broken = []
for path, page in sorted(pages.items()):
    for link in page.links:
        parts = urlsplit(link)
        if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:", "data:")):
            continue  # external: never fetched
        target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
        if target.is_dir():
            target = target / "index.html"
        name = path.relative_to(root)
        if not target.is_relative_to(root) or not target.exists():
            broken.append(f"{name}: {link} (no such file in the build)")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in pages[target].ids:
            broken.append(f"{name}: {link} (no id {parts.fragment!r} in {target.relative_to(root)})")
if broken:
    print("Broken internal links:", *broken, sep="\n  ")
    sys.exit(1)
print(f"{sum(len(p.links) for p in pages.values())} links in {len(pages)} pages: internal ones all resolve")
PY
echo "== built: $OUT/index.html"
