package swucx

/*
#include "swucx.h"
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// swucxGoAMHandler is the swucx_am_callback_t of every handler registered by Engine.HandleAM:
// userData is the handler's cgo.Handle. It copies what it needs and returns without blocking.
//
//export swucxGoAMHandler
func swucxGoAMHandler(msg *C.swucx_am_msg_t, userData unsafe.Pointer) {
	h := cgo.Handle(uintptr(userData)).Value().(*amHandler)
	h.onAM(msg)
}
