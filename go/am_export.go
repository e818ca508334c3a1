package swucx

/*
#include "swucx_am_info.h"
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// swucxGoAMHandler runs for every message of a handler registered by Engine.HandleAM, called by
// the C trampoline swx_am_trampoline with the message's details: userData is the handler's
// cgo.Handle. It copies what it needs and returns without blocking.
//
//export swucxGoAMHandler
func swucxGoAMHandler(msg *C.swucx_am_msg_t, info *C.swx_am_info, userData unsafe.Pointer) {
	h := cgo.Handle(uintptr(userData)).Value().(*amHandler)
	h.onAM(msg, info)
}
