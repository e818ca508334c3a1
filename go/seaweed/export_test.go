package seaweed

import "time"

// SetPayloadGrace sets how long a read whose context ended waits for its payload before it
// cuts the connection (10 s), for a test; it returns the function that restores it.
func SetPayloadGrace(d time.Duration) (restore func()) {
	old := payloadGrace
	payloadGrace = d
	return func() { payloadGrace = old }
}

// SetPayloadHook makes f run as each rendezvous payload receive starts (before the receive is
// posted), for a test; it returns the function that removes it.
func SetPayloadHook(f func()) (restore func()) {
	old := payloadHook
	payloadHook = f
	return func() { payloadHook = old }
}
