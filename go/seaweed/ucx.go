package seaweed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	swucx "github.com/swucx/swucx/go"
)

const (
	// spinFor is how long a reader drives UCX progress itself before sleeping: a reply over
	// shared memory or RDMA comes back within microseconds, faster than a wake-up.
	spinFor = 300 * time.Microsecond
	// failurePoll is how often a sleeping reader checks its connection for a peer failure.
	failurePoll = 20 * time.Millisecond
	// spinWhileWaiting: a reader spins only while at most this many readers wait for replies.
	// With more, replies keep arriving and the engine's thread delivers them; a spinner would
	// only take CPU from readers busy with their bytes.
	spinWhileWaiting = 2
	// maxRetries bounds the requests sent again after BUSY or STALE.
	maxRetries = 8
)

// payloadGrace is how long a read whose context ended goes on waiting for a rendezvous
// payload already moving into its buffer before it cuts the connection: a payload in flight
// cannot be abandoned without UCX writing into the caller's buffer later, and a server that
// stalls mid-transfer with its connection alive (stopped, swapping) would hold the read
// forever. A variable for tests (export_test.go).
var payloadGrace = 10 * time.Second

// payloadHook, when set (tests: export_test.go), runs as a payload receive starts.
var payloadHook func()

// errProbe: a new connection's first request got no reply within ProbeTimeout.
var errProbe = errors.New("no reply to the first request on a new connection")

// errRetired: the read's connection was closed because another read on it failed.
var errRetired = errors.New("connection closed after another read's failure")

// errDown: the server's UCX listener failed within RetryUCXAfter; reads go over HTTP meanwhile.
var errDown = errors.New("the server's UCX listener failed moments ago (Options.RetryUCXAfter)")

// readUCX reads over one of s's connections. With fallback set, the read did not happen and
// should go over HTTP (fallback is the counter of the reason, err says why); otherwise n and
// err are final.
func (c *Client) readUCX(ctx context.Context, s *server, id FileID, offset uint64, dst []byte, jwt string) (n int, fallback *atomic.Uint64, err error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return 0, nil, fmt.Errorf("read %s: waiting for a slot: %w", id, ctx.Err())
	}
	defer func() { <-s.sem }()
	size := uint64(len(dst))
	backoff := time.Millisecond
	var held *conn // the connection the attempt uses, released when the read is done with it
	defer func() {
		if held != nil {
			held.release()
		}
	}()
	for attempt := 0; ; attempt++ {
		if held != nil {
			held.release()
			held = nil
		}
		cn, err := s.conn(ctx, c)
		switch {
		case err == nil:
			held = cn
		case errors.Is(err, ErrClosed):
			return 0, nil, fmt.Errorf("read %s: %w", id, err)
		case ctx.Err() != nil:
			return 0, nil, fmt.Errorf("read %s: resolving %s: %w", id, s.http, ctx.Err())
		default:
			s.markDown(c, nil)
			return 0, &c.stats.unreachable, fmt.Errorf("connecting: %w", err)
		}
		// The CRC of a whole large needle is checked here, not on the server: the work spreads
		// over the clients, and the check covers the transfer too.
		req := readRequest{version: uint8(cn.version.Load()), fid: id, offset: offset, size: size, flags: crcAtClient, jwt: jwt}
		if cn.direct.mode() != directOff && req.version >= 2 {
			req.flags |= wantDirect
		}
		rep, msg, err := c.roundTrip(ctx, cn, &req)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			if !cn.answered.Load() && !time.Now().Before(cn.probeEnd) {
				// Reads with short deadlines ended one after another on a connection that
				// never answered: its probe is over, so later reads go over HTTP.
				s.markDown(c, cn)
			}
			return 0, nil, fmt.Errorf("read %s: %w", id, err)
		case c.isClosed():
			return 0, nil, fmt.Errorf("read %s: %w", id, ErrClosed)
		case errors.Is(err, errMalformed):
			s.markDown(c, cn)
			return 0, &c.stats.protocol, err
		case cn.retired.Load():
			// Closed for another read's failure or by markDown: not this read's.
			return 0, &c.stats.down, fmt.Errorf("%w: %w", errRetired, err)
		case !cn.answered.Load():
			s.markDown(c, cn)
			if errors.Is(err, errProbe) {
				return 0, &c.stats.protocol, err
			}
			return 0, &c.stats.unreachable, err
		default:
			s.drop(cn)
			return 0, nil, fmt.Errorf("read %s over UCX: %w", id, err)
		}
		switch st := rep.status; {
		case st == StatusOK:
			n, fallback, err := c.payload(ctx, id, s, cn, msg, rep, dst[:size])
			if err != nil && ctx.Err() == nil && !c.isClosed() && cn.retired.Load() {
				return 0, &c.stats.down, fmt.Errorf("%w: %w", errRetired, err) // as above; dst is UCX's no more
			}
			return n, fallback, err
		case st == StatusBadRange && offset < rep.info.DataSize && size > rep.info.DataSize-offset:
			size = rep.info.DataSize - offset // past the end: read what there is
		case st == StatusBadRange:
			return 0, nil, io.EOF
		case st == StatusDeleted && !c.opts.NoFallback:
			// weed mount reads deleted needles (readDeleted=true) until a compaction: so
			// does the HTTP fallback.
			return 0, &c.stats.deleted, &ServerError{st}
		case st.IsNotFound():
			return 0, nil, fmt.Errorf("read %s: %v: %w", id, st, ErrNotFound)
		case st == StatusUnauthorized:
			return 0, nil, fmt.Errorf("read %s: %w", id, ErrUnauthorized)
		case st.IsRetryable() && attempt < maxRetries:
			c.stats.retries.Add(1)
			if st == StatusBusy || attempt >= 2 {
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					return 0, nil, fmt.Errorf("read %s: backing off after %v: %w", id, st, ctx.Err())
				}
				backoff = min(2*backoff, 100*time.Millisecond)
			}
		case st == StatusUnknownVersion && req.version > minVersion:
			// An older server: ask again one version lower (direct reads need version 2).
			cn.version.CompareAndSwap(uint32(req.version), uint32(req.version-1))
			if req.version-1 < 2 {
				cn.direct.disable()
			}
		case st == StatusNoVolume:
			// Not in the server's directories (another disk, erasure-coded, tiered): weed's
			// HTTP handler finds it.
			return 0, &c.stats.noVolume, &ServerError{st}
		case st == StatusUnknownVersion:
			return 0, &c.stats.protocol, &ServerError{st}
		case st == StatusBadRequest:
			return 0, nil, fmt.Errorf("read %s: the server could not decode the request", id)
		default: // INTERNAL, TOO_LARGE, BUSY or STALE after every retry
			return 0, &c.stats.serverErr, &ServerError{st}
		}
	}
}

// roundTrip sends one READ request and waits for its reply. The request's JWT was checked
// (read), so encoding it cannot fail.
func (c *Client) roundTrip(ctx context.Context, cn *conn, req *readRequest) (*readReply, *swucx.AMMessage, error) {
	req.id = c.nextID.Add(1)
	hdr, err := req.encode()
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan *swucx.AMMessage, 1)
	c.waiters.Store(req.id, ch)
	// Until the connection has answered, its probe bounds the send as well as the wait: a
	// listener that accepts and never answers (a stopped swucx serve, another program on the
	// port) leaves the connection unfinished, and the send would wait for ctx alone.
	sendCtx := ctx
	if !cn.answered.Load() {
		var cancel context.CancelFunc
		sendCtx, cancel = context.WithDeadline(ctx, cn.probeEnd)
		defer cancel()
	}
	if err := cn.ep.AMSend(sendCtx, AMRead, hdr, nil, swucx.AMReply|swucx.AMEager); err != nil {
		c.forget(req.id, ch)
		if ctx.Err() == nil && sendCtx.Err() != nil {
			err = errProbe
		}
		return nil, nil, err
	}
	msg, err := c.await(ctx, cn, ch)
	if err != nil {
		c.forget(req.id, ch)
		return nil, nil, err
	}
	cn.answered.Store(true)
	rep, err := decodeReply(msg.Header)
	if err != nil {
		msg.Close()
		return nil, nil, err
	}
	return rep, msg, nil
}

// await waits for the reply on ch: spinning on progress briefly, then asleep until it comes,
// ctx ends, the connection fails, or (on a connection that never answered) ProbeTimeout.
// One reader at a time spins on cn's engine (its progress delivers the replies of every reader
// waiting there); the others sleep at once and leave the CPU to the rest of the host (on a
// small machine, the server).
func (c *Client) await(ctx context.Context, cn *conn, ch chan *swucx.AMMessage) (*swucx.AMMessage, error) {
	e := cn.e
	waiting := e.waiting.Add(1)
	defer e.waiting.Add(-1)
	if waiting <= spinWhileWaiting && e.spinning.CompareAndSwap(false, true) {
		var m *swucx.AMMessage
		// Spin yields after progress that routed replies, so other readers get theirs.
		e.eng.Spin(spinFor, func() bool {
			select {
			case m = <-ch:
				return true
			default:
				return false
			}
		})
		e.spinning.Store(false)
		if m != nil {
			if e.waiting.Load() > 1 {
				// Readers asleep on their channels need progress from the background thread.
				e.eng.HandOver()
			}
			return m, nil
		}
	}
	var probe <-chan time.Time
	if !cn.answered.Load() {
		t := time.NewTimer(time.Until(cn.probeEnd))
		defer t.Stop()
		probe = t.C
	}
	tick := time.NewTicker(failurePoll)
	defer tick.Stop()
	for {
		select {
		case m := <-ch:
			return m, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-probe:
			return nil, errProbe
		case <-tick.C:
			if err := cn.ep.Failure(); err != nil {
				return nil, err
			}
		}
	}
}

// forget withdraws a request nobody waits for any more; a reply already routed to ch is
// released.
func (c *Client) forget(id uint64, ch chan *swucx.AMMessage) {
	if _, waiting := c.waiters.LoadAndDelete(id); !waiting {
		(<-ch).Close()
	}
}

// onReply routes a READ reply to the reader waiting for its request id (inside UCX progress:
// no blocking). A reply nobody waits for (a read that gave up) is dropped.
func (c *Client) onReply(m *swucx.AMMessage) {
	if id, ok := replyID(m.Header); ok {
		if ch, waiting := c.waiters.LoadAndDelete(id); waiting {
			ch.(chan *swucx.AMMessage) <- m
			return
		}
	}
	m.Close()
}

// payload moves an OK reply's bytes into dst: a rendezvous payload straight from the server
// (receivePayload: waiting for it past ctx's end, so dst is not written after the read
// returns), an eager one by copy.
func (c *Client) payload(ctx context.Context, id FileID, s *server, cn *conn, msg *swucx.AMMessage, rep *readReply, dst []byte) (int, *atomic.Uint64, error) {
	defer msg.Close()
	want := rep.payloadLen
	if want > uint64(len(dst)) {
		return 0, &c.stats.protocol, fmt.Errorf("%w: %d bytes announced for a read of %d", errMalformed, want, len(dst))
	}
	var n int
	if p := msg.Pending(); p > 0 {
		if uint64(p) != want {
			return 0, nil, fmt.Errorf("read %s: reply carries %d bytes, header says %d", id, p, want)
		}
		var err error
		if n, err = c.rendezvous(ctx, s, cn, msg, rep.direct, dst[:p]); err != nil {
			return 0, nil, fmt.Errorf("read %s: receiving the payload: %w", id, err)
		}
	} else {
		if uint64(len(msg.Data)) != want {
			return 0, nil, fmt.Errorf("read %s: reply carries %d bytes, header says %d", id, len(msg.Data), want)
		}
		n = copy(dst, msg.Data)
	}
	if rep.flags&replyCRCUnchecked != 0 {
		if err := checkCRC(dst[:n], rep.info.CRC); err != nil {
			return 0, nil, fmt.Errorf("read %s: %w", id, err)
		}
	}
	return n, nil, nil
}

// rendezvous takes a rendezvous payload into dst, through UCX or, when the reply says where it
// lies in the server (at), by a direct read (directState.fetch). msg.Close then releases a
// rendezvous left unreceived, which completes the server's send.
func (c *Client) rendezvous(ctx context.Context, s *server, cn *conn, msg *swucx.AMMessage, at *peerRange, dst []byte) (int, error) {
	receive := func() (int, error) { return c.receivePayload(ctx, s, cn, msg, dst) }
	if at == nil {
		return receive()
	}
	sharedMemory := func() bool {
		ts, err := cn.ep.Transports()
		return err == nil && onSharedMemory(ts)
	}
	n, direct, err := cn.direct.fetch(at, dst, sharedMemory, receive)
	if direct {
		c.stats.direct.Add(1)
	}
	return n, err
}

// receivePayload receives a rendezvous payload into dst through UCX and returns only once UCX
// is done with dst. It waits for the payload past ctx's end: for payloadGrace more, then it
// cuts the connection (CloseForce ends the receive once UCX let go of dst) and returns ctx's
// error; Client.Close cuts it at once (ErrClosed). A payload that arrives within the grace is
// the read's result. The watch costs ~0.1 us per payload, ~0.35 us with a ctx that can end
// (context.AfterFunc), against tens of microseconds for the smallest rendezvous read.
func (c *Client) receivePayload(ctx context.Context, s *server, cn *conn, msg *swucx.AMMessage, dst []byte) (int, error) {
	w := &payloadWatch{cut: func() { s.drop(cn) }}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, ErrClosed
	}
	c.watches[w] = struct{}{}
	c.payloads.Add(1) // Close cuts w and waits for it (it sets closed under c.mu)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.watches, w)
		c.mu.Unlock()
		c.payloads.Done()
	}()
	if payloadHook != nil {
		payloadHook()
	}
	q, err := msg.RecvDataStart(dst)
	if err != nil {
		return 0, err
	}
	w.arm()
	if ctx.Done() != nil {
		grace := payloadGrace
		stop := context.AfterFunc(ctx, func() { w.cutAfter(grace, ctx.Err()) })
		defer stop()
	}
	// Without a context: only a cut, or the payload's end (it fails with the connection), ends
	// the wait, so UCX is done with dst when it returns.
	n, _, err := q.Wait(context.Background())
	if why := w.finish(); why != nil {
		if err == nil {
			return n, nil // arrived as the cut came: dst holds it
		}
		return 0, why
	}
	return n, err
}

// payloadWatch cuts the connection of a payload that does not arrive (receivePayload). A cut
// asked for before the receive is posted (armed) happens once it is: cutting first would
// leave the receive posted afterwards on a closed connection, never to end.
type payloadWatch struct {
	cut func()

	mu       sync.Mutex
	armed    bool
	finished bool
	why      error // the reason the connection was cut
	timer    *time.Timer
}

// arm marks the receive posted, and makes a cut asked for before.
func (w *payloadWatch) arm() {
	w.mu.Lock()
	w.armed = true
	why := w.why
	w.mu.Unlock()
	if why != nil {
		w.cut()
	}
}

// cutAfter cuts the connection after d unless the receive finishes first.
func (w *payloadWatch) cutAfter(d time.Duration, why error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.finished && w.timer == nil {
		w.timer = time.AfterFunc(d, func() { w.cutNow(why) })
	}
}

// cutNow cuts the connection (once) unless the receive finished; before the receive is
// posted, arm cuts it.
func (w *payloadWatch) cutNow(why error) {
	w.mu.Lock()
	if w.finished || w.why != nil {
		w.mu.Unlock()
		return
	}
	w.why = why
	armed := w.armed
	w.mu.Unlock()
	if armed {
		w.cut()
	}
}

// finish marks the receive finished and returns why the connection was cut, if it was.
func (w *payloadWatch) finish() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.finished = true
	if w.timer != nil {
		w.timer.Stop()
	}
	return w.why
}
