package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	swucx "github.com/swucx/swucx/go"
)

// The AM inbox's handler never blocks UCX's progress: arrivals nobody takes (an aborted
// session's; more than the 1024 a channel held before, which then stopped the server's
// engine) queue, the engine stays responsive, and drain drops them all.
func TestAMInboxNeverBlocksProgress(t *testing.T) {
	f, err := parseFeatures("tmw")
	if err != nil {
		t.Fatal(err)
	}
	uc, err := newContext("tcp", f)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	server, err := swucx.NewEngine(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	client, err := swucx.NewEngine(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	in, err := newAMInbox(server)
	if err != nil {
		t.Fatal(err)
	}
	l, err := server.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cep, err := client.Connect(fmt.Sprintf("127.0.0.1:%d", l.Port()))
	if err != nil {
		t.Fatal(err)
	}
	defer cep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sep, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sep.Close()

	const count = 1500
	sent := make(chan error, 1)
	go func() {
		for i := range count {
			if err := cep.AMSend(ctx, amData, nil, []byte("leftover"), 0); err != nil {
				sent <- fmt.Errorf("send %d: %w", i, err)
				return
			}
		}
		sent <- nil
	}()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); in.n.Load() < count; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages queued: the handler blocked UCX's progress", in.n.Load(), count)
		}
	}
	// The server's engine still moves other traffic.
	go func() { sent <- cep.TagSend(ctx, []byte("ping"), dataTag) }()
	buf := make([]byte, 8)
	if n, _, err := server.TagRecv(ctx, buf, dataTag, all); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("a tag message after the arrivals: %q %v", buf[:n], err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if n := in.drain(); n != count || in.ready() {
		t.Fatalf("drain dropped %d, want %d (ready after: %v)", n, count, in.ready())
	}
}
