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

// AMQueue over every transport: a server goroutine takes requests with Recv (headers, eager and
// rendezvous payloads) and echoes them on the reply endpoint; the client takes each echo from a
// queue of its own and checks every byte.
func TestAMQueueRoundTrip(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			p := newPair(t, tr.name, tr.settings)
			ctx := bg(t)
			reqs, err := p.server.AMQueue(40)
			if err != nil {
				t.Fatal(err)
			}
			resps, err := p.client.AMQueue(41)
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() {
				buf := make([]byte, 1<<21)
				for range sizes {
					got, err := reqs.Recv(ctx, buf)
					if err == nil && got.ReplyEndpoint == nil {
						err = errors.New("no reply endpoint")
					}
					if err == nil {
						err = got.ReplyEndpoint.AMSend(ctx, 41, got.Header, buf[:got.N], 0)
						got.ReplyEndpoint.Close()
					}
					if err != nil {
						served <- err
						return
					}
				}
				served <- nil
			}()
			buf := make([]byte, 1<<21)
			for i, n := range sizes {
				hdr := []byte(fmt.Sprintf("req-%d", i))
				out := pattern(n, uint64(200+i))
				if err := p.cep.AMSend(ctx, 40, hdr, out, AMReply); err != nil {
					t.Fatalf("size %d: am send: %v", n, err)
				}
				got, err := resps.Recv(ctx, buf)
				if err != nil {
					t.Fatalf("size %d: %v", n, err)
				}
				if got.ReplyEndpoint != nil {
					t.Fatalf("size %d: a reply endpoint nobody asked for", n)
				}
				if !bytes.Equal(got.Header, hdr) || got.N != n || !bytes.Equal(buf[:n], out) {
					t.Fatalf("size %d: header %q, %d bytes, equal %v", n, got.Header, got.N, bytes.Equal(buf[:got.N], out))
				}
			}
			if err := <-served; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A Recv ends with its context (nothing taken), with Close (ErrClosed) and with Engine.Close;
// a message larger than the buffer is an error and the next one still arrives; a handler
// registered on the id replaces the queue.
func TestAMQueueEnds(t *testing.T) {
	p := newPair(t, "tcp", transports[2].settings)
	ctx := bg(t)
	q, err := p.server.AMQueue(42)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := q.Recv(short, make([]byte, 8)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv with an ended context: %v", err)
	}
	send := func(data string) {
		t.Helper()
		if err := p.cep.AMSend(ctx, 42, nil, []byte(data), 0); err != nil {
			t.Fatal(err)
		}
	}
	send("too long for four bytes")
	send("next")
	if _, err := q.Recv(ctx, make([]byte, 4)); !errors.Is(err, ErrMessageTruncated) {
		t.Fatalf("Recv into a short buffer: %v", err)
	}
	buf := make([]byte, 8)
	if got, err := q.Recv(ctx, buf); err != nil || string(buf[:got.N]) != "next" || got.Header != nil {
		t.Fatalf("after a truncation: %q %+v %v", buf[:got.N], got, err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := q.Recv(context.Background(), buf)
			errs <- err
		}()
	}
	time.Sleep(20 * time.Millisecond)
	q.Close()
	wg.Wait()
	for range 2 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv across Close: %v", err)
		}
	}
	if _, err := q.Recv(ctx, buf); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}

	q2, err := p.server.AMQueue(43)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := p.server.HandleAM(43, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q2.Recv(ctx, buf); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv on a queue a handler replaced: %v", err)
	}
	if err := p.cep.AMSend(ctx, 43, nil, []byte("to the handler"), 0); err != nil {
		t.Fatal(err)
	}
	if m := <-ch; string(m.Data) != "to the handler" {
		t.Fatalf("handler got %q", m.Data)
	}

	q3, err := p.server.AMQueue(44)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := q3.Recv(context.Background(), buf)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	p.server.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv across Engine.Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Engine.Close did not end the Recv")
	}
}
