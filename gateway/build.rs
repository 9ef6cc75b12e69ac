//! Link the embedded interpreter with an rpath to the chosen CPython's shared libpython,
//! so the binary never picks up the distribution's older libpython at run time.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    pyo3_build_config::use_pyo3_cfgs();
}
