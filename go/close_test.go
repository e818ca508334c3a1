package swucx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// closeBound is how soon a wait must end once what it waits on is closed.
const closeBound = 2 * time.Second

// wantClosed checks that err matches ErrClosed and carries op, as an *Error.
func wantClosed(t *testing.T, what string, err error, op string) {
	t.Helper()
	var e *Error
	if !errors.Is(err, ErrClosed) || !errors.As(err, &e) || e.Op != op {
		t.Fatalf("%s: %v (%T), want ErrClosed with op %q", what, err, err, op)
	}
}

// Engine.Close ends every wait on the engine with ErrClosed at once, whatever its context: a
// TagRecv (with and without a context that can end, from the engine and from an endpoint), a
// Request.Wait, a TagRecvRegion and an Accept; the receives are withdrawn; later operations
// fail the same way.
func TestEngineCloseEndsWaits(t *testing.T) {
	p := newPair(t, "tcp", transports[2].settings)
	region, err := p.ctx.Allocate(64)
	if err != nil {
		t.Fatal(err)
	}
	defer region.Close()
	cancelable, cancel := context.WithCancel(context.Background())
	defer cancel()
	type outcome struct {
		name, op string
		err      error
	}
	waits := []struct {
		name, op string
		run      func() error
	}{
		{"Engine.TagRecv(Background)", "tag_recv", func() error {
			_, _, err := p.client.TagRecv(context.Background(), make([]byte, 64), 1, ^uint64(0))
			return err
		}},
		{"Engine.TagRecv(cancelable)", "tag_recv", func() error {
			_, _, err := p.client.TagRecv(cancelable, make([]byte, 64), 2, ^uint64(0))
			return err
		}},
		{"Endpoint.TagRecv(Background)", "tag_recv", func() error {
			_, _, err := p.cep.TagRecv(context.Background(), make([]byte, 64), 3, ^uint64(0))
			return err
		}},
		{"TagRecvStart+Wait(Background)", "tag_recv", func() error {
			q, err := p.client.TagRecvStart(make([]byte, 64), 4, ^uint64(0))
			if err != nil {
				return err
			}
			_, _, err = q.Wait(context.Background())
			if _, _, again := q.Wait(context.Background()); again != err {
				return fmt.Errorf("a second Wait: %v, want the first one's %v", again, err)
			}
			return err
		}},
		{"TagRecvRegion(Background)", "tag_recv_mem", func() error {
			_, _, err := p.client.TagRecvRegion(context.Background(), region, 0, 64, 5, ^uint64(0))
			return err
		}},
	}
	done := make(chan outcome, len(waits)+1)
	for _, w := range waits {
		go func() { done <- outcome{w.name, w.op, w.run()} }()
	}
	// Accept on the server's listener, ended by closing the server's engine.
	go func() {
		_, err := p.listener.Accept(context.Background())
		done <- outcome{"Listener.Accept(Background)", "accept", err}
	}()
	time.Sleep(100 * time.Millisecond) // all of them past their quick wait, asleep in C
	closed := time.Now()
	p.client.Close()
	p.server.Close()
	for range len(waits) + 1 {
		select {
		case o := <-done:
			wantClosed(t, o.name, o.err, o.op)
		case <-time.After(closeBound):
			t.Fatalf("a wait still runs %v after Engine.Close", time.Since(closed))
		}
	}
	t.Logf("every wait ended within %v of Engine.Close", time.Since(closed))
	if _, _, err := p.client.TagRecv(context.Background(), make([]byte, 8), 1, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("TagRecv after Engine.Close: %v", err)
	}
	if _, err := p.client.TagRecvStart(make([]byte, 8), 1, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("TagRecvStart after Engine.Close: %v", err)
	}
	if _, _, err := p.client.TagRecvRegion(context.Background(), region, 0, 64, 5, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("TagRecvRegion after Engine.Close: %v", err)
	}
}

// A Request is safe to use from several goroutines: concurrent Waits all get the one outcome;
// Close detaches it (a later Wait returns ErrClosed, the cancelled receive takes no message),
// ends a Wait running meanwhile, and leaves a completed one alone; it is idempotent.
func TestRequestConcurrentWaitAndClose(t *testing.T) {
	p := newPair(t, "shm", transports[1].settings)
	ctx := bg(t)
	const mask = ^uint64(0)

	for round := range 20 {
		buf := make([]byte, 4096)
		q, err := p.server.TagRecvStart(buf, 0x100, mask)
		if err != nil {
			t.Fatal(err)
		}
		const waiters = 4
		type res struct {
			n   int
			tag uint64
			err error
		}
		got := make(chan res, waiters)
		for range waiters {
			go func() {
				n, tag, err := q.Wait(ctx)
				got <- res{n, tag, err}
			}()
		}
		out := pattern(4096, uint64(round))
		if err := p.cep.TagSend(ctx, out, 0x100); err != nil {
			t.Fatal(err)
		}
		for range waiters {
			if r := <-got; r.err != nil || r.n != len(out) || r.tag != 0x100 {
				t.Fatalf("round %d: a concurrent Wait: %+v", round, r)
			}
		}
		if !bytes.Equal(buf, out) {
			t.Fatalf("round %d: received other bytes", round)
		}
		q.Close() // done: nothing happens
		if n, _, err := q.Wait(ctx); err != nil || n != len(out) {
			t.Fatalf("round %d: Wait after Close of a completed request: %d %v", round, n, err)
		}
	}

	// Closed before anyone waits, twice: Wait says ErrClosed, and the message goes to the next
	// receive.
	q, err := p.server.TagRecvStart(make([]byte, 64), 0x200, mask)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	q.Close()
	if _, _, err := q.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
	// Closed while two goroutines wait (one of them inside the wait, one waiting for it).
	q2, err := p.server.TagRecvStart(make([]byte, 64), 0x200, mask)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, _, err := q2.Wait(context.Background())
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); q2.Close() }()
	}
	wg.Wait()
	for range 2 {
		select {
		case err := <-errs:
			wantClosed(t, "Wait across Close", err, "tag_recv")
		case <-time.After(closeBound):
			t.Fatal("Close did not end the Wait")
		}
	}
	go func() { errs <- p.cep.TagSend(ctx, []byte("after"), 0x200) }()
	in := make([]byte, 64)
	if n, _, err := p.server.TagRecv(ctx, in, 0x200, mask); err != nil || string(in[:n]) != "after" {
		t.Fatalf("the receive after the closed ones: %q %v", in[:n], err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

// AMMessage.Close and RecvDataStart may race (a message handed to two goroutines): exactly one
// takes the rendezvous payload, never both (a double free before).
func TestAMMessageCloseRacesRecvDataStart(t *testing.T) {
	p := newPair(t, "shm", transports[1].settings)
	ctx := bg(t)
	msgs := make(chan *AMMessage, 64)
	if err := p.server.HandleAMFunc(21, func(m *AMMessage) { msgs <- m }); err != nil {
		t.Fatal(err)
	}
	const rounds, size = 40, 64 << 10
	sent := make(chan error, 1)
	go func() {
		out := pattern(size, 21)
		for range rounds {
			if err := p.cep.AMSend(ctx, 21, nil, out, AMRndv); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	received := 0
	for range rounds {
		var m *AMMessage
		select {
		case m = <-msgs:
		case <-ctx.Done():
			t.Fatal("no message")
		}
		if m.Pending() != size {
			t.Fatalf("pending %d, want %d", m.Pending(), size)
		}
		dst := make([]byte, size)
		var wg sync.WaitGroup
		var q *Request
		var startErr error
		wg.Add(2)
		go func() { defer wg.Done(); q, startErr = m.RecvDataStart(dst) }()
		go func() { defer wg.Done(); m.Close() }()
		wg.Wait()
		switch {
		case startErr == nil:
			if n, _, err := q.Wait(ctx); err != nil || n != size {
				t.Fatalf("the receive that won: %d %v", n, err)
			}
			received++
		case !errors.Is(startErr, ErrInvalidParam):
			t.Fatalf("RecvDataStart after Close: %v", startErr)
		}
		m.Close()
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d of %d payloads received, the rest released by Close", received, rounds)
}

// An operation waiting on an endpoint closed locally ends with ErrClosed, not as a peer
// failure; closed-object errors are *Error values with their operation.
func TestClosedEndpointWaitIsErrClosed(t *testing.T) {
	p := newPair(t, "tcp", transports[2].settings)
	errc := make(chan error, 1)
	go func() {
		_, _, err := p.cep.TagRecv(context.Background(), make([]byte, 8), 9, ^uint64(0))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	p.cep.Close()
	select {
	case err := <-errc:
		wantClosed(t, "TagRecv across Endpoint.Close", err, "tag_recv")
		if errors.Is(err, ErrPeerFailure) {
			t.Fatalf("a locally closed endpoint reads as a peer failure: %v", err)
		}
	case <-time.After(closeBound):
		t.Fatal("Endpoint.Close did not end the TagRecv")
	}
	wantClosed(t, "TagSend on a closed endpoint", p.cep.TagSend(context.Background(), []byte("x"), 1), "tag_send")
	if err := p.cep.TagSend(context.Background(), []byte("x"), 1); !errors.Is(err, ErrBadHandle) {
		t.Fatalf("a closed-object error should match ErrBadHandle too: %v", err)
	}
}
