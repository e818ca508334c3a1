package swucx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The child process of the two-process tests: the test binary run again with
// SWUCX_GO_TEST_CHILD set to a transport name. It listens, prints "PORT <n>", accepts one
// connection and echoes every tag message to tag|reply until it is killed.
func TestMain(m *testing.M) {
	if name := os.Getenv("SWUCX_GO_TEST_CHILD"); name != "" {
		if err := runChild(name); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const replyBit = uint64(1) << 63

func settingsFor(name string) map[string]string {
	for _, tr := range transports {
		if tr.name == name {
			return tr.settings
		}
	}
	panic("unknown transport " + name)
}

func runChild(name string) error {
	settings, listen := map[string]string(nil), "127.0.0.1:0"
	if name == "vanished" {
		// In a namespace of its own: tcp on its end of the veth pair.
		settings = vethSettings(os.Getenv("SWUCX_GO_TEST_DEVICE"))
		listen = os.Getenv("SWUCX_GO_TEST_IP") + ":0"
	} else {
		settings = settingsFor(name)
	}
	c, err := NewContext(Config{Name: "swucx-go-child", Settings: settings})
	if err != nil {
		return err
	}
	e, err := NewEngine(c)
	if err != nil {
		return err
	}
	l, err := e.Listen(listen)
	if err != nil {
		return err
	}
	fmt.Printf("PORT %d\n", l.Port())
	ctx := context.Background()
	ep, err := l.Accept(ctx)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for {
		n, tag, err := e.TagRecv(ctx, buf, 0, replyBit)
		if err != nil {
			return err
		}
		if tag == 0 {
			return nil // the parent's "stop"
		}
		if err := ep.TagSend(ctx, buf[:n], tag|replyBit); err != nil {
			return err
		}
	}
}

// Round trips with a server in another process; then the server is killed while 16 goroutines
// wait on replies from it: every one returns a peer-failure error within 2 s. "vanished": the
// server runs in a network namespace of its own, joined by a veth pair, and instead of being
// killed its host vanishes (its link goes down: no FIN, no RST); the waiters return within 8 s
// (swucx's TCP keepalive on the connection; without it they waited for minutes).
func TestTwoProcessPeerKilled(t *testing.T) {
	for _, name := range []string{"shm", "tcp", "vanished"} {
		t.Run(name, func(t *testing.T) {
			host, limit := "127.0.0.1", 2*time.Second
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			var v *veth
			var settings map[string]string
			if name == "vanished" {
				v = newVeth(t)
				settings = vethSettings(v.outer)
				host, limit = v.innerIP, 8*time.Second
				cmd = exec.Command("ip", "netns", "exec", v.namespace, os.Args[0], "-test.run=^$")
				cmd.Env = append(os.Environ(), "SWUCX_GO_TEST_DEVICE="+v.inner, "SWUCX_GO_TEST_IP="+v.innerIP)
			} else {
				settings = settingsFor(name)
				cmd.Env = os.Environ()
			}
			cmd.Env = append(cmd.Env, "SWUCX_GO_TEST_CHILD="+name)
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // even if this test process dies
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cmd.Process.Kill()
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "PORT ") {
				t.Fatalf("child: %q %v", line, err)
			}
			port := strings.TrimSpace(strings.TrimPrefix(line, "PORT "))

			c, err := NewContext(Config{Settings: settings})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			e, err := NewEngine(c)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			ep, err := e.Connect(host + ":" + port)
			if err != nil {
				t.Fatal(err)
			}
			defer ep.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()

			// Byte-exact round trips, eager and rendezvous.
			for i, n := range []int{1, 100, 8191, 300000} {
				out := pattern(n, uint64(i))
				tag := uint64(1000 + i)
				if err := ep.TagSend(ctx, out, tag); err != nil {
					t.Fatalf("send %d: %v", n, err)
				}
				in := make([]byte, n)
				got, rtag, err := ep.TagRecv(ctx, in, tag|replyBit, ^uint64(0))
				if err != nil || got != n || rtag != tag|replyBit || string(in) != string(out) {
					t.Fatalf("size %d: %d bytes, tag %x, %v", n, got, rtag, err)
				}
			}

			// Rendezvous sends pending when the child dies (its echo loop may take one).
			var sends []*Request
			for i := 0; i < 8; i++ {
				q, err := ep.TagSendStart(make([]byte, 1<<20), uint64(9000+i))
				if err != nil {
					t.Fatalf("pending send %d: %v", i, err)
				}
				sends = append(sends, q)
			}
			retainedPins.Lock()
			pinsBefore := len(retainedPins.pins)
			retainedPins.Unlock()

			// 16 goroutines wait for replies that never come; then the peer dies.
			const waiters = 16
			var wg sync.WaitGroup
			errs := make([]error, waiters)
			took := make([]time.Duration, waiters)
			var killed time.Time
			var mu sync.Mutex
			started := make(chan struct{}, waiters)
			for g := 0; g < waiters; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					buf := make([]byte, 64)
					started <- struct{}{}
					_, _, errs[g] = ep.TagRecv(ctx, buf, uint64(5000+g)|replyBit, ^uint64(0))
					mu.Lock()
					took[g] = time.Since(killed)
					mu.Unlock()
				}(g)
			}
			for g := 0; g < waiters; g++ {
				<-started
			}
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			killed = time.Now()
			mu.Unlock()
			if v != nil {
				v.cut(t)
			} else if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			for g := 0; g < waiters; g++ {
				if !errors.Is(errs[g], ErrPeerFailure) {
					t.Errorf("waiter %d: want a peer failure, got %v", g, errs[g])
				}
				if took[g] > limit {
					t.Errorf("waiter %d returned %v after the kill", g, took[g])
				}
			}
			t.Logf("waiters returned within %v of the kill or cut: %v", maxDuration(took), errs[0])
			// The pending sends fail too; those UCX still held keep their buffers pinned
			// (ErrBufferRetained: UCX 1.13 keeps rendezvous sends over shared memory).
			retained := 0
			for i, q := range sends {
				if _, _, err := q.Wait(ctx); err != nil && !errors.Is(err, ErrPeerFailure) {
					t.Errorf("pending send %d: want success or a peer failure, got %v", i, err)
				} else if errors.Is(err, ErrBufferRetained) {
					retained++
				}
			}
			retainedPins.Lock()
			pinned := len(retainedPins.pins) - pinsBefore
			retainedPins.Unlock()
			if pinned != retained {
				t.Errorf("%d sends reported their buffer retained, %d pins kept", retained, pinned)
			}
			t.Logf("%d of %d pending sends kept their buffers pinned", retained, len(sends))
			// A send now fails too.
			if err := ep.TagSend(ctx, []byte("x"), 1); !errors.Is(err, ErrPeerFailure) {
				t.Errorf("send after the kill: %v", err)
			}
		})
	}
}

func maxDuration(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// veth is a network namespace joined to this one by a veth pair, standing for a second host.
// Names and the /30 subnet come from this process's PID (as in the Rust tests, with another
// range); the namespace is deleted when the test ends, which removes the pair. Needs root and
// iproute2.
type veth struct {
	namespace, outer, inner, innerIP string
}

func newVeth(t *testing.T) *veth {
	pid := os.Getpid()
	base := 4 * (pid % (1 << 14))
	ip := func(host int) string { return fmt.Sprintf("10.232.%d.%d", base>>8, base&0xff+host) }
	v := &veth{
		namespace: fmt.Sprintf("swucx-gotest-%d", pid),
		outer:     fmt.Sprintf("swgo%d", pid),
		inner:     fmt.Sprintf("swgi%d", pid),
		innerIP:   ip(2),
	}
	runIP(t, "netns", "add", v.namespace)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", v.namespace).Run() })
	runIP(t, "link", "add", v.outer, "type", "veth", "peer", "name", v.inner, "netns", v.namespace)
	runIP(t, "addr", "add", ip(1)+"/30", "dev", v.outer)
	runIP(t, "link", "set", v.outer, "up")
	runIP(t, "-n", v.namespace, "addr", "add", v.innerIP+"/30", "dev", v.inner)
	runIP(t, "-n", v.namespace, "link", "set", v.inner, "up")
	runIP(t, "-n", v.namespace, "link", "set", "lo", "up")
	return v
}

// cut takes the far end's link down: from here the other host has vanished.
func (v *veth) cut(t *testing.T) {
	runIP(t, "-n", v.namespace, "link", "set", v.inner, "down")
}

func runIP(t *testing.T, args ...string) {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s (this test needs root for network namespaces)",
			strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// vethSettings: tcp only, on one end of a veth pair.
func vethSettings(device string) map[string]string {
	return map[string]string{"TLS": "tcp", "NET_DEVICES": device}
}
