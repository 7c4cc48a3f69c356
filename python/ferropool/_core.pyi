"""Type stubs for ferropool's native core (``ferropool._core``).

Users import from ``ferropool``; these are the Rust bases of its classes and the
functions its Python layer builds on.
"""

from collections.abc import Callable, Iterator
from concurrent.futures._base import DoneAndNotDoneFutures
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")

__version__: str

class Future(Generic[_T]):
    """The future's state machine; base of ``ferropool.Future``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Future[_T]: ...
    def cancel(self) -> bool:
        """Cancel the future if it has not started; True if it is (now) cancelled."""
    def cancelled(self) -> bool:
        """True if the future was cancelled."""
    def running(self) -> bool:
        """True if the future is currently executing."""
    def done(self) -> bool:
        """True if the future was cancelled or finished executing."""
    def result(self, timeout: float | None = None) -> _T:
        """The call's result; waits up to `timeout` seconds (forever if None).

        Raises TimeoutError if not finished in time, CancelledError if cancelled, and
        the call's own exception if it raised. Ctrl-C interrupts the wait.
        """
    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's exception (None if it returned); waits like `result()`."""
    def add_done_callback(self, fn: Callable[[Future[_T]], object], /) -> None:
        """Call `fn(future)` when the future is done (at once, here, if it already is).

        An Exception raised by `fn` is logged to the ``concurrent.futures`` logger.
        """
    def set_running_or_notify_cancel(self) -> bool:
        """PENDING to RUNNING (True), or acknowledge a cancel (False). For executors."""
    def set_result(self, result: _T) -> None:
        """Finish with `result`; InvalidStateError if already done. For executors."""
    def set_exception(self, exception: BaseException | None) -> None:
        """Finish with `exception`; InvalidStateError if already done. For executors."""
    # The stdlib's private protocol, served lazily for concurrent.futures.wait & co.
    @property
    def _state(self) -> str: ...
    @property
    def _condition(self) -> Any: ...
    @property
    def _waiters(self) -> list[Any]: ...
    @property
    def _result(self) -> Any: ...
    @property
    def _exception(self) -> Any: ...

class ThreadPoolExecutor:
    """The queue and the workers; base of ``ferropool.ThreadPoolExecutor``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ThreadPoolExecutor: ...
    def _configure(
        self,
        max_workers: int,
        name_prefix: str,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        start_worker: Callable[[str, Worker], Any],
    ) -> None: ...
    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Schedule `fn(*args, **kwargs)` and return a Future for it.

        RuntimeError after shutdown (or interpreter exit); BrokenThreadPool once a
        worker's initializer failed.
        """
    def _begin_shutdown(self, cancel_futures: bool) -> list[Any]: ...
    def _close(self) -> None: ...
    def _reset_after_fork(self) -> None: ...
    @property
    def _threads(self) -> set[Any]: ...
    @property
    def _shutdown(self) -> bool: ...
    @property
    def _broken(self) -> str | bool: ...

class Worker:
    """The body of one worker thread (the target of its ``threading.Thread``)."""

    def __call__(self) -> None: ...

class ProcessPoolExecutor:
    """The queue, the pipes and the pool's threads; base of ``ferropool.ProcessPoolExecutor``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> ProcessPoolExecutor: ...
    def _configure(
        self,
        *,
        max_workers: int,
        fork: bool,
        max_tasks: int | None,
        mp_context: Any,
        init: Any,
        spawn_worker: Callable[[Any, Any, int | None], tuple[Any, int, int, int, int]],
        start_thread: Callable[[str, Completer], Any],
        dumps_fallback: Callable[[Any, BaseException | None], Any],
        main_by_value: bool,
        name: str,
    ) -> None: ...
    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Schedule `fn(*args, **kwargs)` in a worker process and return a Future for it.

        The call is pickled here; one that does not pickle fails its own future (with
        the traceback as ``__cause__``). RuntimeError after shutdown (or interpreter
        exit); BrokenProcessPool once a worker died or an initializer failed.
        """
    def _begin_shutdown(self, cancel_futures: bool) -> None: ...
    def _join(self) -> None: ...
    @property
    def _processes(self) -> dict[int, Any]: ...
    @property
    def _shutdown_thread(self) -> bool: ...
    @property
    def _broken(self) -> str | bool: ...

class Completer:
    """The body of a process pool's completer thread (the target of its ``threading.Thread``)."""

    def __call__(self) -> None: ...

class AsCompleted(Iterator[Future[Any]]):
    """The iterator returned by ``as_completed`` over ferropool futures."""

    def __iter__(self) -> AsCompleted: ...
    def __next__(self) -> Future[Any]: ...
    def close(self) -> None: ...

def _register_future_class(cls: type) -> None: ...
def _mark_interpreter_shutdown() -> None: ...
def _wait(
    futures: list[Future[Any]], timeout: float | None, return_when: str
) -> DoneAndNotDoneFutures[Any]: ...
def _as_completed(futures: list[Future[Any]], timeout: float | None) -> AsCompleted: ...
def _process_python_exit() -> None: ...
def _process_after_fork_in_child() -> None: ...
def _register_fork_fd(fd: int) -> None: ...
def _unregister_fork_fd(fd: int) -> None: ...
