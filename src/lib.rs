//! ferropool's native core, `ferropool._core`: a Rust thread pool that runs Python
//! callables and an Executor / Future API compatible with `concurrent.futures`.
//!
//! - [`future`]: the future's state machine, and the stdlib's private protocol.
//! - [`waiter`]: how blocked threads learn of completions; interruptible blocking.
//! - [`wait`]: `wait` and `as_completed` over ferropool futures.
//! - [`map`]: `Executor.map` as one shared batch per call.
//! - [`pool`]: the queue, the worker loop, `submit` and `shutdown`.
//! - [`process`]: the process pool: pipes to worker processes, a dispatcher, a completer.
//! - [`call`]: calling Python without a tuple where the interpreter allows it.
//! - [`errors`]: the stdlib's exception classes and logger.

pub mod call;
pub mod errors;
pub mod future;
pub mod map;
pub mod pool;
#[cfg(unix)]
pub mod process;
pub mod wait;
pub mod waiter;

use pyo3::prelude::*;

#[pymodule]
mod _core {
    #[pymodule_export]
    use crate::future::{_register_future_class, FutureCore};
    #[pymodule_export]
    use crate::map::MapIterator;
    #[pymodule_export]
    use crate::pool::{_mark_interpreter_shutdown, ThreadPoolCore, Worker};
    #[cfg(unix)]
    #[pymodule_export]
    use crate::process::{
        _process_after_fork_in_child, _process_python_exit, _register_fork_fd, _unregister_fork_fd,
        Completer, ProcessPoolCore,
    };
    #[pymodule_export]
    use crate::wait::{_as_completed, _wait, AsCompleted};

    #[allow(non_upper_case_globals)]
    #[pymodule_export]
    const __version__: &str = env!("CARGO_PKG_VERSION");
}
