// Command pingpong-go is the Go twin of examples/pingpong.rs and examples/c/pingpong.c: the
// same flags, the same RESULT line and the same wire protocol (see the header comment of
// examples/pingpong.rs), so a Go client runs against a Rust or C server and the reverse.
//
//	pingpong-go --server [--listen 0.0.0.0:13337] [--transport shm|tcp] [--features LETTERS]
//	pingpong-go --connect 127.0.0.1:13337 --api tag|am|stream --mode lat|bw --size 8
//	            --iters 100000 [--warmup N] [--window 32] [--front] [--wireup cm|address]
//	            [--transport shm|tcp] [--features LETTERS] [--idle-secs N]
//
// The Go package always waits through its Engine (the thread-safe front), so every run is a
// --front run; the RESULT line says front=1 when --front is given, as the others do. Buffers
// are one UCX-allocated region (Context.Allocate) used through MemRegion.Bytes; active-message
// payloads are received into it: in latency runs both sides take each message with
// AMQueue.Recv (one C call per message, no Go code inside UCX's progress); in bandwidth runs
// through handlers that start rendezvous receives at once (the server: HandleAMFunc, whose
// function starts each with AMMessage.RecvDataStart; the client: AMConfig.Alloc). With
// --idle-secs the idle measurement keeps two goroutines blocked on the connection with a
// cancellable context. --cpu binds the goroutine that drives the run (locked to its thread) to
// that CPU, as the C and Rust ping-pongs bind their one thread; in bandwidth runs the process's
// other threads are bound too (cpuBinding). Accepted and ignored: --multi, --front-spin-us. Bandwidth keeps --window
// operations in flight with the *Start methods and Request.Wait, as the others do.
package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	swucx "github.com/swucx/swucx/go"
)

const (
	magic     = 0x50505753
	version   = 1
	headerLen = 40

	ctrl    = uint64(0xC7A1000000000000)
	hello   = ctrl | 1
	ready   = ctrl | 2
	ack     = ctrl | 3
	bye     = ctrl | 4
	dataTag = uint64(1)
	amData  = uint16(7)
	maxCtrl = 64 * 1024
	all     = ^uint64(0)
)

const (
	apiTag = iota
	apiAM
	apiStream
)

var apiNames = []string{"tag", "am", "stream"}

// The run's mode, as the wire header carries it.
const (
	modeLat = iota
	modeBW
)

type params struct {
	api, mode     int // mode: modeLat or modeBW
	size, iters   uint64
	warmup        uint64
	window        uint32
	front, addrWU bool
}

func (p *params) encode(h []byte) {
	binary.LittleEndian.PutUint32(h[0:], magic)
	binary.LittleEndian.PutUint16(h[4:], version)
	h[6], h[7] = byte(p.api), byte(p.mode)
	binary.LittleEndian.PutUint64(h[8:], p.size)
	binary.LittleEndian.PutUint64(h[16:], p.iters)
	binary.LittleEndian.PutUint64(h[24:], p.warmup)
	binary.LittleEndian.PutUint32(h[32:], p.window)
	var flags uint32
	if p.front {
		flags |= 1
	}
	if p.addrWU {
		flags |= 2
	}
	binary.LittleEndian.PutUint32(h[36:], flags)
}

func (p *params) validate() error {
	switch {
	case p.iters == 0:
		return errors.New("iters must be > 0")
	case p.window == 0:
		return errors.New("window must be > 0")
	case p.size > 1<<32:
		return errors.New("size must be <= 4 GiB")
	case p.api == apiStream && p.size == 0:
		return errors.New("stream needs size > 0")
	}
	return nil
}

func decode(h []byte) (params, error) {
	var p params
	if len(h) < headerLen {
		return p, fmt.Errorf("header is %d bytes, want %d", len(h), headerLen)
	}
	if binary.LittleEndian.Uint32(h) != magic {
		return p, errors.New("bad header magic")
	}
	if v := binary.LittleEndian.Uint16(h[4:]); v != version {
		return p, fmt.Errorf("header version %d, want %d", v, version)
	}
	if h[6] > 2 || h[7] > 1 {
		return p, fmt.Errorf("unknown api %d or mode %d", h[6], h[7])
	}
	p.api, p.mode = int(h[6]), int(h[7])
	p.size = binary.LittleEndian.Uint64(h[8:])
	p.iters = binary.LittleEndian.Uint64(h[16:])
	p.warmup = binary.LittleEndian.Uint64(h[24:])
	p.window = binary.LittleEndian.Uint32(h[32:])
	flags := binary.LittleEndian.Uint32(h[36:])
	p.front, p.addrWU = flags&1 != 0, flags&2 != 0
	return p, p.validate()
}

func parseFeatures(letters string) (swucx.Features, error) {
	var f swucx.Features
	for _, c := range letters {
		switch c {
		case 't':
			f |= swucx.FeatureTag
		case 's':
			f |= swucx.FeatureStream
		case 'm':
			f |= swucx.FeatureAM
		case 'r':
			f |= swucx.FeatureRMA
		case 'w':
			f |= swucx.FeatureWakeup
		default:
			return 0, fmt.Errorf("unknown feature letter '%c' (use t, s, m, r, w)", c)
		}
	}
	if f&swucx.FeatureTag == 0 {
		return 0, errors.New("features must include t (control messages are tag messages)")
	}
	// The Go package waits through an Engine, which sleeps on the worker's event fd.
	return f | swucx.FeatureWakeup, nil
}

func newContext(transport string, features swucx.Features) (*swucx.Context, error) {
	settings := map[string]string{}
	switch transport {
	case "shm":
		if os.Getenv("UCX_TLS") == "" {
			settings["TLS"] = "posix,sysv,cma,self,tcp"
		}
	case "tcp":
		if os.Getenv("UCX_TLS") == "" {
			settings["TLS"] = "tcp,self"
		}
		if os.Getenv("UCX_NET_DEVICES") == "" {
			settings["NET_DEVICES"] = "lo"
		}
	}
	return swucx.NewContext(swucx.Config{Name: "pingpong", Features: features, Settings: settings})
}

// io is one side's data path for a session.
type io struct {
	eng  *swucx.Engine
	ep   *swucx.Endpoint
	api  int
	size int
	sbuf []byte // in the registered region
	rbuf []byte
	am   amSource
	// amq takes the active messages of latency runs (both sides): each receive is one
	// AMQueue.Recv, a wait in C as TagRecv's is, with no Go handler inside UCX's progress.
	amq *swucx.AMQueue
}

// amSource is where a session's active messages come from.
type amSource interface {
	// ready reports whether a message is waiting.
	ready() bool
	// take returns the next message's payload length once the payload is in the receive
	// buffer (or in the message), waiting for the message if none is waiting.
	take(ctx context.Context) (int, error)
}

// amChannel is the client's source: the package's HandleAMWith, which receives each payload
// into the receive buffer (AMConfig.Alloc) before it hands the message over.
type amChannel <-chan *swucx.AMMessage

func (c amChannel) ready() bool { return len(c) > 0 }

func (c amChannel) take(ctx context.Context) (int, error) {
	m, ok, err := next(ctx, c)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errors.New("AM handler closed")
	}
	defer m.Close()
	return len(m.Data), m.Err
}

// next receives from ch (ok false once it is closed), or ctx's error if ctx ends first. A value
// already there (after a successful spin) is taken without a two-way select.
func next[T any](ctx context.Context, ch <-chan T) (v T, ok bool, err error) {
	select {
	case v, ok = <-ch:
		return v, ok, nil
	default:
	}
	select {
	case v, ok = <-ch:
		return v, ok, nil
	case <-ctx.Done():
		return v, false, ctx.Err()
	}
}

// arrival is an active message the AM handler took, with the receive of its rendezvous payload
// (into the session's receive buffer) already started.
type arrival struct {
	m    *swucx.AMMessage
	recv *swucx.Request // nil: the payload is in m.Data (or err says why it is not)
	err  error
}

// amInbox is the server's source. Its handler (HandleAMFunc, inside UCX's progress) starts
// receiving a rendezvous payload into the session's receive buffer at once
// (AMMessage.RecvDataStart), as the C and Rust handlers do: with a window of messages the
// payloads move while earlier ones are consumed, and no goroutine hands messages on. The
// handler queues without bound and never blocks: it runs on whichever thread progresses UCX,
// holding the worker, so a handler waiting for room would stop the engine, for good once
// nobody takes (the arrivals an aborted session leaves, which drain drops between sessions).
type amInbox struct {
	mu     sync.Mutex
	queue  []arrival
	n      atomic.Int64           // len(queue), for ready
	notify chan struct{}          // capacity 1: something was queued
	rbuf   atomic.Pointer[[]byte] // the current session's receive buffer
}

func (in *amInbox) ready() bool { return in.n.Load() > 0 }

// put queues an arrival (inside UCX's progress: never blocks).
func (in *amInbox) put(a arrival) {
	in.mu.Lock()
	in.queue = append(in.queue, a)
	in.n.Add(1)
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// pop takes the oldest arrival, if any.
func (in *amInbox) pop() (arrival, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.queue) == 0 {
		return arrival{}, false
	}
	a := in.queue[0]
	in.queue[0] = arrival{}
	in.queue = in.queue[1:]
	in.n.Add(-1)
	return a, true
}

// drain drops every queued arrival (closing the message, detaching its payload's receive) and
// returns how many there were.
func (in *amInbox) drain() int {
	in.mu.Lock()
	q := in.queue
	in.queue = nil
	in.n.Store(0)
	in.mu.Unlock()
	for _, a := range q {
		if a.recv != nil {
			a.recv.Close()
		}
		a.m.Close()
	}
	return len(q)
}

func (in *amInbox) take(ctx context.Context) (int, error) {
	var a arrival
	for {
		var ok bool
		if a, ok = in.pop(); ok {
			break
		}
		select {
		case <-in.notify:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	defer a.m.Close()
	n, err := len(a.m.Data), cmp.Or(a.err, a.m.Err)
	if a.recv != nil && err == nil {
		n, _, err = a.recv.Wait(ctx)
	}
	return n, err
}

func newAMInbox(eng *swucx.Engine) (*amInbox, error) {
	in := &amInbox{notify: make(chan struct{}, 1)}
	return in, in.register(eng)
}

// register makes the inbox amData's handler (again, after a latency session's AMQueue).
func (in *amInbox) register(eng *swucx.Engine) error {
	return eng.HandleAMFunc(amData, func(m *swucx.AMMessage) {
		a := arrival{m: m}
		if m.Pending() > 0 {
			if b := in.rbuf.Load(); b != nil {
				a.recv, a.err = m.RecvDataStart(*b)
			} else {
				a.err = errors.New("rendezvous payload outside a session")
			}
		}
		in.put(a)
	})
}

func (o *io) send(ctx context.Context, buf []byte) error {
	switch o.api {
	case apiTag:
		return o.ep.TagSend(ctx, buf, dataTag)
	case apiAM:
		return o.ep.AMSend(ctx, amData, nil, buf, 0)
	default:
		return o.ep.StreamSend(ctx, buf)
	}
}

func (o *io) recv(ctx context.Context, buf []byte) error {
	switch o.api {
	case apiTag:
		n, _, err := o.eng.TagRecv(ctx, buf, dataTag, all)
		if err == nil && n != o.size {
			err = fmt.Errorf("received %d bytes, want %d", n, o.size)
		}
		return err
	case apiAM:
		if o.amq != nil {
			got, err := o.amq.Recv(ctx, buf)
			if err == nil && got.N != o.size {
				err = fmt.Errorf("received %d bytes, want %d", got.N, o.size)
			}
			return err
		}
		// Spin driving progress (the handler then runs on this thread) as long as the
		// Engine's own waits do (swucx::DEFAULT_SPIN) before sleeping on the channel; Spin
		// hands progress to the background thread if it runs out (docs/design.md).
		o.eng.Spin(200*time.Microsecond, o.am.ready)
		n, err := o.am.take(ctx)
		if err != nil {
			return err
		}
		if n != o.size {
			return fmt.Errorf("received %d bytes, want %d", n, o.size)
		}
		return nil
	default:
		return o.ep.StreamRecv(ctx, buf)
	}
}

func (o *io) sendStart() (*swucx.Request, error) {
	switch o.api {
	case apiTag:
		return o.ep.TagSendStart(o.sbuf, dataTag)
	case apiAM:
		return o.ep.AMSendStart(amData, nil, o.sbuf, 0)
	default:
		return o.ep.StreamSendStart(o.sbuf)
	}
}

// recvStart posts a tag or stream receive (AM messages come through the handler's channel).
func (o *io) recvStart() (*swucx.Request, error) {
	if o.api == apiTag {
		return o.eng.TagRecvStart(o.rbuf, dataTag, all)
	}
	return o.ep.StreamRecvStart(o.rbuf)
}

// yieldEvery is how often windowed passes through Go's scheduler. A goroutine that only
// waits in C (each 1 MiB message over tcp is a ~170 us wait) never does by itself, and after
// 10 ms of that Go's sysmon takes its P away during every wait and stays awake in its 20 us
// loop: ~4,000 preemptions a second on the sending thread's CPU, ~10% of the 1 MiB bandwidth
// (docs/bench.md, finding 20). A real reader that returns to its caller between reads passes
// through the scheduler anyway.
const yieldEvery = 3 * time.Millisecond

// windowed runs count operations from start with up to window of them in flight, waiting for
// the oldest when the window is full.
func windowed(ctx context.Context, count uint64, window uint32, start func() (*swucx.Request, error)) error {
	ring := make([]*swucx.Request, 0, window)
	var first error
	lastYield := time.Now()
	for i := uint64(0); i < count && first == nil; i++ {
		if len(ring) == int(window) {
			if now := time.Now(); now.Sub(lastYield) >= yieldEvery {
				runtime.Gosched()
				lastYield = now
			}
			if _, _, err := ring[0].Wait(ctx); err != nil {
				first = err
			}
			ring = ring[1:]
		}
		q, err := start()
		if err != nil {
			first = err
			break
		}
		ring = append(ring, q)
	}
	for _, q := range ring {
		if _, _, err := q.Wait(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// parallel runs count operations with window of them in flight (one per goroutine).
func parallel(count uint64, window uint32, op func() error) error {
	var next atomic.Uint64
	var wg sync.WaitGroup
	var first atomic.Value
	workers := uint64(window)
	if workers > count {
		workers = count
	}
	if workers == 1 {
		// On the calling goroutine (the one pinThread may have bound to a CPU).
		for i := uint64(0); i < count; i++ {
			if err := op(); err != nil {
				return err
			}
		}
		return nil
	}
	for w := uint64(0); w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= count {
				if err := op(); err != nil {
					first.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}

// ctrlSend sends a control message. Right after connecting, UCX 1.13 on a MULTI worker whose
// wireup is still running on another thread can refuse a send against a lane's old limits
// ("Invalid am_short length" -> ErrInvalidParam); such a send is retried for up to 100 ms.
func ctrlSend(ctx context.Context, ep *swucx.Endpoint, tag uint64, buf []byte) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = ep.TagSend(ctx, buf, tag); !errors.Is(err, swucx.ErrInvalidParam) {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
	return err
}

func ctrlRecv(ctx context.Context, eng *swucx.Engine, tag uint64, buf []byte) (int, error) {
	n, _, err := eng.TagRecv(ctx, buf, tag, all)
	return n, err
}

// ---- server ----

func runServer(listen, transport, features string, cpu int) error {
	if features == "" {
		features = "tsm"
	}
	f, err := parseFeatures(features)
	if err != nil {
		return err
	}
	uc, err := newContext(transport, f)
	if err != nil {
		return err
	}
	defer uc.Close()
	eng, err := swucx.NewEngine(uc)
	if err != nil {
		return err
	}
	defer eng.Close()
	cpus, err := newCPUBinding(cpu)
	if err != nil {
		return err
	}
	if err := cpus.bind(false); err != nil {
		return err
	}
	var am *amInbox
	if f&swucx.FeatureAM != 0 {
		// Messages go to the session as they arrive, their rendezvous payloads already moving
		// into its buffer (amInbox); the session's goroutine waits for each in turn.
		if am, err = newAMInbox(eng); err != nil {
			return err
		}
	}
	ln, err := eng.Listen(listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Fprintf(os.Stderr, "pingpong server listening on %s\n", strings.Replace(listen, ":0", fmt.Sprintf(":%d", ln.Port()), 1))
	for served := 1; ; served++ {
		ep, err := ln.Accept(context.Background())
		if err != nil {
			return err
		}
		p, err := serve(uc, eng, ep, am, cpus)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pingpong server: client #%d: %v\n", served, err)
		} else {
			fmt.Fprintf(os.Stderr, "pingpong server: client #%d done (%s %s size=%d iters=%d)\n",
				served, apiNames[p.api], []string{"lat", "bw"}[p.mode], p.size, p.iters)
		}
		ep.Close()
	}
}

func serve(uc *swucx.Context, eng *swucx.Engine, cm *swucx.Endpoint, am *amInbox, cpus *cpuBinding) (p params, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	buf := make([]byte, maxCtrl)
	n, err := ctrlRecv(ctx, eng, hello, buf)
	if err != nil {
		return params{}, err
	}
	byeDone := make(chan error, 1)
	go func() { _, err := ctrlRecv(ctx, eng, bye, nil); byeDone <- err }()
	p, err = decode(buf[:n])
	if err != nil {
		return p, err
	}
	if err := cpus.bind(p.mode == modeBW); err != nil {
		return p, err
	}
	ep := cm
	var readyMsg []byte
	if p.addrWU {
		if readyMsg, err = eng.Address(); err != nil {
			return p, err
		}
		if ep, err = eng.ConnectAddress(buf[headerLen:n]); err != nil {
			return p, err
		}
		defer ep.Close()
	}
	region, sbuf, rbuf, err := buffers(uc, int(p.size))
	if err != nil {
		return p, err
	}
	defer region.Close()
	o := &io{eng: eng, ep: ep, api: p.api, size: int(p.size), sbuf: sbuf, rbuf: rbuf}
	if p.api == apiAM {
		if am == nil {
			return p, errors.New("AM requested but the server has no AM feature")
		}
		o.am = am
		// Arrivals an aborted session left (its client gone) are not this session's.
		dropLeftovers(am)
		am.rbuf.Store(&o.rbuf)
		defer dropLeftovers(am) // after the receive buffer is withdrawn, before the region goes
		defer am.rbuf.Store(nil)
		if p.mode == modeLat {
			// Before the ready message, so before the client sends; the inbox takes over
			// again after the session (which closes the queue).
			if o.amq, err = eng.AMQueue(amData); err != nil {
				return p, err
			}
			defer func() { err = cmp.Or(err, am.register(eng)) }()
		}
	}
	if err := ctrlSend(ctx, cm, ready, readyMsg); err != nil {
		return p, err
	}
	if p.mode == modeLat {
		for i := uint64(0); i < p.warmup+p.iters; i++ {
			if err := o.recv(ctx, o.rbuf); err != nil {
				return p, err
			}
			if err := o.send(ctx, o.sbuf); err != nil {
				return p, err
			}
		}
	} else {
		for _, count := range []uint64{p.warmup, p.iters} {
			if count == 0 {
				continue
			}
			var err error
			if p.api == apiAM {
				err = parallel(count, 1, func() error { return o.recv(ctx, o.rbuf) })
			} else {
				err = windowed(ctx, count, p.window, o.recvStart)
			}
			if err != nil {
				return p, err
			}
			if err := ctrlSend(ctx, ep, ack, nil); err != nil {
				return p, err
			}
		}
	}
	return p, <-byeDone
}

// dropLeftovers drops the arrivals queued for no session, saying how many.
func dropLeftovers(am *amInbox) {
	if n := am.drain(); n > 0 {
		fmt.Fprintf(os.Stderr, "pingpong server: dropped %d active messages left from a session\n", n)
	}
}

// buffers allocates the registered region that holds the send and the receive buffer of size
// bytes, laid out as the C and Rust ping-pongs lay theirs out (each at least 64 bytes apart, the
// send buffer filled with 0xA5).
func buffers(uc *swucx.Context, size int) (region *swucx.MemRegion, sbuf, rbuf []byte, err error) {
	unit := max(size, 64)
	if region, err = uc.Allocate(2 * unit); err != nil {
		return nil, nil, nil, err
	}
	b := region.Bytes()
	sbuf, rbuf = b[:size], b[unit:unit+size]
	for i := range sbuf {
		sbuf[i] = 0xA5
	}
	return region, sbuf, rbuf, nil
}

// ---- client ----

type clientArgs struct {
	connect, transport, features string
	p                            params
	warmupSet                    bool
	idleSecs                     int64
	cpu                          int
}

// cpuBinding is --cpu: it locks the goroutine that drives the run to its OS thread and binds
// threads to the CPU, as the C and Rust ping-pongs bind their one thread. A nil binding (no
// --cpu) does nothing. The goroutine stays locked until the process exits.
type cpuBinding struct {
	cpu  int
	free cpuMask // the process's CPU mask before binding
}

// cpuMask is a sched_setaffinity mask of CPUs 0-1023.
type cpuMask [1024 / 64]uint64

func newCPUBinding(cpu int) (*cpuBinding, error) {
	if cpu < 0 {
		return nil, nil
	}
	if cpu >= 1024 {
		return nil, fmt.Errorf("--cpu %d: at most 1023", cpu)
	}
	runtime.LockOSThread()
	b := &cpuBinding{cpu: cpu}
	if err := setAffinity(0, &b.free, false); err != nil {
		return nil, fmt.Errorf("--cpu %d: sched_getaffinity: %v", cpu, err)
	}
	return b, nil
}

// bind binds the calling (locked) thread to the CPU, and the process's other threads too when
// whole, else leaves them every CPU the process had. Latency runs bind one thread: with the
// whole process on one core, the goroutine an active message is handed to waits behind the
// spinning one (AM latency 100+ us). Bandwidth runs bind them all: the engine's background
// thread copies rendezvous fragments as well, and left free it ran on the peer's CPU (1 MiB,
// Go at both ends against the C pair, medians of alternating runs: shm 0.81x -> 0.88x, tcp
// 0.70x -> 0.80x). Threads started later inherit the mask of the thread that starts them.
func (b *cpuBinding) bind(whole bool) error {
	if b == nil {
		return nil
	}
	var one cpuMask
	one[b.cpu/64] = 1 << (b.cpu % 64)
	others := &b.free
	if whole {
		others = &one
	}
	if err := setAffinity(0, &one, true); err != nil {
		return fmt.Errorf("--cpu %d: sched_setaffinity: %v", b.cpu, err)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("--cpu %d: %v", b.cpu, err)
	}
	self := syscall.Gettid()
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil || tid == self {
			continue
		}
		// A thread that exited meanwhile (ESRCH) needs nothing.
		if err := setAffinity(tid, others, true); err != nil && err != syscall.ESRCH {
			return fmt.Errorf("--cpu %d: sched_setaffinity(%d): %v", b.cpu, tid, err)
		}
	}
	if whole {
		// Every thread now has the one CPU (and threads started later inherit it): the
		// goroutine need not stay on this one. Unlocked, its yields (windowed) are cheap.
		runtime.UnlockOSThread()
	}
	return nil
}

// setAffinity sets (or, with set false, reads) the CPU mask of thread tid (0: the caller).
func setAffinity(tid int, mask *cpuMask, set bool) error {
	call := uintptr(syscall.SYS_SCHED_GETAFFINITY)
	if set {
		call = syscall.SYS_SCHED_SETAFFINITY
	}
	// The pointer is converted in the call expression, as unsafe.Pointer's rules for syscalls
	// require.
	_, _, e := syscall.RawSyscall(call, uintptr(tid), unsafe.Sizeof(*mask),
		uintptr(unsafe.Pointer(mask)))
	if e != 0 {
		return e
	}
	return nil
}

func runClient(a clientArgs) (string, error) {
	p := a.p
	if !a.warmupSet {
		p.warmup = min(p.iters/10, 10000)
	}
	if err := p.validate(); err != nil {
		return "", err
	}
	features := a.features
	if features == "" {
		features = "t" + []string{"", "m", "s"}[p.api]
	}
	f, err := parseFeatures(features)
	if err != nil {
		return "", err
	}
	uc, err := newContext(a.transport, f)
	if err != nil {
		return "", err
	}
	defer uc.Close()
	eng, err := swucx.NewEngine(uc)
	if err != nil {
		return "", err
	}
	defer eng.Close()
	cpus, err := newCPUBinding(a.cpu)
	if err != nil {
		return "", err
	}
	if err := cpus.bind(p.mode == modeBW); err != nil {
		return "", err
	}
	region, sbuf, rbuf, err := buffers(uc, int(p.size))
	if err != nil {
		return "", err
	}
	defer region.Close()
	var am amChannel
	var amq *swucx.AMQueue
	if p.api == apiAM && p.mode == modeLat {
		if amq, err = eng.AMQueue(amData); err != nil {
			return "", err
		}
		defer amq.Close()
	} else if p.api == apiAM {
		// Payloads land in the receive buffer (in the registered region), the way the Rust
		// and C ping-pongs receive into their pre-allocated buffer.
		alloc := func(n int) []byte {
			if n <= len(rbuf) {
				return rbuf[:n]
			}
			return make([]byte, n)
		}
		if am, err = eng.HandleAMWith(amData, swucx.AMConfig{Buffer: 1024, Alloc: alloc}); err != nil {
			return "", err
		}
	}
	cm, err := eng.Connect(a.connect)
	if err != nil {
		return "", err
	}
	defer cm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Second)
	defer cancel()
	readyBuf := make([]byte, maxCtrl)
	readyDone := make(chan error, 1)
	var readyLen int
	go func() {
		n, err := ctrlRecv(ctx, eng, ready, readyBuf)
		readyLen = n
		readyDone <- err
	}()
	h := make([]byte, headerLen)
	p.encode(h)
	if p.addrWU {
		own, err := eng.Address()
		if err != nil {
			return "", err
		}
		h = append(h, own...)
	}
	if err := ctrlSend(ctx, cm, hello, h); err != nil {
		return "", fmt.Errorf("handshake with %s: %w", a.connect, err)
	}
	if err := <-readyDone; err != nil {
		return "", fmt.Errorf("handshake with %s: %w", a.connect, err)
	}
	ep := cm
	if p.addrWU {
		if ep, err = eng.ConnectAddress(readyBuf[:readyLen]); err != nil {
			return "", err
		}
		defer ep.Close()
	}
	o := &io{eng: eng, ep: ep, api: p.api, size: int(p.size), sbuf: sbuf, rbuf: rbuf, am: am, amq: amq}
	var result string
	if p.mode == modeLat {
		result, err = clientLat(ctx, o, p)
	} else {
		result, err = clientBW(ctx, o, p)
	}
	if err != nil {
		return "", err
	}
	if p.front {
		result += " front=1"
		if a.idleSecs >= 0 {
			pct, err := idleCPU(ctx, o, time.Duration(a.idleSecs)*time.Second)
			if err != nil {
				return "", err
			}
			result += fmt.Sprintf(" idle_secs=%d idle_cpu_pct=%.2f", a.idleSecs, pct)
		}
	}
	return result, ctrlSend(ctx, ep, bye, nil)
}

// idleCPU measures the process's CPU use (% of one core) over d with the connection open and
// nothing to do, while two goroutines are blocked on it with a cancellable context: one in
// Endpoint.TagRecv, one in Request.Wait (receives nobody answers); then it cancels them.
func idleCPU(ctx context.Context, o *io, d time.Duration) (float64, error) {
	const idleTag = ctrl | 0x1d1e
	idle, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() {
		_, _, err := o.ep.TagRecv(idle, make([]byte, 8), idleTag, all)
		errs <- err
	}()
	q, err := o.eng.TagRecvStart(make([]byte, 8), idleTag+1, all)
	if err != nil {
		return 0, err
	}
	go func() {
		_, _, err := q.Wait(idle)
		errs <- err
	}()
	time.Sleep(100 * time.Millisecond) // past the waits' spin and first sleep
	cpu0, t0 := cpuSeconds(), time.Now()
	time.Sleep(d)
	pct := 100 * (cpuSeconds() - cpu0) / time.Since(t0).Seconds()
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			return 0, fmt.Errorf("idle wait: want a cancellation, got %v", err)
		}
	}
	return pct, nil
}

func clientLat(ctx context.Context, o *io, p params) (string, error) {
	rtts := make([]time.Duration, 0, p.iters)
	var start, last time.Time
	for i := uint64(0); i < p.warmup+p.iters; i++ {
		if i == p.warmup {
			start = time.Now()
			last = start
		}
		if err := o.send(ctx, o.sbuf); err != nil {
			return "", err
		}
		if err := o.recv(ctx, o.rbuf); err != nil {
			return "", err
		}
		if i >= p.warmup {
			t := time.Now()
			rtts = append(rtts, t.Sub(last))
			last = t
		}
	}
	elapsed := last.Sub(start)
	sort.Slice(rtts, func(i, j int) bool { return rtts[i] < rtts[j] })
	pct := func(q int) float64 {
		n := len(rtts)
		idx := (n*q + 99) / 100
		idx = max(1, min(idx, n))
		return float64(rtts[idx-1].Nanoseconds()) / 2 / 1e3
	}
	avg := float64(elapsed.Nanoseconds()) / float64(p.iters) / 2 / 1e3
	return fmt.Sprintf("RESULT mode=lat api=%s size=%d iters=%d lat_us_p50=%.3f lat_us_p99=%.3f lat_us_avg=%.3f",
		apiNames[p.api], p.size, p.iters, pct(50), pct(99), avg), nil
}

func clientBW(ctx context.Context, o *io, p params) (string, error) {
	var elapsed time.Duration
	for k, count := range []uint64{p.warmup, p.iters} {
		if count == 0 {
			continue
		}
		// The acknowledgement's receive is posted first and waited for after the sends (as
		// the C client does), not waited for by a goroutine meanwhile.
		ackReq, err := o.eng.TagRecvStart(nil, ack, all)
		if err != nil {
			return "", err
		}
		start := time.Now()
		if err := windowed(ctx, count, p.window, o.sendStart); err != nil {
			return "", err
		}
		if _, _, err := ackReq.Wait(ctx); err != nil {
			return "", err
		}
		if k == 1 {
			elapsed = time.Since(start)
		}
	}
	gbps := float64(p.iters) * float64(p.size) / elapsed.Seconds() / 1e9
	return fmt.Sprintf("RESULT mode=bw api=%s size=%d iters=%d window=%d gbps=%.3f",
		apiNames[p.api], p.size, p.iters, p.window, gbps), nil
}

func cpuSeconds() float64 {
	var u syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &u)
	return float64(u.Utime.Sec+u.Stime.Sec) + float64(u.Utime.Usec+u.Stime.Usec)*1e-6
}

func main() {
	fs := flag.NewFlagSet("pingpong-go", flag.ContinueOnError)
	server := fs.Bool("server", false, "run the server")
	listen := fs.String("listen", "0.0.0.0:13337", "server address")
	connect := fs.String("connect", "", "server to connect to (ip:port)")
	api := fs.String("api", "tag", "tag, am or stream")
	mode := fs.String("mode", "lat", "lat or bw")
	size := fs.Uint64("size", 8, "message size in bytes")
	iters := fs.Uint64("iters", 100000, "measured iterations")
	warmup := fs.Uint64("warmup", 0, "warm-up iterations (default iters/10, at most 10000)")
	window := fs.Uint("window", 32, "sends in flight for bw")
	front := fs.Bool("front", false, "mark the run as a front (Engine) run; Go always uses the Engine")
	fs.Uint("front-spin-us", 0, "accepted, ignored (the engine's default spin is used)")
	fs.Bool("multi", false, "accepted, ignored (the Engine's worker is always MULTI)")
	idle := fs.Int64("idle-secs", -1, "with --front: stay idle this long and report CPU use")
	wireup := fs.String("wireup", "cm", "cm or address")
	transport := fs.String("transport", "", "shm or tcp (sets UCX_TLS unless set)")
	cpu := fs.Int("cpu", -1, "bind the goroutine that drives the run, and its thread, to this CPU")
	features := fs.String("features", "", "UCP features as letters t s m r w")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	fail := func(code int, err error) {
		fmt.Fprintf(os.Stderr, "pingpong: error: %v\n", err)
		os.Exit(code)
	}
	if fs.NArg() > 0 {
		fail(2, fmt.Errorf("unexpected argument '%s'", fs.Arg(0)))
	}
	if *transport != "" && *transport != "shm" && *transport != "tcp" {
		fail(2, fmt.Errorf("--transport: shm or tcp, not '%s'", *transport))
	}
	if *server == (*connect != "") {
		fail(2, errors.New("exactly one of --server and --connect is required"))
	}
	if *server {
		fail(1, runServer(*listen, *transport, *features, *cpu))
	}
	a := clientArgs{connect: *connect, transport: *transport, features: *features, idleSecs: *idle, cpu: *cpu}
	a.p = params{size: *size, iters: *iters, warmup: *warmup, window: uint32(*window), front: *front}
	fs.Visit(func(f *flag.Flag) { a.warmupSet = a.warmupSet || f.Name == "warmup" })
	switch *api {
	case "tag":
		a.p.api = apiTag
	case "am":
		a.p.api = apiAM
	case "stream":
		a.p.api = apiStream
	default:
		fail(2, fmt.Errorf("--api: tag, am or stream, not '%s'", *api))
	}
	switch *mode {
	case "lat":
	case "bw":
		a.p.mode = modeBW
	default:
		fail(2, fmt.Errorf("--mode: lat or bw, not '%s'", *mode))
	}
	switch *wireup {
	case "cm":
	case "address":
		a.p.addrWU = true
	default:
		fail(2, fmt.Errorf("--wireup: cm or address, not '%s'", *wireup))
	}
	go func() { time.Sleep(600 * time.Second); fail(3, errors.New("watchdog: still running after 600 s")) }()
	result, err := runClient(a)
	if err != nil {
		fail(1, err)
	}
	fmt.Println(result)
}
