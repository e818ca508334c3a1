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
	"unsafe"
)

// AMMessage is an active message delivered by Engine.HandleAM.
type AMMessage struct {
	// Header is a copy of the message header.
	Header []byte
	// Data is the payload: a copy of an eager payload, or a rendezvous payload already
	// received into a new buffer.
	Data []byte
	// ReplyEndpoint is the endpoint to answer on, when the sender used AMReply (nil
	// otherwise). Close it when done (AMMessage.Close does).
	ReplyEndpoint *Endpoint
	// Err is set when receiving a rendezvous payload failed (Data is then nil).
	Err error

	// A rendezvous payload not received yet (HandleAMFunc): RecvData takes it.
	desc    *C.swucx_am_desc_t
	pending int
	eng     *Engine
}

// Pending is the length of a rendezvous payload still waiting for RecvData (messages from
// HandleAMFunc only); 0 when the payload is in Data.
func (m *AMMessage) Pending() int { return m.pending }

// RecvData receives the pending rendezvous payload straight into dst (zero copy; len(dst) must
// be at least Pending()) and returns its length. Call it once, from a goroutine, never inside
// the handler function. If ctx ends first, dst stays UCX's until the transfer ends.
func (m *AMMessage) RecvData(ctx context.Context, dst []byte) (int, error) {
	d := m.desc
	if d == nil {
		return 0, &Error{Status: StatusInvalidParam, Op: "am_desc_recv", Msg: "no pending rendezvous payload"}
	}
	if len(dst) < m.pending {
		return 0, &Error{Status: StatusMessageTruncated, Op: "am_desc_recv", Msg: "buffer shorter than the payload"}
	}
	m.desc, m.pending = nil, 0
	pin := new(runtime.Pinner)
	p := pinBytes(pin, dst)
	r := C.swx_am_desc_recv(d, p, C.size_t(len(dst)))
	n, _, err := m.eng.complete(ctx, "am_desc_recv", r, pin, nil)
	return n, err
}

// Close releases the message's reply endpoint and an unreceived rendezvous payload, if any.
// Idempotent.
func (m *AMMessage) Close() error {
	if m.desc != nil {
		C.swucx_am_desc_destroy(m.desc)
		m.desc, m.pending = nil, 0
	}
	if m.ReplyEndpoint != nil {
		ep := m.ReplyEndpoint
		m.ReplyEndpoint = nil
		return ep.Close()
	}
	return nil
}

// amItem is what the UCX callback queues: copies and handles, no UCX pointer of the message.
type amItem struct {
	header []byte
	data   []byte
	desc   *C.swucx_am_desc_t
	length int
	reply  unsafe.Pointer
}

// amHandler is the Go side of one registered AM id. The UCX callback (possibly on several
// threads at once) appends to queue and never blocks; a pump goroutine delivers to out.
type amHandler struct {
	eng    *Engine
	handle cgo.Handle
	out    chan *AMMessage
	fn     func(*AMMessage) // HandleAMFunc: called inline instead of queueing to out

	mu      sync.Mutex
	queue   []amItem
	inPump  int // items the pump took from queue and has not delivered yet
	notify  chan struct{}
	done    chan struct{}
	stopped bool
	wg      sync.WaitGroup
}

// HandleAM registers a handler for active message id and returns the channel its messages
// arrive on (buffered with capacity buffer). Messages are queued without bound while nobody
// reads the channel. Register before traffic starts. The channel is closed by Engine.Close.
func (e *Engine) HandleAM(id uint16, buffer int) (<-chan *AMMessage, error) {
	h := &amHandler{
		eng:    e,
		out:    make(chan *AMMessage, buffer),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	if err := e.register(id, h); err != nil {
		return nil, err
	}
	h.wg.Add(1)
	go h.pump()
	return h.out, nil
}

// HandleAMFunc registers fn as the handler for active message id: UCX's progress calls it
// inline, on whichever thread progresses (possibly several at once), with each message, so fn
// must be quick and must not block or call into the engine. A message's eager payload is a
// copy in Data; a rendezvous payload stays with UCX (Pending() > 0) until a goroutine calls
// RecvData into a buffer of its choice, or Close drops it. The receiver of a message owns it
// and must Close it. After Engine.Close, fn is not called again.
func (e *Engine) HandleAMFunc(id uint16, fn func(*AMMessage)) error {
	return e.register(id, &amHandler{eng: e, fn: fn, done: make(chan struct{})})
}

// register gives h a cgo handle and installs it for id.
func (e *Engine) register(id uint16, h *amHandler) error {
	h.handle = cgo.NewHandle(h)
	w := e.worker.acquire()
	if w == nil {
		h.handle.Delete()
		return closedErr("set_am_handler")
	}
	r := C.swx_set_am_handler((*C.swucx_worker_t)(w), C.uint16_t(id), C.uintptr_t(h.handle))
	e.worker.release()
	if r.st != C.SWUCX_OK {
		h.handle.Delete()
		return resErr("set_am_handler", r)
	}
	e.amMu.Lock()
	e.handlers = append(e.handlers, h)
	e.amMu.Unlock()
	return nil
}

// onMessage runs inside UCX progress (any thread): copy, queue, wake the pump.
func (h *amHandler) onMessage(info *C.swx_am_info) {
	it := amItem{
		header: C.GoBytes(info.header, C.int(info.header_length)),
		desc:   info.desc,
		length: int(info.length),
		reply:  unsafe.Pointer(info.reply_ep),
	}
	if info.desc == nil {
		it.data = C.GoBytes(info.data, C.int(info.length))
	}
	if h.fn != nil {
		h.call(it)
		return
	}
	h.mu.Lock()
	if !h.stopped && it.desc == nil && len(h.queue) == 0 && h.inPump == 0 {
		// Fast path: nothing queued ahead of it, so hand it straight to the channel if
		// there is room (never blocking; under mu, so the order between threads holds).
		m := &AMMessage{Header: it.header, Data: it.data}
		if it.reply != nil {
			m.ReplyEndpoint = newEndpoint(h.eng, it.reply)
		}
		select {
		case h.out <- m:
			h.mu.Unlock()
			return
		default:
		}
	}
	if h.stopped {
		h.mu.Unlock()
		if it.desc != nil {
			C.swucx_am_desc_destroy(it.desc)
		}
		if it.reply != nil {
			C.swucx_ep_destroy((*C.swucx_ep_t)(it.reply))
		}
		return
	}
	h.queue = append(h.queue, it)
	h.mu.Unlock()
	select {
	case h.notify <- struct{}{}:
	default:
	}
}

// call hands one message to a HandleAMFunc handler, or drops it once the engine closed.
func (h *amHandler) call(it amItem) {
	h.mu.Lock()
	stopped := h.stopped
	h.mu.Unlock()
	if stopped {
		h.release([]amItem{it})
		return
	}
	m := &AMMessage{Header: it.header, Data: it.data, eng: h.eng}
	if it.desc != nil {
		m.desc, m.pending = it.desc, it.length
	}
	if it.reply != nil {
		m.ReplyEndpoint = newEndpoint(h.eng, it.reply)
	}
	h.fn(m)
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
			for i, it := range items {
				m := h.deliverable(it)
				select {
				case h.out <- m:
					h.mu.Lock()
					h.inPump--
					h.mu.Unlock()
				case <-h.done:
					m.Close()
					h.release(items[i+1:])
					h.drain()
					return
				}
			}
		}
	}
}

// deliverable makes the Go message, receiving a rendezvous payload first.
func (h *amHandler) deliverable(it amItem) *AMMessage {
	m := &AMMessage{Header: it.header, Data: it.data}
	if it.reply != nil {
		m.ReplyEndpoint = newEndpoint(h.eng, it.reply)
	}
	if it.desc != nil {
		buf := make([]byte, it.length)
		pin := new(runtime.Pinner)
		p := pinBytes(pin, buf)
		r := C.swx_am_desc_recv(it.desc, p, C.size_t(len(buf)))
		if _, _, err := h.eng.complete(context.Background(), "am_desc_recv", r, pin, nil); err != nil {
			m.Err = err
		} else {
			m.Data = buf
		}
	}
	return m
}

func (h *amHandler) release(items []amItem) {
	for _, it := range items {
		if it.desc != nil {
			C.swucx_am_desc_destroy(it.desc)
		}
		if it.reply != nil {
			C.swucx_ep_destroy((*C.swucx_ep_t)(it.reply))
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

// stop ends delivery: later messages are dropped, the channel is closed. The cgo handle stays
// valid (UCX may still call the handler while the worker lives).
func (h *amHandler) stop() {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return
	}
	h.stopped = true
	h.mu.Unlock()
	close(h.done)
	h.wg.Wait()
	h.drain()
}

func (h *amHandler) onAM(msg *C.swucx_am_msg_t) {
	var info C.swx_am_info
	C.swx_am_extract(msg, &info)
	h.onMessage(&info)
}
