//! Both needle-read protocol decoders on arbitrary bytes: no panic, and whatever decodes
//! re-encodes to exactly the input (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use swucx::seaweed::protocol::{ReadReply, ReadRequest, peek_request_id};

fuzz_target!(|data: &[u8]| {
    let request = ReadRequest::decode(data);
    if let Ok(r) = &request {
        assert_eq!(r.encode().expect("a decoded request encodes"), data);
        assert_eq!(peek_request_id(data), Some(r.request_id));
    }
    let reply = ReadReply::decode(data);
    if let Ok(r) = &reply {
        assert_eq!(r.encode().expect("a decoded reply encodes"), data);
    }
    assert!(request.is_err() || reply.is_err());
    // Never panics, whatever the bytes.
    let _ = peek_request_id(data);
});
