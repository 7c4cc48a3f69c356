use pyo3::prelude::*;
#[pymodule]
mod _core {
    #[pymodule_export]
    const X: i32 = 1;
}
