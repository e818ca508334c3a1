package swucx

/*
#include "swucx_go.h"
*/
import "C"

import (
	"context"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"unsafe"
)

// AMMessage is an active message delivered by Engine.HandleAM.
type AMMessage struct {
	// Header is a copy of the message header.
	Header []byte
	// Data is the payload, in a buffer of its own (from AMConfig.Alloc, or a new one): an
	// eager payload copied there, a rendezvous payload received there.
	Data []byte
	// ReplyEndpoint is the endpoint to answer on, when the sender used AMReply (nil
	// otherwise). Close it when done (AMMessage.Close does).
	ReplyEndpoint *Endpoint
	// Err is set when receiving a rendezvous payload failed (Data is then nil).
	Err error

	// A rendezvous payload not received yet (HandleAMFunc): RecvData takes it. Under mu:
	// RecvDataStart and Close may race (e.g. a handler starts the receive while a goroutine
	// it handed the message to closes it).
	mu      sync.Mutex
	desc    *C.swucx_am_desc_t
	pending int
	eng     *Engine
}

// Pending is the length of a rendezvous payload still waiting for RecvData or RecvDataStart
// (messages from HandleAMFunc only); 0 when the payload is in Data.
func (m *AMMessage) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending
}

// takeDesc takes the pending rendezvous payload's descriptor (nil if none) when dst can hold it.
func (m *AMMessage) takeDesc(dst []byte) (*C.swucx_am_desc_t, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.desc
	if d == nil {
		return nil, &Error{Status: StatusInvalidParam, Op: "am_desc_recv", Msg: "no pending rendezvous payload"}
	}
	if len(dst) < m.pending {
		return nil, &Error{Status: StatusMessageTruncated, Op: "am_desc_recv", Msg: "buffer shorter than the payload"}
	}
	m.desc, m.pending = nil, 0
	return d, nil
}

// RecvData receives the pending rendezvous payload straight into dst (zero copy; len(dst) must
// be at least Pending()) and returns its length. Call it once, from a goroutine, never inside
// the handler function. If ctx ends first, dst stays UCX's until the transfer ends.
func (m *AMMessage) RecvData(ctx context.Context, dst []byte) (int, error) {
	q, err := m.RecvDataStart(dst)
	if err != nil {
		return 0, err
	}
	n, _, err := q.Wait(ctx)
	return n, err
}

// RecvDataStart starts receiving the pending rendezvous payload straight into dst (as
// RecvData) and returns at once; the request's Wait gives the length. Unlike RecvData it may
// be called inside the HandleAMFunc function (the one engine call allowed there; never Wait
// there), so that several payloads move while earlier messages are consumed, as the C and
// Rust handlers receive. dst is UCX's until the request completes. Safe against a concurrent
// Close: one of them takes the payload.
func (m *AMMessage) RecvDataStart(dst []byte) (*Request, error) {
	d, err := m.takeDesc(dst)
	if err != nil {
		return nil, err
	}
	pin := new(runtime.Pinner)
	p := pinBytes(pin, dst)
	r := C.swx_am_desc_recv(d, p, C.size_t(len(dst)))
	return m.eng.started("am_desc_recv", r, pin, nil)
}

// Close releases the message's reply endpoint and an unreceived rendezvous payload, if any.
// Idempotent; any goroutine may call it, also while another one calls RecvDataStart.
func (m *AMMessage) Close() error {
	m.mu.Lock()
	d, ep := m.desc, m.ReplyEndpoint
	m.desc, m.pending, m.ReplyEndpoint = nil, 0, nil
	m.mu.Unlock()
	if d != nil {
		C.swucx_am_desc_destroy(d)
	}
	if ep != nil {
		return ep.Close()
	}
	return nil
}

// AMConfig configures Engine.HandleAMWith.
type AMConfig struct {
	// Buffer is the capacity of the channel messages arrive on.
	Buffer int
	// Alloc returns the buffer for a payload of n > 0 bytes (len(buf) must be n); nil means
	// make([]byte, n). It runs inside UCX's progress, on whichever thread progresses (possibly
	// several at once): it must be quick, must not block and must not call into swucx. A
	// rendezvous payload is received straight into the buffer, and the receive starts at once
	// (several stay in flight while earlier messages are delivered), so the buffer belongs to
	// UCX until the message comes out of the channel. Returning parts of a registered
	// MemRegion (MemRegion.Bytes) saves UCX a registration lookup per message.
	Alloc func(n int) []byte
}

// amItem is a message on its way to the channel: copies, handles and a receive that may still
// run, no UCX pointer of the message.
type amItem struct {
	header []byte
	data   []byte
	reply  unsafe.Pointer
	req    *C.swucx_request_t // the rendezvous receive still in flight (nil: data is ready)
	pin    *runtime.Pinner
	err    error
}

// amHandler is the Go side of one registered AM id. The UCX callback (possibly on several
// threads at once) appends to queue and never blocks; a pump goroutine delivers to out.
type amHandler struct {
	eng    *Engine
	id     uint16
	handle cgo.Handle
	out    chan *AMMessage
	alloc  func(n int) []byte
	fn     func(*AMMessage) // HandleAMFunc: called inline instead of queueing to out

	mu      sync.Mutex
	queue   []amItem
	inPump  int // items the pump took from queue and has not delivered yet
	notify  chan struct{}
	done    chan struct{}
	stopped atomic.Bool // set under mu; call reads it without
	wg      sync.WaitGroup
}

// HandleAM registers a handler for active message id and returns the channel its messages
// arrive on (buffered with capacity buffer). Messages are queued without bound while nobody
// reads the channel. Register before traffic starts. Registering id again replaces the handler
// (the old channel is closed); Engine.Close closes the channel too.
func (e *Engine) HandleAM(id uint16, buffer int) (<-chan *AMMessage, error) {
	return e.HandleAMWith(id, AMConfig{Buffer: buffer})
}

// HandleAMWith is HandleAM with the payload buffers chosen by cfg.Alloc.
func (e *Engine) HandleAMWith(id uint16, cfg AMConfig) (<-chan *AMMessage, error) {
	alloc := cfg.Alloc
	if alloc == nil {
		alloc = func(n int) []byte { return make([]byte, n) }
	}
	h := &amHandler{
		eng:    e,
		id:     id,
		out:    make(chan *AMMessage, cfg.Buffer),
		alloc:  alloc,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	if err := e.register(h); err != nil {
		return nil, err
	}
	return h.out, nil
}

// HandleAMFunc registers fn as the handler for active message id: UCX's progress calls it
// inline, on whichever thread progresses (possibly several at once), with each message, so fn
// must be quick and must not block or call into the engine (except AMMessage.RecvDataStart). A
// message's eager payload is a copy in Data; a rendezvous payload stays with UCX (Pending() > 0)
// until RecvDataStart (inside fn or later) or a goroutine's RecvData receives it into a buffer
// of its choice, or Close drops it. The receiver of a message owns it and must Close it. After
// Engine.Close, fn is not called again.
func (e *Engine) HandleAMFunc(id uint16, fn func(*AMMessage)) error {
	return e.register(&amHandler{eng: e, id: id, fn: fn, done: make(chan struct{})})
}

// openWorker is the worker acquired (release it), or nil once Close began: for posting an
// operation, and for registering a handler or queue (Close may have stopped the handlers and
// queues already: closing is set first; register under amMu, which Close takes before it
// stops them).
func (e *Engine) openWorker() unsafe.Pointer {
	w := e.worker.acquire()
	if w != nil && e.closing.Load() {
		e.worker.release()
		return nil
	}
	return w
}

// register gives h a cgo handle and installs it for its id (replacing an earlier handler).
func (e *Engine) register(h *amHandler) error {
	id := h.id
	h.newHandle()
	// Under amMu, so that Close (which takes it before it stops the handlers) never misses one
	// and two registrations of one id replace each other in order.
	e.amMu.Lock()
	defer e.amMu.Unlock()
	w := e.openWorker()
	if w == nil {
		h.deleteHandle()
		return closedErr("set_am_handler")
	}
	r := C.swx_set_am_handler((*C.swucx_worker_t)(w), C.uint16_t(id), C.uintptr_t(h.handle))
	e.worker.release()
	if r.st != C.SWUCX_OK {
		h.deleteHandle()
		return resErr("set_am_handler", r)
	}
	e.retireAM(id)
	if e.handlers == nil {
		e.handlers = make(map[uint16]*amHandler)
	}
	e.handlers[id] = h
	if h.fn == nil {
		h.wg.Add(1)
		go h.pump()
	}
	return nil
}

// onAM runs inside UCX progress (any thread): take the message (copy an eager payload, start
// receiving a rendezvous one), queue it, wake the pump.
func (h *amHandler) onAM(msg *C.swucx_am_msg_t, info *C.swx_am_info) {
	if h.fn != nil {
		h.call(msg, info)
		return
	}
	it := amItem{
		header: copyCBytes(info.header, info.header_length),
		reply:  unsafe.Pointer(info.reply_ep),
	}
	n := int(info.length)
	if n == 0 {
		it.data = []byte{}
	} else {
		it.data = h.alloc(n)[:n]
	}
	if info.rndv != 0 {
		pin := new(runtime.Pinner)
		p := pinBytes(pin, it.data)
		r := C.swx_am_msg_recv(msg, p, C.size_t(n))
		switch r.st {
		case C.SWUCX_INPROGRESS:
			it.req, it.pin = (*C.swucx_request_t)(r.out), pin
		case C.SWUCX_OK:
			pin.Unpin()
		default:
			pin.Unpin()
			it.data, it.err = nil, resErr("am_recv", r)
		}
	} else if n > 0 {
		copy(it.data, unsafe.Slice((*byte)(info.data), n))
	}
	h.mu.Lock()
	if !h.stopped.Load() && it.req == nil && len(h.queue) == 0 && h.inPump == 0 {
		// Fast path: complete and nothing queued ahead of it, so hand it straight to the
		// channel if there is room (never blocking; under mu, so the order between threads
		// holds).
		select {
		case h.out <- h.message(&it):
			h.mu.Unlock()
			return
		default:
		}
	}
	if h.stopped.Load() {
		h.mu.Unlock()
		h.release([]amItem{it})
		return
	}
	h.queue = append(h.queue, it)
	h.mu.Unlock()
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// call hands one message to a HandleAMFunc handler (a rendezvous payload kept for RecvData),
// or drops it once the handler stopped.
func (h *amHandler) call(msg *C.swucx_am_msg_t, info *C.swx_am_info) {
	m := &AMMessage{Header: copyCBytes(info.header, info.header_length), eng: h.eng}
	if info.reply_ep != nil {
		m.ReplyEndpoint = newEndpoint(h.eng, unsafe.Pointer(info.reply_ep))
	}
	if info.rndv != 0 {
		if st := C.swucx_am_msg_keep(msg, &m.desc); st != C.SWUCX_OK {
			m.Err = &Error{Status: Status(st), Op: "am_msg_keep"}
		} else {
			m.pending = int(info.length)
		}
	} else {
		m.Data = copyCBytes(info.data, info.length)
	}
	if h.stopped.Load() {
		m.Close()
		return
	}
	h.fn(m)
}

// copyCBytes copies n bytes of C memory at p into a new Go slice (empty, not nil, for n == 0).
// Unlike C.GoBytes it is no cgo call, so it skips cgo's pointer check (~50 ns per message with
// both header and payload).
func copyCBytes(p unsafe.Pointer, n C.size_t) []byte {
	b := make([]byte, int(n))
	copy(b, unsafe.Slice((*byte)(p), int(n)))
	return b
}

// message makes the Go message of a complete item.
func (h *amHandler) message(it *amItem) *AMMessage {
	m := &AMMessage{Header: it.header, Data: it.data, Err: it.err}
	if it.reply != nil {
		m.ReplyEndpoint = newEndpoint(h.eng, it.reply)
	}
	return m
}

func (h *amHandler) pump() {
	defer h.wg.Done()
	defer close(h.out)
	for {
		select {
		case <-h.notify:
		case <-h.done:
			h.drain()
			return
		}
		for {
			h.mu.Lock()
			items := h.queue
			h.queue = nil
			h.inPump = len(items)
			h.mu.Unlock()
			if len(items) == 0 {
				break
			}
			for i := range items {
				it := &items[i]
				if it.req != nil {
					// The oldest receive; later ones run meanwhile.
					r := h.eng.waitDone(it.req)
					it.req = nil
					unpinAfter(it.pin, r)
					if r.st != C.SWUCX_OK {
						it.data, it.err = nil, resErr("am_recv", r)
					}
				}
				select {
				case h.out <- h.message(it):
					h.mu.Lock()
					h.inPump--
					h.mu.Unlock()
				case <-h.done:
					h.release(items[i:])
					h.drain()
					return
				}
			}
		}
	}
}

// release drops items that will not be delivered: reply endpoints are destroyed, receives
// still running keep their buffers pinned until they end (waited for in the background).
func (h *amHandler) release(items []amItem) {
	for _, it := range items {
		if it.reply != nil {
			C.swucx_ep_destroy((*C.swucx_ep_t)(it.reply))
		}
		if it.req != nil {
			h.eng.detach(it.req, it.pin, false)
		}
	}
}

func (h *amHandler) drain() {
	h.mu.Lock()
	items := h.queue
	h.queue = nil
	h.mu.Unlock()
	h.release(items)
}

// stop ends delivery: later messages are dropped, the channel is closed. UCX must no longer
// call the handler when its cgo handle is deleted afterwards.
func (h *amHandler) stop() {
	h.mu.Lock()
	if h.stopped.Load() {
		h.mu.Unlock()
		return
	}
	h.stopped.Store(true)
	h.mu.Unlock()
	close(h.done)
	h.wg.Wait()
	h.drain()
}

// liveAMHandles counts the handlers' cgo handles not deleted yet (tests check that Close and
// replacing a handler delete them).
var liveAMHandles atomic.Int64

func (h *amHandler) newHandle() {
	h.handle = cgo.NewHandle(h)
	liveAMHandles.Add(1)
}

func (h *amHandler) deleteHandle() {
	h.handle.Delete()
	liveAMHandles.Add(-1)
}

// stopHandlers replaces every Go handler with one that drops messages (while the worker handle
// is still open), then stops them and deletes their cgo handles, and destroys the AM queues.
// Called by Engine.Close.
func (e *Engine) stopHandlers() {
	e.amMu.Lock()
	hs, qs := e.handlers, e.queues
	e.handlers, e.queues = nil, nil
	replaced := make(map[uint16]bool, len(hs))
	if w := e.worker.acquire(); w != nil {
		for id := range hs {
			r := C.swx_set_am_drop((*C.swucx_worker_t)(w), C.uint16_t(id))
			if r.msg != nil {
				C.free(unsafe.Pointer(r.msg))
			}
			replaced[id] = r.st == C.SWUCX_OK
		}
		e.worker.release()
	}
	e.amMu.Unlock()
	for _, q := range qs {
		q.destroy()
	}
	for id, h := range hs {
		h.stop()
		if replaced[id] {
			h.deleteHandle()
		} // else UCX might still call it: keep the handle (a leak, not a crash)
	}
}
