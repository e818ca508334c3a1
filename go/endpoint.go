package swucx

/*
#include "swucx_go.h"
*/
import "C"

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Endpoint is a connection to one peer. Any goroutine may use it.
type Endpoint struct {
	h   handle // *C.swucx_ep_t
	eng *Engine

	// sig is raised when the peer fails or the endpoint is closed: it wakes the operations
	// waiting on the endpoint. Made by the first wait that needs it (failureSignal); read and
	// used under sigLive's read lock; Close clears and destroys it under the write lock.
	sig     atomicSignal
	sigLive sync.RWMutex
	sigMu   sync.Mutex
	closed  atomic.Bool // set under sigMu, before sig is cleared
}

func newEndpoint(e *Engine, p unsafe.Pointer) *Endpoint {
	ep := &Endpoint{eng: e}
	ep.h.p = p
	return ep
}

// AM send flags.
const (
	// AMReply lets the receiver reply: its message carries a ReplyEndpoint.
	AMReply uint32 = C.SWUCX_AM_FLAG_REPLY
	// AMEager forces the eager protocol.
	AMEager uint32 = C.SWUCX_AM_FLAG_EAGER
	// AMRndv forces the rendezvous protocol.
	AMRndv uint32 = C.SWUCX_AM_FLAG_RNDV
)

// TagSend sends buf with tag and waits until UCX is done with buf.
func (ep *Endpoint) TagSend(ctx context.Context, buf []byte, tag uint64) error {
	if ctx.Err() != nil {
		return ctxErr("tag_send", ctx)
	}
	h := ep.h.acquire()
	if h == nil {
		return closedErr("tag_send")
	}
	if len(buf) <= sendNowMax {
		// As in AMSend: within the call and unpinned if UCX can.
		r := C.swx_tag_send_now((*C.swucx_ep_t)(h), bytesPtr(buf), C.size_t(len(buf)),
			C.uint64_t(tag))
		if sent, err := sentNow("tag_send", r); sent || err != nil {
			ep.h.release()
			return err
		}
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, buf)
	r := C.swx_tag_send((*C.swucx_ep_t)(h), p, C.size_t(len(buf)), C.uint64_t(tag))
	ep.h.release()
	_, _, err := ep.eng.complete(ctx, "tag_send", r, pin, ep)
	return err
}

// AMSend sends active message id with header and payload and waits until UCX is done with
// both (a rendezvous payload: until the receiver pulled it). flags: AMReply, AMEager, AMRndv.
// A header longer than UCX's limit (about 8 KiB over shared memory and tcp) is ErrInvalidParam;
// put larger data in the payload.
func (ep *Endpoint) AMSend(ctx context.Context, id uint16, header, payload []byte, flags uint32) error {
	if ctx.Err() != nil {
		return ctxErr("am_send", ctx)
	}
	h := ep.h.acquire()
	if h == nil {
		return closedErr("am_send")
	}
	if len(header)+len(payload) <= sendNowMax && flags&AMRndv == 0 {
		// Tried first without pinning: swucx_ep_am_send_now sends within the call or refuses,
		// and reads the buffers during the call only (cgo pins them for the call itself).
		r := C.swx_am_send_now((*C.swucx_ep_t)(h), C.uint16_t(id), bytesPtr(header),
			C.size_t(len(header)), bytesPtr(payload), C.size_t(len(payload)), C.uint32_t(flags))
		if sent, err := sentNow("am_send", r); sent || err != nil {
			ep.h.release()
			return err
		}
	}
	pin := new(runtime.Pinner)
	hp := pinBytes(pin, header)
	pp := pinBytes(pin, payload)
	r := C.swx_am_send((*C.swucx_ep_t)(h), C.uint16_t(id), hp, C.size_t(len(header)), pp,
		C.size_t(len(payload)), C.uint32_t(flags))
	ep.h.release()
	_, _, err := ep.eng.complete(ctx, "am_send", r, pin, ep)
	return err
}

// sendNowMax bounds the messages TagSend and AMSend first try to send within the call,
// unpinned (swucx_ep_*_send_now): UCX sends small eager messages at once when the transport
// has room, and pinning a buffer (runtime.Pinner) cost more than such a send (BenchmarkAMSelf).
// Larger ones would often be refused and cost a second call (as AMRndv ones would): UCX's short
// path over shared memory takes about 100 bytes with its own headers.
const sendNowMax = 96

// sentNow reads the result of a swucx_ep_*_send_now: sent, refused (neither: send it the
// usual way), or failed.
func sentNow(op string, r C.swx_res) (bool, error) {
	switch r.st {
	case C.SWUCX_OK:
		return true, nil
	case C.SWUCX_ERR_NO_RESOURCE:
		return false, nil
	default:
		return false, resErr(op, r)
	}
}

// StreamSend sends buf on the endpoint's byte stream (the context needs FeatureStream). An
// empty buf is refused (ErrInvalidParam): UCX 1.13 aborts the process that receives an empty
// stream message.
func (ep *Endpoint) StreamSend(ctx context.Context, buf []byte) error {
	if ctx.Err() != nil {
		return ctxErr("stream_send", ctx)
	}
	h := ep.h.acquire()
	if h == nil {
		return closedErr("stream_send")
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, buf)
	r := C.swx_stream_send((*C.swucx_ep_t)(h), p, C.size_t(len(buf)))
	ep.h.release()
	_, _, err := ep.eng.complete(ctx, "stream_send", r, pin, ep)
	return err
}

// StreamRecv receives exactly len(buf) bytes from the stream. If ctx ends first, buf stays
// UCX's until the receive completes (a stream receive cannot be cancelled: close the endpoint).
func (ep *Endpoint) StreamRecv(ctx context.Context, buf []byte) error {
	_, err := ep.streamRecv(ctx, buf, false)
	return err
}

// StreamRecvSome receives what the stream has, at least one byte and at most len(buf), and
// returns how many.
func (ep *Endpoint) StreamRecvSome(ctx context.Context, buf []byte) (int, error) {
	return ep.streamRecv(ctx, buf, true)
}

func (ep *Endpoint) streamRecv(ctx context.Context, buf []byte, some bool) (int, error) {
	if ctx.Err() != nil {
		return 0, ctxErr("stream_recv", ctx)
	}
	h := ep.h.acquire()
	if h == nil {
		return 0, closedErr("stream_recv")
	}
	var s C.int
	if some {
		s = 1
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, buf)
	r := C.swx_stream_recv((*C.swucx_ep_t)(h), p, C.size_t(len(buf)), s)
	ep.h.release()
	n, _, err := ep.eng.complete(ctx, "stream_recv", r, pin, ep)
	return n, err
}

// TagRecv is Engine.TagRecv (the receive matches messages from any endpoint of the engine)
// for a reply expected from this endpoint's peer: it also returns, with the endpoint's failure
// (errors.Is(err, ErrPeerFailure)), when that peer fails while it waits.
func (ep *Endpoint) TagRecv(ctx context.Context, buf []byte, tag, mask uint64) (int, uint64, error) {
	return ep.eng.tagRecv(ctx, buf, tag, mask, ep)
}

// atomicSignal holds a *C.swucx_signal_t.
type atomicSignal struct{ v atomic.Pointer[signalRef] }

type signalRef struct{ p *C.swucx_signal_t }

func (a *atomicSignal) Load() *C.swucx_signal_t {
	if r := a.v.Load(); r != nil {
		return r.p
	}
	return nil
}

func (a *atomicSignal) Store(s *C.swucx_signal_t) { a.v.Store(&signalRef{s}) }

// clear empties it if it holds s; reports whether it did.
func (a *atomicSignal) clear(s *C.swucx_signal_t) bool {
	r := a.v.Load()
	return r != nil && r.p == s && a.v.CompareAndSwap(r, nil)
}

// failureSignal makes sure sig exists and is registered with the endpoint's failure (once).
func (ep *Endpoint) failureSignal() {
	if ep.sig.Load() != nil {
		return
	}
	ep.sigMu.Lock()
	defer ep.sigMu.Unlock()
	if ep.closed.Load() || ep.sig.Load() != nil {
		return
	}
	h := ep.h.acquire()
	if h == nil {
		return
	}
	defer ep.h.release()
	s := C.swx_signal_create()
	if s == nil {
		return // waits then end on their context or the operation only
	}
	C.swucx_ep_raise_on_failure((*C.swucx_ep_t)(h), s)
	ep.sig.Store(s)
}

// markClosed marks the endpoint closed (no failure signal is made from now on) and returns its
// failure signal, if any.
func (ep *Endpoint) markClosed() *C.swucx_signal_t {
	ep.sigMu.Lock()
	defer ep.sigMu.Unlock()
	ep.closed.Store(true)
	return ep.sig.Load()
}

// dropSignal wakes the waits watching the endpoint (they find it closed) and destroys its
// failure signal once none uses it.
func (ep *Endpoint) dropSignal(s *C.swucx_signal_t) {
	if s == nil {
		return
	}
	C.swucx_signal_raise(s)
	ep.sigLive.Lock()
	own := ep.sig.clear(s)
	ep.sigLive.Unlock()
	if own {
		C.swucx_signal_destroy(s)
	}
}

// failure is swucx_ep_failure (StatusNotConnected once the endpoint is closed).
func (ep *Endpoint) failure() Status {
	h := ep.h.acquire()
	if h == nil {
		return StatusNotConnected
	}
	st := C.swucx_ep_failure((*C.swucx_ep_t)(h))
	ep.h.release()
	return Status(st)
}

// TagSendStart posts a tag send (as TagSend) and returns at once; Request.Wait gives its
// outcome. buf is UCX's until then.
func (ep *Endpoint) TagSendStart(buf []byte, tag uint64) (*Request, error) {
	h := ep.h.acquire()
	if h == nil {
		return nil, closedErr("tag_send")
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, buf)
	r := C.swx_tag_send((*C.swucx_ep_t)(h), p, C.size_t(len(buf)), C.uint64_t(tag))
	ep.h.release()
	return ep.eng.started("tag_send", r, pin, ep)
}

// AMSendStart posts an active message (as AMSend) and returns at once; Request.Wait gives its
// outcome. header and payload are UCX's until then.
func (ep *Endpoint) AMSendStart(id uint16, header, payload []byte, flags uint32) (*Request, error) {
	h := ep.h.acquire()
	if h == nil {
		return nil, closedErr("am_send")
	}
	pin := new(runtime.Pinner)
	hp := pinBytes(pin, header)
	pp := pinBytes(pin, payload)
	r := C.swx_am_send((*C.swucx_ep_t)(h), C.uint16_t(id), hp, C.size_t(len(header)), pp,
		C.size_t(len(payload)), C.uint32_t(flags))
	ep.h.release()
	return ep.eng.started("am_send", r, pin, ep)
}

// StreamSendStart posts a stream send (as StreamSend) and returns at once.
func (ep *Endpoint) StreamSendStart(buf []byte) (*Request, error) {
	h := ep.h.acquire()
	if h == nil {
		return nil, closedErr("stream_send")
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, buf)
	r := C.swx_stream_send((*C.swucx_ep_t)(h), p, C.size_t(len(buf)))
	ep.h.release()
	return ep.eng.started("stream_send", r, pin, ep)
}

// StreamRecvStart posts a receive of exactly len(buf) stream bytes and returns at once.
func (ep *Endpoint) StreamRecvStart(buf []byte) (*Request, error) {
	h := ep.h.acquire()
	if h == nil {
		return nil, closedErr("stream_recv")
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, buf)
	r := C.swx_stream_recv((*C.swucx_ep_t)(h), p, C.size_t(len(buf)), 0)
	ep.h.release()
	return ep.eng.started("stream_recv", r, pin, ep)
}

// Failure returns nil while the peer is fine, else the failure UCX reported (e.g.
// ErrConnectionReset, ErrEndpointTimeout).
func (ep *Endpoint) Failure() error {
	h := ep.h.acquire()
	if h == nil {
		return closedErr("ep_failure")
	}
	st := C.swucx_ep_failure((*C.swucx_ep_t)(h))
	ep.h.release()
	if st == C.SWUCX_OK {
		return nil
	}
	return &Error{Status: Status(st), Op: "ep_failure"}
}

// Close releases the endpoint; UCX closes it in the background (flushing, or forcibly if the
// peer failed). Operations still running keep it alive until they complete. Idempotent.
func (ep *Endpoint) Close() error {
	s := ep.markClosed()
	if p := ep.h.take(); p != nil {
		C.swucx_ep_destroy((*C.swucx_ep_t)(p))
	}
	ep.dropSignal(s)
	return nil
}

// CloseForce disconnects at once (operations in flight end with ErrCanceled), waits until UCX
// has closed the endpoint, and releases it. Idempotent.
func (ep *Endpoint) CloseForce() error {
	s := ep.markClosed()
	p := ep.h.take()
	// After the close: its operations end with ErrCanceled first.
	defer ep.dropSignal(s)
	if p == nil {
		return nil
	}
	r := C.swx_ep_close((*C.swucx_ep_t)(p), C.SWUCX_EP_CLOSE_FORCE)
	C.swucx_ep_destroy((*C.swucx_ep_t)(p))
	if r.st != C.SWUCX_OK {
		return resErr("ep_close", r)
	}
	return nil
}

// Transports lists the transports and devices UCX chose for the endpoint, e.g.
// ["posix/memory", "sysv/memory"] or ["tcp/lo"]. Right after Connect wireup may still be
// running: ask after the peer has answered.
func (ep *Endpoint) Transports() ([]string, error) {
	h := ep.h.acquire()
	if h == nil {
		return nil, closedErr("ep_transports")
	}
	var b *C.swucx_bytes_t
	st := C.swucx_ep_transports((*C.swucx_ep_t)(h), &b)
	ep.h.release()
	if st != C.SWUCX_OK {
		return nil, &Error{Status: Status(st), Op: "ep_transports"}
	}
	defer C.swucx_bytes_destroy(b)
	text := C.GoStringN((*C.char)(unsafe.Pointer(C.swucx_bytes_data(b))), C.int(C.swucx_bytes_length(b)))
	if text = strings.TrimRight(text, "\x00"); text == "" {
		return nil, nil
	}
	return strings.Split(text, ","), nil
}
