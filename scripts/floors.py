"""Write the uv override file that pins every direct dependency (and every extra's) at its declared floor.

``make test-floors`` installs the provider with ``uv pip install --resolution lowest-direct --override`` this
file, so the suites run against the oldest versions that ``pyproject.toml`` admits. A dependency without a
``>=`` floor is an error: an unbounded requirement is a floor nobody tested.

    python scripts/floors.py OUTFILE    # writes name==floor lines; prints them too
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def floors(pyproject: dict) -> dict[str, str]:
    """``{name: floor}`` for [project] dependencies and every optional-dependencies group."""
    project = pyproject["project"]
    requirements = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        requirements += group
    found: dict[str, str] = {}
    for text in requirements:
        req = Requirement(text)
        lows = [spec.version for spec in req.specifier if spec.operator in (">=", "==", "~=")]
        if len(lows) != 1:
            raise SystemExit(
                f"{text!r} in pyproject.toml has no single lower bound (>=, ~= or ==): give it the floor the "
                "code was tested with, so that `make test-floors` can test it"
            )
        name = req.name.lower().replace("_", "-")
        if name in found and found[name] != lows[0]:
            raise SystemExit(
                f"{name} has two floors in pyproject.toml ({found[name]} and {lows[0]}): keep one"
            )
        found[name] = lows[0]
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(ROOT / "pyproject.toml", "rb") as f:
        pins = floors(tomllib.load(f))
    text = "".join(f"{name}=={floor}\n" for name, floor in sorted(pins.items()))
    Path(argv[1]).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
