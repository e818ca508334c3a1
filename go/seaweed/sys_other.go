//go:build !amd64 && !arm64

package seaweed

// sysProcessVMReadv is unknown on this architecture: direct reads fail their probe and stay
// off.
const sysProcessVMReadv = 0
