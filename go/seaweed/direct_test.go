package seaweed

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"
	"unsafe"
)

// own is where b lies in this process, as a server would announce it.
func own(b []byte) *peerRange {
	return &peerRange{addr: uint64(uintptr(unsafe.Pointer(&b[0]))), pid: os.Getpid()}
}

func TestReadPeerAndProbe(t *testing.T) {
	src := make([]byte, 100000)
	for i := range src {
		src[i] = byte(i * 7)
	}
	dst := make([]byte, len(src))
	if err := readPeer(own(src), dst); err != nil || !bytes.Equal(dst, src) {
		t.Fatalf("readPeer: %v", err)
	}
	receive := func(dst, from []byte) func() (int, error) {
		return func() (int, error) { return copy(dst, from), nil }
	}
	var d directState
	zeros := make([]byte, 64)
	if _, err := d.probe(own(src), zeros, receive(zeros, make([]byte, 64))); err != nil || d.mode() != directProbe {
		t.Fatalf("zeros proved something: %v %v", d.mode(), err)
	}
	failed := errors.New("receive failed")
	if _, err := d.probe(own(src), dst[:10], func() (int, error) { return 0, failed }); err != failed || d.mode() != directProbe {
		t.Fatalf("a failed receive settled the probe: %v %v", d.mode(), err)
	}
	if n, err := d.probe(own(src), dst[:1000], receive(dst[:1000], src)); n != 1000 || err != nil || d.mode() != directOn {
		t.Fatalf("agreeing probe: %d %v %v", n, err, d.mode())
	}
	var other directState
	other.probe(own(src), dst[:1000], receive(dst[:1000], src[1:]))
	if other.enable(); other.mode() != directOff {
		t.Fatalf("disagreeing probe left mode %v", other.mode())
	}
	gone := &peerRange{addr: 8, pid: 1 << 30}
	if err := readPeer(gone, dst[:16]); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("missing process: %v", err)
	}
	if err := readPeer(&peerRange{addr: 8, pid: os.Getpid()}, dst[:16]); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("unmapped address: %v", err)
	}
}

// fetchFixture is a 4 KiB payload (bytes i*mul+add), a destination for it, and a receive
// (what UCX would deliver) that counts its calls in *received.
func fetchFixture(mul, add int) (src, dst []byte, received *int, receive func() (int, error)) {
	src = make([]byte, 4096)
	for i := range src {
		src[i] = byte(i*mul + add)
	}
	dst = make([]byte, len(src))
	received = new(int)
	receive = func() (int, error) { *received++; return copy(dst, src), nil }
	return src, dst, received, receive
}

func TestFetchReadsDirectlyOnlyWhenTrusted(t *testing.T) {
	src, dst, received, receive := fetchFixture(3, 1)
	yes := func() bool { return true }
	var tcp, shm directState
	if _, direct, _ := tcp.fetch(own(src), dst, func() bool { return false }, receive); direct || tcp.mode() != directOff {
		t.Fatalf("not on shared memory: direct %v, mode %v", direct, tcp.mode())
	}
	if _, direct, _ := shm.fetch(own(src), dst, yes, receive); direct || shm.mode() != directOn {
		t.Fatalf("probe: direct %v, mode %v", direct, shm.mode())
	}
	clear(dst)
	before := *received
	if n, direct, err := shm.fetch(own(src), dst, yes, receive); !direct || n != len(src) || err != nil || *received != before || !bytes.Equal(dst, src) {
		t.Fatalf("trusted: direct %v n %d err %v received %d", direct, n, err, *received-before)
	}
	if _, direct, _ := shm.fetch(&peerRange{addr: 8, pid: os.Getpid()}, dst[:16], yes, receive); direct || shm.mode() != directOff || *received != before+1 {
		t.Fatalf("failed direct read: direct %v, mode %v", direct, shm.mode())
	}
}

// A probe whose direct read the kernel refuses (EPERM under Yama's ptrace_scope 1; here an
// unmapped address) delivers what UCX received and turns direct reads off for the connection.
func TestRefusedProbeFallsBackToUCX(t *testing.T) {
	src, dst, received, receive := fetchFixture(5, 3)
	yes := func() bool { return true }
	var d directState
	unreadable := &peerRange{addr: 8, pid: os.Getpid()}
	if n, direct, err := d.fetch(unreadable, dst, yes, receive); n != len(src) || direct || err != nil || !bytes.Equal(dst, src) || d.mode() != directOff {
		t.Fatalf("refused probe: n %d direct %v err %v mode %v", n, direct, err, d.mode())
	}
	clear(dst)
	if n, direct, err := d.fetch(own(src), dst, yes, receive); n != len(src) || direct || err != nil || *received != 2 || !bytes.Equal(dst, src) {
		t.Fatalf("after a refused probe: n %d direct %v err %v received %d", n, direct, err, *received)
	}
}

func TestOnSharedMemory(t *testing.T) {
	if !onSharedMemory([]string{"tcp/lo", "posix/memory"}) || onSharedMemory([]string{"tcp/lo"}) || onSharedMemory(nil) {
		t.Fatal("onSharedMemory")
	}
}
