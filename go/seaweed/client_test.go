package seaweed_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	swucx "github.com/swucx/swucx/go"
	"github.com/swucx/swucx/go/seaweed"
	"github.com/swucx/swucx/go/seaweed/testcluster"
)

// file is an uploaded needle and its bytes.
type file struct {
	fid  string
	data []byte
}

func startCluster(t *testing.T, opts testcluster.Options) *testcluster.Cluster {
	t.Helper()
	c, err := testcluster.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func upload(t *testing.T, c *testcluster.Cluster, sizes ...int) []file {
	t.Helper()
	var files []file
	for i, n := range sizes {
		data := make([]byte, n)
		rand.New(rand.NewSource(int64(i + n))).Read(data)
		fid, err := c.Upload(fmt.Sprintf("f%d.bin", i), data)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, file{fid, data})
	}
	return files
}

func newClient(t *testing.T, opts seaweed.Options) *seaweed.Client {
	t.Helper()
	cl, err := seaweed.NewClient(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// readAll reads a whole needle into a buffer one byte longer than expected (so a short read
// must come from the end of the needle) and returns the bytes.
func readAll(ctx context.Context, cl *seaweed.Client, server, fid string, size int) ([]byte, error) {
	dst := make([]byte, size+1)
	n, err := cl.ReadNeedle(ctx, server, fid, 0, dst, "")
	if err == io.EOF && size == 0 {
		return dst[:0], nil
	}
	return dst[:n], err
}

func httpGet(t *testing.T, server, fid string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + server + "/" + fid)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", fid, resp.Status, err)
	}
	return b
}

// Every needle read over UCX (shm and tcp) equals what weed's HTTP GET returns, whole and in
// ranges; refusals match weed's. Over shm, large payloads are copied straight out of the
// server's memory (direct reads) unless turned off; never over tcp.
func TestReadsMatchHTTP(t *testing.T) {
	c := startCluster(t, testcluster.Options{})
	files := upload(t, c, 0, 1, 4096, 65536, 1<<20, 8<<20+13)
	deleted := upload(t, c, 100)[0]
	if err := c.Delete(deleted.fid); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tls := range []string{"shm", "shm-no-direct", "tcp"} {
		t.Run(tls, func(t *testing.T) {
			settings := map[string]string{"TLS": "tcp"}
			if tls != "tcp" {
				settings = map[string]string{"TLS": "posix,sysv,cma,tcp,self"}
			}
			cl := newClient(t, seaweed.Options{Settings: settings, NoFallback: true, NoDirectReads: tls == "shm-no-direct"})
			for _, f := range files {
				got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data))
				if err != nil {
					t.Fatalf("%s (%d B): %v", f.fid, len(f.data), err)
				}
				if !bytes.Equal(got, f.data) || !bytes.Equal(got, httpGet(t, c.VolumeServer, f.fid)) {
					t.Fatalf("%s (%d B): bytes differ", f.fid, len(f.data))
				}
				if len(f.data) < 3 {
					continue
				}
				// A range inside, and one running past the end.
				off, n := len(f.data)/3, len(f.data)/2
				dst := make([]byte, n)
				k, err := cl.ReadNeedle(ctx, c.VolumeServer, f.fid, int64(off), dst, "")
				if err != nil || k != n || !bytes.Equal(dst, f.data[off:off+n]) {
					t.Fatalf("%s range %d+%d: %d %v", f.fid, off, n, k, err)
				}
				tail := make([]byte, len(f.data))
				k, err = cl.ReadNeedle(ctx, c.VolumeServer, f.fid, int64(off), tail, "")
				if err != nil || k != len(f.data)-off || !bytes.Equal(tail[:k], f.data[off:]) {
					t.Fatalf("%s tail from %d: %d %v", f.fid, off, k, err)
				}
				if _, err := cl.ReadNeedle(ctx, c.VolumeServer, f.fid, int64(len(f.data)), dst, ""); err != io.EOF {
					t.Fatalf("%s read at the end: %v, want io.EOF", f.fid, err)
				}
			}
			wrongCookie := files[2].fid[:len(files[2].fid)-1] + "0"
			if files[2].fid == wrongCookie {
				wrongCookie = files[2].fid[:len(files[2].fid)-1] + "1"
			}
			for _, fid := range []string{deleted.fid, wrongCookie} {
				if _, err := cl.ReadNeedle(ctx, c.VolumeServer, fid, 0, make([]byte, 10), ""); !errors.Is(err, seaweed.ErrNotFound) {
					t.Fatalf("%s: %v, want ErrNotFound", fid, err)
				}
			}
			// A volume the UCX server does not hold may be elsewhere: not "not found" here
			// (over HTTP weed tells; TestVolumeNotOnServerFallsBack).
			if _, err := cl.ReadNeedle(ctx, c.VolumeServer, "999,01637037d6", 0, make([]byte, 10), ""); err == nil || errors.Is(err, seaweed.ErrNotFound) {
				t.Fatalf("unknown volume without the fallback: %v, want an error other than ErrNotFound", err)
			}
			st := cl.Stats()
			if st.HTTP != 0 || st.UCX == 0 {
				t.Fatalf("stats %+v: every read should have gone over UCX", st)
			}
			// The first payload of 8 KiB or more probes; the later ones (ranges and tails of
			// the 64 KiB, 1 MiB and 8 MiB needles) are direct.
			if direct, want := st.Direct > 0, tls == "shm"; direct != want {
				t.Fatalf("stats %+v: direct reads used %v, want %v", st, direct, want)
			}
		})
	}
	// weed mount reads a needle deleted after the filer listed it (readDeleted=true) until a
	// compaction; with the HTTP fallback on, so does the client (the UCX server answers
	// DELETED, which the fallback then asks as weed mount does).
	cl := newClient(t, seaweed.Options{Settings: map[string]string{"TLS": "tcp"}})
	got, err := readAll(ctx, cl, c.VolumeServer, deleted.fid, len(deleted.data))
	if err != nil || !bytes.Equal(got, deleted.data) {
		t.Fatalf("deleted needle with the fallback on: %d bytes, %v", len(got), err)
	}
	if st := cl.Stats(); st.FallbackDeleted != 1 || st.HTTP != 1 || st.UCX != 0 {
		t.Fatalf("stats %+v: want the deleted needle read over HTTP", st)
	}
}

// Volumes the UCX server does not hold (on a disk it was not given, erasure-coded, tiered)
// are answered NO_VOLUME and read over HTTP; with the fallback off the read fails, but not as
// "not found" (weed has the needle).
func TestVolumeNotOnServerFallsBack(t *testing.T) {
	c := startCluster(t, testcluster.Options{ServerDir: t.TempDir()})
	files := upload(t, c, 100, 70000)
	ctx := context.Background()
	cl := newClient(t, seaweed.Options{Settings: map[string]string{"TLS": "tcp"}})
	for _, f := range files {
		got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data))
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("%s: %d bytes, %v", f.fid, len(got), err)
		}
	}
	if st := cl.Stats(); st.FallbackNoVolume != 2 || st.HTTP != 2 || st.UCX != 0 || st.FallbackServer != 0 {
		t.Fatalf("stats %+v: want both reads answered NO_VOLUME and read over HTTP", st)
	}
	// A volume nobody holds: weed's 404.
	if _, err := cl.ReadNeedle(ctx, c.VolumeServer, "999,01637037d6", 0, make([]byte, 10), ""); !errors.Is(err, seaweed.ErrNotFound) {
		t.Fatalf("unknown volume: %v, want ErrNotFound from HTTP", err)
	}
	strict := newClient(t, seaweed.Options{Settings: map[string]string{"TLS": "tcp"}, NoFallback: true})
	_, err := strict.ReadNeedle(ctx, c.VolumeServer, files[0].fid, 0, make([]byte, 10), "")
	var answer *seaweed.ServerError
	if !errors.Is(err, seaweed.ErrUCXUnavailable) || !errors.As(err, &answer) || answer.Status != seaweed.StatusNoVolume {
		t.Fatalf("NoFallback: %v, want ErrUCXUnavailable wrapping the server's NO_VOLUME", err)
	}
	if st := strict.Stats(); st.FallbackNoVolume != 1 || st.Failed != 1 || st.HTTP != 0 {
		t.Fatalf("NoFallback stats %+v: want the reason counted", st)
	}
}

// A server at its connection limit rejects a new client, which reads over HTTP and says why.
func TestServerAtItsConnectionLimitFallsBack(t *testing.T) {
	c := startCluster(t, testcluster.Options{ServerArgs: []string{"--max-connections", "1"}})
	f := upload(t, c, 5000)[0]
	ctx := context.Background()
	first := newClient(t, seaweed.Options{NoFallback: true})
	if got, err := readAll(ctx, first, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("first client: %v", err)
	}
	second := newClient(t, seaweed.Options{})
	if got, err := readAll(ctx, second, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("second client: %v", err)
	}
	if st := second.Stats(); st.HTTP != 1 || st.FallbackUnreachable != 1 || st.UCX != 0 {
		t.Fatalf("stats %+v: want the rejected connection's read over HTTP", st)
	}
	if log, ok := c.WaitLog("swucx-serve", "rejected 1 connection", 10*time.Second); !ok {
		t.Fatalf("no warning of the rejection:\n%s", log)
	}
}

// Idle connections: a client closes its own after IdleConnTimeout and reads on a new one; a
// connection the server closed for idleness (--idle-timeout-secs) is not used again, and the
// next read reconnects over UCX without an error or a fallback.
func TestIdleConnections(t *testing.T) {
	c := startCluster(t, testcluster.Options{ServerArgs: []string{"--idle-timeout-secs", "1"}})
	f := upload(t, c, 5000)[0]
	ctx := context.Background()
	readTwice := func(cl *seaweed.Client, pause time.Duration) seaweed.Stats {
		for i := 0; i < 2; i++ {
			if i > 0 {
				time.Sleep(pause)
			}
			if got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
				t.Fatalf("read %d: %v", i, err)
			}
		}
		return cl.Stats()
	}
	closing := newClient(t, seaweed.Options{NoFallback: true, IdleConnTimeout: 200 * time.Millisecond})
	if st := readTwice(closing, 400*time.Millisecond); st.UCX != 2 || st.IdleClosed != 1 || st.Failed != 0 {
		t.Fatalf("stats %+v: want the idle connection closed by the client and both reads over UCX", st)
	}
	keeping := newClient(t, seaweed.Options{NoFallback: true, IdleConnTimeout: -1})
	if st := readTwice(keeping, 2500*time.Millisecond); st.UCX != 2 || st.IdleClosed != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v: want both reads over UCX, the second on a new connection", st)
	}
	if log, ok := c.WaitLog("swucx-serve", "idle for 1s", 10*time.Second); !ok {
		t.Fatalf("the server closed no idle connection:\n%s", log)
	}
}

// 16 readers over one client, every byte checked: on one connection to a one-thread server,
// and on four connections spread over two engines to a server on two threads.
func TestConcurrentReaders(t *testing.T) {
	for _, spread := range []bool{false, true} {
		t.Run(fmt.Sprintf("spread=%v", spread), func(t *testing.T) {
			opts, cluster := seaweed.Options{NoFallback: true, MaxInFlight: 8}, testcluster.Options{}
			if spread {
				opts.Engines, opts.ConnsPerServer = 2, 4
				cluster.ServerArgs = []string{"--threads", "2"}
			}
			c := concurrentReaders(t, cluster, opts)
			if !spread {
				return
			}
			if log, ok := c.WaitLog("swucx-serve", "connected (lane 1)", 10*time.Second); !ok {
				t.Fatalf("no connection served by the server's second thread:\n%s", log)
			}
		})
	}
}

func concurrentReaders(t *testing.T, cluster testcluster.Options, opts seaweed.Options) *testcluster.Cluster {
	c := startCluster(t, cluster)
	files := upload(t, c, 4096, 20000, 65536, 300000, 1<<20)
	cl := newClient(t, opts)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				f := files[(g+i)%len(files)]
				got, err := readAll(context.Background(), cl, c.VolumeServer, f.fid, len(f.data))
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, f.data) {
					errs <- fmt.Errorf("%s: corrupted bytes", f.fid)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := cl.Stats(); st.UCX != 16*40 {
		t.Fatalf("stats %+v", st)
	}
	// The server counted each of them once (as OK replies; readAll's buffer one byte too long
	// costs a BAD_RANGE reply first).
	if ok, err := c.ServerMetric(`swucx_serve_replies_total{status="ok"}`); err != nil || ok != 16*40 {
		t.Fatalf("the server counted %v OK replies (%v), want %d", ok, err, 16*40)
	}
	return c
}

// A volume server given as a URL, not host:port, is refused before any connection, with a
// message that says what is wanted (it became "http://http//..." and counted as unreachable).
func TestVolumeServerIsHostPort(t *testing.T) {
	cl := newClient(t, seaweed.Options{})
	_, err := cl.ReadNeedle(context.Background(), "http://127.0.0.1:8080", "3,01637037d6", 0, make([]byte, 8), "")
	if err == nil || !strings.Contains(err.Error(), "want host:port") {
		t.Fatalf("read from a URL: %v", err)
	}
	if st := cl.Stats(); st != (seaweed.Stats{Failed: 1}) {
		t.Fatalf("stats %+v: want one failed read and nothing else", st)
	}
}

// With no swucx server, reads go over HTTP and say why; a server that accepts UCX connections
// but does not answer the protocol is taken as not speaking it.
func TestFallbackWithoutServer(t *testing.T) {
	c := startCluster(t, testcluster.Options{NoServer: true})
	f := upload(t, c, 5000)[0]
	cl := newClient(t, seaweed.Options{})
	for i := 0; i < 3; i++ {
		got, err := readAll(context.Background(), cl, c.VolumeServer, f.fid, len(f.data))
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("read %d: %v", i, err)
		}
	}
	st := cl.Stats()
	if st.HTTP != 3 || st.FallbackUnreachable != 1 || st.FallbackDown != 2 {
		t.Fatalf("stats %+v: want 3 HTTP reads, 1 unreachable then 2 while down", st)
	}

	// A UCX listener without the protocol's handler: the first request is never answered.
	_, l := rawPeer(t, nil)
	mute := newClient(t, seaweed.Options{
		ProbeTimeout: 300 * time.Millisecond,
		UCXAddress:   func(string) (string, error) { return fmt.Sprintf("127.0.0.1:%d", l.Port()), nil },
	})
	got, err := readAll(context.Background(), mute, c.VolumeServer, f.fid, len(f.data))
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("read via a mute UCX peer: %v", err)
	}
	if st := mute.Stats(); st.HTTP != 1 || st.FallbackProtocol != 1 {
		t.Fatalf("stats %+v: want one HTTP read after a protocol fallback", st)
	}

	// Another program on the UCX port: TCP accepts and nothing answers, so the connection
	// never completes and the request is never sent. The probe bounds that as well: a read
	// without a deadline goes over HTTP after it, and reads with deadlines shorter than the
	// probe end one after another until it is over, then go over HTTP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, conn); conn.Close() }()
		}
	}()
	deafClient := func() *seaweed.Client {
		return newClient(t, seaweed.Options{
			ProbeTimeout: 300 * time.Millisecond,
			Settings:     map[string]string{"TLS": "tcp"},
			UCXAddress:   func(string) (string, error) { return ln.Addr().String(), nil },
		})
	}
	deaf := deafClient()
	start := time.Now()
	got, err = readAll(context.Background(), deaf, c.VolumeServer, f.fid, len(f.data))
	if err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("read via a port that is not UCX: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the read took %v, want about the 300 ms probe", took)
	}
	if st := deaf.Stats(); st.HTTP != 1 || st.FallbackProtocol != 1 {
		t.Fatalf("stats %+v: want one HTTP read after a protocol fallback", st)
	}
	deaf = deafClient()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		got, err = readAll(ctx, deaf, c.VolumeServer, f.fid, len(f.data))
		cancel()
		if err == nil {
			if !bytes.Equal(got, f.data) {
				t.Fatal("corrupted bytes over HTTP")
			}
			break
		}
		if !errors.Is(err, context.DeadlineExceeded) || i == 20 {
			t.Fatalf("read %d with a 100 ms deadline: %v", i, err)
		}
	}
	if st := deaf.Stats(); st.HTTP != 1 {
		t.Fatalf("stats %+v: want the reads to go over HTTP once the probe was over", st)
	}
}

// The server killed mid-read: reads in flight fail within 2 s, later reads go over HTTP, and
// once the server is back reads return to UCX. Over tcp and over shm (where the reads in flight
// are direct reads from the server's memory).
func TestServerKilledAndRestarted(t *testing.T) {
	for _, tls := range []string{"tcp", "shm"} {
		t.Run(tls, func(t *testing.T) { serverKilledAndRestarted(t, tls) })
	}
}

func serverKilledAndRestarted(t *testing.T, tls string) {
	opts, settings := testcluster.Options{ServerEnv: []string{"UCX_TLS=tcp"}}, map[string]string{"TLS": "tcp"}
	if tls == "shm" {
		opts, settings = testcluster.Options{}, map[string]string{"TLS": "posix,sysv,cma,tcp,self"}
	}
	c := startCluster(t, opts)
	f := upload(t, c, 8<<20)[0]
	cl := newClient(t, seaweed.Options{Settings: settings, RetryUCXAfter: 300 * time.Millisecond})
	ctx := context.Background()
	if got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("first read: %v", err)
	}

	type outcome struct {
		err  error
		done time.Time
	}
	stop := make(chan struct{})
	results := make(chan outcome, 1024)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data))
				if err == nil && !bytes.Equal(got, f.data) {
					err = errors.New("corrupted bytes")
				}
				results <- outcome{err, time.Now()}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if tls == "shm" && cl.Stats().Direct == 0 {
		t.Fatalf("stats %+v: no direct reads over shm before the kill", cl.Stats())
	}
	// Frozen first, so that reads are surely in flight when it dies (else each read might
	// have its bytes in the socket buffers already, or start only after UCX noticed).
	if err := syscall.Kill(c.ServerPID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	killed := time.Now()
	c.KillServer()
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(results)
	failed := 0
	for r := range results {
		if r.err == nil {
			continue
		}
		if errors.Is(r.err, seaweed.ErrNotFound) || r.err.Error() == "corrupted bytes" {
			t.Fatalf("read failed wrongly: %v", r.err)
		}
		failed++
		if late := r.done.Sub(killed); late > 2*time.Second {
			t.Fatalf("a read failed %v after the kill (limit 2 s): %v", late, r.err)
		}
		t.Logf("read in flight at the kill: %v after: %v", r.done.Sub(killed), r.err)
	}
	st := cl.Stats()
	if failed == 0 || st.HTTP == 0 {
		t.Fatalf("stats %+v, %d failed reads: want reads in flight to fail and later ones over HTTP", st, failed)
	}

	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for before := cl.Stats().UCX; cl.Stats().UCX == before; {
		if time.Now().After(deadline) {
			t.Fatalf("reads did not return to UCX after the restart: %+v", cl.Stats())
		}
		if got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("read after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Restarted while the client is idle: the connection UCX found failed meanwhile is not
	// used again; the next read succeeds on a new one.
	c.KillServer()
	time.Sleep(1500 * time.Millisecond)
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	before := cl.Stats()
	if got, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("first read after an idle restart: %v (stats before %+v)", err, before)
	}
}

// A deadline shorter than the read: context.DeadlineExceeded, and the connection stays usable.
func TestDeadline(t *testing.T) {
	c := startCluster(t, testcluster.Options{ServerEnv: []string{"UCX_TLS=tcp"}})
	f := upload(t, c, 8<<20)[0]
	cl := newClient(t, seaweed.Options{Settings: map[string]string{"TLS": "tcp"}, NoFallback: true})
	bg := context.Background()
	if got, err := readAll(bg, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
		t.Fatalf("first read: %v", err)
	}
	expired := 0
	for i := 0; i < 20 && expired < 3; i++ {
		ctx, cancel := context.WithTimeout(bg, time.Duration(50*(i+1))*time.Microsecond)
		_, err := readAll(ctx, cl, c.VolumeServer, f.fid, len(f.data))
		cancel()
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			expired++
		case err != nil:
			t.Fatalf("short deadline: %v, want context.DeadlineExceeded", err)
		}
		if got, err := readAll(bg, cl, c.VolumeServer, f.fid, len(f.data)); err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("read after a deadline: %v", err)
		}
	}
	if expired == 0 {
		t.Fatal("no read hit its deadline")
	}
	if st := cl.Stats(); st.HTTP != 0 {
		t.Fatalf("stats %+v: the connection should have stayed on UCX", st)
	}
}

// rawPeer is a bare UCX peer (its own context and engine) listening on 127.0.0.1 and
// accepting every connection, all closed when the test ends. It speaks no protocol of its own.
func rawPeer(t *testing.T, settings map[string]string) (*swucx.Engine, *swucx.Listener) {
	t.Helper()
	eng, l, _ := countingPeer(t, settings)
	return eng, l
}

// countingPeer is rawPeer, also counting the connections it accepted.
func countingPeer(t *testing.T, settings map[string]string) (*swucx.Engine, *swucx.Listener, *atomic.Int32) {
	t.Helper()
	var count atomic.Int32
	uctx, err := swucx.NewContext(swucx.Config{Settings: settings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uctx.Close() })
	eng, err := swucx.NewEngine(uctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	l, err := eng.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		var accepted []*swucx.Endpoint
		defer func() {
			for _, ep := range accepted {
				ep.Close()
			}
		}()
		for {
			ep, err := l.Accept(context.Background())
			if err != nil {
				return
			}
			count.Add(1)
			accepted = append(accepted, ep)
		}
	}()
	return eng, l, &count
}

// A server of protocol version 1 (a UCX peer answering UNKNOWN_VERSION, in version 1, to any
// later request): the client steps down a version at a time, keeps the one that worked for
// the connection, and reads.
func TestStepsDownToAnOlderServersVersion(t *testing.T) {
	eng, l := rawPeer(t, map[string]string{"TLS": "tcp"})
	requests, err := eng.HandleAM(seaweed.AMRead, 16)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte{7}, 100)
	var seen []byte
	var mu sync.Mutex
	go func() {
		le := binary.LittleEndian
		for msg := range requests {
			version, id := msg.Header[2], le.Uint64(msg.Header[8:])
			mu.Lock()
			seen = append(seen, version)
			mu.Unlock()
			reply := make([]byte, 48)
			copy(reply, []byte{'S', 'W', 1, 2})
			le.PutUint64(reply[8:], id)
			var data []byte
			if version > 1 {
				reply[4] = byte(seaweed.StatusUnknownVersion)
				le.PutUint64(reply[16:], 1) // the highest version it speaks
			} else {
				le.PutUint64(reply[16:], uint64(len(payload)))
				le.PutUint64(reply[24:], uint64(len(payload)))
				data = payload
			}
			if err := msg.ReplyEndpoint.AMSend(context.Background(), seaweed.AMReadReply, reply, data, swucx.AMEager); err != nil {
				t.Error(err)
			}
			msg.Close()
		}
	}()
	cl := newClient(t, seaweed.Options{
		Settings:   map[string]string{"TLS": "tcp"},
		NoFallback: true,
		UCXAddress: func(string) (string, error) { return fmt.Sprintf("127.0.0.1:%d", l.Port()), nil },
	})
	for i := 0; i < 2; i++ {
		dst := make([]byte, len(payload))
		n, err := cl.ReadNeedle(context.Background(), "127.0.0.1:1", "3,01637037d6", 0, dst, "")
		if err != nil || n != len(payload) || !bytes.Equal(dst, payload) {
			t.Fatalf("read %d: %d bytes, %v", i, n, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []byte{3, 2, 1, 1}; !bytes.Equal(seen, want) {
		t.Fatalf("request versions %v, want %v", seen, want)
	}
}
