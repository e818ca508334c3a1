//! The C ABI from C: the generated header is current and clean, compiles as C11 and C++17 (twice
//! in one translation unit and from two), its functions are exactly the library's exported
//! `swucx_*` symbols, and the C tests in tests/c/ pass against the static and the shared library,
//! under AddressSanitizer + UBSan and under valgrind (0 errors, 0 definite leaks).
//!
//! The C programs are built with the system `gcc`/`g++` against the libraries cargo built for
//! this test run (target/<profile>/libswucx.{a,so}).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, where cargo put libswucx.a and libswucx.so for this test run.
/// Also makes the soname link libswucx.so.0 -> libswucx.so there (build.rs sets the soname, so
/// programs linked with -lswucx ask the loader for libswucx.so.0).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    static SONAME_LINK: OnceLock<()> = OnceLock::new();
    SONAME_LINK.get_or_init(|| {
        let link = dir.join("libswucx.so.0");
        if std::fs::symlink_metadata(&link).is_err() {
            // Another test binary may create it at the same time: only the result matters.
            let _ = std::os::unix::fs::symlink("libswucx.so", &link);
        }
    });
    dir
}

/// A scratch directory for this test binary's C builds.
fn out_dir() -> PathBuf {
    let dir = lib_dir().join("c-tests");
    std::fs::create_dir_all(&dir).expect("create c-tests dir");
    dir
}

fn header() -> String {
    std::fs::read_to_string(root().join("include/swucx.h")).expect("read include/swucx.h")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn check(cmd: &mut Command, what: &str) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `pkg-config --libs ucx`, split.
fn ucx_libs() -> Vec<String> {
    static LIBS: OnceLock<Vec<String>> = OnceLock::new();
    LIBS.get_or_init(|| {
        let out = check(
            Command::new("pkg-config").args(["--libs", "ucx"]),
            "pkg-config --libs ucx",
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(String::from)
            .collect()
    })
    .clone()
}

/// What the Rust staticlib needs from the system besides UCX.
const NATIVE_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Static,
    Shared,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    Plain,
    Sanitizers,
    Valgrind,
}

/// Builds tests/c/<name>.c against the library; returns the executable.
fn build(name: &str, link: Link, sanitize: bool) -> PathBuf {
    let exe = out_dir().join(format!(
        "{name}-{}{}",
        if link == Link::Static {
            "static"
        } else {
            "shared"
        },
        if sanitize { "-asan" } else { "" }
    ));
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg("-I")
        .arg(root().join("include"));
    if sanitize {
        cmd.args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]);
    }
    cmd.arg(root().join(format!("tests/c/{name}.c")));
    match link {
        // The staticlib, then what it needs: UCX and the system libraries, in that order.
        Link::Static => {
            cmd.arg(lib_dir().join("libswucx.a"));
            cmd.args(ucx_libs());
            cmd.args(NATIVE_LIBS);
        }
        Link::Shared => {
            cmd.arg("-L").arg(lib_dir()).arg("-lswucx");
            cmd.arg(format!("-Wl,-rpath,{}", lib_dir().display()));
        }
    }
    cmd.arg("-o").arg(&exe);
    check(&mut cmd, &format!("building {name} ({link:?})"));
    exe
}

/// Environment so UCX's memory hooks leave malloc/mmap to the sanitizer or valgrind
/// (`ucx_info -c`: UCX_MEM_MALLOC_HOOKS, UCX_MEM_MMAP_HOOK_MODE, UCX_MEM_EVENTS).
const UCX_TOOL_ENV: &[(&str, &str)] = &[
    ("UCX_MEM_MALLOC_HOOKS", "no"),
    ("UCX_MEM_MMAP_HOOK_MODE", "none"),
    ("UCX_MEM_EVENTS", "no"),
];

fn run_c_test(name: &str, link: Link, mode: Check) {
    let exe = build(name, link, mode == Check::Sanitizers);
    let mut cmd = match mode {
        Check::Valgrind => {
            let mut c = Command::new("valgrind");
            c.args([
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite",
                "--track-origins=no",
            ])
            .arg(&exe);
            c
        }
        _ => Command::new(&exe),
    };
    if mode != Check::Plain {
        cmd.envs(UCX_TOOL_ENV.iter().copied());
    }
    if mode == Check::Sanitizers {
        let nm = check(Command::new("nm").arg(&exe), "nm");
        assert!(
            String::from_utf8_lossy(&nm.stdout).contains("__asan_init"),
            "{name}: AddressSanitizer is not linked in"
        );
        cmd.env("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:exitcode=98")
            .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1");
    }
    let out = check(&mut cmd, &format!("{name} ({link:?}, {mode:?})"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if mode == Check::Valgrind {
        assert!(
            stderr.contains("ERROR SUMMARY: 0 errors"),
            "{name}: valgrind reported errors:\n{stderr}"
        );
        assert!(
            !stderr.contains("definitely lost: ") || stderr.contains("definitely lost: 0 bytes"),
            "{name}: valgrind reported definite leaks:\n{stderr}"
        );
    }
    if mode == Check::Sanitizers {
        assert!(
            !stderr.contains("runtime error:") && !stderr.contains("Sanitizer"),
            "{name}: sanitizer report:\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The header

#[test]
fn header_is_current() {
    let cbindgen = root().join(".tools/bin/cbindgen");
    assert!(
        cbindgen.exists(),
        "{} missing: run `make deps` (scripts/deps.sh installs the pinned cbindgen)",
        cbindgen.display()
    );
    check(
        Command::new(&cbindgen)
            .current_dir(root())
            .args(["--quiet", "--verify", "--config", "cbindgen.toml"])
            .args(["--crate", "swucx", "--output", "include/swucx.h"]),
        "include/swucx.h is stale: run `make header` and commit it (cbindgen --verify)",
    );
}

#[test]
fn header_names_no_ucx_header_or_type() {
    let text = header();
    assert!(text.contains("do not edit") || text.contains("DO NOT EDIT"));
    let code: String = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("/*") || t.starts_with('*') || t.starts_with("//"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    for bad in ["<uc", "ucp_", "ucs_", "uct_", "bindgen"] {
        assert!(!code.contains(bad), "header code mentions `{bad}`");
    }
    // Only swucx's own names: a Rust-only item cbindgen picked up would show here (mark its
    // module `cbindgen:ignore` or exclude it in cbindgen.toml).
    for line in code.lines() {
        let name = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["#define", name, ..] => name.to_string(),
            ["typedef", "struct", tag, ..] => tag.to_string(),
            _ => continue,
        };
        assert!(
            name.to_ascii_lowercase().starts_with("swucx_") || name == "SWUCX_H",
            "header defines `{name}` without the swucx prefix"
        );
    }
    let includes: Vec<&str> = code.lines().filter(|l| l.starts_with("#include")).collect();
    assert_eq!(
        includes,
        [
            "#include <stdbool.h>",
            "#include <stddef.h>",
            "#include <stdint.h>"
        ]
    );
}

#[test]
fn header_version_macros_match_cargo() {
    let text = header();
    for (name, value) in [
        ("SWUCX_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("SWUCX_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("SWUCX_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define {name} {value}");
        assert!(text.contains(&line), "header lacks `{line}`");
    }
}

#[test]
fn header_compiles_as_c11_and_cpp17_twice_and_in_two_units() {
    let dir = out_dir();
    let tu1 = "#include \"swucx.h\"\n#include \"swucx.h\"\n\
        int tu2_answer(void);\n\
        int main(void) { return tu2_answer() == SWUCX_OK && swucx_version() != 0 ? 0 : 1; }\n";
    let tu2 = "#include \"swucx.h\"\n\
        int tu2_answer(void) { swucx_status_t s = SWUCX_OK; return (int)s; }\n";
    for (lang, compiler, std, ext) in [
        ("C", "gcc", "-std=c11", "c"),
        ("C++", "g++", "-std=c++17", "cpp"),
    ] {
        let p1 = dir.join(format!("header_tu1.{ext}"));
        let p2 = dir.join(format!("header_tu2.{ext}"));
        let tu2 = if ext == "cpp" {
            tu2.replace("int tu2_answer", "extern \"C\" int tu2_answer")
        } else {
            tu2.to_string()
        };
        let tu1 = if ext == "cpp" {
            tu1.replace(
                "int tu2_answer(void);",
                "extern \"C\" int tu2_answer(void);",
            )
        } else {
            tu1.to_string()
        };
        std::fs::write(&p1, tu1).unwrap();
        std::fs::write(&p2, tu2).unwrap();
        let exe = dir.join(format!("header_{ext}"));
        check(
            Command::new(compiler)
                .args([std, "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
                .arg("-I")
                .arg(root().join("include"))
                .arg(&p1)
                .arg(&p2)
                .arg("-L")
                .arg(lib_dir())
                .arg("-lswucx")
                .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
                .arg("-o")
                .arg(&exe),
            &format!("compiling the header as {lang}"),
        );
        check(
            &mut Command::new(&exe),
            &format!("running the {lang} header program"),
        );
    }
}

/// The functions the header declares.
fn header_functions() -> BTreeSet<String> {
    let text = header();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("typedef") || line.starts_with(' ') || line.starts_with('#') {
            continue;
        }
        let Some(paren) = line.find('(') else {
            continue;
        };
        let name = line[..paren].rsplit([' ', '*']).next().unwrap_or_default();
        if name.starts_with("swucx_") {
            names.insert(name.to_string());
        }
    }
    names
}

#[test]
fn exported_symbols_equal_header_functions() {
    let out = check(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(lib_dir().join("libswucx.so")),
        "nm -D libswucx.so",
    );
    let exported: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("swucx_") && !s.starts_with("swucx_shim_"))
        .map(String::from)
        .collect();
    let declared = header_functions();
    assert!(
        declared.len() > 50,
        "parsed only {} functions",
        declared.len()
    );
    let missing: Vec<_> = declared.difference(&exported).collect();
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty() && undeclared.is_empty(),
        "declared but not exported: {missing:?}\nexported but not declared: {undeclared:?}"
    );
}

/// Functions without pointer arguments (nothing to pass NULL for).
const NO_POINTER_ARGS: &[&str] = &[
    "swucx_version",
    "swucx_ucx_version",
    "swucx_status_string",
    "swucx_status_is_peer_failure",
];

#[test]
fn null_args_test_covers_every_function() {
    let source = std::fs::read_to_string(root().join("tests/c/null_args.c")).unwrap();
    let missing: Vec<String> = header_functions()
        .into_iter()
        .filter(|f| !NO_POINTER_ARGS.contains(&f.as_str()))
        .filter(|f| !source.contains(&format!("{f}(")))
        .collect();
    assert!(
        missing.is_empty(),
        "tests/c/null_args.c does not call {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The C tests

macro_rules! c_tests {
    ($($fn_name:ident: $name:literal, $link:ident, $mode:ident;)*) => {
        $(
            #[test]
            fn $fn_name() {
                run_c_test($name, Link::$link, Check::$mode);
            }
        )*
    };
}

c_tests! {
    c_lifecycle_static: "lifecycle", Static, Plain;
    c_lifecycle_shared: "lifecycle", Shared, Plain;
    c_lifecycle_asan: "lifecycle", Static, Sanitizers;
    c_lifecycle_valgrind: "lifecycle", Shared, Valgrind;
    c_null_args_static: "null_args", Static, Plain;
    c_null_args_shared: "null_args", Shared, Plain;
    c_null_args_asan: "null_args", Static, Sanitizers;
    c_null_args_valgrind: "null_args", Shared, Valgrind;
    c_ops_static: "ops", Static, Plain;
    c_ops_shared: "ops", Shared, Plain;
    c_ops_asan: "ops", Static, Sanitizers;
    c_ops_valgrind: "ops", Shared, Valgrind;
    c_needle_server_static: "needle_server", Static, Plain;
    c_needle_server_asan: "needle_server", Static, Sanitizers;
}

#[test]
fn docs_example_compiles_and_runs() {
    let doc = std::fs::read_to_string(root().join("docs/c-api.md")).expect("read docs/c-api.md");
    let start = doc.find("```c\n").expect("a C example in docs/c-api.md") + 5;
    let end = start + doc[start..].find("```").expect("end of the C example");
    let src = out_dir().join("docs_example.c");
    std::fs::write(&src, &doc[start..end]).unwrap();
    let exe = out_dir().join("docs_example");
    check(
        Command::new("gcc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .arg("-I")
            .arg(root().join("include"))
            .arg(&src)
            .arg("-L")
            .arg(lib_dir())
            .arg("-lswucx")
            .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
            .arg("-o")
            .arg(&exe),
        "compiling the docs/c-api.md example",
    );
    let out = check(&mut Command::new(&exe), "running the docs/c-api.md example");
    assert!(String::from_utf8_lossy(&out.stdout).contains("received \"hello\" (6 bytes, tag 7)"));
}
