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

func TestOnSharedMemory(t *testing.T) {
	if !onSharedMemory([]string{"tcp/lo", "posix/memory"}) || onSharedMemory([]string{"tcp/lo"}) || onSharedMemory(nil) {
		t.Fatal("onSharedMemory")
	}
}
