package seaweed_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	swucx "github.com/swucx/swucx/go"
	"github.com/swucx/swucx/go/seaweed"
	"github.com/swucx/swucx/go/seaweed/testcluster"
)

// peerRequest is a READ request a protoPeer received.
type peerRequest struct {
	msg     *swucx.AMMessage
	version uint8
	id      uint64
	fid     seaweed.FileID
	offset  uint64
}

// reply answers the request with status and, for OK, payload (eager); it closes the message.
func (r peerRequest) reply(status seaweed.Status, payload []byte) error {
	hdr := make([]byte, 48)
	copy(hdr, []byte{'S', 'W', r.version, 2})
	hdr[4] = byte(status)
	le := binary.LittleEndian
	le.PutUint64(hdr[8:], r.id)
	if status == seaweed.StatusOK {
		le.PutUint64(hdr[16:], uint64(len(payload)))
		le.PutUint64(hdr[24:], uint64(len(payload)))
	}
	return r.send(hdr, payload)
}

// malformed answers with a reply that does not decode (an undefined status).
func (r peerRequest) malformed() error {
	hdr := make([]byte, 48)
	copy(hdr, []byte{'S', 'W', r.version, 2})
	hdr[4] = 200
	binary.LittleEndian.PutUint64(hdr[8:], r.id)
	return r.send(hdr, nil)
}

func (r peerRequest) send(hdr, payload []byte) error {
	defer r.msg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return r.msg.ReplyEndpoint.AMSend(ctx, seaweed.AMReadReply, hdr, payload, swucx.AMEager)
}

// protoPeer is a UCX peer on 127.0.0.1 (countingPeer) answering READ requests as its answer
// function says (which may keep a request to answer later).
type protoPeer struct {
	addr     string
	accepted *atomic.Int32
	answer   atomic.Pointer[func(peerRequest)]
}

func newProtoPeer(t *testing.T) *protoPeer {
	t.Helper()
	eng, l, accepted := countingPeer(t, map[string]string{"TLS": "tcp"})
	requests, err := eng.HandleAM(seaweed.AMRead, 64)
	if err != nil {
		t.Fatal(err)
	}
	p := &protoPeer{addr: fmt.Sprintf("127.0.0.1:%d", l.Port()), accepted: accepted}
	p.setAnswer(func(r peerRequest) { r.reply(seaweed.StatusNotFound, nil) })
	go func() {
		le := binary.LittleEndian
		for msg := range requests {
			h := msg.Header
			if len(h) < 48 || msg.ReplyEndpoint == nil {
				msg.Close()
				continue
			}
			r := peerRequest{msg: msg, version: h[2], id: le.Uint64(h[8:]),
				fid:    seaweed.FileID{VolumeID: le.Uint32(h[16:]), Cookie: le.Uint32(h[20:]), NeedleID: le.Uint64(h[24:])},
				offset: le.Uint64(h[32:])}
			(*p.answer.Load())(r)
		}
	}()
	return p
}

func (p *protoPeer) setAnswer(f func(peerRequest)) { p.answer.Store(&f) }

// protoClient is a client whose reads of any volume server go to the peer.
func protoClient(t *testing.T, p *protoPeer, opts seaweed.Options) *seaweed.Client {
	opts.Settings = map[string]string{"TLS": "tcp"}
	opts.UCXAddress = func(string) (string, error) { return p.addr, nil }
	return newClient(t, opts)
}

func mustFID(t *testing.T, s string) seaweed.FileID {
	t.Helper()
	id, err := seaweed.ParseFileID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Client behaviour around failures and Close, against a real weed (the HTTP fallback) and a
// UCX peer whose answers the test chooses.
func TestClientLifecycle(t *testing.T) {
	c := startCluster(t, testcluster.Options{NoServer: true})
	f := upload(t, c, 3000)[0]
	realID := mustFID(t, f.fid)
	ctx := context.Background()

	// A read JWT the protocol cannot carry fails the read at once with ErrInvalidJWT: no
	// connection is given up for it, nothing goes over HTTP, and the next read goes on the
	// same connection.
	t.Run("invalid-jwt", func(t *testing.T) {
		p := newProtoPeer(t)
		cl := protoClient(t, p, seaweed.Options{})
		for i, jwt := range []string{"eyJh.\n.sig", strings.Repeat("a", 4097), "ok", "bad jwt"} {
			_, err := cl.ReadNeedle(ctx, c.VolumeServer, f.fid, 0, make([]byte, 10), jwt)
			if jwt == "ok" {
				// Answered NOT_FOUND by the peer: over UCX, on the first connection.
				if !errors.Is(err, seaweed.ErrNotFound) {
					t.Fatalf("read with a valid JWT: %v", err)
				}
				continue
			}
			if !errors.Is(err, seaweed.ErrInvalidJWT) {
				t.Fatalf("JWT %d: %v, want ErrInvalidJWT", i, err)
			}
		}
		st := cl.Stats()
		if st.HTTP != 0 || st.FallbackUnreachable != 0 || st.FallbackDown != 0 || st.FallbackProtocol != 0 {
			t.Fatalf("stats %+v: an invalid JWT should neither fall back nor mark the server down", st)
		}
		if n := p.accepted.Load(); n != 1 {
			t.Fatalf("the peer accepted %d connections, want 1 (none given up for a JWT)", n)
		}
	})

	// A malformed reply on one connection marks the server down, but a read waiting on
	// another connection that answered before goes on over UCX; a read waiting on the
	// connection given up falls back to HTTP instead of failing.
	t.Run("markdown-spares-reads-in-flight", func(t *testing.T) {
		p := newProtoPeer(t)
		held := make(chan peerRequest, 4)
		// The real needle: from its start held (answered by the test), from offset 1
		// answered with a malformed reply; anything else is not found.
		answer := func(r peerRequest) {
			switch {
			case r.fid == realID && r.offset == 0:
				held <- r
			case r.fid == realID:
				r.malformed()
			default:
				r.reply(seaweed.StatusNotFound, nil)
			}
		}
		malformed := func(cl *seaweed.Client) {
			t.Helper()
			dst := make([]byte, len(f.data)-1)
			if n, err := cl.ReadNeedle(ctx, c.VolumeServer, f.fid, 1, dst, ""); err != nil || !bytes.Equal(dst[:n], f.data[1:]) {
				t.Fatalf("the read answered with a malformed reply (then over HTTP): %d bytes, %v", n, err)
			}
		}
		p.setAnswer(answer)
		cl := protoClient(t, p, seaweed.Options{ConnsPerServer: 2, RetryUCXAfter: time.Minute})
		for range 2 { // both connections made and answered
			if _, err := cl.ReadNeedle(ctx, c.VolumeServer, "7,0100000001", 0, make([]byte, 10), ""); !errors.Is(err, seaweed.ErrNotFound) {
				t.Fatal(err)
			}
		}
		type result struct {
			data []byte
			err  error
		}
		inFlight := func(cl *seaweed.Client) (chan result, peerRequest) {
			done := make(chan result, 1)
			go func() {
				got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data))
				done <- result{got, err}
			}()
			select {
			case r := <-held:
				return done, r
			case <-time.After(5 * time.Second):
				t.Fatal("the read did not reach the peer")
				return nil, peerRequest{}
			}
		}
		// Round-robin: this read goes on the second connection, the malformed reply comes
		// on the first.
		done, req := inFlight(cl)
		malformed(cl)
		time.Sleep(100 * time.Millisecond) // a read on a closed connection notices within 20 ms
		if err := req.reply(seaweed.StatusOK, f.data); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.err != nil || !bytes.Equal(r.data, f.data) {
			t.Fatalf("the read in flight on the connection that answered: %d bytes, %v", len(r.data), r.err)
		}
		if st := cl.Stats(); st.UCX != 1 || st.FallbackProtocol != 1 || st.HTTP != 1 {
			t.Fatalf("stats %+v: want the read in flight over UCX, the malformed one over HTTP", st)
		}

		// One connection: the malformed reply comes on the connection the read waits on.
		p2 := newProtoPeer(t)
		p2.setAnswer(answer)
		cl2 := protoClient(t, p2, seaweed.Options{RetryUCXAfter: time.Minute})
		if _, err := cl2.ReadNeedle(ctx, c.VolumeServer, "7,0100000001", 0, make([]byte, 10), ""); !errors.Is(err, seaweed.ErrNotFound) {
			t.Fatal(err)
		}
		done, req = inFlight(cl2)
		malformed(cl2)
		r := <-done
		req.msg.Close()
		if r.err != nil || !bytes.Equal(r.data, f.data) {
			t.Fatalf("the read in flight on the connection given up: %d bytes, %v, want the bytes over HTTP", len(r.data), r.err)
		}
		if st := cl2.Stats(); st.HTTP != 2 || st.FallbackDown != 1 || st.FallbackProtocol != 1 {
			t.Fatalf("stats %+v: want the read in flight over HTTP (down)", st)
		}
	})

	// The UCX address is resolved again after the server was marked down: a listener that
	// moved (or a name that resolved wrongly once) is found.
	t.Run("resolves-again-after-markdown", func(t *testing.T) {
		p := newProtoPeer(t)
		p.setAnswer(func(r peerRequest) {
			if r.fid == realID {
				r.reply(seaweed.StatusOK, f.data)
			} else {
				r.reply(seaweed.StatusNotFound, nil)
			}
		})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := l.Addr().String()
		l.Close()
		var resolved atomic.Int32
		cl := newClient(t, seaweed.Options{
			Settings:      map[string]string{"TLS": "tcp"},
			RetryUCXAfter: 100 * time.Millisecond,
			UCXAddress: func(string) (string, error) {
				if resolved.Add(1) == 1 {
					return dead, nil
				}
				return p.addr, nil
			},
		})
		for i := range 2 {
			if got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
				t.Fatalf("read %d: %d bytes, %v", i, len(got), err)
			}
			time.Sleep(150 * time.Millisecond) // past RetryUCXAfter
		}
		if st := cl.Stats(); st.FallbackUnreachable != 1 || st.UCX != 1 || resolved.Load() != 2 {
			t.Fatalf("stats %+v, %d resolutions: want the second read over UCX at the address resolved again", st, resolved.Load())
		}
	})

	// Close ends a read waiting for its reply with ErrClosed; it does not go over HTTP.
	t.Run("close-fails-reads-in-flight", func(t *testing.T) {
		p := newProtoPeer(t)
		held := make(chan peerRequest, 1)
		p.setAnswer(func(r peerRequest) { held <- r })
		cl := protoClient(t, p, seaweed.Options{ProbeTimeout: time.Minute})
		done := make(chan error, 1)
		go func() {
			_, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data))
			done <- err
		}()
		var req peerRequest
		select {
		case req = <-held:
		case <-time.After(5 * time.Second):
			t.Fatal("the read did not reach the peer")
		}
		defer req.msg.Close()
		cl.Close()
		select {
		case err := <-done:
			if !errors.Is(err, seaweed.ErrClosed) {
				t.Fatalf("a read across Close: %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end the read")
		}
		if _, err := cl.ReadNeedle(ctx, c.VolumeServer, f.fid, 0, make([]byte, 10), ""); !errors.Is(err, seaweed.ErrClosed) {
			t.Fatalf("a read after Close: %v, want ErrClosed", err)
		}
		if st := cl.Stats(); st.HTTP != 0 {
			t.Fatalf("stats %+v: nothing should go over HTTP after Close", st)
		}
	})
}

// A server stopped mid-transfer (SIGSTOP, right as the client starts receiving the payload:
// its connection stays alive) does not hold a read forever: once the read's context ends it
// waits the payload's grace, cuts the connection and returns the context's error; reads after
// it reconnect. Client.Close ends such a read at once, whatever its context.
func TestServerStalledMidPayload(t *testing.T) {
	// cutBound: how soon a receive ends once its connection is cut (a few ms; ~0.8 s when
	// nothing woke the engine to progress after the forced close).
	const grace, deadline, cutBound = 300 * time.Millisecond, time.Second, 500 * time.Millisecond
	defer seaweed.SetPayloadGrace(grace)()
	c := startCluster(t, testcluster.Options{ServerEnv: []string{"UCX_TLS=tcp"}})
	f := upload(t, c, 8<<20)[0]
	cl := newClient(t, seaweed.Options{Settings: map[string]string{"TLS": "tcp"}, NoFallback: true})
	bg := context.Background()
	if got, err := readAll(bg, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("first read: %v", err)
	}
	pid := c.ServerPID()
	var stopNext, stopped atomic.Bool
	defer seaweed.SetPayloadHook(func() {
		if stopNext.CompareAndSwap(true, false) {
			if err := syscall.Kill(pid, syscall.SIGSTOP); err == nil {
				stopped.Store(true)
			}
		}
	})()
	cont := func() {
		if stopped.CompareAndSwap(true, false) {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer cont()

	stopNext.Store(true)
	ctx, cancel := context.WithTimeout(bg, deadline)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data))
		done <- err
	}()
	select {
	case err := <-done:
		took := time.Since(start)
		if !stopped.Load() {
			t.Fatalf("the server was not stopped during the read (%v)", err)
		}
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "receiving the payload") {
			t.Fatalf("a read whose payload stalled: %v, want context.DeadlineExceeded while receiving the payload", err)
		}
		if took < deadline+grace || took > deadline+grace+cutBound {
			t.Fatalf("the read returned after %v, want its deadline (%v) and grace (%v), and at most %v more", took, deadline, grace, cutBound)
		}
		t.Logf("the stalled read returned after %v: %v", took, err)
	case <-time.After(deadline + 5*time.Second):
		t.Fatalf("the read still runs %v after its deadline (%v) with the server stopped mid-payload", time.Since(start)-deadline, deadline)
	}
	cont()
	if got, err := readAll(bg, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("read after the server resumed: %v", err)
	}

	stopNext.Store(true)
	go func() {
		_, err := readAll(bg, cl, c.VolumeServer, f.fid, len(f.data))
		done <- err
	}()
	for limit := time.Now().Add(5 * time.Second); !stopped.Load(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(limit) {
			t.Fatal("the second read never started receiving its payload")
		}
	}
	time.Sleep(100 * time.Millisecond)
	closed := time.Now()
	cl.Close()
	select {
	case err := <-done:
		if !errors.Is(err, seaweed.ErrClosed) {
			t.Fatalf("the read across Close: %v, want ErrClosed", err)
		}
		t.Logf("Close took %v; the read: %v", time.Since(closed), err)
	case <-time.After(5 * time.Second):
		t.Fatal("Client.Close did not end the read held by the stopped server")
	}
	if took := time.Since(closed); took > cutBound {
		t.Fatalf("Close ended the read after %v, want at most %v", took, cutBound)
	}
	if _, err := cl.ReadNeedle(bg, c.VolumeServer, f.fid, 0, make([]byte, 1), ""); !errors.Is(err, seaweed.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}
