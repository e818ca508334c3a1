package swucx

/*
#include "swucx_go.h"
*/
import "C"

import (
	"context"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// AMQueue holds the active messages of one id until Recv takes them, in arrival order. A
// goroutine waiting for its next message waits as TagRecv does: one cgo call that spins
// driving progress, then sleeps, with no Go code inside UCX's progress (HandleAM and
// HandleAMFunc call Go from UCX's progress for every message, a cgo callback, which costs more
// than a call into C). Use it for request/response traffic where a goroutine waits for each
// message; use HandleAMWith where many rendezvous payloads should move at once. Any number of
// goroutines may Recv from one queue.
type AMQueue struct {
	h   handle // *C.swucx_am_queue_t
	eng *Engine
	id  uint16
	// stop is raised by Close (closing set first), ending the Recvs waiting in C; used under
	// h's read lock.
	stop    *C.swucx_signal_t
	closing atomic.Bool
}

// AMReceived describes a message AMQueue.Recv took.
type AMReceived struct {
	// N is the payload's length; the payload is in the front of Recv's buffer.
	N int
	// Header is a copy of the message header (nil when empty).
	Header []byte
	// ReplyEndpoint is the endpoint to answer on when the sender used AMReply (nil
	// otherwise). Close it when done.
	ReplyEndpoint *Endpoint
}

// AMQueue queues the active messages with id (register it before traffic starts).
// It replaces the id's handler or queue, if any. The queue is unbounded. Close it when done;
// Engine.Close closes it too.
func (e *Engine) AMQueue(id uint16) (*AMQueue, error) {
	stop := C.swx_signal_create()
	if stop == nil {
		return nil, &Error{Status: StatusNoMemory, Op: "signal_create"}
	}
	e.amMu.Lock()
	defer e.amMu.Unlock()
	w := e.openWorker()
	if w == nil {
		C.swucx_signal_destroy(stop)
		return nil, closedErr("am_queue_create")
	}
	r := C.swx_am_queue_create((*C.swucx_worker_t)(w), C.uint16_t(id))
	e.worker.release()
	if r.st != C.SWUCX_OK {
		C.swucx_signal_destroy(stop)
		return nil, resErr("am_queue_create", r)
	}
	q := &AMQueue{eng: e, id: id, stop: stop}
	q.h.p = r.out
	e.retireAM(id)
	if e.queues == nil {
		e.queues = make(map[uint16]*AMQueue)
	}
	e.queues[id] = q
	return q, nil
}

// Recv waits for the next message and receives its payload into buf (len(buf) must be at
// least the payload's length, else the message is dropped with StatusMessageTruncated): an
// eager payload is copied there, a rendezvous one lands there directly. If ctx ends while a
// rendezvous payload moves, buf stays UCX's until the transfer ends.
func (q *AMQueue) Recv(ctx context.Context, buf []byte) (AMReceived, error) {
	if err := ctx.Err(); err != nil {
		return AMReceived{}, ctxErr("am_recv", ctx)
	}
	// Unpinned: an eager payload is copied within the call. A rendezvous one comes back
	// untaken (r.desc), and buf is pinned before its receive starts.
	p := bytesPtr(buf)
	r, err := q.next(ctx, p, len(buf))
	if err != nil {
		return AMReceived{}, err
	}
	var got AMReceived
	var pin *runtime.Pinner
	if r.desc != nil {
		// A header, a payload longer than buf or one by rendezvous: take it apart here.
		var hp unsafe.Pointer
		if r.header_length > 0 {
			got.Header = make([]byte, int(r.header_length))
			hp = unsafe.Pointer(&got.Header[0])
		}
		if r.rndv != 0 {
			pin = new(runtime.Pinner)
			p = pinBytes(pin, buf)
		}
		reply := r.reply_ep
		r = C.swx_am_take(r.desc, p, C.size_t(len(buf)), hp)
		r.reply_ep = reply
	}
	if pin == nil {
		// Copied within the call (or failed): nothing in flight.
		if r.r.st != C.SWUCX_OK {
			err = resErr("am_recv", r.r)
		}
		got.N = int(r.r.length)
	} else {
		got.N, _, err = q.eng.complete(ctx, "am_recv", r.r, pin, nil)
	}
	if r.reply_ep != nil {
		got.ReplyEndpoint = newEndpoint(q.eng, unsafe.Pointer(r.reply_ep))
		if err != nil {
			got.ReplyEndpoint.Close()
			got.ReplyEndpoint = nil
		}
	}
	return got, err
}

// next waits for the next message and takes it (swx_am_recv): with a context that can end,
// first briefly with no cancellation set up (a message usually comes within it), then watching
// ctx.
func (q *AMQueue) next(ctx context.Context, p unsafe.Pointer, n int) (C.swx_am_res, error) {
	var ctxSig *C.swucx_signal_t
	if ctx.Done() != nil {
		if ms, ok := quickLimit(ctx); ok {
			if r, err := q.recvOnce(ms, true, nil, p, n); err != nil || r.taken != 0 {
				return r, err
			}
		}
		sig, release, err := ctxSignal(ctx)
		if err != nil {
			return C.swx_am_res{}, err
		}
		defer release()
		ctxSig = sig
	}
	// Later rounds (after a signal that did not end the receive) sleep at once.
	spin := true
	for {
		if ctxSig != nil && ctx.Err() != nil {
			return C.swx_am_res{}, ctxErr("am_recv", ctx)
		}
		if r, err := q.recvOnce(-1, spin, ctxSig, p, n); err != nil || r.taken != 0 {
			return r, err
		}
		spin = false
	}
}

// recvOnce is one swx_am_recv: through the engine, up to ms milliseconds (-1: no limit),
// watching the engine's and the queue's stop signals and ctxSig (if set). A wait that ended
// without a message (timed out, signalled) is no error: taken is 0.
func (q *AMQueue) recvOnce(ms C.int64_t, spin bool, ctxSig *C.swucx_signal_t, p unsafe.Pointer, n int) (C.swx_am_res, error) {
	var r C.swx_am_res
	e := q.eng
	e.h.mu.RLock()
	defer e.h.mu.RUnlock()
	if e.h.p == nil || e.closing.Load() {
		return r, closedErr("am_recv")
	}
	qp := q.h.acquire()
	if qp == nil {
		return r, closedErr("am_recv")
	}
	defer q.h.release()
	var flags C.uint32_t
	if !spin {
		flags = C.SWUCX_WAIT_NO_SPIN
	}
	r = C.swx_am_recv((*C.swucx_engine_t)(e.h.p), (*C.swucx_am_queue_t)(qp), ms, flags,
		e.stop, q.stop, ctxSig, p, C.size_t(n))
	if r.taken != 0 {
		return r, nil
	}
	switch r.r.st {
	case C.SWUCX_INPROGRESS, C.SWUCX_ERR_TIMED_OUT:
		if r.r.msg != nil {
			C.free(unsafe.Pointer(r.r.msg))
		}
		if e.closing.Load() || q.closing.Load() {
			return r, closedErr("am_recv")
		}
		return r, nil
	default:
		return r, resErr("am_recv", r.r)
	}
}

// Len is the number of messages waiting in the queue (0 once closed).
func (q *AMQueue) Len() int {
	qp := q.h.acquire()
	if qp == nil {
		return 0
	}
	defer q.h.release()
	return int(C.swucx_am_queue_length((*C.swucx_am_queue_t)(qp)))
}

// Close ends the Recvs waiting on the queue (they return ErrClosed) and releases the messages
// still in it; later messages with its id are dropped. Idempotent.
func (q *AMQueue) Close() error {
	e := q.eng
	e.amMu.Lock()
	if e.queues[q.id] == q {
		delete(e.queues, q.id)
	}
	e.amMu.Unlock()
	q.destroy()
	return nil
}

// destroy raises stop (ending the Recvs in C, which hold h's read lock) and destroys the queue.
func (q *AMQueue) destroy() {
	q.closing.Store(true)
	q.h.mu.RLock()
	if q.h.p != nil {
		C.swucx_signal_raise(q.stop)
	}
	q.h.mu.RUnlock()
	if p := q.h.take(); p != nil {
		C.swucx_am_queue_destroy((*C.swucx_am_queue_t)(p))
		C.swucx_signal_destroy(q.stop)
	}
}

// retireAM stops the handler or queue registered for id before (called under amMu after a new
// registration replaced it in UCX).
func (e *Engine) retireAM(id uint16) {
	if old := e.handlers[id]; old != nil {
		delete(e.handlers, id)
		// UCX no longer calls the old handler: the registration replaced it under the
		// worker's lock, which UCX holds while it runs handlers.
		old.stop()
		old.deleteHandle()
	}
	if old := e.queues[id]; old != nil {
		delete(e.queues, id)
		old.destroy()
	}
}
