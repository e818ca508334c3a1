package seaweed

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
)

// The needle-read wire protocol, versions 1 to 3 (docs/protocol.md; the reference
// implementation is src/seaweed/protocol.rs). Integers are little-endian at fixed offsets.
// Version 2 is version 1 plus direct reads (direct.go).
const (
	// AMRead is the active-message id of a READ request.
	AMRead = 0x30
	// AMReadReply is the active-message id of a READ reply.
	AMReadReply = 0x31

	minVersion  = 1
	maxVersion  = 3 // 2: direct reads; 3: the status NO_VOLUME
	kindRequest = 1
	kindReply   = 2
	fixedLen    = 48
	maxJWTLen   = 4096
	maxNameLen  = 1024
	maxMimeLen  = 1024
	directLen   = 16 // the direct-read trailer of a version-2 reply
)

// Request flags.
const (
	wantName    = 1 << 0
	wantMime    = 1 << 1
	wantStored  = 1 << 2
	crcAtClient = 1 << 3 // the client checks the CRC of a whole large needle itself
	wantDirect  = 1 << 4 // version 2: say where a rendezvous payload lies in the server
)

// Reply flags.
const (
	replyCompressed      = 1 << 0
	replyHasLastModified = 1 << 1
	replyHasName         = 1 << 2
	replyHasMime         = 1 << 3
	replyCRCUnchecked    = 1 << 4 // the server left the CRC check to the client
	replyDirect          = 1 << 5 // version 2: a direct-read trailer follows
	replyFlagsV1         = 0x1f
	replyFlagsV2         = 0x3f
)

// Status is a READ reply's status.
type Status uint8

// The statuses of docs/protocol.md.
const (
	StatusOK             Status = 0
	StatusNotFound       Status = 1
	StatusCookieMismatch Status = 2
	StatusDeleted        Status = 3
	StatusExpired        Status = 4
	StatusUnauthorized   Status = 5
	StatusBadRange       Status = 6
	StatusTooLarge       Status = 7
	StatusBusy           Status = 8
	StatusStale          Status = 9
	StatusInternal       Status = 10
	StatusUnknownVersion Status = 11
	StatusBadRequest     Status = 12
	StatusNoVolume       Status = 13 // protocol version 3 on
)

var statusNames = [...]string{
	"OK", "NOT_FOUND", "COOKIE_MISMATCH", "DELETED", "EXPIRED", "UNAUTHORIZED", "BAD_RANGE",
	"TOO_LARGE", "BUSY", "STALE", "INTERNAL", "UNKNOWN_VERSION", "BAD_REQUEST", "NO_VOLUME",
}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// IsNotFound is true for the statuses weed answers 404 for.
func (s Status) IsNotFound() bool {
	return s == StatusNotFound || s == StatusCookieMismatch || s == StatusDeleted || s == StatusExpired
}

// IsRetryable is true for BUSY and STALE: the same read may succeed if sent again.
func (s Status) IsRetryable() bool { return s == StatusBusy || s == StatusStale }

// readRequest is a READ request (kind 1).
type readRequest struct {
	version uint8 // 1 to 3; 2 or more with wantDirect
	id      uint64
	fid     FileID
	offset  uint64
	size    uint64 // 0: to the end of the data
	flags   uint16
	jwt     string
}

// checkJWT checks that the protocol can carry a read JWT (ErrInvalidJWT otherwise).
func checkJWT(jwt string) error {
	if len(jwt) > maxJWTLen {
		return fmt.Errorf("%w: %d bytes, over the protocol's %d", ErrInvalidJWT, len(jwt), maxJWTLen)
	}
	for i := 0; i < len(jwt); i++ {
		if c := jwt[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: byte %#02x at %d is outside printable ASCII", ErrInvalidJWT, c, i)
		}
	}
	return nil
}

// encode lays the request out; it fails only for a JWT the server would refuse to decode
// (checkJWT).
func (r *readRequest) encode() ([]byte, error) {
	if err := checkJWT(r.jwt); err != nil {
		return nil, err
	}
	b := make([]byte, fixedLen+len(r.jwt))
	b[0], b[1], b[2], b[3] = 'S', 'W', r.version, kindRequest
	le := binary.LittleEndian
	le.PutUint16(b[4:], r.flags)
	le.PutUint16(b[6:], uint16(len(r.jwt)))
	le.PutUint64(b[8:], r.id)
	le.PutUint32(b[16:], r.fid.VolumeID)
	le.PutUint32(b[20:], r.fid.Cookie)
	le.PutUint64(b[24:], r.fid.NeedleID)
	le.PutUint64(b[32:], r.offset)
	le.PutUint64(b[40:], r.size)
	copy(b[fixedLen:], r.jwt)
	return b, nil
}

// ReplyInfo is what a READ reply says about the needle besides its bytes.
type ReplyInfo struct {
	// DataSize is the length of the whole data (decompressed), not just the range read.
	DataSize uint64
	// CRC is the CRC-32C stored in the needle (over the whole stored data).
	CRC uint32
	// LastModified is unix seconds, 0 when the needle stores none.
	LastModified uint64
	// Name and Mime are the needle's, when it stores them.
	Name, Mime string
}

// checkCRC checks data against a needle's stored CRC-32C, in either form weed writes (the
// plain CRC or its legacy transform).
func checkCRC(data []byte, stored uint32) error {
	c := crc32.Checksum(data, castagnoli)
	if stored == c || stored == bits.RotateLeft32(c, -15)+0xa282ead8 {
		return nil
	}
	return fmt.Errorf("%w: stored %08x, data has %08x", ErrCorrupt, stored, c)
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readReply is a decoded READ reply header (kind 2).
type readReply struct {
	version    uint8
	id         uint64
	status     Status
	flags      uint8
	payloadLen uint64
	info       ReplyInfo
	direct     *peerRange // version 2: where the payload lies in the server
}

// errMalformed marks a reply that does not decode.
var errMalformed = errors.New("malformed READ reply")

// replyID reads the request id of a message that may be a reply (false if too short).
func replyID(b []byte) (uint64, bool) {
	if len(b) < 16 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[8:]), true
}

// decodeReply decodes a READ reply header strictly, as the reference decoder does: exact
// length, defined status and flags, zero reserved bytes, and no payload, flags or CRC unless OK.
func decodeReply(b []byte) (*readReply, error) {
	bad := func(why string) (*readReply, error) { return nil, fmt.Errorf("%w: %s", errMalformed, why) }
	if len(b) < fixedLen {
		return bad("shorter than 48 bytes")
	}
	if b[0] != 'S' || b[1] != 'W' {
		return bad("bad magic")
	}
	if b[2] < minVersion || b[2] > maxVersion || b[3] != kindReply {
		return bad(fmt.Sprintf("version %d kind %d, want version 1 to %d, kind 2", b[2], b[3], maxVersion))
	}
	le := binary.LittleEndian
	defined := uint8(replyFlagsV1)
	if b[2] >= 2 {
		defined = replyFlagsV2
	}
	r := &readReply{
		version:    b[2],
		id:         le.Uint64(b[8:]),
		status:     Status(b[4]),
		flags:      b[5],
		payloadLen: le.Uint64(b[24:]),
	}
	nameLen, mimeLen := int(le.Uint16(b[6:])), int(le.Uint16(b[44:]))
	trailer := 0
	if r.flags&replyDirect != 0 {
		trailer = directLen
	}
	r.info.DataSize = le.Uint64(b[16:])
	r.info.LastModified = le.Uint64(b[32:])
	r.info.CRC = le.Uint32(b[40:])
	switch {
	case int(r.status) >= len(statusNames), r.status == StatusNoVolume && r.version < 3:
		return bad(fmt.Sprintf("undefined status %d in version %d", r.status, r.version))
	case r.flags&^defined != 0:
		return bad("undefined flag bits")
	case le.Uint16(b[46:]) != 0:
		return bad("reserved bytes are not zero")
	case nameLen > maxNameLen || mimeLen > maxMimeLen:
		return bad("name or mime too long")
	case len(b) != fixedLen+nameLen+mimeLen+trailer:
		return bad("length disagrees with its fields")
	case nameLen > 0 && r.flags&replyHasName == 0, mimeLen > 0 && r.flags&replyHasMime == 0:
		return bad("name/mime lengths disagree with the flags")
	case r.flags&replyHasLastModified == 0 && r.info.LastModified != 0:
		return bad("last-modified without its flag")
	}
	if r.status != StatusOK && (r.flags != 0 || r.payloadLen != 0 || r.info.CRC != 0) {
		return bad("an error reply with payload, flags or CRC")
	}
	if r.status == StatusOK && r.payloadLen > r.info.DataSize {
		return bad("payload longer than the data")
	}
	if r.flags&replyCRCUnchecked != 0 && r.payloadLen != r.info.DataSize {
		return bad("CRC left to the client for less than the whole data")
	}
	end := fixedLen + nameLen + mimeLen
	if trailer > 0 {
		t := b[end:]
		if r.payloadLen == 0 {
			return bad("a direct-read trailer without a payload")
		}
		if le.Uint32(t[12:]) != 0 {
			return bad("reserved bytes are not zero")
		}
		r.direct = &peerRange{addr: le.Uint64(t), pid: int(le.Uint32(t[8:]))}
	}
	r.info.Name = string(b[fixedLen : fixedLen+nameLen])
	r.info.Mime = string(b[fixedLen+nameLen : end])
	return r, nil
}
