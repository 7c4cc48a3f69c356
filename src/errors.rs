//! The stdlib's own exception classes and logger, so that existing `except` clauses
//! and logging configuration keep working unchanged.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};

// `concurrent.futures.TimeoutError` is the builtin `TimeoutError` from 3.11 on and a
// subclass of `concurrent.futures.Error` before; importing it by name picks the right one.
pyo3::import_exception!(concurrent.futures, CancelledError);
pyo3::import_exception!(concurrent.futures, TimeoutError);
pyo3::import_exception!(concurrent.futures, InvalidStateError);
pyo3::import_exception!(concurrent.futures.thread, BrokenThreadPool);

/// The `concurrent.futures` logger: callback failures and worker failures are reported
/// there, exactly as the stdlib does.
pub(crate) fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOGGER
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("logging")?
                    .call_method1("getLogger", ("concurrent.futures",))?
                    .unbind(),
            )
        })
        .map(|logger| logger.bind(py))
}

/// Logs `message % args` at `level` with the traceback of `error`, like
/// `LOGGER.exception(...)` inside an `except` block. Logging must never take a worker
/// down, so a failure to log is reported as unraisable and swallowed.
pub(crate) fn log_error(
    py: Python<'_>,
    level: &str,
    message: &str,
    args: &[&Bound<'_, PyAny>],
    error: Option<&PyErr>,
) {
    let outcome = (|| -> PyResult<()> {
        let logger = logger(py)?;
        let kwargs = PyDict::new(py);
        if let Some(error) = error {
            kwargs.set_item("exc_info", error.value(py))?;
        }
        let mut call_args = vec![message.into_pyobject(py)?.into_any()];
        call_args.extend(args.iter().map(|arg| (*arg).clone()));
        let call_args = PyTuple::new(py, call_args)?;
        logger.getattr(level)?.call(call_args, Some(&kwargs))?;
        Ok(())
    })();
    if let Err(err) = outcome {
        err.write_unraisable(py, None);
    }
}
