#!/usr/bin/env bash
# Packaging check: build the sdist and wheel, validate them (twine; name, classifiers, PEP 639 license and the
# LICENSE file, project URLs, authors and maintainers, a long description without relative links or images,
# extras, entry point, contents of both), and install each into a clean venv outside the repo to prove the
# provider works from the artifacts alone (not from the source tree): the wheel without extras (Airflow lists
# the provider, its doc URL is the vendor's page, the emulator serves), the sdist with [openlineage,s3].
#
#   bash scripts/check_packaging.sh        # from the repo root, after `make` has created .venv
#   CEX_PACKAGING_VENV=/path/to/.venv bash scripts/check_packaging.sh   # another venv's Python and uv
#
# build, twine and the venvs under test live in a temporary directory (removed on exit); .venv (or
# $CEX_PACKAGING_VENV) is only used for its Python interpreter and its uv. Airflow and the other pins come
# from requirements-dev.txt (used as constraints), so uv resolves from its cache in seconds. Prints one
# `ok: ...` line per check.
set -euo pipefail

BUILD_VERSION=1.6.1
TWINE_VERSION=7.0.0
# The build backend is pinned too (as a constraint on build-system.requires) so the artifacts are
# reproducible; override with HATCHLING_VERSION=... if pyproject.toml needs a newer one.
HATCHLING_VERSION=${HATCHLING_VERSION:-1.33.0}
# The vendor's Remote API page: the "Remote API" URL in the metadata and the provider info's external-doc-url.
VENDOR_DOC_URL="https://docs.meta-inf.hu/content-exporter-confluence/user-guides/before-exporting/remote-api-cloud-only"
# The project's documentation site: the Documentation URL in the metadata.
DOCS_URL="https://airflow-provider-cex.readthedocs.io/en/latest/"

START=$SECONDS
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}
ok() { echo "ok: $*"; }

# Show the log of a command that failed, then fail.
run_logged() {
    local what=$1 log=$2
    shift 2
    if ! "$@" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        fail "$what (command: $*)"
    fi
}

VENV=${CEX_PACKAGING_VENV:-$REPO/.venv}
PY="$VENV/bin/python"
UV="$VENV/bin/uv"
[[ -x $PY ]] || fail "$PY not found: run 'make' first to create .venv"
[[ -x $UV ]] || fail "$UV not found: run 'make' first (it installs uv into .venv)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cex-packaging.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)
EMU_PID=""
cleanup() {
    if [[ -n $EMU_PID ]] && kill -0 "$EMU_PID" 2>/dev/null; then
        kill "$EMU_PID" 2>/dev/null || true
        wait "$EMU_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "FAIL: unexpected error at line $LINENO: $BASH_COMMAND" >&2' ERR
case "$WORK/" in
    "$REPO"/*) fail "temporary directory $WORK is inside the repo; set TMPDIR elsewhere" ;;
esac

# uv must not pick up an activated venv or the caller's constraints.
unset VIRTUAL_ENV UV_CONSTRAINT UV_BUILD_CONSTRAINT PIP_CONSTRAINT
export UV_NO_PROGRESS=1

# Pinned versions from requirements-dev.txt (name==version lines only) used as constraints.
CONSTRAINTS="$WORK/constraints.txt"
grep -E '^[A-Za-z0-9._-]+==' requirements-dev.txt >"$CONSTRAINTS" || true
AIRFLOW_PIN=$(grep -E '^apache-airflow==' "$CONSTRAINTS" || true)
[[ -n $AIRFLOW_PIN ]] || fail "requirements-dev.txt has no 'apache-airflow==X' pin"
BUILD_CONSTRAINTS="$WORK/build-constraints.txt"
echo "hatchling==$HATCHLING_VERSION" >"$BUILD_CONSTRAINTS"

# --- 1. build sdist + wheel (the wheel is built from the sdist) with build/twine in a throwaway venv -------
TOOLS="$WORK/tools"
run_logged "create the tool venv" "$WORK/tools-venv.log" "$UV" venv -q --python "$PY" "$TOOLS"
run_logged "install build==$BUILD_VERSION twine==$TWINE_VERSION" "$WORK/tools-install.log" \
    "$UV" pip install -q --python "$TOOLS/bin/python" "build==$BUILD_VERSION" "twine==$TWINE_VERSION"
DIST="$WORK/dist"
run_logged "python -m build" "$WORK/build.log" \
    env UV="$UV" UV_CONSTRAINT="$BUILD_CONSTRAINTS" \
    "$TOOLS/bin/python" -m build --installer uv --outdir "$DIST" "$REPO"
shopt -s nullglob
wheels=("$DIST"/*.whl)
sdists=("$DIST"/*.tar.gz)
shopt -u nullglob
[[ ${#wheels[@]} -eq 1 && ${#sdists[@]} -eq 1 ]] || fail "expected one wheel and one sdist in $DIST, got: $(ls "$DIST")"
WHEEL=${wheels[0]}
SDIST=${sdists[0]}
ok "built $(basename "$SDIST") and $(basename "$WHEEL") (build $BUILD_VERSION, hatchling $HATCHLING_VERSION)"

# --- 2. twine check --strict ------------------------------------------------------------------------------
run_logged "twine check --strict" "$WORK/twine.log" "$TOOLS/bin/twine" check --strict "$WHEEL" "$SDIST"
ok "twine check --strict passed for both artifacts (twine $TWINE_VERSION)"

# --- 3. metadata and contents -----------------------------------------------------------------------------
# Prints one ok/FAIL line per check and writes the wheel's version to $WORK/version. The long description's
# link check is scripts/check_long_description.py (imported by path; tests/unit/test_long_description_links.py).
"$TOOLS/bin/python" - "$WHEEL" "$SDIST" "$WORK/version" "$REPO/LICENSE" "$VENDOR_DOC_URL" "$DOCS_URL" \
    "$REPO/scripts" <<'PY' ||
import configparser
import email.parser
import sys
import tarfile
import zipfile

from packaging.requirements import Requirement  # installed with build

wheel_path, sdist_path, version_file, license_path, vendor_doc_url, docs_url, scripts_dir = sys.argv[1:8]
sys.path.insert(0, scripts_dir)
from check_long_description import relative_links  # noqa: E402

REPO_URL = "https://github.com/airflow-provider-cex/airflow-provider-cex"
with open(license_path, "rb") as f:
    license_text = f.read()
failed = False


def check(cond, message, detail=""):
    """Print ok or FAIL (with detail) for one check."""
    global failed
    if cond:
        print(f"ok: {message}", flush=True)
    else:
        failed = True
        print(f"FAIL: {message}" + (f" ({detail})" if detail else ""), file=sys.stderr, flush=True)


with zipfile.ZipFile(wheel_path) as whl:
    names = set(whl.namelist())
    dist_infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        sys.exit(f"FAIL: expected one .dist-info directory in the wheel, found {sorted(dist_infos)}")
    dist_info = dist_infos.pop()
    meta = email.parser.Parser().parsestr(whl.read(f"{dist_info}/METADATA").decode())
    ep_file = f"{dist_info}/entry_points.txt"
    entry_points_txt = whl.read(ep_file).decode() if ep_file in names else ""
    wheel_license_file = f"{dist_info}/licenses/LICENSE"
    wheel_license = whl.read(wheel_license_file) if wheel_license_file in names else None

version = meta["Version"]
check(meta["Name"] == "airflow-provider-cex", "wheel metadata Name is airflow-provider-cex", f"got {meta['Name']!r}")
classifiers = meta.get_all("Classifier") or []
for wanted in ("Framework :: Apache Airflow :: Provider", "Typing :: Typed"):
    check(wanted in classifiers, f"wheel has classifier '{wanted}'", "add it to [project] classifiers")

# License (PEP 639): the SPDX expression, and the full text shipped in the wheel's .dist-info/licenses/.
check(
    meta["License-Expression"] == "Apache-2.0",
    "wheel metadata License-Expression is Apache-2.0",
    f"got {meta['License-Expression']!r}",
)
check(
    "LICENSE" in (meta.get_all("License-File") or []),
    "wheel metadata has License-File: LICENSE",
    f"got {meta.get_all('License-File')!r}",
)
check(
    wheel_license == license_text,
    f"wheel contains {dist_info}/licenses/LICENSE, identical to the repo's LICENSE",
    "missing" if wheel_license is None else "content differs",
)
check(b"Apache License" in license_text and b"Version 2.0, January 2004" in license_text,
      "LICENSE is the Apache License 2.0 text")

# Project URLs: Source, Changelog, Issues on the repository; Documentation = the docs site; "Remote API" = the
# vendor's Remote API page. Exactly these labels (a leftover or misspelled one is reported).
urls = dict(
    (label.strip(), url.strip())
    for label, _, url in (line.partition(",") for line in meta.get_all("Project-URL") or [])
)
expected_urls = {
    "Source": REPO_URL,
    "Changelog": f"{REPO_URL}/blob/main/CHANGELOG.md",
    "Issues": f"{REPO_URL}/issues",
    "Documentation": docs_url,
    "Remote API": vendor_doc_url,
}
for label, url in expected_urls.items():
    check(urls.get(label) == url, f"wheel metadata Project-URL: {label}, {url}", f"got {urls.get(label)!r}")
check(
    set(urls) == set(expected_urls),
    f"wheel metadata has no other Project-URL than {', '.join(expected_urls)}",
    f"unexpected: {sorted(set(urls) - set(expected_urls))}",
)

# Authors and maintainers: names without email, which hatchling writes as Author / Maintainer (an email would
# go to Author-email / Maintainer-email instead).
for field, name in (
    ("Author", "The airflow-provider-cex authors"),
    ("Maintainer", "The airflow-provider-cex maintainers"),
):
    check(
        meta[field] == name,
        f"wheel metadata {field}: {name}",
        f"got {field} {meta[field]!r}, {field}-email {meta[f'{field}-email']!r}",
    )

# Long description: the README, rendered on PyPI where there is no repository next to it, so every link and
# image must be absolute (http(s)://, mailto:) or an in-page #anchor. Checked in the wheel's METADATA and in the
# sdist's PKG-INFO (PyPI shows whichever file was uploaded first).
check(
    meta["Description-Content-Type"] == "text/markdown",
    "wheel metadata Description-Content-Type is text/markdown",
    f"got {meta['Description-Content-Type']!r}",
)
with tarfile.open(sdist_path) as sdist:
    pkg_info = [m for m in sdist.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")]
    pkg_info_file = sdist.extractfile(pkg_info[0]) if len(pkg_info) == 1 else None
    sdist_meta = email.parser.Parser().parsestr(pkg_info_file.read().decode()) if pkg_info_file else None
for label, metadata in (("wheel METADATA", meta), ("sdist PKG-INFO", sdist_meta)):
    description = str(metadata.get_payload()) if metadata is not None else ""
    bad = relative_links(description)
    for link in bad:
        print(f"  relative link in the {label} long description, {link}", file=sys.stderr)
    check(
        bool(description.strip()) and not bad,
        f"{label} long description has no relative links or images (absolute http(s)/mailto or #anchor only)",
        "no long description" if not description.strip() else f"{len(bad)} relative, listed above",
    )

# Extras: openlineage and s3 exist; emulator is gone (it installed nothing: aiohttp is a runtime dependency).
extras = meta.get_all("Provides-Extra") or []
requires = [Requirement(r) for r in meta.get_all("Requires-Dist") or []]


def extra_requires(extra):
    """(name, extras) of the requirements that only the extra brings in."""
    return {
        (r.name, tuple(sorted(r.extras)))
        for r in requires
        if r.marker is not None and r.marker.evaluate({"extra": extra})
        and not r.marker.evaluate({"extra": "no-such-extra"})
    }


for extra, wanted in (
    ("openlineage", ("apache-airflow-providers-openlineage", ())),
    ("s3", ("apache-airflow-providers-amazon", ("s3fs",))),
):
    check(
        extra in extras and wanted in extra_requires(extra),
        f"wheel provides the [{extra}] extra ({wanted[0]}{'[' + ','.join(wanted[1]) + ']' if wanted[1] else ''})",
        f"Provides-Extra {extras}, requirements of the extra {sorted(extra_requires(extra))}",
    )
check("emulator" not in extras, "wheel has no [emulator] extra (the emulator needs none)", f"got {extras}")

ep = configparser.ConfigParser(delimiters=("=",))
ep.optionxform = str  # keep the case of entry point names
ep.read_string(entry_points_txt)
value = ep.get("apache_airflow_provider", "provider_info", fallback="").strip()
check(
    value == "airflow_provider_cex:get_provider_info",
    "wheel has entry point apache_airflow_provider: provider_info = airflow_provider_cex:get_provider_info",
    f"got {value!r}",
)

for required in (
    "airflow_provider_cex/__init__.py",
    "airflow_provider_cex/py.typed",
    "airflow_provider_cex/emulator/__init__.py",
    "airflow_provider_cex/emulator/__main__.py",
    "airflow_provider_cex/emulator/server.py",
):
    check(required in names, f"wheel contains {required}")
junk = sorted(n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/"))
check(not junk, "wheel contains no tests, __pycache__ or .pyc", f"found {junk[:5]}")

with tarfile.open(sdist_path) as sdist:
    members = sdist.getnames()
roots = {m.split("/", 1)[0] for m in members}
if len(roots) != 1:
    sys.exit(f"FAIL: expected one top-level directory in the sdist, found {sorted(roots)}")
root = roots.pop()
check(root == f"airflow_provider_cex-{version}", f"sdist root directory is airflow_provider_cex-{version}", root)
relative = {m.split("/", 1)[1] for m in members if "/" in m}
for required in (
    "README.md",
    "CHANGELOG.md",
    "LICENSE",
    "pyproject.toml",
    "PKG-INFO",
    "airflow_provider_cex/__init__.py",
    "airflow_provider_cex/py.typed",
    "airflow_provider_cex/emulator/__init__.py",
    "airflow_provider_cex/emulator/__main__.py",
):
    check(required in relative, f"sdist contains {required}")
with tarfile.open(sdist_path) as sdist:
    member = sdist.extractfile(f"{root}/LICENSE") if "LICENSE" in relative else None
    check(member is not None and member.read() == license_text, "sdist LICENSE is identical to the repo's LICENSE")

if failed:
    sys.exit(1)
with open(version_file, "w") as f:
    f.write(version)
PY
    fail "wheel/sdist metadata or contents check failed (see the FAIL lines above)"
VERSION=$(cat "$WORK/version")
[[ -n $VERSION ]] || fail "could not read the version from the wheel"

# Exec a command from inside $WORK (so the repo cannot be imported by accident) with a throwaway
# AIRFLOW_HOME and no inherited Python/Airflow settings. It replaces the calling shell, so call it only in a
# subshell: $(clean_env ...) or clean_env ... & (then $! is the command's own PID).
clean_env() {
    [[ $BASH_SUBSHELL -gt 0 ]] || fail "clean_env must run in a subshell"
    local var
    cd "$WORK"
    unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE
    for var in $(compgen -e | grep '^AIRFLOW' || true); do unset "$var"; done
    export AIRFLOW_HOME="$WORK/airflow_home" AIRFLOW__CORE__LOAD_EXAMPLES=False PYTHONNOUSERSITE=1
    exec "$@"
}

# Install an artifact (with the extras in $4, e.g. "[openlineage,s3]", or none) into a new venv and check the
# import comes from that venv.
install_and_import() {
    local label=$1 venv=$2 artifact=$3 extras=${4:-}
    run_logged "create the $label venv" "$WORK/$label-venv.log" "$UV" venv -q --python "$PY" "$venv"
    run_logged "install the $label${extras:+ with $extras} ($AIRFLOW_PIN)" "$WORK/$label-install.log" \
        "$UV" pip install -q --python "$venv/bin/python" --compile-bytecode \
        -c "$CONSTRAINTS" --build-constraint "$BUILD_CONSTRAINTS" "airflow-provider-cex$extras @ file://$artifact"
    local out
    out=$(clean_env "$venv/bin/python" -c \
        'import airflow_provider_cex as p, os; print(p.__version__, os.path.realpath(p.__file__))' 2>&1) ||
        fail "importing airflow_provider_cex from the $label venv failed: $out"
    local got_version=${out%% *} file=${out#* }
    echo "  airflow_provider_cex $got_version from $file"
    [[ $got_version == "$VERSION" ]] || fail "$label: __version__ is $got_version, the artifact is $VERSION"
    case "$file" in
        "$venv"/*) ;;
        *) fail "$label: airflow_provider_cex was imported from $file, not from the clean venv $venv" ;;
    esac
    case "$file" in
        "$REPO"/*) fail "$label: airflow_provider_cex was imported from the repo ($file)" ;;
    esac
    ok "$label${extras:+ with $extras} installed into a clean venv with $AIRFLOW_PIN; imports $got_version from the venv, not the repo"
}

# --- 3b. what the metadata refuses at install time ------------------------------------------------------------
# Environments the provider cannot work in must fail to resolve, not install and then fail to import: Python 3.10
# (compat 1.21 and later need 3.11; the trigger uses asyncio.Task.cancelling()) and common-compat 1.22 (no
# AirflowException, mask_secret or ResumableJobMixin in compat.sdk).
expect_refused() {
    local what=$1 pattern=$2 log=$3
    shift 3
    if "$@" >"$log" 2>&1; then
        tail -n 20 "$log" >&2
        fail "$what resolved, but the provider cannot work there: the metadata must refuse it"
    fi
    grep -Eq "$pattern" "$log" || { tail -n 20 "$log" >&2; fail "$what was refused, but not for the expected reason"; }
    ok "$what is refused at install time"
}
echo "airflow-provider-cex @ file://$WHEEL" >"$WORK/wheel-req.txt"
expect_refused "Python 3.10" "Python>=3.11|requires-python|>=3.11" "$WORK/py310.log" \
    "$UV" pip compile -q --python-version 3.10 --no-header "$WORK/wheel-req.txt"
echo "apache-airflow-providers-common-compat==1.22.0" >"$WORK/compat-122.txt"
expect_refused "apache-airflow-providers-common-compat 1.22.0" "common-compat" "$WORK/compat122.log" \
    "$UV" pip compile -q --python-version 3.11 --no-header -c "$WORK/compat-122.txt" "$WORK/wheel-req.txt"

# --- 4. wheel (no extras) in a clean venv: import, Airflow sees the provider, the emulator serves ----------
V1="$WORK/venv-wheel"
install_and_import wheel "$V1" "$WHEEL"

providers=$(clean_env "$V1/bin/airflow" providers list -o plain 2>&1) ||
    { echo "$providers" | tail -n 40 >&2; fail "'airflow providers list' failed"; }
grep -Eq "^airflow-provider-cex[[:space:]].*[[:space:]]$VERSION[[:space:]]*$" <<<"$providers" ||
    { echo "$providers" | tail -n 40 >&2; fail "'airflow providers list' does not show airflow-provider-cex $VERSION"; }
ok "airflow providers list shows airflow-provider-cex $VERSION"

doc_url=$(clean_env "$V1/bin/python" -c \
    'from airflow_provider_cex import get_provider_info as g; print(*{i["external-doc-url"] for i in g()["integrations"]})' 2>&1) ||
    fail "reading the provider info's external-doc-url failed: $doc_url"
[[ $doc_url == "$VENDOR_DOC_URL" ]] ||
    fail "provider info external-doc-url is '$doc_url', expected the vendor's Remote API page $VENDOR_DOC_URL"
ok "provider info external-doc-url is the vendor's Remote API page"

hooks=$(clean_env "$V1/bin/airflow" providers hooks -o plain 2>&1) ||
    { echo "$hooks" | tail -n 40 >&2; fail "'airflow providers hooks' failed"; }
grep -Eq "^content_exporter[[:space:]]+airflow_provider_cex\.hooks\.content_exporter\.ContentExporterHook" <<<"$hooks" ||
    { echo "$hooks" | tail -n 40 >&2; fail "'airflow providers hooks' does not show the content_exporter connection type"; }
ok "airflow providers hooks shows connection type content_exporter (ContentExporterHook)"

EMU_OUT="$WORK/emulator.out"
EMU_ERR="$WORK/emulator.err"
: >"$EMU_OUT"
clean_env "$V1/bin/python" -m airflow_provider_cex.emulator --port 0 --quiet >"$EMU_OUT" 2>"$EMU_ERR" &
EMU_PID=$!
line=""
for _ in $(seq 1 150); do
    # read succeeds only on a complete (newline-terminated) line
    if IFS= read -r line <"$EMU_OUT"; then break; fi
    line=""
    kill -0 "$EMU_PID" 2>/dev/null || { cat "$EMU_ERR" >&2; fail "the emulator exited before printing its URL"; }
    sleep 0.1
done
[[ $line == *http://* ]] || { cat "$EMU_ERR" >&2; fail "the emulator printed no URL within 15 s (first line: '$line')"; }
URL=${line##* }
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$URL/api/remoteExport/1/progress" || true)
[[ $status == 401 ]] || fail "GET $URL/api/remoteExport/1/progress without a key answered '$status', expected 401"
kill "$EMU_PID"
emu_rc=0
wait "$EMU_PID" || emu_rc=$?
EMU_PID=""
[[ $emu_rc -eq 0 ]] || { cat "$EMU_ERR" >&2; fail "the emulator exited with status $emu_rc on SIGTERM"; }
ok "python -m airflow_provider_cex.emulator served on $URL: progress without a key -> 401; stopped cleanly by PID"

# --- 5. sdist with [openlineage,s3] in a second clean venv (uv builds the wheel from the sdist) ------------
# The extras resolve with the pinned Airflow and bring what they promise: the OpenLineage provider, and the
# amazon provider with s3fs (what ObjectStoragePath needs for s3:// output paths).
V2="$WORK/venv-sdist"
install_and_import sdist "$V2" "$SDIST" "[openlineage,s3]"
out=$(clean_env "$V2/bin/python" -c \
    'import airflow.providers.openlineage, airflow.providers.amazon, s3fs; print("imported")' 2>&1) ||
    fail "the [openlineage,s3] extras did not install importable packages: $out"
ok "extras [openlineage,s3] installed: airflow.providers.openlineage, airflow.providers.amazon and s3fs import"

echo "packaging check passed ($((SECONDS - START)) s)"
