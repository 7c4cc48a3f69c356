"""The `pytest --ferropool` plugin, run the way users run it: pytest in a subprocess, on a
small suite that uses concurrent.futures and asyncio, through the installed entry point."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ferropool
from conftest import STDLIB_TPE, child_env, run_python

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
# Each inner pytest run is killed (and the test fails) if it takes longer than this.
RUN_TIMEOUT = 90


def qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


STDLIB_THREADS = qualified(STDLIB_TPE)
STDLIB_PROCESSES = qualified(concurrent.futures.process.ProcessPoolExecutor)
OUR_THREADS = qualified(ferropool.ThreadPoolExecutor)
OUR_PROCESSES = qualified(ferropool.ProcessPoolExecutor)
HEADER = {
    "all": f"ferropool {ferropool.__version__}: concurrent.futures.ThreadPoolExecutor and "
    "ProcessPoolExecutor are ferropool's",
    "threads": f"ferropool {ferropool.__version__}: concurrent.futures.ThreadPoolExecutor is "
    "ferropool's",
    "processes": f"ferropool {ferropool.__version__}: concurrent.futures.ProcessPoolExecutor "
    "is ferropool's",
}

# The suite under test. The conftest binds the class at import time, as a library that
# makes its pools at import would, and writes down which classes each test saw.
CONFTEST = """
import json
import threading
from concurrent.futures import ThreadPoolExecutor as CONFTEST_THREADS

import pytest

SEEN = {}
RELEASE = threading.Event()


def note(key, cls):
    SEEN[key] = f"{cls.__module__}.{cls.__qualname__}"


note("conftest_import", CONFTEST_THREADS)


@pytest.fixture
def seen():
    return note


@pytest.fixture
def release():
    return RELEASE


def pytest_sessionfinish(session):
    (session.config.rootpath / "seen.json").write_text(json.dumps(SEEN))


def pytest_unconfigure(config):
    # Lets a task that a test leaked finish once the run has reported it.
    RELEASE.set()
"""

TEST_WORK = """
import asyncio
import concurrent.futures
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

MODULE_THREADS = ThreadPoolExecutor
MODULE_PROCESSES = ProcessPoolExecutor


def square(x):
    return x * x


def test_process_pool(seen):
    with concurrent.futures.ProcessPoolExecutor(max_workers=2) as ex:
        assert list(ex.map(square, range(6), chunksize=2)) == [0, 1, 4, 9, 16, 25]
        assert ex.submit(square, 7).result(timeout=30) == 49
    seen("module_processes", MODULE_PROCESSES)
    seen("processes", type(ex))


def test_thread_pool_wait_as_completed(seen):
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
        futures = [ex.submit(square, i) for i in range(20)]
        done, not_done = concurrent.futures.wait(futures, timeout=30)
        assert len(done) == 20 and not not_done
        values = sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=30))
        assert values == [i * i for i in range(20)]
        assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
    seen("module_threads", MODULE_THREADS)
    seen("threads", type(ex))


def test_errors_and_cancel():
    with ThreadPoolExecutor(max_workers=1) as ex:
        future = ex.submit(int, "x")
        try:
            future.result(timeout=30)
        except ValueError as exc:
            assert "invalid literal" in str(exc)
        else:
            raise AssertionError("no ValueError")


def test_run_in_executor(seen):
    async def main():
        loop = asyncio.get_running_loop()
        on_default = await loop.run_in_executor(None, square, 3)
        with ThreadPoolExecutor(max_workers=2) as ex:
            on_ours = await loop.run_in_executor(ex, square, 4)
            wrapped = await asyncio.wrap_future(ex.submit(square, 5))
        return on_default, on_ours, wrapped, type(loop._default_executor)

    on_default, on_ours, wrapped, default_type = asyncio.run(main())
    assert (on_default, on_ours, wrapped) == (9, 16, 25)
    seen("asyncio_default", default_type)
"""

TEST_FIXTURES = """
import time

KEPT = []


def test_process_pool_fixture(process_pool, seen):
    assert process_pool.submit(pow, 2, 10).result(timeout=30) == 1024
    assert list(process_pool.map(abs, [-1, -2])) == [1, 2]
    seen("process_pool_fixture", type(process_pool))
    KEPT.append(process_pool)


def test_thread_pool_fixture(thread_pool, seen):
    assert thread_pool.submit(pow, 2, 10).result(timeout=30) == 1024
    assert list(thread_pool.map(abs, [-1, -2])) == [1, 2]
    seen("thread_pool_fixture", type(thread_pool))
    KEPT.append(thread_pool)


def test_queued_work_is_cancelled_and_short_work_awaited(thread_pool):
    # More than the workers can start before teardown: the queued ones are cancelled,
    # the running ones finish within the grace period, and the test passes.
    KEPT.append([thread_pool.submit(time.sleep, 0.2) for _ in range(200)])


def test_pools_were_shut_down_after_their_tests():
    process_pool, thread_pool, futures = KEPT
    for pool in (process_pool, thread_pool):
        try:
            pool.submit(abs, 1)
        except RuntimeError as exc:
            assert "after shutdown" in str(exc)
        else:
            raise AssertionError(f"{pool!r} takes work after its test")
    assert all(f.done() for f in futures)
    assert any(f.cancelled() for f in futures)
    assert not any(f.exception() for f in futures if not f.cancelled())
"""

TEST_LEAK = """
import time


def wait_for_release(event):
    event.wait(60)


def test_leaves_a_process_running(process_pool):
    assert process_pool.submit(abs, -1).result(timeout=30) == 1
    process_pool.submit(time.sleep, 300)


def test_process_pool_after_the_leak(process_pool):
    assert process_pool.submit(abs, -2).result(timeout=30) == 2


def test_leaves_a_thread_running(thread_pool, release):
    thread_pool.submit(wait_for_release, release)


def test_thread_pool_after_the_leak(thread_pool):
    assert thread_pool.submit(abs, -3).result(timeout=30) == 3
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_work=TEST_WORK, test_fixtures=TEST_FIXTURES)
    return pytester


def run(pytester, *args):
    """pytest in a subprocess, with the installed plugins (ferropool's among them)."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=RUN_TIMEOUT)


def seen(pytester) -> dict:
    return json.loads((pytester.path / "seen.json").read_text())


def ferropool_lines(result) -> list:
    """Output lines that say something about ferropool (the header line)."""
    return [
        line
        for line in result.outlines + result.errlines
        if line.startswith("ferropool") or "ferropool's" in line
    ]


def expect(threads: str, processes: str) -> dict:
    return {
        "conftest_import": threads,
        "module_threads": threads,
        "threads": threads,
        "asyncio_default": threads,
        "module_processes": processes,
        "processes": processes,
        # The fixtures give ferropool's executors with or without the flag.
        "thread_pool_fixture": OUR_THREADS,
        "process_pool_fixture": OUR_PROCESSES,
    }


def test_import_ferropool_does_not_import_pytest():
    result = run_python(
        """
        import sys
        import ferropool
        assert not {"pytest", "_pytest", "ferropool.pytest_plugin"} & set(sys.modules)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_without_the_flag_nothing_changes(suite):
    # The plugin is installed (entry point) but not asked for: the run is the same as
    # with the plugin blocked, and the stdlib's classes are used.
    result = run(suite, "-v")
    result.assert_outcomes(passed=8)
    assert seen(suite) == expect(STDLIB_THREADS, STDLIB_PROCESSES)
    assert ferropool_lines(result) == []
    assert any(
        line.startswith("plugins:") and "ferropool" in line for line in result.outlines
    ), result.outlines

    # The same tests with the plugin blocked: the same outcome, the same classes.
    blocked = run(suite, "-p", "no:ferropool", "test_work.py")
    blocked.assert_outcomes(passed=4)
    seen_blocked = seen(suite)
    unblocked = run(suite, "test_work.py")
    unblocked.assert_outcomes(passed=4)
    assert seen(suite) == seen_blocked == {
        key: value
        for key, value in expect(STDLIB_THREADS, STDLIB_PROCESSES).items()
        if "fixture" not in key
    }
    assert ferropool_lines(blocked) == ferropool_lines(unblocked) == []


def test_with_the_flag_the_suite_runs_on_ferropool(suite):
    result = run(suite, "--ferropool")
    result.assert_outcomes(passed=8)
    assert seen(suite) == expect(OUR_THREADS, OUR_PROCESSES)
    # One header line, with the version.
    assert ferropool_lines(result) == [HEADER["all"]], result.outlines


@pytest.mark.parametrize(
    "args, threads, processes, mode",
    [
        (["--ferropool=threads"], OUR_THREADS, STDLIB_PROCESSES, "threads"),
        (["--ferropool=processes"], STDLIB_THREADS, OUR_PROCESSES, "processes"),
        # The last one given wins, as for any option.
        (["--ferropool=threads", "--ferropool"], OUR_THREADS, OUR_PROCESSES, "all"),
    ],
    ids=["threads", "processes", "last-wins"],
)
def test_flag_limited_to_one_pool(suite, args, threads, processes, mode):
    result = run(suite, *args)
    result.assert_outcomes(passed=8)
    assert seen(suite) == expect(threads, processes)
    assert ferropool_lines(result) == [HEADER[mode]], result.outlines


def test_flag_before_a_path_leaves_the_path_alone(suite):
    # `--ferropool` takes no separate value: the path after it is what to collect.
    result = run(suite, "--ferropool", "test_work.py")
    result.assert_outcomes(passed=4)
    assert seen(suite)["threads"] == OUR_THREADS


def test_flag_with_an_unknown_value_is_a_usage_error(suite):
    result = run(suite, "--ferropool=greenlets")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--ferropool*greenlets*"])


@pytest.mark.parametrize(
    "value, threads, processes, mode",
    [
        ("true", OUR_THREADS, OUR_PROCESSES, "all"),
        ("threads", OUR_THREADS, STDLIB_PROCESSES, "threads"),
        ("processes", STDLIB_THREADS, OUR_PROCESSES, "processes"),
        ("false", STDLIB_THREADS, STDLIB_PROCESSES, None),
    ],
    ids=["true", "threads", "processes", "false"],
)
def test_ini_option(suite, value, threads, processes, mode):
    suite.makeini(f"[pytest]\nferropool = {value}\n")
    result = run(suite)
    result.assert_outcomes(passed=8)
    assert seen(suite) == expect(threads, processes)
    assert ferropool_lines(result) == ([HEADER[mode]] if mode else []), result.outlines


PYTEST_9_2 = tuple(pytest.version_tuple[:2]) >= (9, 2)


@pytest.mark.parametrize(
    "table",
    [
        "tool.pytest.ini_options",
        pytest.param(
            "tool.pytest",
            marks=pytest.mark.skipif(not PYTEST_9_2, reason="pytest < 9.2: no typed TOML"),
        ),
    ],
)
def test_pyproject_toml_boolean(suite, table):
    suite.makepyprojecttoml(f"[{table}]\nferropool = true\nferropool_leak_timeout = 2.5\n")
    result = run(suite)
    result.assert_outcomes(passed=8)
    assert seen(suite) == expect(OUR_THREADS, OUR_PROCESSES)
    assert ferropool_lines(result) == [HEADER["all"]], result.outlines


def test_command_line_wins_over_the_ini_option(suite):
    suite.makeini("[pytest]\nferropool = processes\n")
    result = run(suite, "--ferropool=threads")
    result.assert_outcomes(passed=8)
    assert seen(suite) == expect(OUR_THREADS, STDLIB_PROCESSES)


@pytest.mark.parametrize(
    "ini, message",
    [
        ("ferropool = maybe", "*ferropool = maybe: expected true, false, threads or processes*"),
        ("ferropool_leak_timeout = soon", "*ferropool_leak_timeout = soon: expected*seconds*"),
        ("ferropool_leak_timeout = -1", "*ferropool_leak_timeout = -1*: expected*seconds*"),
        ("ferropool_leak_timeout = inf", "*ferropool_leak_timeout = inf: expected*seconds*"),
    ],
    ids=["mode", "not-a-number", "negative", "infinite"],
)
def test_bad_ini_values_are_usage_errors(suite, ini, message):
    suite.makeini(f"[pytest]\n{ini}\n")
    result = run(suite)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize("flag", [[], ["--ferropool"]], ids=["plain", "flag"])
def test_ferropool_imported_before_pytest_starts(pytester, flag):
    # A runner script that imports ferropool, then calls pytest.main(): pytest marks the
    # packages of plugin distributions for assertion rewriting, and warns (an error here)
    # about one imported too early, unless its docstring opts out.
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        """
        import concurrent.futures

        def test_pool():
            with concurrent.futures.ThreadPoolExecutor(2) as ex:
                assert ex.submit(abs, -1).result(timeout=30) == 1
        """
    )
    runner = pytester.makefile(
        ".txt",
        runner=f"""
        import sys
        import ferropool
        import pytest
        sys.exit(pytest.main(["-p", "no:cacheprovider", *{flag!r}]))
        """,
    )
    result = pytester.run(sys.executable, str(runner), timeout=RUN_TIMEOUT)
    assert result.ret == 0, "\n".join(result.outlines + result.errlines)
    result.stdout.fnmatch_lines(["*1 passed*"])


def test_uninstalled_at_the_end(pytester):
    pytester.makepyfile(
        """
        import concurrent.futures
        import ferropool

        def test_installed():
            assert concurrent.futures.ThreadPoolExecutor is ferropool.ThreadPoolExecutor
            assert concurrent.futures.ProcessPoolExecutor is ferropool.ProcessPoolExecutor
        """
    )
    stdlib_processes = concurrent.futures.ProcessPoolExecutor
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE
    try:
        # In this process, so that what the run leaves behind can be seen.
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--ferropool")
        result.assert_outcomes(passed=1)
        assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE
        assert concurrent.futures.ProcessPoolExecutor is stdlib_processes
    finally:
        ferropool.uninstall()


@pytest.mark.parametrize("flag", [[], ["--ferropool"]], ids=["plain", "flag"])
def test_leaked_work_fails_the_test_instead_of_hanging(pytester, flag):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_leak=TEST_LEAK)
    # Without the kill of the process pool's workers, the run would last 300 s and time
    # out; without the timeout at teardown, it would hang on the thread until released.
    result = run(pytester, *flag, "-o", "ferropool_leak_timeout=0.5")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaves_a_process_running*",
            "process_pool: work still running 0.5 s after "
            "test_leak.py::test_leaves_a_process_running ended "
            "(calls not started yet were cancelled):",
            "  time.sleep(300)",
            "The worker processes were killed.",
            "*ERROR at teardown of test_leaves_a_thread_running*",
            "thread_pool: work still running 0.5 s after "
            "test_leak.py::test_leaves_a_thread_running ended "
            "(calls not started yet were cancelled):",
            "  test_leak.wait_for_release(<threading.Event*)",
            "  in thread 'ThreadPoolExecutor-*_0':",
            '*File "*test_leak.py", line *, in wait_for_release',
            "*event.wait(60)",
            "A thread cannot be stopped*",
            "ferropool: 1 worker thread(s) that tests left running are still running "
            "(ThreadPoolExecutor-*_0); the interpreter waits for them at exit*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "ERROR test_leak.py::test_leaves_a_process_running*",
            "ERROR test_leak.py::test_leaves_a_thread_running*",
        ]
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_repository_example_tests_pass_with_the_flag(tmp_path):
    """`pytest --ferropool` on this repository's tests of its example scripts."""
    tests = ["tests/test_examples.py", "tests/test_process_examples.py"]
    env = child_env()
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--ferropool",
         f"--basetemp={tmp_path / 'basetemp'}", "-rA", *tests],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
        env=env,
    )
    out = proc.stdout
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{proc.stderr}"
    assert HEADER["all"] in out.splitlines(), out
    assert " passed" in out and " failed" not in out and " skipped" not in out, out
