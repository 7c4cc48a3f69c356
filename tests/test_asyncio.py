"""C4: ferropool executors and futures with asyncio."""

from __future__ import annotations

import asyncio
import threading

import pytest

import ferropool
from conftest import SHORT, wait_until

pytestmark = pytest.mark.timeout(20)


def _thread_name():
    return threading.current_thread().name


def _fail(message):
    raise LookupError(message)


def test_run_in_executor():
    async def main(ex):
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(ex, pow, 3, 4)
        name = await loop.run_in_executor(ex, _thread_name)
        return value, name

    with ferropool.ThreadPoolExecutor(max_workers=2, thread_name_prefix="aio") as ex:
        value, name = asyncio.run(main(ex))
    assert value == 81
    assert name.startswith("aio_")


def test_run_in_executor_exception():
    async def main(ex):
        loop = asyncio.get_running_loop()
        with pytest.raises(LookupError, match="from the pool"):
            await loop.run_in_executor(ex, _fail, "from the pool")
        return True

    with ferropool.ThreadPoolExecutor(max_workers=2) as ex:
        assert asyncio.run(main(ex))


def test_run_in_executor_many_concurrently():
    async def main(ex):
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(ex, abs, -i) for i in range(300)))

    with ferropool.ThreadPoolExecutor(max_workers=4) as ex:
        assert asyncio.run(main(ex)) == list(range(300))


def test_wrap_future():
    async def main(ex):
        fut = ex.submit(pow, 2, 10)
        wrapped = asyncio.wrap_future(fut)
        assert isinstance(wrapped, asyncio.Future)
        return await wrapped

    with ferropool.ThreadPoolExecutor(max_workers=1) as ex:
        assert asyncio.run(main(ex)) == 1024


def test_wrap_future_of_finished_and_failed_futures():
    async def main():
        ok = ferropool.Future()
        ok.set_result("ok")
        bad = ferropool.Future()
        bad.set_exception(KeyError("bad"))
        assert await asyncio.wrap_future(ok) == "ok"
        with pytest.raises(KeyError):
            await asyncio.wrap_future(bad)
        return True

    assert asyncio.run(main())


def test_wrap_future_of_hand_made_future_completed_from_a_thread():
    async def main():
        fut = ferropool.Future()
        timer = threading.Timer(0.05, fut.set_result, args=("late",))
        timer.start()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), SHORT)
        finally:
            timer.join()

    assert asyncio.run(main()) == "late"


def test_cancelling_the_asyncio_side_cancels_the_queued_future():
    gate = threading.Event()

    async def main(ex):
        blocker = ex.submit(gate.wait, SHORT)
        queued = ex.submit(abs, -1)
        wrapped = asyncio.wrap_future(queued)
        await asyncio.sleep(0)
        wrapped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wrapped
        return blocker, queued

    with ferropool.ThreadPoolExecutor(max_workers=1) as ex:
        try:
            blocker, queued = asyncio.run(main(ex))
            assert wait_until(queued.cancelled)
        finally:
            gate.set()
    assert blocker.result(timeout=0) is True


def test_cancelled_concurrent_future_cancels_the_asyncio_side():
    async def main():
        fut = ferropool.Future()
        wrapped = asyncio.wrap_future(fut)
        asyncio.get_running_loop().call_later(0.02, fut.cancel)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(wrapped, SHORT)
        return fut.cancelled()

    assert asyncio.run(main())


def test_set_default_executor_run_in_executor_none_and_to_thread():
    async def main(ex):
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ex)
        a = await loop.run_in_executor(None, _thread_name)
        b = await asyncio.to_thread(_thread_name)
        c = await asyncio.to_thread(pow, 5, 2)
        return a, b, c

    ex = ferropool.ThreadPoolExecutor(max_workers=2, thread_name_prefix="dflt")
    try:
        a, b, c = asyncio.run(main(ex))
        assert a.startswith("dflt_") and b.startswith("dflt_")
        assert c == 25
        # asyncio.run() shuts the default executor down at the end
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            ex.submit(abs, 1)
    finally:
        ex.shutdown()


def test_to_thread_propagates_exceptions():
    async def main(ex):
        asyncio.get_running_loop().set_default_executor(ex)
        with pytest.raises(LookupError, match="to_thread"):
            await asyncio.to_thread(_fail, "to_thread")
        return True

    ex = ferropool.ThreadPoolExecutor(max_workers=1)
    try:
        assert asyncio.run(main(ex))
    finally:
        ex.shutdown()


def test_explicit_loop_shutdown_default_executor():
    ex = ferropool.ThreadPoolExecutor(max_workers=2)
    loop = asyncio.new_event_loop()
    try:
        loop.set_default_executor(ex)
        assert loop.run_until_complete(loop.run_in_executor(None, abs, -4)) == 4
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        ex.shutdown()
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)


def test_asyncio_wait_on_wrapped_ferropool_futures():
    async def main(ex):
        wrapped = [asyncio.wrap_future(ex.submit(pow, i, 2)) for i in range(20)]
        done, pending = await asyncio.wait(wrapped, timeout=SHORT)
        assert not pending
        return sorted(f.result() for f in done)

    with ferropool.ThreadPoolExecutor(max_workers=3) as ex:
        assert asyncio.run(main(ex)) == sorted(i * i for i in range(20))


def test_event_loop_in_a_worker_thread():
    def run_loop_here():
        async def inner():
            await asyncio.sleep(0.001)
            return threading.current_thread().name

        return asyncio.run(inner())

    with ferropool.ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopy") as ex:
        assert ex.submit(run_loop_here).result(timeout=SHORT) == "loopy_0"
