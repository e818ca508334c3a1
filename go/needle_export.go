package swucx

/*
#include "swucx.h"
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// swucxGoNeedleRead is the swucx_needle_read_cb of every NeedleServer: userData is the
// server's cgo.Handle. It runs on one of the server's threads (several at once with
// NeedleServerConfig.Threads > 1).
//
//export swucxGoNeedleRead
func swucxGoNeedleRead(userData unsafe.Pointer, req *C.swucx_read_request_t, reply *C.swucx_read_reply_t) {
	s := cgo.Handle(uintptr(userData)).Value().(*NeedleServer)
	s.serve(req, reply)
}
