"""C8: ferropool.install() / ferropool.uninstall()."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

import ferropool
from conftest import SHORT, STDLIB_TPE, run_python

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def _restore():
    ferropool.uninstall()
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE
    try:
        yield
    finally:
        ferropool.uninstall()
        assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE


def third_party_code():
    """What a library does: build its own pool through the concurrent.futures package."""
    import concurrent.futures as library_cf

    with library_cf.ThreadPoolExecutor(max_workers=2) as ex:
        fut = ex.submit(sum, [1, 2, 3])
        return type(ex), type(fut), fut.result(timeout=SHORT)


def test_not_installed_by_import():
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE


def test_install_swaps_the_package_attribute():
    ferropool.install()
    assert concurrent.futures.ThreadPoolExecutor is ferropool.ThreadPoolExecutor
    ferropool.uninstall()
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE


@pytest.mark.parametrize(
    "threads, processes", [(True, False), (False, True), (False, False), (True, True)]
)
def test_install_one_pool_only(threads, processes):
    stdlib_processes = concurrent.futures.process.ProcessPoolExecutor
    ferropool.install(threads=threads, processes=processes)
    assert (concurrent.futures.ThreadPoolExecutor is ferropool.ThreadPoolExecutor) is threads
    assert (concurrent.futures.ProcessPoolExecutor is ferropool.ProcessPoolExecutor) is processes
    ferropool.uninstall()
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE
    assert concurrent.futures.ProcessPoolExecutor is stdlib_processes


def test_install_keywords_only():
    with pytest.raises(TypeError):
        ferropool.install(True)
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE


def test_third_party_code_gets_ferropool_after_install():
    ex_type, fut_type, value = third_party_code()
    assert ex_type is STDLIB_TPE
    assert value == 6

    ferropool.install()
    ex_type, fut_type, value = third_party_code()
    assert ex_type is ferropool.ThreadPoolExecutor
    assert issubclass(fut_type, ferropool.Future)
    assert value == 6

    ferropool.uninstall()
    ex_type, fut_type, value = third_party_code()
    assert ex_type is STDLIB_TPE
    assert value == 6


def test_from_import_after_install():
    ferropool.install()
    namespace: dict = {}
    exec("from concurrent.futures import ThreadPoolExecutor", namespace)
    assert namespace["ThreadPoolExecutor"] is ferropool.ThreadPoolExecutor


def test_install_and_uninstall_are_idempotent():
    ferropool.install()
    ferropool.install()
    assert concurrent.futures.ThreadPoolExecutor is ferropool.ThreadPoolExecutor
    ferropool.uninstall()
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE
    ferropool.uninstall()
    assert concurrent.futures.ThreadPoolExecutor is STDLIB_TPE
    ferropool.install()
    assert concurrent.futures.ThreadPoolExecutor is ferropool.ThreadPoolExecutor


def test_install_returns_none():
    assert ferropool.install() is None
    assert ferropool.uninstall() is None


def test_other_names_untouched():
    before = {
        name: getattr(concurrent.futures, name)
        for name in ("Future", "wait", "as_completed", "Executor", "CancelledError")
    }
    ferropool.install()
    after = {name: getattr(concurrent.futures, name) for name in before}
    assert after == before


def test_executors_made_before_install_keep_working():
    old = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        ferropool.install()
        assert type(old) is STDLIB_TPE
        assert old.submit(abs, -3).result(timeout=SHORT) == 3
    finally:
        old.shutdown()


def test_ferropool_executors_keep_working_after_uninstall():
    ferropool.install()
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        ferropool.uninstall()
        assert type(ex) is ferropool.ThreadPoolExecutor
        assert ex.submit(abs, -3).result(timeout=SHORT) == 3
    finally:
        ex.shutdown()


def test_asyncio_default_executor_after_install():
    async def main():
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(None, abs, -7)
        return value, type(loop._default_executor)

    ferropool.install()
    value, executor_type = asyncio.run(main())
    assert value == 7
    assert executor_type is ferropool.ThreadPoolExecutor


def test_isinstance_checks_of_third_party_code_still_hold():
    # Code that checks `isinstance(ex, concurrent.futures.ThreadPoolExecutor)` with the
    # name looked up after install() sees ferropool's class, before it, the stdlib's:
    # both accept a ferropool executor.
    with ferropool.ThreadPoolExecutor(max_workers=1) as ex:
        assert isinstance(ex, concurrent.futures.ThreadPoolExecutor)
        ferropool.install()
        assert isinstance(ex, concurrent.futures.ThreadPoolExecutor)


def test_install_in_a_fresh_interpreter():
    result = run_python(
        """
        import concurrent.futures, sys
        import ferropool
        assert concurrent.futures.ThreadPoolExecutor is concurrent.futures.thread.ThreadPoolExecutor
        ferropool.install()
        # a module imported after install, using the usual from-import
        import types
        mod = types.ModuleType("thirdparty")
        exec("from concurrent.futures import ThreadPoolExecutor\\n"
             "def go():\\n"
             "    with ThreadPoolExecutor(2) as ex:\\n"
             "        return type(ex), list(ex.map(abs, [-1, -2]))\\n", mod.__dict__)
        cls, values = mod.go()
        assert cls is ferropool.ThreadPoolExecutor, cls
        assert values == [1, 2]
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
