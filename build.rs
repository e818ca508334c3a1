//! Finds the system UCX with pkg-config, generates the private `sys` bindings with bindgen and
//! compiles the C shims in `cbits/`. Writes nothing outside `OUT_DIR`.

use std::env;
use std::path::PathBuf;

const MIN_UCX: &str = "1.13";

fn main() {
    println!("cargo:rerun-if-changed=cbits");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libswucx.so.0");

    let ucx = match pkg_config::Config::new()
        .atleast_version(MIN_UCX)
        .probe("ucx")
    {
        Ok(lib) => lib,
        Err(err) => {
            eprintln!(
                "\nswucx needs the UCX development files (UCX >= {MIN_UCX}, found with pkg-config).\n\
                 On Debian/Ubuntu: apt-get install libucx-dev ucx-utils libclang-dev pkg-config\n\
                 (or run `make deps`). For a UCX in another prefix, set PKG_CONFIG_PATH to its\n\
                 lib/pkgconfig directory.\n\npkg-config said: {err}\n"
            );
            std::process::exit(1);
        }
    };

    let mut shims = cc::Build::new();
    shims
        .file("cbits/shims.c")
        .warnings(true)
        .extra_warnings(true);
    // UCX's headers as system headers: their own warnings (UCX 1.22's `UCS_MASK` under
    // -Wextra) are not ours to fix.
    for dir in &ucx.include_paths {
        shims.flag("-isystem").flag(dir.to_string_lossy().as_ref());
    }
    shims.compile("swucx_shims");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut builder = bindgen::Builder::default()
        .header("cbits/ucx_wrapper.h")
        .allowlist_function("ucp_.*|ucs_status_string|swucx_shim_.*")
        .allowlist_type("ucp_.*|ucs_.*")
        .allowlist_var("UCP_.*|UCS_.*")
        .newtype_enum(".*")
        .size_t_is_usize(true)
        .derive_default(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for dir in &ucx.include_paths {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    builder
        .generate()
        .unwrap_or_else(|err| {
            panic!("bindgen failed over cbits/ucx_wrapper.h (is libclang-dev installed?): {err}")
        })
        .write_to_file(out.join("ucx_sys.rs"))
        .expect("write bindings");
}
