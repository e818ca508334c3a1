package swucx

/*
#include "swucx_am_info.h"
*/
import "C"

import (
	"log"
	"runtime/cgo"
	"runtime/debug"
	"unsafe"
)

// swucxGoAMHandler runs for every message of a handler registered by Engine.HandleAM, called by
// the C trampoline swx_am_trampoline with the message's details: userData is the handler's
// cgo.Handle. It copies what it needs and returns without blocking. A panic in it (a
// HandleAMFunc function, an AMConfig.Alloc) stops here, logged, with the message dropped: it
// must not unwind through swucx's and UCX's frames, which would leave UCX's worker lock held
// (no message delivered again, Close hanging) or kill the engine's thread.
//
//export swucxGoAMHandler
func swucxGoAMHandler(msg *C.swucx_am_msg_t, info *C.swx_am_info, userData unsafe.Pointer) {
	defer func() {
		if p := recover(); p != nil {
			log.Printf("swucx: active-message handler panicked, message dropped: %v\n%s", p, debug.Stack())
		}
	}()
	h := cgo.Handle(uintptr(userData)).Value().(*amHandler)
	h.onAM(msg, info)
}
