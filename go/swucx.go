// Package swucx is the Go face of swucx, a fast and safe data path over UCX, built on its C ABI
// (include/swucx.h) through cgo.
//
// A Context holds UCX's configuration; an Engine is a thread-safe worker that any number of
// goroutines may use and wait on without busy threads; Endpoints (from Engine.Connect,
// Engine.ConnectAddress or Listener.Accept) carry tag, active-message and stream traffic.
//
// Every object has an explicit, idempotent Close. Nothing is ever released by a finalizer: an
// object that is not closed leaks its UCX resources.
//
// Buffers: operations take []byte and do not copy them. Memory handed to UCX past the cgo
// call is pinned (runtime.Pinner) until UCX completes the operation. An operation's buffer
// belongs to UCX until the call returns; if the call returns because its context.Context
// ended, the buffer still belongs to UCX until the operation completes in the background
// (cancelled at once for a tag receive not matched yet; a send runs to its end or until the
// connection fails), so do not reuse a buffer of an operation that returned a context error.
//
// Errors are *Error values carrying the status and swucx's detail message; use errors.Is with
// the sentinels (ErrConnectionReset, ErrTimedOut, ErrCanceled, ErrUnreachable, ErrRejected,
// ErrNotConnected, ErrPeerFailure, ...). An operation ended by its context returns an error
// that matches both ErrCanceled/ErrTimedOut and context.Canceled/context.DeadlineExceeded.
package swucx

/*
#include "swucx_go.h"
*/
import "C"

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Features select UCX's capabilities for a Context.
type Features uint64

// The feature bits (SWUCX_FEATURE_*).
const (
	FeatureTag    Features = C.SWUCX_FEATURE_TAG
	FeatureStream Features = C.SWUCX_FEATURE_STREAM
	FeatureAM     Features = C.SWUCX_FEATURE_AM
	FeatureRMA    Features = C.SWUCX_FEATURE_RMA
	FeatureWakeup Features = C.SWUCX_FEATURE_WAKEUP
	FeatureAll    Features = C.SWUCX_FEATURE_ALL
	// FeatureDefault is every feature but streams: UCX 1.13 aborts a process with streams on
	// that receives an empty stream message, which any peer that can connect may send. Enable
	// FeatureStream only where every peer is trusted.
	FeatureDefault Features = C.SWUCX_FEATURE_DEFAULT
)

// Config configures a Context. The zero value means FeatureDefault (every feature but
// streams), swucx's default UCX settings and UCX's environment variables.
type Config struct {
	// Features to enable (0: FeatureDefault, all but streams). An Engine needs FeatureWakeup.
	Features Features
	// Name for UCX's logs.
	Name string
	// UCX settings without the UCX_ prefix, e.g. {"TLS": "tcp,self"}; they override the
	// environment for this context.
	Settings map[string]string
	// NoPeerFailure makes endpoints without peer-failure handling (needed with TLS=self only).
	NoPeerFailure bool
	// NoDefaultConfig skips swucx's default UCX settings.
	NoDefaultConfig bool
}

// handle guards a C handle: operations hold a read lock while they use it in a cgo call,
// Close takes the write lock, so a handle is never destroyed under a running call.
type handle struct {
	mu sync.RWMutex
	p  unsafe.Pointer
}

// acquire returns the handle with the read lock held (release it), or nil (no lock held) once
// closed.
func (h *handle) acquire() unsafe.Pointer {
	h.mu.RLock()
	p := h.p
	if p == nil {
		h.mu.RUnlock()
	}
	return p
}

func (h *handle) release() { h.mu.RUnlock() }

// take clears the handle and returns what it held (nil if already closed).
func (h *handle) take() unsafe.Pointer {
	h.mu.Lock()
	p := h.p
	h.p = nil
	h.mu.Unlock()
	return p
}

// Context is a UCX context. Close releases it; workers and memory regions made from it keep
// what they need alive.
type Context struct {
	h handle
}

// NewContext creates a context.
func NewContext(cfg Config) (*Context, error) {
	features := cfg.Features
	if features == 0 {
		features = FeatureDefault
	}
	var flags C.uint64_t
	if cfg.NoPeerFailure {
		flags |= C.SWUCX_CONTEXT_FLAG_NO_PEER_FAILURE
	}
	if cfg.NoDefaultConfig {
		flags |= C.SWUCX_CONTEXT_FLAG_NO_DEFAULT_CONFIG
	}
	// Everything C reads is C memory: the strings and the array of their pointers.
	var cstrs []*C.char
	defer func() {
		for _, s := range cstrs {
			C.free(unsafe.Pointer(s))
		}
	}()
	cstr := func(s string) *C.char {
		c := C.CString(s)
		cstrs = append(cstrs, c)
		return c
	}
	var name *C.char
	if cfg.Name != "" {
		name = cstr(cfg.Name)
	}
	var kv **C.char
	if n := len(cfg.Settings); n > 0 {
		arr := (**C.char)(C.calloc(C.size_t(2*n), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		defer C.free(unsafe.Pointer(arr))
		s := unsafe.Slice(arr, 2*n)
		i := 0
		for k, v := range cfg.Settings {
			s[2*i], s[2*i+1] = cstr(k), cstr(v)
			i++
		}
		kv = arr
	}
	r := C.swx_context_create(C.uint64_t(features), flags, name, kv, C.size_t(len(cfg.Settings)))
	if r.st != C.SWUCX_OK {
		return nil, resErr("context_create", r)
	}
	c := &Context{}
	c.h.p = r.out
	return c, nil
}

// Close releases the context. Idempotent.
func (c *Context) Close() error {
	if p := c.h.take(); p != nil {
		C.swucx_context_destroy((*C.swucx_context_t)(p))
	}
	return nil
}

// Engine is a thread-safe UCX worker that any goroutine may use: operations on its endpoints
// are waited for through swucx_engine_wait_signals (a waiter spins briefly driving progress,
// then sleeps until the completion, its context or a peer's failure wakes it) and a background
// thread progresses what nobody waits for. Idle, no thread runs and nothing wakes
// periodically.
type Engine struct {
	h      handle // *C.swucx_engine_t
	worker handle // *C.swucx_worker_t
	// stop is raised by Close, ending every wait in C; used only under h's read lock while
	// h.p is set.
	stop      *C.swucx_signal_t
	closing   atomic.Bool
	closeOnce sync.Once

	amMu     sync.Mutex
	handlers map[uint16]*amHandler
	queues   map[uint16]*AMQueue
}

// NewEngine creates an engine (a new worker and its progress thread) on the context, which
// needs FeatureWakeup.
func NewEngine(c *Context) (*Engine, error) {
	cp := c.h.acquire()
	if cp == nil {
		return nil, closedErr("engine_create")
	}
	r := C.swx_engine_create((*C.swucx_context_t)(cp))
	c.h.release()
	if r.st != C.SWUCX_OK {
		return nil, resErr("engine_create", r)
	}
	e := &Engine{}
	e.h.p = r.out
	w := C.swx_engine_worker((*C.swucx_engine_t)(r.out))
	if w.st != C.SWUCX_OK {
		C.swucx_engine_destroy((*C.swucx_engine_t)(r.out))
		return nil, resErr("engine_worker", w)
	}
	e.worker.p = w.out
	if e.stop = C.swx_signal_create(); e.stop == nil {
		e.Close()
		return nil, &Error{Status: StatusNoMemory, Op: "signal_create"}
	}
	return e, nil
}

// Close stops the engine's progress thread and releases it and its worker, after the
// active-message handlers have stopped (their channels are closed) and the AM queues are
// closed (their Recvs return ErrClosed). Every wait on the engine returns ErrClosed at once
// (TagRecv, TagRecvRegion, Request.Wait, its endpoints' operations, Accept on its
// listeners), whatever its context, and so do operations started later (one UCX finishes
// within its call may still succeed). An operation ended so is detached as one whose
// context ended: a tag receive not matched yet is cancelled; one UCX still runs (a send, a
// message still arriving, a stream receive) keeps its buffers pinned and UCX's until it ends,
// progressed in the background. Endpoints, listeners and queues made from it hold the worker:
// close them too. Idempotent. A HandleAM channel's handler stops once the rendezvous payload
// it is receiving has arrived: a sender that stalls without failing (alive, its worker not
// progressed) holds Close up. Not cut short on purpose: UCX 1.13 aborts (an assertion in
// ucp_ep_destroy_base) when the endpoint is then closed under that receive. Never call Close
// from a HandleAMFunc function: it runs inside the engine's progress, which Close stops.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		// Waits in C end and return ErrClosed (see wait).
		e.closing.Store(true)
		if e.stop != nil {
			C.swucx_signal_raise(e.stop)
		}
		e.stopHandlers()
		if p := e.h.take(); p != nil {
			C.swucx_engine_destroy((*C.swucx_engine_t)(p))
		}
		// Nothing uses the signal once h is cleared.
		C.swucx_signal_destroy(e.stop)
		if p := e.worker.take(); p != nil {
			C.swucx_worker_destroy((*C.swucx_worker_t)(p))
		}
	})
	return nil
}

// Address returns the worker's address, for a peer's ConnectAddress.
func (e *Engine) Address() ([]byte, error) {
	w := e.worker.acquire()
	if w == nil {
		return nil, closedErr("worker_address")
	}
	r := C.swx_worker_address((*C.swucx_worker_t)(w))
	e.worker.release()
	if r.st != C.SWUCX_OK {
		return nil, resErr("worker_address", r)
	}
	b := C.GoBytes(r.out, C.int(r.length))
	C.free(r.out)
	return b, nil
}

// Connect connects to a listener at addr, "ip:port". The connection completes in the
// background: operations may be posted at once, and a failure to connect shows in them.
func (e *Engine) Connect(addr string) (*Endpoint, error) {
	caddr := C.CString(addr)
	defer C.free(unsafe.Pointer(caddr))
	w := e.worker.acquire()
	if w == nil {
		return nil, closedErr("connect")
	}
	r := C.swx_connect((*C.swucx_worker_t)(w), caddr)
	e.worker.release()
	if r.st != C.SWUCX_OK {
		return nil, resErr("connect", r)
	}
	return newEndpoint(e, r.out), nil
}

// ConnectAddress connects to a peer worker by its address (the peer's Engine.Address).
func (e *Engine) ConnectAddress(addr []byte) (*Endpoint, error) {
	if len(addr) == 0 {
		return nil, &Error{Status: StatusInvalidAddr, Op: "connect_address", Msg: "empty address"}
	}
	w := e.worker.acquire()
	if w == nil {
		return nil, closedErr("connect_address")
	}
	// addr is only read during the call: no pinning needed.
	r := C.swx_connect_address((*C.swucx_worker_t)(w), unsafe.Pointer(&addr[0]), C.size_t(len(addr)))
	e.worker.release()
	if r.st != C.SWUCX_OK {
		return nil, resErr("connect_address", r)
	}
	return newEndpoint(e, r.out), nil
}

// Listen listens for connections on addr, "ip:port" (port 0 picks a free one: Listener.Port).
func (e *Engine) Listen(addr string) (*Listener, error) {
	caddr := C.CString(addr)
	defer C.free(unsafe.Pointer(caddr))
	w := e.worker.acquire()
	if w == nil {
		return nil, closedErr("listen")
	}
	r := C.swx_listener_create((*C.swucx_worker_t)(w), caddr)
	e.worker.release()
	if r.st != C.SWUCX_OK {
		return nil, resErr("listen", r)
	}
	l := &Listener{eng: e, port: int(r.length)}
	if l.stop = C.swx_signal_create(); l.stop == nil {
		C.swucx_listener_destroy((*C.swucx_listener_t)(r.out))
		return nil, &Error{Status: StatusNoMemory, Op: "signal_create"}
	}
	l.h.p = r.out
	return l, nil
}

// TagRecv receives the next message whose tag matches tag on the bits of mask, from any
// endpoint, into buf. It returns the received length and the sender's tag. A message longer
// than buf fails with ErrMessageTruncated. If ctx ends first the receive is cancelled (buf
// stays UCX's until the cancellation completes in the background). The first millisecond of
// the wait (all of it when ctx cannot end) is one cgo call with buf unpinned; a longer wait
// posts the receive again with buf pinned. (Endpoint.TagRecv, which also watches its peer,
// always takes the first millisecond that way.)
func (e *Engine) TagRecv(ctx context.Context, buf []byte, tag, mask uint64) (int, uint64, error) {
	return e.tagRecv(ctx, buf, tag, mask, nil)
}

// TagRecvStart posts a tag receive (as TagRecv) and returns at once; Request.Wait gives its
// outcome. buf is UCX's until then.
func (e *Engine) TagRecvStart(buf []byte, tag, mask uint64) (*Request, error) {
	w := e.openWorker()
	if w == nil {
		return nil, closedErr("tag_recv")
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, buf)
	r := C.swx_tag_recv((*C.swucx_worker_t)(w), p, C.size_t(len(buf)), C.uint64_t(tag), C.uint64_t(mask))
	e.worker.release()
	if r.st < 0 {
		pin.Unpin()
		return nil, resErr("tag_recv", r)
	}
	return handOut(e.start("tag_recv", r, pin, nil)), nil
}

func (e *Engine) tagRecv(ctx context.Context, buf []byte, tag, mask uint64, watch *Endpoint) (int, uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, ctxErr("tag_recv", ctx)
	}
	// First the quick wait (with nothing to watch, the whole wait) in one cgo call, buf
	// unpinned: the receive is posted, waited for, and withdrawn if no message came, so buf is
	// C's for the call only (pinning it would cost more than the receive).
	ms, quick := quickLimit(ctx)
	unwatched := ctx.Done() == nil && watch == nil
	if unwatched {
		ms, quick = -1, true
	}
	r := C.swx_res{st: C.SWUCX_ERR_TIMED_OUT}
	if quick {
		r = e.tagRecvWithin(buf, tag, mask, ms)
		switch r.st {
		case C.SWUCX_OK:
			return int(r.length), uint64(r.tag), nil
		case C.SWUCX_ERR_CANCELED:
			// Only the engine's stop signal ends the call so (tagRecvWithin also answers so
			// for a closed engine): nothing was received and nothing stays posted.
			return 0, 0, closedErr("tag_recv")
		case C.SWUCX_ERR_TIMED_OUT, C.SWUCX_INPROGRESS:
			// Nothing came: posted below for the long wait. Or a message matched and is
			// still arriving: its request is waited for below.
		default:
			return 0, 0, resErr("tag_recv", r)
		}
	}
	pin := new(runtime.Pinner)
	if r.st == C.SWUCX_INPROGRESS {
		// The one place a buffer is UCX's before it is pinned: UCX has been writing the
		// matched message into buf since inside the call above, which pinned buf for the call
		// only, and goes on until the request completes. That is sound without the pin:
		// buf's array is on the heap (an argument of a cgo call escapes), Go's collector
		// never moves heap objects, and buf stays reachable (this frame, then pin) until UCX
		// is done. Pinning first would cost a Pinner per receive on the path that needs none
		// (most receives complete within the call); the pin here only makes the hand-over
		// formal under cgo's pointer rules for the rest of the transfer.
		pinBytes(pin, buf)
	} else {
		w := e.openWorker()
		if w == nil {
			return 0, 0, closedErr("tag_recv")
		}
		p := pinBytes(pin, buf)
		r = C.swx_tag_recv((*C.swucx_worker_t)(w), p, C.size_t(len(buf)), C.uint64_t(tag), C.uint64_t(mask))
		e.worker.release()
		if r.st != C.SWUCX_INPROGRESS {
			return e.complete(ctx, "tag_recv", r, pin, watch)
		}
	}
	return e.await(ctx, "tag_recv", (*C.swucx_request_t)(r.out), pin, watch, !quick, nil)
}

// tagRecvWithin is one swx_engine_tag_recv: up to ms milliseconds (-1: no limit), ended early
// by Engine.Close (SWUCX_ERR_CANCELED, as when the engine is closed already).
func (e *Engine) tagRecvWithin(buf []byte, tag, mask uint64, ms C.int64_t) C.swx_res {
	e.h.mu.RLock()
	defer e.h.mu.RUnlock()
	if e.h.p == nil || e.closing.Load() {
		return C.swx_res{st: C.SWUCX_ERR_CANCELED}
	}
	return C.swx_engine_tag_recv((*C.swucx_engine_t)(e.h.p), bytesPtr(buf), C.size_t(len(buf)),
		C.uint64_t(tag), C.uint64_t(mask), ms, e.stop)
}

// pinBytes pins buf's memory and returns its address (nil for an empty slice).
func pinBytes(pin *runtime.Pinner, buf []byte) unsafe.Pointer {
	p := bytesPtr(buf)
	if p != nil {
		pin.Pin(p)
	}
	return p
}

// bytesPtr is buf's first byte for C, or nil when buf is empty.
func bytesPtr(buf []byte) unsafe.Pointer {
	if len(buf) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(buf))
}

// quickWait is how long a wait first spins and sleeps without its context's or endpoint's
// signal: most operations complete within it, and those need no cancellation set up.
const quickWait = time.Millisecond

// quickLimit is the quick wait's limit in milliseconds under ctx: quickWait, or less when
// ctx's deadline comes sooner (at least 1); false when the deadline has passed.
func quickLimit(ctx context.Context) (C.int64_t, bool) {
	limit := quickWait
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, time.Until(dl))
	}
	return max(C.int64_t(limit/time.Millisecond), 1), limit > 0
}

// closedSlice bounds one wait of a goroutine that progresses the worker itself for a detached
// operation (or an AM handler's receive) once the engine is closed.
const closedSlice = 50 * time.Millisecond

// Request is an operation in flight, from one of the *Start methods. Wait gives its outcome
// (later Waits return the same); until a Wait returns it, its buffers belong to UCX. Any
// goroutine may use a Request: while one Wait runs, other Waits wait for its outcome (or for
// their own context, which then ends only their wait). Close detaches it, as does a Wait whose
// context ended, and the garbage collector for a Request dropped without either: cancelled
// where possible, its buffers pinned and UCX's until it completes in the background.
type Request struct {
	eng   *Engine
	op    string
	pin   *runtime.Pinner
	watch *Endpoint

	mu      sync.Mutex
	req     *C.swucx_request_t // nil once done
	done    bool
	waiting bool              // a Wait runs; it owns req until it returns
	waiters chan struct{}     // closed when the running Wait ends (made by a second Wait)
	closed  atomic.Bool       // Close ran while a Wait was running (set under mu)
	sig     *C.swucx_signal_t // the running Wait's signal, raised by Close (under mu)

	n   int
	tag uint64
	err error
}

// start wraps an operation posted with result r.
func (e *Engine) start(op string, r C.swx_res, pin *runtime.Pinner, watch *Endpoint) *Request {
	q := &Request{eng: e, op: op, pin: pin, watch: watch}
	if r.st != C.SWUCX_INPROGRESS {
		pin.Unpin()
		q.done = true
		q.n, q.tag, q.err = result(op, r)
	} else {
		q.req = (*C.swucx_request_t)(r.out)
	}
	return q
}

// started is start for an operation just posted, or its error if posting failed.
func (e *Engine) started(op string, r C.swx_res, pin *runtime.Pinner, watch *Endpoint) (*Request, error) {
	if r.st < 0 {
		pin.Unpin()
		return nil, resErr(op, r)
	}
	return handOut(e.start(op, r, pin, watch)), nil
}

// handOut gives q to the caller of a *Start method. A Request dropped there unwaited would
// take its pinned buffers to the garbage collector, where runtime.Pinner panics: instead its
// finalizer detaches it (abandon). The finalizer calls nothing in C itself; it only starts
// the goroutine that waits for UCX, as Wait does for a detached operation. The finalizer costs
// ~0.25 us per request handed out (a window of 32 4 KiB tag sends and receives in one process:
// 2.1-2.4 -> 2.7-3.2 us per pair); the methods that wait themselves hand out nothing.
func handOut(q *Request) *Request {
	if !q.done {
		runtime.SetFinalizer(q, (*Request).abandon)
	}
	return q
}

// abandon detaches a Request nobody waited for (handOut's finalizer).
func (q *Request) abandon() { q.detachIdle(nil) }

// Close detaches the request: it is cancelled where possible (a tag receive not matched yet)
// and its buffers stay pinned and UCX's until UCX is done with them; Wait then returns
// ErrClosed. A Wait running meanwhile returns ErrClosed at once. Nothing happens to a request
// already done. Idempotent.
func (q *Request) Close() error {
	q.detachIdle(closedErr(q.op))
	return nil
}

// detachIdle detaches the request with the outcome err unless it is done; a Wait running on
// it owns the C request and detaches it itself, told by closed (and its signal).
func (q *Request) detachIdle(err error) {
	q.mu.Lock()
	if q.done {
		q.mu.Unlock()
		return
	}
	if q.waiting {
		q.closed.Store(true)
		if q.sig != nil {
			C.swucx_signal_raise(q.sig)
		}
		q.mu.Unlock()
		return
	}
	req := q.req
	q.done, q.req, q.err = true, nil, err
	q.mu.Unlock()
	runtime.SetFinalizer(q, nil)
	q.eng.detach(req, q.pin, true)
}

// abandonedCancelled counts the abandoned Requests whose cancel ran (tests wait for it).
var abandonedCancelled atomic.Int64

// detach lets a goroutine wait for req in the background (cancelling it first, if cancel)
// and unpin its buffers once UCX is done with them.
func (e *Engine) detach(req *C.swucx_request_t, pin *runtime.Pinner, cancel bool) {
	go func() {
		if cancel {
			C.swucx_request_cancel(req)
			abandonedCancelled.Add(1)
		}
		r := e.waitDone(req)
		if r.msg != nil {
			C.free(unsafe.Pointer(r.msg))
		}
		unpinAfter(pin, r)
	}()
}

// result is the outcome of a completed operation (freeing the C message of a failure).
func result(op string, r C.swx_res) (int, uint64, error) {
	if r.st != C.SWUCX_OK {
		err := resErr(op, r)
		if r.detached != 0 {
			err.(*Error).retained = true
		}
		return 0, 0, err
	}
	return int(r.length), uint64(r.tag), nil
}

// Wait waits until the operation completes, ctx ends, the engine or the Request is closed, or
// (for an endpoint's operation) the peer fails or the endpoint is closed, and returns the
// length moved and, for a tag receive, the sender's tag. If it returns for any reason but the
// completion, the operation is cancelled where possible (a tag receive) and detached: its
// buffers stay pinned and UCX's until it completes in the background.
func (q *Request) Wait(ctx context.Context) (int, uint64, error) {
	q.mu.Lock()
	for q.waiting {
		// Another goroutine waits: take its outcome.
		if q.waiters == nil {
			q.waiters = make(chan struct{})
		}
		ch := q.waiters
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, 0, ctxErr(q.op, ctx)
		}
		q.mu.Lock()
	}
	if q.done {
		n, tag, err := q.n, q.tag, q.err
		q.mu.Unlock()
		return n, tag, err
	}
	q.waiting = true
	req := q.req
	q.mu.Unlock()
	n, tag, err := q.eng.await(ctx, q.op, req, q.pin, q.watch, true, q)
	q.mu.Lock()
	q.waiting, q.done, q.req = false, true, nil
	q.n, q.tag, q.err = n, tag, err
	if q.waiters != nil {
		close(q.waiters)
		q.waiters = nil
	}
	q.mu.Unlock()
	return n, tag, err
}

// complete finishes an operation posted with result r: at once if it completed (or failed),
// else by waiting through the engine until it completes or ctx ends. The pinned buffers are
// unpinned only once UCX is done with them.
//
// With watch set, the operation also ends when that endpoint's peer fails (as soon as UCX
// notices: the endpoint's failure signal wakes the wait) or the endpoint is closed: it is
// cancelled and detached as for an ended context, and the error is the endpoint's failure
// (ErrClosed for a closed endpoint).
func (e *Engine) complete(ctx context.Context, op string, r C.swx_res, pin *runtime.Pinner, watch *Endpoint) (int, uint64, error) {
	if r.st != C.SWUCX_INPROGRESS {
		pin.Unpin()
		return result(op, r)
	}
	return e.await(ctx, op, (*C.swucx_request_t)(r.out), pin, watch, true, nil)
}

// await waits for req (operation op, its buffers pinned by pin) as wait does and returns its
// outcome; if the wait ended first, it cancels the request where possible and detaches it.
func (e *Engine) await(ctx context.Context, op string, req *C.swucx_request_t, pin *runtime.Pinner, watch *Endpoint, quick bool, q *Request) (int, uint64, error) {
	r, done, failed := e.wait(ctx, req, watch, quick, q)
	if done {
		unpinAfter(pin, r)
		return result(op, r)
	}
	// Detach: cancel what can be cancelled (now: a tag receive posted next must not match this
	// one) and let a goroutine wait for UCX to finish with the buffers before unpinning them.
	C.swucx_request_cancel(req)
	e.detach(req, pin, false)
	if failed != nil {
		failed.Op = op
		return 0, 0, failed
	}
	return 0, 0, ctxErr(op, ctx)
}

// wait waits for req until it completes (done: the request is freed), ctx ends (failed nil),
// or, with failed set: the engine is closed, watch's peer fails or watch is closed, or q (a
// Request handed out, nil otherwise) is closed. A waiting goroutine sleeps in C with no
// periodic wake-up: the completion, a signal raised when ctx ends or by Request.Close, watch's
// failure signal or Engine.Close ends the sleep. quick: start with the quick wait (false when
// one ran already).
func (e *Engine) wait(ctx context.Context, req *C.swucx_request_t, watch *Endpoint, quick bool, q *Request) (C.swx_res, bool, *Error) {
	done := ctx.Done()
	if done == nil && watch == nil && q == nil {
		for {
			if e.closing.Load() {
				return e.closedWait(req)
			}
			if r := e.waitOnce(req, -1, true, nil, nil); r.st != C.SWUCX_INPROGRESS {
				return r, true, nil
			}
		}
	}
	// First a short wait with no cancellation set up (most operations end within it), unless
	// one ran already.
	if ms, ok := quickLimit(ctx); ok && quick && !e.closing.Load() {
		if r := e.waitOnce(req, ms, true, nil, nil); r.st != C.SWUCX_INPROGRESS {
			return r, true, nil
		}
	}
	sig, release, err := waitSignal(ctx, q)
	if err != nil {
		return C.swx_res{st: C.SWUCX_INPROGRESS}, false, err.(*Error)
	}
	defer release()
	if watch != nil {
		watch.failureSignal()
	}
	// This wait spins again (it stops sleeping and drives progress while work moves): a wait
	// longer than the quick one is often a transfer in full flow, e.g. the oldest of 32 1 MiB
	// receives over tcp, and sleeping through it left every byte to the engine's background
	// thread and a hand-off per message (tcp 1 MiB, Go server and client against the C pair:
	// 0.72-0.81x -> 0.89-0.91x). Later rounds (after a signal) sleep at once.
	spin := true
	for {
		select {
		case <-done:
			return C.swx_res{st: C.SWUCX_INPROGRESS}, false, nil
		default:
		}
		if e.closing.Load() {
			return e.closedWait(req)
		}
		if q != nil && q.closed.Load() {
			return C.swx_res{st: C.SWUCX_INPROGRESS}, false, closedError("")
		}
		if watch != nil {
			if watch.closed.Load() {
				return C.swx_res{st: C.SWUCX_INPROGRESS}, false, closedError("")
			}
			if st := watch.failure(); st != StatusOK {
				return C.swx_res{st: C.SWUCX_INPROGRESS}, false,
					&Error{Status: st, Msg: "the endpoint's peer failed while waiting"}
			}
		}
		if r := e.waitOnce(req, -1, spin, sig, watch); r.st != C.SWUCX_INPROGRESS {
			return r, true, nil
		}
		spin = false
	}
}

// closedWait ends a wait once the engine is closing: done if req has completed meanwhile
// (one round of progress on this thread tells), else not, with ErrClosed.
func (e *Engine) closedWait(req *C.swucx_request_t) (C.swx_res, bool, *Error) {
	if r := C.swx_wait(nil, req, 0, 0, nil, nil, nil); r.st != C.SWUCX_INPROGRESS {
		return r, true, nil
	}
	return C.swx_res{st: C.SWUCX_INPROGRESS}, false, closedError("")
}

// waitDone waits for req until it completes, whatever happens to the engine meanwhile (once it
// is closed, by progressing the worker on this thread): for detached operations, whose
// buffers are unpinned only then, and the AM handlers' receives.
func (e *Engine) waitDone(req *C.swucx_request_t) C.swx_res {
	for {
		if r := e.waitOnce(req, -1, true, nil, nil); r.st != C.SWUCX_INPROGRESS {
			return r
		}
	}
}

// waitSignal is the signal a wait past the quick one watches besides the engine's and its
// endpoint's: raised when ctx ends and, for a Request handed out (q), by Request.Close; nil
// when neither can happen. release clears it once no wait uses it.
func waitSignal(ctx context.Context, q *Request) (*C.swucx_signal_t, func(), error) {
	if q == nil {
		return ctxSignal(ctx)
	}
	s := C.swx_signal_create()
	if s == nil {
		return nil, nil, &Error{Status: StatusNoMemory, Op: "signal_create"}
	}
	// Close raises it under q.mu while it is set, and reads q.closed's setting under it too
	// (wait checks q.closed before each round in C).
	q.mu.Lock()
	q.sig = s
	q.mu.Unlock()
	stop := func() bool { return true }
	raised := make(chan struct{})
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, func() {
			C.swucx_signal_raise(s)
			close(raised)
		})
	}
	return s, func() {
		q.mu.Lock()
		q.sig = nil
		q.mu.Unlock()
		if !stop() {
			<-raised // the signal is raised: nothing uses it any more
		}
		C.swucx_signal_destroy(s)
	}, nil
}

// waitOnce is one wait in C for req, up to ms milliseconds (-1: no limit): through the engine
// (spinning first if spin), watching its stop signal, ctxSig and watch's failure signal (when
// set); once the engine is closing, by progressing the worker on this thread for at most
// closedSlice. st is SWUCX_INPROGRESS while req runs.
func (e *Engine) waitOnce(req *C.swucx_request_t, ms C.int64_t, spin bool, ctxSig *C.swucx_signal_t, watch *Endpoint) C.swx_res {
	if !e.closing.Load() {
		e.h.mu.RLock()
		if e.h.p != nil {
			var epSig *C.swucx_signal_t
			if watch != nil {
				// Endpoint.Close raises it, then waits for this lock before it destroys it.
				watch.sigLive.RLock()
				epSig = watch.sig.Load()
				if epSig == nil && watch.closed.Load() {
					// Closed (its signal may be gone already): the caller sees it.
					watch.sigLive.RUnlock()
					e.h.mu.RUnlock()
					return C.swx_res{st: C.SWUCX_INPROGRESS}
				}
			}
			var flags C.uint32_t
			if !spin {
				flags = C.SWUCX_WAIT_NO_SPIN
			}
			r := C.swx_wait((*C.swucx_engine_t)(e.h.p), req, ms, flags, e.stop, ctxSig, epSig)
			if watch != nil {
				watch.sigLive.RUnlock()
			}
			e.h.mu.RUnlock()
			return r
		}
		e.h.mu.RUnlock()
	}
	slice := C.int64_t(closedSlice / time.Millisecond)
	if ms < 0 || ms > slice {
		ms = slice
	}
	return C.swx_wait(nil, req, ms, 0, nil, nil, nil)
}

// Listener listens for connections.
type Listener struct {
	h    handle
	eng  *Engine
	port int
	// stop is raised by Close, ending Accepts waiting in C; used under h's read lock.
	stop *C.swucx_signal_t
}

// Port is the port the listener is bound to.
func (l *Listener) Port() int { return l.port }

// Accept waits for the next connection request and accepts it. While it waits the goroutine
// sleeps (the engine's thread takes the request); ctx, Close and Engine.Close wake it (the
// last two: ErrClosed).
func (l *Listener) Accept(ctx context.Context) (*Endpoint, error) {
	if ctx.Err() != nil {
		return nil, ctxErr("accept", ctx)
	}
	ctxSig, release, err := ctxSignal(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	e := l.eng
	for {
		if ctx.Err() != nil {
			return nil, ctxErr("accept", ctx)
		}
		lp := l.h.acquire()
		if lp == nil {
			return nil, closedErr("accept")
		}
		w := e.worker.acquire()
		if w == nil {
			l.h.release()
			return nil, closedErr("accept")
		}
		e.h.mu.RLock()
		if e.h.p == nil || e.closing.Load() {
			e.h.mu.RUnlock()
			e.worker.release()
			l.h.release()
			return nil, closedErr("accept")
		}
		r := C.swx_engine_accept((*C.swucx_engine_t)(e.h.p), (*C.swucx_listener_t)(lp),
			(*C.swucx_worker_t)(w), e.stop, l.stop, ctxSig)
		e.h.mu.RUnlock()
		e.worker.release()
		l.h.release()
		switch r.st {
		case C.SWUCX_INPROGRESS:
			continue
		case C.SWUCX_OK:
			return newEndpoint(e, r.out), nil
		default:
			return nil, resErr("accept", r)
		}
	}
}

// Close stops listening (queued connection requests are rejected) and ends the Accepts
// waiting on it. Idempotent.
func (l *Listener) Close() error {
	l.h.mu.RLock()
	if l.h.p != nil {
		C.swucx_signal_raise(l.stop)
	}
	l.h.mu.RUnlock()
	if p := l.h.take(); p != nil {
		C.swucx_listener_destroy((*C.swucx_listener_t)(p))
		C.swucx_signal_destroy(l.stop)
	}
	return nil
}

// ctxSignal returns a signal raised when ctx ends (nil if it never does) and the function that
// releases it once no wait uses it.
func ctxSignal(ctx context.Context) (*C.swucx_signal_t, func(), error) {
	if ctx.Done() == nil {
		return nil, func() {}, nil
	}
	s := C.swx_signal_create()
	if s == nil {
		return nil, nil, &Error{Status: StatusNoMemory, Op: "signal_create"}
	}
	raised := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		C.swucx_signal_raise(s)
		close(raised)
	})
	return s, func() {
		if !stop() {
			<-raised // the signal is raised: nothing uses it any more
		}
		C.swucx_signal_destroy(s)
	}, nil
}

// Spin drives progress on this goroutine's thread until ready() returns true or d passes, and
// reports whether ready() did: for something no wait covers, e.g. an active message expected
// within microseconds (handlers then run on this thread; after progress that did something,
// the goroutine yields so the goroutines they handed messages to can run). While it spins, and
// for a moment after (another spin usually follows), the engine's background thread leaves
// the worker to it instead of waking for every arrival and taking the worker over. When ready()
// stays false, Spin hands progress back to the background thread (HandOver) before returning.
// d counts from Spin's first look at the clock, a few microseconds in.
func (e *Engine) Spin(d time.Duration, ready func() bool) bool {
	if ready() {
		return true
	}
	announced := false // a spin announced to the engine and not ended yet
	var until time.Time
	for i := 1; ; i++ {
		n, open := e.spinBurst(!announced)
		if !open {
			return ready() // closed, which ends every spin
		}
		announced = n == 0
		if n > 0 {
			if ready() {
				return true
			}
			runtime.Gosched()
		}
		// The clock only every few bursts, and not at all for a spin that ends soon: reading
		// it cost as much as a burst of progress on a VM.
		if i%spinClockEvery == 0 {
			if now := time.Now(); until.IsZero() {
				until = now.Add(d)
			} else if now.After(until) {
				break
			}
		}
	}
	if announced {
		e.engineCall(spinEnd)
	}
	ok := ready()
	if !ok {
		e.HandOver()
	}
	return ok
}

// HandOver asks the engine's background thread to progress now (it may be resting after a
// Spin that succeeded): call it before blocking on something only progress delivers, e.g. a
// channel an AM handler feeds. The engine's own waits do this themselves.
func (e *Engine) HandOver() {
	e.engineCall(handOver)
}

// spinClockEvery is how many progress bursts Spin makes between looks at the clock.
const spinClockEvery = 4

// burstRounds is how many times one progress burst (one cgo call) progresses the engine at most.
const burstRounds = 16

const (
	spinEnd = iota
	handOver
)

// engineCall makes one of the calls swucx_engine_spin_end or swucx_engine_hand_over; false
// once the engine is closed (which ends every spin) or if the call failed.
func (e *Engine) engineCall(call int) bool {
	e.h.mu.RLock()
	defer e.h.mu.RUnlock()
	p := (*C.swucx_engine_t)(e.h.p)
	if p == nil {
		return false
	}
	var st C.swucx_status_t
	switch call {
	case spinEnd:
		st = C.swucx_engine_spin_end(p)
	default:
		st = C.swucx_engine_hand_over(p)
	}
	return st == C.SWUCX_OK
}

// spinBurst is one burst of Spin (swx_spin_burst): the events of the round that did something,
// or 0; false once the engine is closed.
func (e *Engine) spinBurst(begin bool) (int, bool) {
	e.h.mu.RLock()
	defer e.h.mu.RUnlock()
	if e.h.p == nil {
		return 0, false
	}
	b := C.int(0)
	if begin {
		b = 1
	}
	return int(C.swx_spin_burst((*C.swucx_engine_t)(e.h.p), b, burstRounds)), true
}

// Progress runs UCX's progress engine once on this goroutine's thread and returns the number of
// events processed; 0 at once if another thread is progressing for the engine (a waiter or its
// background thread: no contention for UCX's worker lock), or once the engine is closed. The
// engine's waits and its background thread progress on their own; call this only to spin
// briefly for something no wait covers, e.g. an active message expected within microseconds
// (handlers then run on this thread).
func (e *Engine) Progress() int {
	e.h.mu.RLock()
	defer e.h.mu.RUnlock()
	if e.h.p == nil {
		return 0
	}
	return int(C.swucx_engine_progress((*C.swucx_engine_t)(e.h.p)))
}

// retainedPins holds the pins of operations UCX never finished after their peer failed
// (unpinAfter): their buffers stay pinned, and so alive, for the life of the process.
var retainedPins struct {
	sync.Mutex
	pins []*runtime.Pinner
}

// unpinAfter releases an ended operation's pin, unless the operation was detached while UCX
// still held it (its endpoint's peer failed; swucx_request_is_detached): UCX may still touch
// its buffers, so they stay pinned for good (a Pinner collected while pinning panics, hence the
// list). Only that rare path leaks; the operation's error matches ErrBufferRetained.
func unpinAfter(pin *runtime.Pinner, r C.swx_res) {
	if r.detached == 0 {
		pin.Unpin()
		return
	}
	retainedPins.Lock()
	retainedPins.pins = append(retainedPins.pins, pin)
	retainedPins.Unlock()
}
