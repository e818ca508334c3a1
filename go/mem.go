package swucx

/*
#include "swucx_go.h"
*/
import "C"

import (
	"context"
	"runtime"
	"unsafe"
)

// MemRegion is memory registered with UCX (allocated by UCX), for zero-copy transfers.
type MemRegion struct {
	h    handle // *C.swucx_mem_t
	addr unsafe.Pointer
	n    int
}

// Allocate lets UCX allocate n bytes of registered memory.
func (c *Context) Allocate(n int) (*MemRegion, error) {
	cp := c.h.acquire()
	if cp == nil {
		return nil, closedErr("mem_allocate")
	}
	r := C.swx_mem_allocate((*C.swucx_context_t)(cp), C.size_t(n))
	c.h.release()
	if r.st != C.SWUCX_OK {
		return nil, resErr("mem_allocate", r)
	}
	m := &MemRegion{n: n}
	m.h.p = r.out
	m.addr = C.swucx_mem_address((*C.swucx_mem_t)(r.out))
	return m, nil
}

// Bytes exposes the region's memory as a []byte (C memory, never moved by Go). It is valid
// until Close and no operation on it is running; do not keep it past Close (after Close,
// Bytes is nil).
func (m *MemRegion) Bytes() []byte {
	if m.addr == nil || m.n == 0 || m.h.acquire() == nil {
		return nil
	}
	m.h.release()
	return unsafe.Slice((*byte)(m.addr), m.n)
}

// Len is the region's length in bytes.
func (m *MemRegion) Len() int { return m.n }

// Close releases the region; UCX unmaps it once no operation uses it. Idempotent.
func (m *MemRegion) Close() error {
	if p := m.h.take(); p != nil {
		C.swucx_mem_unmap((*C.swucx_mem_t)(p))
	}
	return nil
}

// TagSendRegion sends n bytes at offset off of region m with tag (UCX gets the region's memory
// handle: no registration lookup).
func (ep *Endpoint) TagSendRegion(ctx context.Context, m *MemRegion, off, n int, tag uint64) error {
	if ctx.Err() != nil {
		return ctxErr("tag_send_mem", ctx)
	}
	h := ep.h.acquire()
	if h == nil {
		return closedErr("tag_send_mem")
	}
	mp := m.h.acquire()
	if mp == nil {
		ep.h.release()
		return closedErr("tag_send_mem")
	}
	r := C.swx_tag_send_mem((*C.swucx_ep_t)(h), (*C.swucx_mem_t)(mp), C.size_t(off), C.size_t(n), C.uint64_t(tag))
	m.h.release()
	ep.h.release()
	_, _, err := ep.eng.complete(ctx, "tag_send_mem", r, new(runtime.Pinner), ep)
	return err
}

// TagRecvRegion receives a message matching tag/mask into n bytes at offset off of region m.
func (e *Engine) TagRecvRegion(ctx context.Context, m *MemRegion, off, n int, tag, mask uint64) (int, uint64, error) {
	if ctx.Err() != nil {
		return 0, 0, ctxErr("tag_recv_mem", ctx)
	}
	w := e.openWorker()
	if w == nil {
		return 0, 0, closedErr("tag_recv_mem")
	}
	mp := m.h.acquire()
	if mp == nil {
		e.worker.release()
		return 0, 0, closedErr("tag_recv_mem")
	}
	r := C.swx_tag_recv_mem((*C.swucx_worker_t)(w), (*C.swucx_mem_t)(mp), C.size_t(off), C.size_t(n), C.uint64_t(tag), C.uint64_t(mask))
	m.h.release()
	e.worker.release()
	return e.complete(ctx, "tag_recv_mem", r, new(runtime.Pinner), nil)
}
