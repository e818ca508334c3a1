//! The embedding back end: a host supplies needle bytes through `NeedleSource`, and clients read
//! them over UCX (tcp and shm) exactly, with the host's error statuses and the read-JWT check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use swucx::Context;
use swucx::seaweed::protocol::{ReadReply, ReadRequest, Status};
use swucx::seaweed::{ClientError, FileId, NeedleClient, NeedleServer, NeedleSource, ReadKey};

/// A host's store: whole files by (volume, needle, cookie).
struct MapSource(HashMap<(u32, u64, u32), Vec<u8>>);

impl NeedleSource for MapSource {
    fn read(&self, request: &ReadRequest) -> (ReadReply, Vec<u8>) {
        let key = (request.volume_id, request.needle_id, request.cookie);
        let Some(data) = self.0.get(&key) else {
            return (
                ReadReply::status(request.request_id, Status::NotFound),
                Vec::new(),
            );
        };
        let start = (request.offset as usize).min(data.len());
        let end = match request.size {
            0 => data.len(),
            size => (start + size as usize).min(data.len()),
        };
        let payload = data[start..end].to_vec();
        let reply = ReadReply {
            data_size: data.len() as u64,
            payload_len: payload.len() as u64,
            ..ReadReply::status(request.request_id, Status::Ok)
        };
        (reply, payload)
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn host_supplied_bytes_over_tcp_and_shm() {
    let files: Vec<(FileId, Vec<u8>)> = [0usize, 1, 4096, 65536, 1 << 20, (4 << 20) + 7]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (
                FileId::new(3, 0x100 + i as u64, 0xabcd_0000 + i as u32),
                bytes(len, i as u8),
            )
        })
        .collect();
    let source = MapSource(
        files
            .iter()
            .map(|(f, d)| ((f.volume_id, f.needle_id, f.cookie), d.clone()))
            .collect(),
    );
    let source: Arc<dyn NeedleSource> = Arc::new(source);
    let key = ReadKey::new("host-key");
    let timeout = Duration::from_secs(30);
    for tls in ["tcp,self", "posix,sysv,cma,self,tcp"] {
        let context = Context::builder()
            .config("TLS", tls)
            .config("NET_DEVICES", "lo")
            .build()
            .unwrap();
        let server =
            NeedleServer::bind_source(&context, source.clone(), "127.0.0.1:0".parse().unwrap())
                .unwrap()
                .with_read_key(key.clone());
        let addr = server.local_addr().unwrap();
        let serving = server.spawn();
        let client = NeedleClient::connect(&context, addr).unwrap();
        let exp = 4_000_000_000;
        for (fid, data) in &files {
            let token = key.mint(&fid.to_string(), exp);
            let got = client.read_with_jwt(fid, 0, 0, &token, timeout).unwrap();
            assert!(got.data == *data, "{tls} {fid}: bytes differ");
            if data.len() > 10 {
                let got = client.read_with_jwt(fid, 3, 7, &token, timeout).unwrap();
                assert_eq!(got.data, data[3..10], "{tls} {fid}: range");
            }
            match client.read(fid, 0, 0, timeout) {
                Err(ClientError::Status(Status::Unauthorized)) => {}
                other => panic!("{tls} {fid}: read without a token gave {other:?}"),
            }
        }
        let missing = FileId::new(3, 0xdead, 1);
        let token = key.mint(&missing.to_string(), exp);
        match client.read_with_jwt(&missing, 0, 0, &token, timeout) {
            Err(ClientError::Status(Status::NotFound)) => {}
            other => panic!("{tls}: missing needle gave {other:?}"),
        }
        drop(client);
        serving.stop().expect("server run");
    }
}
