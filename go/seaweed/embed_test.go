package seaweed_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"syscall"
	"testing"

	swucx "github.com/swucx/swucx/go"
	"github.com/swucx/swucx/go/seaweed"
)

// A Go volume server embedding swucx: its handler supplies the bytes from its own storage (a
// map here) into the buffer swucx gives it, and the Go client reads them over UCX.
// clientFor is a client that reads every volume server's needles from srv, over UCX only.
func clientFor(t *testing.T, srv *swucx.NeedleServer) *seaweed.Client {
	return newClient(t, seaweed.Options{
		NoFallback: true,
		UCXAddress: func(string) (string, error) { return fmt.Sprintf("127.0.0.1:%d", srv.Port()), nil },
	})
}

// A context with streams lets any client abort the process (UCX 1.13 asserts on an empty
// stream message): the server refuses it; the default features have none.
func TestEmbeddedServerRefusesStreams(t *testing.T) {
	handler := func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) { reply.Fail(uint8(seaweed.StatusNotFound), 0) }
	for _, c := range []struct {
		features swucx.Features
		refused  bool
	}{{swucx.FeatureAll, true}, {0, false}} {
		uctx, err := swucx.NewContext(swucx.Config{Features: c.features})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := uctx.ServeNeedles("127.0.0.1:0", "", handler)
		if c.refused != errors.Is(err, swucx.ErrInvalidParam) || c.refused != (srv == nil) {
			t.Errorf("features %#x: server %v, error %v", c.features, srv, err)
		}
		if srv != nil {
			srv.Close()
		}
		uctx.Close()
	}
}

func TestEmbeddedServer(t *testing.T) {
	needles := map[seaweed.FileID][]byte{}
	for i, n := range []int{0, 1, 4096, 100000, 3 << 20} {
		data := bytes.Repeat([]byte{byte(i + 1), byte(n)}, n/2+1)[:n]
		needles[seaweed.FileID{VolumeID: 5, NeedleID: uint64(i + 1), Cookie: 0xc0ffee}] = data
	}
	uctx, err := swucx.NewContext(swucx.Config{Features: swucx.FeatureAM | swucx.FeatureWakeup})
	if err != nil {
		t.Fatal(err)
	}
	defer uctx.Close()
	handler := func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) {
		id := seaweed.FileID{VolumeID: req.VolumeID, NeedleID: req.NeedleID, Cookie: req.Cookie}
		data, ok := needles[id]
		switch {
		case !ok:
			reply.Fail(uint8(seaweed.StatusNotFound), 0)
		case req.Offset > uint64(len(data)) || req.Size > uint64(len(data))-req.Offset:
			reply.Fail(uint8(seaweed.StatusBadRange), uint64(len(data)))
		default:
			end := uint64(len(data))
			if req.Size != 0 {
				end = req.Offset + req.Size
			}
			crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
			copy(reply.OK(uint64(len(data)), crc, 1700000000, int(end-req.Offset)), data[req.Offset:end])
		}
	}
	srv, err := uctx.ServeNeedles("127.0.0.1:0", "", handler)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl := clientFor(t, srv)
	ctx := context.Background()
	for id, data := range needles {
		got, err := readAll(ctx, cl, "volume.example:8080", id.String(), len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s (%d B): %v", id, len(data), err)
		}
		if len(data) > 10 {
			dst := make([]byte, 7)
			if n, err := cl.ReadNeedle(ctx, "volume.example:8080", id.String(), 3, dst, ""); err != nil || n != 7 || !bytes.Equal(dst, data[3:10]) {
				t.Fatalf("%s range: %d %v", id, n, err)
			}
		}
	}
	missing := seaweed.FileID{VolumeID: 5, NeedleID: 99, Cookie: 1}
	if _, err := cl.ReadNeedle(ctx, "volume.example:8080", missing.String(), 0, make([]byte, 8), ""); !errors.Is(err, seaweed.ErrNotFound) {
		t.Fatalf("missing needle: %v", err)
	}
	wantBytes := uint64(0)
	for _, data := range needles {
		wantBytes += uint64(len(data))
	}
	st, err := srv.Stats()
	// readAll's buffer is a byte longer than the needle: BAD_RANGE (with the data size), then
	// the read of what there is (none for the empty needle).
	if err != nil || st.Replies[seaweed.StatusOK] != 7 || st.Replies[seaweed.StatusBadRange] != 5 ||
		st.Replies[seaweed.StatusNotFound] != 1 ||
		st.PayloadBytes != wantBytes+3*7 || st.ConnectionsAccepted == 0 || st.OpenConnections != st.ConnectionsAccepted {
		t.Fatalf("server stats %+v, %v: want 7 OK replies (%d B), 5 BAD_RANGE, 1 NOT_FOUND, the client's connections open", st, err, wantBytes+3*7)
	}
	one := seaweed.FileID{VolumeID: 5, NeedleID: 2, Cookie: 0xc0ffee}
	if _, err := cl.ReadNeedle(ctx, "volume.example:8080", one.String(), 1, make([]byte, 8), ""); err != io.EOF {
		t.Fatalf("read past the end: %v", err)
	}

	// A handler that panics or answers inconsistently gives INTERNAL, never a bad reply; with
	// fallback on, the client then goes over HTTP (which fails here: no such host).
	bad, err := uctx.ServeNeedles("127.0.0.1:0", "", func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) {
		if req.NeedleID == 1 {
			panic("host bug")
		}
		reply.OK(10, 0, 0, 3) // 3 bytes for a request of 5
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	strict := newClient(t, seaweed.Options{
		UCXAddress: func(string) (string, error) { return fmt.Sprintf("127.0.0.1:%d", bad.Port()), nil },
	})
	for _, id := range []uint64{1, 2} {
		fid := seaweed.FileID{VolumeID: 5, NeedleID: id, Cookie: 1}.String()
		if _, err := strict.ReadNeedle(ctx, "127.0.0.1:1", fid, 0, make([]byte, 5), ""); err == nil {
			t.Fatalf("needle %d: a broken handler's read succeeded", id)
		}
	}
	if st := strict.Stats(); st.FallbackServer != 2 || st.UCX != 0 {
		t.Fatalf("stats %+v: want 2 INTERNAL answers", st)
	}
	// Close from inside the handler is refused (the server's thread cannot wait for itself);
	// the server goes on serving, and Close from here stops it.
	inner := make(chan error, 1)
	var self *swucx.NeedleServer
	self, err = uctx.ServeNeedles("127.0.0.1:0", "", func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) {
		if req.NeedleID == 1 {
			inner <- self.Close()
		}
		copy(reply.OK(3, crc32.Checksum([]byte("abc"), crc32.MakeTable(crc32.Castagnoli)), 0, 3), "abc")
	})
	if err != nil {
		t.Fatal(err)
	}
	sc := clientFor(t, self)
	for _, id := range []uint64{1, 2} {
		fid := seaweed.FileID{VolumeID: 5, NeedleID: id, Cookie: 1}.String()
		if n, err := sc.ReadNeedle(ctx, "volume.example:8080", fid, 0, make([]byte, 3), ""); err != nil || n != 3 {
			t.Fatalf("needle %d from a server whose handler called Close: %d, %v", id, n, err)
		}
	}
	if err := <-inner; !errors.Is(err, &swucx.Error{Status: swucx.StatusBusy}) {
		t.Fatalf("Close inside the handler: %v, want StatusBusy", err)
	}
	if err := self.Close(); err != nil {
		t.Fatalf("Close from the test: %v", err)
	}
	if _, err := self.Stats(); !errors.Is(err, swucx.ErrClosed) {
		t.Fatalf("stats after Close: %v", err)
	}

	bad.Close()
	if _, err := bad.Stats(); !errors.Is(err, swucx.ErrClosed) {
		t.Fatalf("stats of a closed server: %v", err)
	}

	// With a read key, requests without a valid JWT never reach the handler.
	keyed, err := uctx.ServeNeedles("127.0.0.1:0", "secret", func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) {
		t.Errorf("handler called for an unauthorized request")
		reply.Fail(uint8(seaweed.StatusInternal), 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer keyed.Close()
	kc := clientFor(t, keyed)
	if _, err := kc.ReadNeedle(ctx, "127.0.0.1:1", one.String(), 0, make([]byte, 1), "a.b.c"); !errors.Is(err, seaweed.ErrUnauthorized) {
		t.Fatalf("bad JWT: %v", err)
	}
}

// Replies: OKBytes serves bytes from Go memory; a reply kept past its handler does nothing; a
// nil handler is refused.
func TestEmbeddedReplies(t *testing.T) {
	uctx, err := swucx.NewContext(swucx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer uctx.Close()
	if srv, err := uctx.ServeNeedles("127.0.0.1:0", "", nil); !errors.Is(err, swucx.ErrInvalidParam) || srv != nil {
		t.Fatalf("nil handler: %v, %v", srv, err)
	}
	data := bytes.Repeat([]byte("needle bytes "), 1000)
	crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	kept := make(chan *swucx.NeedleReply, 16)
	srv, err := uctx.ServeNeedles("127.0.0.1:0", "", func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) {
		end := req.Offset + req.Size
		if req.Size == 0 || end > uint64(len(data)) {
			end = uint64(len(data))
		}
		if err := reply.OKBytes(uint64(len(data)), crc, 0, data[req.Offset:end]); err != nil {
			t.Errorf("OKBytes: %v", err)
		}
		kept <- reply
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl := clientFor(t, srv)
	ctx := context.Background()
	fid := func(id uint64) string { return seaweed.FileID{VolumeID: 5, NeedleID: id, Cookie: 1}.String() }
	dst := make([]byte, len(data))
	if n, err := cl.ReadNeedle(ctx, "v:8080", fid(1), 0, dst, ""); err != nil || n != len(data) || !bytes.Equal(dst, data) {
		t.Fatalf("whole needle: %d, %v", n, err)
	}
	if n, err := cl.ReadNeedle(ctx, "v:8080", fid(2), 10, dst[:100], ""); err != nil || n != 100 || !bytes.Equal(dst[:100], data[10:110]) {
		t.Fatalf("range: %d, %v", n, err)
	}
	for len(kept) > 0 {
		late := <-kept
		if late.OK(uint64(len(data)), crc, 0, 8) != nil {
			t.Fatal("OK on a reply whose handler returned gave a buffer")
		}
		if err := late.OKBytes(uint64(len(data)), crc, 0, data[:8]); !errors.Is(err, swucx.ErrInvalidParam) {
			t.Fatalf("OKBytes after the handler returned: %v", err)
		}
		late.Fail(uint8(seaweed.StatusInternal), 0)
	}
	if n, err := cl.ReadNeedle(ctx, "v:8080", fid(1), 0, dst, ""); err != nil || n != len(data) || !bytes.Equal(dst, data) {
		t.Fatalf("whole needle after the late calls: %d, %v", n, err)
	}
}

// An embedding server on two threads: the client's four connections (on two engines) are
// dealt to both, the handler runs on both at once, and every byte arrives.
func TestEmbeddedServerThreads(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	id := seaweed.FileID{VolumeID: 6, NeedleID: 1, Cookie: 7}
	crc := crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli))
	uctx, err := swucx.NewContext(swucx.Config{Features: swucx.FeatureAM | swucx.FeatureWakeup})
	if err != nil {
		t.Fatal(err)
	}
	defer uctx.Close()
	var mu sync.Mutex
	threads := map[int]bool{}
	srv, err := uctx.ServeNeedlesWith(swucx.NeedleServerConfig{Addr: "127.0.0.1:0", Threads: 2},
		func(req *swucx.NeedleRequest, reply *swucx.NeedleReply) {
			mu.Lock()
			threads[syscall.Gettid()] = true
			mu.Unlock()
			switch {
			case (seaweed.FileID{VolumeID: req.VolumeID, NeedleID: req.NeedleID, Cookie: req.Cookie}) != id:
				reply.Fail(uint8(seaweed.StatusNotFound), 0)
				return
			case req.Offset > uint64(len(data)) || req.Size > uint64(len(data))-req.Offset:
				reply.Fail(uint8(seaweed.StatusBadRange), uint64(len(data)))
				return
			}
			end := uint64(len(data))
			if req.Size != 0 {
				end = req.Offset + req.Size
			}
			copy(reply.OK(uint64(len(data)), crc, 0, int(end-req.Offset)), data[req.Offset:end])
		})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl := newClient(t, seaweed.Options{
		NoFallback: true, ConnsPerServer: 4, Engines: 2,
		UCXAddress: func(string) (string, error) { return fmt.Sprintf("127.0.0.1:%d", srv.Port()), nil },
	})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				got, err := readAll(context.Background(), cl, "volume.example:8080", id.String(), len(data))
				if err == nil && !bytes.Equal(got, data) {
					err = errors.New("bytes differ")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(threads) < 2 {
		t.Fatalf("the handler ran on %d server thread(s), want both", len(threads))
	}
}
