"""Every error message the provider raises is on the troubleshooting page (``docs/troubleshooting.md``).

The messages are found in the source with :mod:`ast`, not by importing it, and not by running it.

What counts as an error message (each of its string literals, and each literal part of an f-string, is a
*unit*):

- the first argument of every call of a class named ``…Error``, ``…Exception``, ``…Timeout`` or
  ``…Failure`` anywhere in the package (``raise ContentExporterAuthError(...)``,
  ``return ContentExporterNotFoundError(...)``, ``raise ValueError(...)`` that a caller wraps into
  "Connection … is misconfigured: …", ``RetryableFailure(reason)``, ``HarProfileError``, ``OpenAPIError``);
- the message of every ``return False, <message>`` (what Test Connection shows);
- the return values of the message helpers, functions named ``describe_…``/``_describe_…`` or ending in
  ``_message``, ``_advice`` or ``_problem`` (``give_up_message``, ``tls_problem``, ``_path_problem``…);
- followed from those: local variables the message is built from (every assignment to them in the same
  function, e.g. ``cause = (...)`` in each branch), module-level constants (``START_UNCERTAIN_ADVICE``,
  ``HOW_TO_RECORD``; also when imported from another module of the package), and the return values of the
  package's own functions called inside the message (``exists_message(path)``, ``_report(...)``).

How a unit is matched: its literal text, with each ``{placeholder}`` as a wildcard (up to 150 characters
of anything, so the page may write ``…``, ``N`` or a real example), cut after its first 6 words, must
occur in the page (whitespace-insensitive). So the page quotes how every message *begins*; a change to a
message's opening, or a new message, fails this test with the missing text, file and line.

What is not covered, honestly:

- units with fewer than 3 words of literal text (``f"{task_id}: {err}"``, ``f"HTTP {status}{via}"``):
  their text is a placeholder; what fills it is checked where *that* is built;
- the wording after the first 6 words of a unit (the advice at the end of a long message may change
  without this test noticing);
- strings passed as arguments *into* a function's parameters (e.g. the ``reason=`` a caller hands to
  ``proxy_failure``) unless the call site itself is one of the roots above;
- log lines and warnings (``log.warning``, ``warnings.warn``): they are not raised;
- ``airflow_provider_cex/emulator``: a test tool (a fake Content Exporter server), not what users of the
  provider meet; its own messages are not documented on the troubleshooting page;
- :data:`NOT_THE_PROVIDERS`: messages in Python's or Airflow's standard wording.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_provider_cex"
PAGE = ROOT / "docs" / "troubleshooting.md"
EXCLUDED = ("emulator",)  # sub-packages not scanned (see the module docstring)

#: Roots: constructor calls of exception-like classes, by the class name.
EXCEPTION_CLASS = re.compile(r"^[A-Z]\w*(Error|Exception|Timeout|Failure)$")
#: Message helpers: functions whose return value is (part of) a message.
MESSAGE_HELPER = re.compile(r"^(_?describe_\w+|\w+_message|\w+_advice|\w+_problem)$")
#: A unit is checked when its literal text has at least this many words ...
MIN_WORDS = 3
#: ... and the page must hold its first this many words (placeholders in between as wildcards).
KEY_WORDS = 6
WILDCARD = ".{0,150}?"

#: Units in Python's or Airflow's standard wording, by their literal text with placeholders as ``…``.
NOT_THE_PROVIDERS = {
    # A module's __getattr__ (lazy imports) for a name that does not exist: Python's own wording.
    "module … has no attribute …",
}


@dataclass(frozen=True)
class Unit:
    """One string literal or f-string of a message: its literal parts, with None for each placeholder."""

    parts: tuple[str | None, ...]
    where: str  # file:line

    @property
    def literal(self) -> str:
        return " ".join("".join(p if p is not None else " … " for p in self.parts).split())

    @property
    def words(self) -> list[str]:
        return [w for w in "".join(p or " " for p in self.parts).split() if any(c.isalpha() for c in w)]

    def key(self) -> tuple[str, re.Pattern[str]] | None:
        """The page must match this (shown, pattern); None for a unit too short to check."""
        if len(self.words) < MIN_WORDS:
            return None
        pieces: list[str] = []
        shown: list[str] = []
        budget = KEY_WORDS
        for part in self.parts:
            if budget <= 0:
                break
            if part is None:
                if pieces:  # a leading placeholder is dropped: the key starts at the first literal word
                    pieces.append(WILDCARD)
                    shown.append("…")
                continue
            if not pieces:
                part = re.sub(r"^[\W_]+", "", part)  # ": the server…" -> "the server…"
            taken, budget = _take_words(part, budget)
            if taken.strip():
                pieces.append(_pattern(taken))
                shown.append(taken)
        while pieces and pieces[-1] == WILDCARD:
            pieces.pop()
            shown.pop()
        return "".join(shown).strip(), re.compile("".join(pieces))


def _take_words(text: str, budget: int) -> tuple[str, int]:
    """The start of ``text`` up to the end of its ``budget``-th word (tokens with a letter count)."""
    out = []
    for token in re.split(r"(\s+)", text):
        if budget <= 0:
            break
        out.append(token)
        if any(c.isalpha() for c in token):
            budget -= 1
    return "".join(out), budget


def _pattern(text: str) -> str:
    """``text`` as a regex: whitespace between words matches any run of it, at either end also none (the
    page may put a placeholder's example right against it)."""
    chunks = [chunk for chunk in re.split(r"(\s+)", text) if chunk]
    last = len(chunks) - 1
    return "".join(
        (r"\s*" if i in (0, last) else r"\s+") if chunk.isspace() else re.escape(chunk)
        for i, chunk in enumerate(chunks)
    )


# --------------------------------------------------------------------------- finding the units


@dataclass
class Module:
    path: Path
    tree: ast.Module
    parents: dict[ast.AST, ast.AST]

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT))


def _modules() -> list[Module]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if any(part in EXCLUDED for part in path.relative_to(PACKAGE).parts[:-1]):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        found.append(Module(path, tree, parents))
    return found


def _callee(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _assigned(scope: ast.AST, name: str) -> list[ast.expr]:
    """Values assigned to ``name`` directly in ``scope`` (a function or module; nested functions excluded)."""
    values: list[ast.expr] = []
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for target in node.targets for t in ast.walk(target)
        ):
            values.append(node.value)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            target = node.target
            if isinstance(target, ast.Name) and target.id == name:
                values.append(node.value)
        todo.extend(ast.iter_child_nodes(node))
    return values


class Finder:
    """Collects the units of every message root, following names and helper calls (see the docstring)."""

    def __init__(self, modules: list[Module]) -> None:
        self.modules = modules
        self.functions: dict[str, list[tuple[Module, ast.FunctionDef | ast.AsyncFunctionDef]]] = {}
        for module in modules:
            for node in ast.walk(module.tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    self.functions.setdefault(node.name, []).append((module, node))
        self.units: dict[tuple[str, int, int], Unit] = {}
        self._seen: set[tuple[str, int, int]] = set()

    def run(self) -> list[Unit]:
        for module in self.modules:
            for node in ast.walk(module.tree):
                if isinstance(node, ast.Call) and EXCEPTION_CLASS.match(_callee(node) or "") and node.args:
                    self.expand(module, node.args[0])
                elif (
                    isinstance(node, ast.Return)
                    and isinstance(node.value, ast.Tuple)
                    and len(node.value.elts) == 2
                    and isinstance(node.value.elts[0], ast.Constant)
                    and node.value.elts[0].value is False
                ):
                    self.expand(module, node.value.elts[1])
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and MESSAGE_HELPER.match(
                    node.name
                ):
                    self.expand_returns(module, node)
        return sorted(self.units.values(), key=lambda u: u.where)

    def expand_returns(self, module: Module, function: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        marker = (module.name, function.lineno, -1)
        if marker in self._seen:
            return
        self._seen.add(marker)
        for node in ast.walk(function):
            if isinstance(node, ast.Return) and node.value is not None:
                self.expand(module, node.value)

    def expand(self, module: Module, expr: ast.AST) -> None:
        marker = (module.name, getattr(expr, "lineno", 0), getattr(expr, "col_offset", 0))
        if marker in self._seen:
            return
        self._seen.add(marker)
        for node in ast.walk(expr):
            if isinstance(node, ast.JoinedStr):
                parts = tuple(v.value if isinstance(v, ast.Constant) else None for v in node.values)
                self._add(module, node, parts)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if not isinstance(module.parents.get(node), ast.JoinedStr):
                    self._add(module, node, (node.value,))
            elif isinstance(node, ast.Name):
                parent = module.parents.get(node)
                if not (isinstance(parent, ast.Attribute) and parent.value is node):  # not `args.from_har`
                    self.expand_name(module, node)
            elif isinstance(node, ast.Call):
                for _mod, function in self.functions.get(_callee(node) or "", []):
                    self.expand_returns(_mod, function)

    def expand_name(self, module: Module, name: ast.Name) -> None:
        scope: ast.AST | None = module.parents.get(name)
        while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = module.parents.get(scope)
        values = _assigned(scope, name.id) if scope is not None else []
        if not values:  # a module-level constant, here or in another module of the package
            for other in [module, *self.modules]:
                values = [
                    node.value
                    for node in other.tree.body
                    if isinstance(node, (ast.Assign, ast.AnnAssign))
                    and node.value is not None
                    and any(
                        isinstance(t, ast.Name) and t.id == name.id
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    )
                ]
                if values:
                    module = other
                    break
        for value in values:
            self.expand(module, value)

    def _add(self, module: Module, node: ast.AST, parts: tuple[str | None, ...]) -> None:
        where = f"{module.name}:{node.lineno}"
        self.units[(module.name, node.lineno, node.col_offset)] = Unit(parts, where)


def _units() -> list[Unit]:
    return Finder(_modules()).run()


def _page_text() -> str:
    return " ".join(PAGE.read_text(encoding="utf-8").split())


# --------------------------------------------------------------------------- the tests


def test_every_error_message_is_on_the_troubleshooting_page() -> None:
    page = _page_text()
    missing = []
    for unit in _units():
        key = unit.key()
        if key is None or unit.literal in NOT_THE_PROVIDERS:
            continue
        shown, pattern = key
        if not pattern.search(page):
            missing.append(f"{unit.where}: {shown!r}   (message: {unit.literal[:160]!r})")
    assert not missing, (
        f"{len(missing)} error message(s) are not on {PAGE.relative_to(ROOT)}; quote how each begins there, "
        "with what to do:\n" + "\n".join(missing)
    )


def test_the_finder_sees_the_known_messages() -> None:
    """A guard against the finder quietly finding nothing (e.g. after the message helpers are refactored)."""
    literals = " | ".join(u.literal for u in _units())
    for expected in (
        "Content Exporter rejected the API key while trying to",  # a raise, in failures
        "there is no start-export endpoint at",  # a local variable of a message, in failures.not_found_error
        "a second attempt could start a second export",  # a module constant (START_UNCERTAIN_ADVICE)
        "already exists and overwrite=False",  # a message helper (files.exists_message)
        "is reachable but rejected the API key",  # Test Connection's (False, message)
        "does not exist on this worker",  # a local variable assigned in except branches (tls.ssl_context)
        "Cannot derive the endpoints from the OpenAPI descriptor",  # a list built up in a called function
    ):
        assert expected in literals, f"the finder no longer sees {expected!r}"
    assert not any("emulator" in u.where for u in _units())


def test_not_the_providers_entries_still_exist() -> None:
    """The exclusions must not outlive the messages they excuse."""
    literals = {u.literal for u in _units()}
    assert literals >= NOT_THE_PROVIDERS, NOT_THE_PROVIDERS - literals


@pytest.mark.parametrize(
    ("source", "documented"),
    [
        ('raise ContentExporterError("A new message nobody wrote down yet.")', False),
        ('raise ValueError(f"Another new one for {name}, undocumented.")', False),
        ('raise ContentExporterError(f"Content Exporter rejected the API key while trying to {x}")', True),
    ],
)
def test_the_check_catches_a_new_message(source: str, documented: bool) -> None:
    """The matching rule itself: a new raise is caught, a documented one passes."""
    tree = ast.parse(source)
    module = Module(PACKAGE / "new.py", tree, {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)})
    units = Finder([module]).run()
    assert units
    keys = [unit.key() for unit in units]
    assert all(key is not None for key in keys)
    page = _page_text()
    assert all(key[1].search(page) for key in keys if key) is documented
