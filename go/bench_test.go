package swucx

import (
	"context"
	"testing"
	"time"
)

// The benchmarks measure what the Go binding adds to an operation, in one process (an engine
// connected to itself over shared memory: no wire, no peer), so the time is all software: compare with
// target/release/examples/op_cost (Rust) and target/examples/op-cost-c (C API).
//
//	go test -run '^$' -bench . -benchtime 2000000x

// selfEndpoint is an engine connected to its own worker. Over shared memory: UCX's self
// transport raises no wake-up events, which an Engine needs.
func selfEndpoint(b *testing.B) (*Engine, *Endpoint) {
	c, err := NewContext(Config{Name: "swucx-go-bench", Settings: map[string]string{"TLS": "posix,sysv,self"}})
	if err != nil {
		b.Fatal(err)
	}
	eng, err := NewEngine(c)
	if err != nil {
		b.Fatal(err)
	}
	addr, err := eng.Address()
	if err != nil {
		b.Fatal(err)
	}
	ep, err := eng.ConnectAddress(addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ep.CloseForce()
		eng.Close()
		c.Close()
	})
	return eng, ep
}

// BenchmarkAMSelf: an 8 B active message sent and taken by a HandleAMFunc handler, as the Go
// ping-pong's server takes them (spin until the handler queued it, then take it).
func BenchmarkAMSelf(b *testing.B) {
	eng, ep := selfEndpoint(b)
	ch := make(chan *AMMessage, 16)
	if err := eng.HandleAMFunc(7, func(m *AMMessage) { ch <- m }); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	buf := make([]byte, 8)
	ready := func() bool { return len(ch) > 0 }
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ep.AMSend(ctx, 7, nil, buf, 0); err != nil {
			b.Fatal(err)
		}
		eng.Spin(time.Millisecond, ready)
		m := <-ch
		if len(m.Data) != 8 {
			b.Fatalf("got %d bytes", len(m.Data))
		}
		m.Close()
	}
}

// BenchmarkTagSelf: a tag receive posted, a matching 8 B send, both completed.
func BenchmarkTagSelf(b *testing.B) {
	eng, ep := selfEndpoint(b)
	ctx := context.Background()
	sbuf, rbuf := make([]byte, 8), make([]byte, 8)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		q, err := eng.TagRecvStart(rbuf, 1, ^uint64(0))
		if err != nil {
			b.Fatal(err)
		}
		if err := ep.TagSend(ctx, sbuf, 1); err != nil {
			b.Fatal(err)
		}
		if n, _, err := q.Wait(ctx); err != nil || n != 8 {
			b.Fatalf("receive: %d bytes, %v", n, err)
		}
	}
}

// BenchmarkTagSendRecvSelf: an 8 B send, then TagRecv takes it (one cgo call: posted, matched
// with the message waiting, done), as a ping-pong's receive finds its message.
func BenchmarkTagSendRecvSelf(b *testing.B) {
	eng, ep := selfEndpoint(b)
	ctx := context.Background()
	sbuf, rbuf := make([]byte, 8), make([]byte, 8)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := ep.TagSend(ctx, sbuf, 1); err != nil {
			b.Fatal(err)
		}
		if n, _, err := eng.TagRecv(ctx, rbuf, 1, ^uint64(0)); err != nil || n != 8 {
			b.Fatalf("receive: %d bytes, %v", n, err)
		}
	}
}
