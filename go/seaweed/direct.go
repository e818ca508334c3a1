package seaweed

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Direct reads (docs/protocol.md, "Direct reads"; src/seaweed/direct.rs is the reference): the
// client asks the server where a rendezvous payload lies in its memory (the server tells only
// on a connection UCX put on shared memory), copies it out with process_vm_readv(2) and
// releases the rendezvous,
// which completes the server's send without moving the bytes through UCX's shared-memory
// FIFOs (UCX 1.13 gives endpoints with peer-failure handling no cma lane). Trusted only after
// a probe: the first such payload is received through UCX and read directly as well, and the
// two must agree.

// peerRange is where a payload lies in the server process.
type peerRange struct {
	addr uint64
	pid  int
}

// readPeer copies len(dst) bytes at p into dst.
func readPeer(p *peerRange, dst []byte) error {
	if sysProcessVMReadv == 0 {
		return fmt.Errorf("process_vm_readv: %w", errors.ErrUnsupported)
	}
	for done := 0; done < len(dst); {
		rest := dst[done:]
		local := syscall.Iovec{Base: &rest[0]}
		local.SetLen(len(rest))
		remote := struct {
			base uintptr
			len  uint64
		}{uintptr(p.addr) + uintptr(done), uint64(len(rest))}
		n, _, errno := syscall.Syscall6(sysProcessVMReadv, uintptr(p.pid),
			uintptr(unsafe.Pointer(&local)), 1, uintptr(unsafe.Pointer(&remote)), 1, 0)
		switch {
		case errno != 0:
			return fmt.Errorf("process_vm_readv from pid %d: %w", p.pid, errno)
		case n == 0:
			return fmt.Errorf("process_vm_readv from pid %d: %w", p.pid, io.ErrUnexpectedEOF)
		}
		done += int(n)
	}
	return nil
}

// directMode is a connection's state: probing, trusted, or off.
type directMode int32

const (
	directProbe directMode = iota
	directOn
	directOff
	directProbeOnSharedMemory // as directProbe, the connection known to be on shared memory
)

// directState is a connection's directMode, shared by its readers.
type directState struct{ v atomic.Int32 }

func (d *directState) mode() directMode { return directMode(d.v.Load()) }
func (d *directState) disable()         { d.v.Store(int32(directOff)) }
func (d *directState) enable()          { d.settleProbe(directOn) }

// settleProbe moves a probing state to to; directOff and directOn stay.
func (d *directState) settleProbe(to directMode) {
	for {
		m := d.v.Load()
		if directMode(m) != directProbe && directMode(m) != directProbeOnSharedMemory {
			return
		}
		if d.v.CompareAndSwap(m, int32(to)) {
			return
		}
	}
}

// fetch takes a rendezvous payload lying at p in the server into dst: copied out directly when
// the connection trusts direct reads (direct is true; the caller releases the rendezvous
// unreceived), else through receive (UCX), probing direct reads around it while they are
// unsettled and sharedMemory says the connection is on shared memory. A failed direct read
// turns them off and falls back to receive.
func (d *directState) fetch(p *peerRange, dst []byte, sharedMemory func() bool, receive func() (int, error)) (n int, direct bool, err error) {
	switch d.mode() {
	case directOn:
		if err := readPeer(p, dst); err == nil {
			return len(dst), true, nil
		} else {
			log.Printf("seaweed: direct reads off: %v", err)
			d.disable()
		}
	case directProbeOnSharedMemory:
		n, err := d.probe(p, dst, receive)
		return n, false, err
	case directProbe:
		// The transports are asked once: a probe may take several payloads (zeros).
		if sharedMemory() {
			d.settleProbe(directProbeOnSharedMemory)
			n, err := d.probe(p, dst, receive)
			return n, false, err
		}
		d.disable()
	}
	n, err = receive()
	return n, false, err
}

// probe runs around receive, which takes the payload through UCX into dst: it reads the
// payload directly first (the server keeps it until the rendezvous ends), then trusts direct
// reads if both agree. An all-zero payload proves nothing and leaves the probe to a later one.
func (d *directState) probe(p *peerRange, dst []byte, receive func() (int, error)) (int, error) {
	direct := make([]byte, len(dst))
	readErr := readPeer(p, direct)
	n, err := receive()
	switch {
	case err != nil || isZero(dst[:n]):
	case readErr != nil:
		log.Printf("seaweed: direct reads off: %v", readErr)
		d.disable()
	case bytes.Equal(direct[:n], dst[:n]):
		d.enable()
	default:
		log.Printf("seaweed: direct reads off: pid %d holds other bytes there", p.pid)
		d.disable()
	}
	return n, err
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// onSharedMemory reports whether UCX put the endpoint on a shared-memory transport.
func onSharedMemory(transports []string) bool {
	for _, t := range transports {
		name, _, _ := strings.Cut(t, "/")
		switch name {
		case "posix", "sysv", "cma", "knem", "xpmem":
			return true
		}
	}
	return false
}
