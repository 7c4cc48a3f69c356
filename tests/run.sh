#!/usr/bin/env bash
# Runs the whole pytest suite against the built wheel, on every CPython >= 3.9 here.
#
#   bash tests/run.sh [PYTEST ARGS...]      e.g.  bash tests/run.sh -x -k map
#
# 1. Builds the wheel once: maturin build --release (one abi3 wheel for CPython >= 3.9).
# 2. For python3 and for every other CPython >= 3.9 under `pyenv root`/versions: makes a
#    fresh venv in a temp dir, installs the wheel (with its [test] extra) and the test
#    tools, checks that `import ferropool` finds the installed wheel and not the source
#    tree under python/, and runs pytest from the repo root with the extra args.
# 3. Prints one line per interpreter, and fails if any of them failed (pytest's exit
#    code 5, "no tests ran", is a failure too).
#
# Environment:
#   FERROPOOL_PYTHONS="python3 /path/to/python3.13"  test these interpreters only
#   FERROPOOL_WHEEL=dist/ferropool-....whl            test this wheel, skip the build
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# Test tools, with minimum versions; the wheel's [test] extra may add more.
test_deps=("pytest>=7.0" "pytest-timeout>=2.1" "hypothesis>=6.70")

# Keep the caller's environment out of the venvs: the tests must see the wheel only.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONSAFEPATH VIRTUAL_ENV
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONNOUSERSITE=1

work=$(mktemp -d "${TMPDIR:-/tmp}/ferropool-tests.XXXXXX")
trap 'rm -rf "$work"' EXIT

say() { printf '\n=== %s\n' "$*"; }

# --- which interpreters ------------------------------------------------------------------
# Prints "ok <label> <version> <realpath>" or "skip <label> <why>" for one interpreter.
probe() {
    local label=$1 python=$2 info
    # Runs on any Python, 2.x included, to tell why it is skipped.
    if ! info=$("$python" -c '
import os, platform, sys, sysconfig
v = sys.version_info
why = ""
if platform.python_implementation() != "CPython":
    why = platform.python_implementation() + " (the wheel is for CPython)"
elif v < (3, 9):
    why = "older than 3.9"
elif sysconfig.get_config_var("Py_GIL_DISABLED"):
    why = "free-threaded build (cannot load abi3 wheels)"
sys.stdout.write("%d.%d.%d %s %s\n" % (v[0], v[1], v[2], os.path.realpath(sys.executable), why))
' 2>/dev/null); then
        echo "skip $label $python does not run"
        return
    fi
    local version exe why
    read -r version exe why <<<"$info"
    if [[ -n $why ]]; then
        echo "skip $label $version: $why"
    else
        echo "ok $label $version $exe"
    fi
}

candidates=()  # pairs: label, interpreter
if [[ -n ${FERROPOOL_PYTHONS:-} ]]; then
    for python in $FERROPOOL_PYTHONS; do candidates+=("$python" "$python"); done
else
    candidates+=(python3 python3)
    pyenv_root=
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_root=$(pyenv root)
    elif [[ -d ${PYENV_ROOT:-$HOME/.pyenv}/versions ]]; then
        pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
    fi
    if [[ -n $pyenv_root ]]; then
        while IFS= read -r python; do
            candidates+=("pyenv:$(basename "$(dirname "$(dirname "$python")")")" "$python")
        done < <(for python in "$pyenv_root"/versions/*/bin/python; do
            if [[ -x $python ]]; then echo "$python"; fi
        done | sort -V)
    fi
fi

say "interpreters"
labels=() versions=() pythons=() seen=" "
for ((i = 0; i < ${#candidates[@]}; i += 2)); do
    label=${candidates[i]} python=${candidates[i + 1]}
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "  skip  $label: not found"
        continue
    fi
    read -r status _ rest <<<"$(probe "$label" "$python")"
    if [[ $status != ok ]]; then
        echo "  skip  $label $rest"
        continue
    fi
    read -r version exe <<<"$rest"
    if [[ $seen == *" $exe "* ]]; then
        echo "  skip  $label $version: same interpreter as above"
        continue
    fi
    seen+="$exe "
    labels+=("$label") versions+=("$version") pythons+=("$exe")
    echo "  test  $label $version ($exe)"
done
if ((${#pythons[@]} == 0)); then
    echo "no CPython >= 3.9 found" >&2
    exit 1
fi

# --- the wheel -----------------------------------------------------------------------------
if [[ -n ${FERROPOOL_WHEEL:-} ]]; then
    [[ -f $FERROPOOL_WHEEL ]] || { echo "no such wheel: $FERROPOOL_WHEEL" >&2; exit 1; }
    wheel=$(realpath "$FERROPOOL_WHEEL")
    say "wheel (given): $wheel"
else
    build_python=${pythons[0]}
    say "building the wheel with maturin (release)"
    if ! "$build_python" -m maturin --version >/dev/null 2>&1; then
        "$build_python" -m pip install --quiet "maturin>=1.9.4,<2"
    fi
    "$build_python" -m maturin build --release --interpreter "$build_python" --out "$work/dist"
    wheels=("$work"/dist/ferropool-*.whl)
    if ((${#wheels[@]} != 1)) || [[ ! -f ${wheels[0]} ]]; then
        echo "expected one wheel in $work/dist, found: ${wheels[*]}" >&2
        exit 1
    fi
    wheel=${wheels[0]}
fi

# --- one venv per interpreter ----------------------------------------------------------------
# Imports ferropool first (so the tests cannot pick up another copy later), checks where it
# comes from, then runs pytest and writes its counts to a file for the summary.
runner='
import json, os, sys
source, counts_file, args = os.path.realpath(sys.argv[1]), sys.argv[2], sys.argv[3:]
import ferropool
where = os.path.realpath(ferropool.__file__)
print("ferropool %s from %s" % (ferropool.__version__, where), flush=True)
if where.startswith(source + os.sep):
    sys.exit("error: imported the source tree (%s), not the installed wheel" % source)
import pytest

class Counts:
    def pytest_terminal_summary(self, terminalreporter):
        stats = terminalreporter.stats
        counts = {k: len(stats.get(k, ())) for k in ("passed", "failed", "error", "skipped")}
        with open(counts_file, "w") as f:
            json.dump(counts, f)

sys.exit(int(pytest.main(args, plugins=[Counts()])))
'

width=0
for label in "${labels[@]}"; do ((${#label} > width)) && width=${#label}; done
results=() total_passed=0 total_failed=0 total_skipped=0 any_failed=0
for i in "${!pythons[@]}"; do
    label=${labels[i]} version=${versions[i]} python=${pythons[i]}
    venv="$work/venv-$i" counts="$work/counts-$i.json"
    say "$label $version: venv, install, pytest"
    started=$SECONDS
    rc=0
    if ! "$python" -m venv "$venv"; then
        rc=venv
    elif ! "$venv/bin/python" -m pip install --quiet "${wheel}[test]" "${test_deps[@]}"; then
        rc=pip
    else
        "$venv/bin/python" -c "$runner" "$repo/python" "$counts" "$@" || rc=$?
    fi
    elapsed=$((SECONDS - started))

    passed=0 failed=0 skipped=0
    if [[ -f $counts ]]; then
        read -r passed failed skipped < <("$python" -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["passed"], c["failed"] + c["error"], c["skipped"])' "$counts")
    fi
    case $rc in
        0) verdict=PASS ;;
        5) verdict="FAIL (no tests ran)" ;;
        venv | pip) verdict="FAIL ($rc step failed)" ;;
        *) verdict="FAIL (pytest exit $rc)" ;;
    esac
    if [[ $rc != 0 ]]; then
        any_failed=1
        ((failed == 0)) && failed=1  # a run that failed without a failed test counts as one
    fi
    total_passed=$((total_passed + passed)) total_failed=$((total_failed + failed))
    total_skipped=$((total_skipped + skipped))
    results+=("$(printf '%-*s %-8s %-24s %5d passed %4d failed %4d skipped %5ds' "$width" \
        "$label" "$version" "$verdict" "$passed" "$failed" "$skipped" "$elapsed")")
done

say "summary (wheel: $(basename "$wheel"))"
printf '  %s\n' "${results[@]}"
if ((any_failed)); then
    echo "FAILED on at least one interpreter"
else
    echo "all ${#pythons[@]} interpreters passed"
fi
echo "total: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit "$any_failed"
