package swucx

// Every cgo directive of the package lives here. By default the package links the static
// library target/release/libswucx.a (built by `make` or `cargo build --release --lib`), UCX
// (pkg-config ucx) and what a Rust static library needs (the list in docs/c-api.md). With the
// build tag swucx_dynamic it links target/release/libswucx.so instead (rpath set to that
// directory), which needs UCX only through the shared library's own dependencies; the library's
// soname is libswucx.so.0, so that name must exist there too (`make go-test` and
// `make examples C_LINK=shared` create the link; `ln -sf libswucx.so libswucx.so.0` does it).

/*
#cgo CFLAGS: -I${SRCDIR}/../include -I${SRCDIR}
#cgo !swucx_dynamic LDFLAGS: ${SRCDIR}/../target/release/libswucx.a
#cgo !swucx_dynamic pkg-config: ucx
#cgo !swucx_dynamic LDFLAGS: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
#cgo swucx_dynamic LDFLAGS: -L${SRCDIR}/../target/release -lswucx -Wl,-rpath,${SRCDIR}/../target/release
#include "swucx_go.h"
*/
import "C"

// libChecksum is set by the Makefile's link flags to libswucx.a's checksum, so that Go's build
// cache relinks binaries when only the library changed (it does not track files named in
// LDFLAGS). Unused otherwise.
var libChecksum string
