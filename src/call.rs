//! Calling Python fast from an abi3 build.
//!
//! The stable ABI of the oldest CPython we support (3.9) has no vectorcall, so PyO3
//! builds a tuple for every call. CPython exports `PyObject_Vectorcall` as a function
//! from 3.11 on (and in the stable ABI from 3.12): where the running interpreter has it,
//! a one-argument call skips the tuple. Found at run time, so that one wheel still loads
//! on 3.9 and 3.10, which keep the tuple path.

use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;

type Vectorcall = unsafe extern "C" fn(
    callable: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject;

#[cfg(target_os = "linux")]
fn find_vectorcall() -> Option<Vectorcall> {
    extern "C" {
        fn dlsym(
            handle: *mut std::ffi::c_void,
            symbol: *const std::ffi::c_char,
        ) -> *mut std::ffi::c_void;
    }
    // SAFETY: RTLD_DEFAULT (a null handle on glibc and musl) searches the symbols of
    // the process, where the interpreter that loaded us lives; the name is a valid C
    // string. CPython >= 3.11 exports `PyObject_Vectorcall` with exactly this signature.
    unsafe {
        let symbol = dlsym(std::ptr::null_mut(), c"PyObject_Vectorcall".as_ptr());
        (!symbol.is_null())
            .then(|| std::mem::transmute::<*mut std::ffi::c_void, Vectorcall>(symbol))
    }
}

#[cfg(not(target_os = "linux"))]
fn find_vectorcall() -> Option<Vectorcall> {
    None
}

fn vectorcall(py: Python<'_>) -> Option<Vectorcall> {
    static VECTORCALL: OnceLock<Option<Vectorcall>> = OnceLock::new();
    *VECTORCALL.get_or_init(|| {
        // Before 3.11 a symbol of that name, if any, is not the function we mean.
        if py.version_info() >= (3, 11) {
            find_vectorcall()
        } else {
            None
        }
    })
}

/// `func(arg)`.
pub(crate) fn call_one<'py>(
    func: &Bound<'py, PyAny>,
    arg: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = func.py();
    match vectorcall(py) {
        Some(vectorcall) => {
            // PY_VECTORCALL_ARGUMENTS_OFFSET: the callee may use the slot before `args`
            // (it does for bound methods), so pass a pointer one past a spare slot.
            let args = [std::ptr::null_mut(), arg.as_ptr()];
            const ARGUMENTS_OFFSET: usize = 1 << (usize::BITS - 1);
            // SAFETY: `func` and `arg` are valid objects kept alive by their Bounds for
            // the call; the array outlives the call; the result is a new reference or
            // NULL with an exception set.
            unsafe {
                let result = vectorcall(
                    func.as_ptr(),
                    args.as_ptr().add(1),
                    1 | ARGUMENTS_OFFSET,
                    std::ptr::null_mut(),
                );
                Bound::from_owned_ptr_or_err(py, result)
            }
        }
        None => func.call1((arg,)),
    }
}
