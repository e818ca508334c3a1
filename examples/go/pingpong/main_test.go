package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rustPingpong is the Rust ping-pong built by cargo (make test builds target/debug/examples;
// make examples target/release/examples), or "" if there is none.
func rustPingpong() string {
	for _, p := range []string{"../../../target/release/examples/pingpong", "../../../target/debug/examples/pingpong"} {
		if abs, err := filepath.Abs(p); err == nil {
			if st, err := os.Stat(abs); err == nil && st.Mode().IsRegular() {
				return abs
			}
		}
	}
	return ""
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until something accepts TCP connections on port.
func waitListening(t *testing.T, port int) {
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %d", port)
}

var cases = []struct {
	api, mode int
	size      uint64
	wireup    bool
}{
	{apiTag, 0, 8, false}, {apiAM, 0, 8, false}, {apiStream, 0, 8, false},
	{apiTag, 1, 65536, false}, {apiAM, 1, 300000, false}, {apiStream, 1, 65536, true},
}

func name(api, mode int, wireup bool) string {
	s := apiNames[api] + "-" + []string{"lat", "bw"}[mode]
	if wireup {
		s += "-address"
	}
	return s
}

// The Go client against the Rust server, and the Rust client against the Go server, over shm
// and tcp: every api, lat and bw, both wireups; each prints its RESULT line.
func TestWireCompatibleWithRust(t *testing.T) {
	rust := rustPingpong()
	if rust == "" {
		t.Skip("no Rust pingpong (cargo build --examples)")
	}
	for _, transport := range []string{"shm", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			// Rust server, Go client.
			port := freePort(t)
			srv := exec.Command(rust, "--server", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--transport", transport)
			// Killed with the test process even when that dies without running its defers
			// (a Go runtime fatal error once left servers behind).
			srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			defer srv.Wait()
			defer srv.Process.Kill()
			waitListening(t, port)
			for _, c := range cases {
				a := clientArgs{connect: fmt.Sprintf("127.0.0.1:%d", port), transport: transport, idleSecs: -1, cpu: -1}
				a.p = params{api: c.api, mode: c.mode, size: c.size, iters: 200, window: 8, addrWU: c.wireup}
				result, err := runClient(a)
				if err != nil || !strings.HasPrefix(result, "RESULT mode=") {
					t.Fatalf("go client, rust server, %s: %q %v", name(c.api, c.mode, c.wireup), result, err)
				}
				t.Logf("go -> rust %s: %s", name(c.api, c.mode, c.wireup), result)
			}

			// Go server (in this process), Rust client.
			gport := freePort(t)
			go runServer(fmt.Sprintf("127.0.0.1:%d", gport), transport, "", -1)
			waitListening(t, gport)
			for _, c := range cases {
				args := []string{"--connect", fmt.Sprintf("127.0.0.1:%d", gport), "--transport", transport,
					"--api", apiNames[c.api], "--mode", []string{"lat", "bw"}[c.mode],
					"--size", fmt.Sprint(c.size), "--iters", "200", "--window", "8"}
				if c.wireup {
					args = append(args, "--wireup", "address")
				}
				out, err := exec.Command(rust, args...).Output()
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				last := lines[len(lines)-1]
				if err != nil || !strings.HasPrefix(last, "RESULT mode=") {
					t.Fatalf("rust client, go server, %s: %q %v", name(c.api, c.mode, c.wireup), out, err)
				}
				t.Logf("rust -> go %s: %s", name(c.api, c.mode, c.wireup), last)
			}
		})
	}
}

// threadCPUs maps each thread of this process to its Cpus_allowed_list.
func threadCPUs(t *testing.T) map[string]string {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	cpus := map[string]string{}
	for _, task := range tasks {
		status, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue // exited meanwhile
		}
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				cpus[task.Name()] = strings.TrimSpace(v)
			}
		}
	}
	return cpus
}

func TestCPUBindingWholeProcessThenOneThread(t *testing.T) {
	before := threadCPUs(t)
	self := fmt.Sprint(syscall.Gettid())
	if before[self] == "0" || !strings.ContainsAny(before[self], ",-") {
		t.Skipf("needs at least two CPUs, has %q", before[self])
	}
	b, err := newCPUBinding(0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		// Give this thread its CPUs back before the test's goroutine lets it go.
		if err := setAffinity(0, &b.free, true); err != nil {
			t.Error(err)
		}
		runtime.UnlockOSThread()
	}()
	self = fmt.Sprint(syscall.Gettid()) // the locked thread
	if err := b.bind(true); err != nil {
		t.Fatal(err)
	}
	for tid, cpus := range threadCPUs(t) {
		if cpus != "0" {
			t.Errorf("bandwidth binding: thread %s may run on %q, want 0", tid, cpus)
		}
	}
	if err := b.bind(false); err != nil {
		t.Fatal(err)
	}
	for tid, cpus := range threadCPUs(t) {
		switch {
		case tid == self && cpus != "0":
			t.Errorf("latency binding: the driving thread may run on %q, want 0", cpus)
		case tid != self && cpus != before[self]:
			t.Errorf("latency binding: thread %s may run on %q, want %q", tid, cpus, before[self])
		}
	}
}
