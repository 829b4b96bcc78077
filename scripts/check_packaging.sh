#!/usr/bin/env bash
# Packaging check: build the sdist and wheel, validate them, and install each into a clean venv outside the
# repo to prove the provider works from the artifacts alone (not from the source tree).
#
#   bash scripts/check_packaging.sh        # from the repo root, after `make` has created .venv
#
# build, twine and the venvs under test live in a temporary directory (removed on exit); .venv is only used
# for its Python interpreter and its uv. Airflow and the other pins come from requirements-dev.txt (used as
# constraints), so uv resolves from its cache in seconds. Prints one `ok: ...` line per check.
set -euo pipefail

BUILD_VERSION=1.6.1
TWINE_VERSION=7.0.0
# The build backend is pinned too (as a constraint on build-system.requires) so the artifacts are
# reproducible; override with HATCHLING_VERSION=... if pyproject.toml needs a newer one.
HATCHLING_VERSION=${HATCHLING_VERSION:-1.33.0}

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

PY="$REPO/.venv/bin/python"
UV="$REPO/.venv/bin/uv"
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
# Prints one ok/FAIL line per check and writes the wheel's version to $WORK/version.
"$TOOLS/bin/python" - "$WHEEL" "$SDIST" "$WORK/version" <<'PY' ||
import configparser
import email.parser
import sys
import tarfile
import zipfile

wheel_path, sdist_path, version_file = sys.argv[1:4]
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

version = meta["Version"]
check(meta["Name"] == "airflow-provider-cex", "wheel metadata Name is airflow-provider-cex", f"got {meta['Name']!r}")
classifiers = meta.get_all("Classifier") or []
for wanted in ("Framework :: Apache Airflow :: Provider", "Typing :: Typed"):
    check(wanted in classifiers, f"wheel has classifier '{wanted}'", "add it to [project] classifiers")
check("emulator" in (meta.get_all("Provides-Extra") or []), "wheel provides the [emulator] extra")

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
    "pyproject.toml",
    "PKG-INFO",
    "airflow_provider_cex/__init__.py",
    "airflow_provider_cex/py.typed",
    "airflow_provider_cex/emulator/__init__.py",
    "airflow_provider_cex/emulator/__main__.py",
):
    check(required in relative, f"sdist contains {required}")

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

# Install an artifact (with the [emulator] extra) into a new venv and check the import comes from that venv.
install_and_import() {
    local label=$1 venv=$2 artifact=$3
    run_logged "create the $label venv" "$WORK/$label-venv.log" "$UV" venv -q --python "$PY" "$venv"
    run_logged "install the $label with [emulator] ($AIRFLOW_PIN)" "$WORK/$label-install.log" \
        "$UV" pip install -q --python "$venv/bin/python" --compile-bytecode \
        -c "$CONSTRAINTS" --build-constraint "$BUILD_CONSTRAINTS" "airflow-provider-cex[emulator] @ file://$artifact"
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
    ok "$label installed into a clean venv with $AIRFLOW_PIN; imports $got_version from the venv, not the repo"
}

# --- 4. wheel in a clean venv: import, Airflow sees the provider, the emulator serves ----------------------
V1="$WORK/venv-wheel"
install_and_import wheel "$V1" "$WHEEL"

providers=$(clean_env "$V1/bin/airflow" providers list -o plain 2>&1) ||
    { echo "$providers" | tail -n 40 >&2; fail "'airflow providers list' failed"; }
grep -Eq "^airflow-provider-cex[[:space:]].*[[:space:]]$VERSION[[:space:]]*$" <<<"$providers" ||
    { echo "$providers" | tail -n 40 >&2; fail "'airflow providers list' does not show airflow-provider-cex $VERSION"; }
ok "airflow providers list shows airflow-provider-cex $VERSION"

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

# --- 5. sdist in a second clean venv (uv builds the wheel from the sdist) ---------------------------------
install_and_import sdist "$WORK/venv-sdist" "$SDIST"

echo "packaging check passed ($((SECONDS - START)) s)"
