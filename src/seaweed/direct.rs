//! Direct reads: a client on the server's host copies a rendezvous payload straight out of the
//! server's memory with `process_vm_readv(2)`, once, and then releases the reply's rendezvous
//! descriptor (which completes the server's send without moving its bytes through UCX).
//!
//! This is what UCX's `cma` transport does for a rendezvous, but UCX 1.13 (and 1.22) gives an
//! endpoint with peer-failure handling no `cma` lane, so same-host payloads would otherwise go
//! through the shared-memory FIFOs in 8 KiB fragments, copied by both sides. A client asks for
//! direct reads (protocol version 2, [`ReadFlags::DIRECT`](super::protocol::ReadFlags::DIRECT));
//! the server answers with where the payload lies only on connections UCX put on shared memory,
//! and the client trusts direct reads only after one probe: the
//! first such payload is received through UCX and read directly as well, and the two must agree
//! (a server in another pid namespace, or a kernel that refuses `process_vm_readv`, fails the
//! probe and the connection goes on without direct reads). Who may read the server is the
//! kernel's ptrace rule ([`yama_ptrace_scope`]); the server does not widen it unless its host asks
//! ([`allow_any_ptracer`]). See docs/protocol.md.

use std::sync::atomic::{AtomicU8, Ordering};

use super::protocol::DirectPayload;

/// Copies `dst.len()` bytes at `from` in the server's memory into `dst`. Fails with the OS
/// error (`ESRCH`: the server is gone; `EPERM`: no ptrace permission; `EFAULT`: not mapped) or
/// `UnexpectedEof` when fewer bytes could be read.
pub fn read_peer_memory(from: DirectPayload, dst: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < dst.len() {
        let rest = &mut dst[done..];
        let local = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let remote = libc::iovec {
            iov_base: (from.address as usize + done) as *mut libc::c_void,
            iov_len: rest.len(),
        };
        // SAFETY: `local` describes `rest`, writable for its length; the kernel checks the
        // remote range against the server's mappings and fails rather than touch ours.
        let n =
            unsafe { libc::process_vm_readv(from.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        match n {
            n if n < 0 => return Err(std::io::Error::last_os_error()),
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => done += n as usize,
        }
    }
    Ok(())
}

/// The Yama security module's `kernel.yama.ptrace_scope`, which decides who may read this
/// process's memory (and so make direct reads): `None` without Yama (classic ptrace rules: any
/// process of the same user, unless this one is not dumpable), 0 the same, 1 only ancestors
/// (Ubuntu's default) and processes this one names with `PR_SET_PTRACER`, 2 only processes with
/// `CAP_SYS_PTRACE`, 3 none. Clients refused (`EPERM`) receive payloads through UCX instead.
pub fn yama_ptrace_scope() -> Option<u8> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Lets **any** process of the same user ptrace this one (`PR_SET_PTRACER_ANY`) where Yama's
/// `ptrace_scope` is 1, so that clients on this host can make direct reads. That also lets every
/// such process read all of this process's memory (keys, every mapped needle) and write it, which
/// scope 1 exists to prevent: only for a host that accepts it (`swucx serve
/// --direct-reads-ptracer-any`). Without Yama it fails (`EINVAL`) and changes nothing; under
/// scope 0 it is unneeded, and under 2 and 3 it does not help.
pub fn allow_any_ptracer() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only; on failure nothing changes.
    let rc = unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a connection reads payloads directly: not yet known, trusted, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectMode {
    /// Ask; check the first direct payload against the one UCX delivers.
    Probe = 0,
    /// The probe agreed: read direct payloads directly.
    On = 1,
    /// Not on shared memory, the probe failed, a direct read failed, or turned off.
    Off = 2,
    /// As `Probe`, with the connection known to be on shared memory (checked once).
    ProbeOnSharedMemory = 3,
}

/// A connection's [`DirectMode`], shared by the threads reading over it.
#[derive(Debug)]
pub struct DirectState(AtomicU8);

impl DirectState {
    /// Starts probing, or off when `enabled` is false.
    pub fn new(enabled: bool) -> DirectState {
        let mode = if enabled {
            DirectMode::Probe
        } else {
            DirectMode::Off
        };
        DirectState(AtomicU8::new(mode as u8))
    }

    /// The current mode.
    pub fn mode(&self) -> DirectMode {
        match self.0.load(Ordering::Acquire) {
            0 => DirectMode::Probe,
            1 => DirectMode::On,
            3 => DirectMode::ProbeOnSharedMemory,
            _ => DirectMode::Off,
        }
    }

    /// Trusts direct reads, unless they were turned off meanwhile.
    pub fn enable(&self) {
        self.settle_probe(DirectMode::On);
    }

    /// Moves a probing state to `to`; Off and On stay.
    fn settle_probe(&self, to: DirectMode) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| {
                let probing =
                    m == DirectMode::Probe as u8 || m == DirectMode::ProbeOnSharedMemory as u8;
                probing.then_some(to as u8)
            });
    }

    /// Turns direct reads off for good.
    pub fn disable(&self) {
        self.0.store(DirectMode::Off as u8, Ordering::Release);
    }

    /// Takes a `len`-byte rendezvous payload that lies at `from` in the server: copied out
    /// directly when this connection trusts direct reads (returns true with it; the caller then
    /// releases the rendezvous unreceived), else through `receive` (UCX), probing direct reads
    /// around it while they are unsettled and `shared_memory` says the connection is on shared
    /// memory. A failed direct read turns them off and falls back to `receive`.
    pub fn fetch<E>(
        &self,
        from: DirectPayload,
        len: usize,
        shared_memory: impl FnOnce() -> bool,
        receive: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<(Vec<u8>, bool), E> {
        match self.mode() {
            DirectMode::On => {
                let mut data = vec![0u8; len];
                match read_peer_memory(from, &mut data) {
                    Ok(()) => return Ok((data, true)),
                    Err(e) => {
                        log::info!("direct reads off: reading pid {}: {e}", from.pid);
                        self.disable();
                    }
                }
            }
            DirectMode::ProbeOnSharedMemory => {
                return self.probe(from, len, receive).map(|data| (data, false));
            }
            // The transports are asked once: a probe may take several payloads (zeros).
            DirectMode::Probe if shared_memory() => {
                self.settle_probe(DirectMode::ProbeOnSharedMemory);
                return self.probe(from, len, receive).map(|data| (data, false));
            }
            DirectMode::Probe => {
                log::debug!("direct reads off: the connection is not on shared memory");
                self.disable();
            }
            DirectMode::Off => {}
        }
        receive().map(|data| (data, false))
    }

    /// Runs a probe around `receive`, which takes the payload through UCX: reads `len` bytes
    /// at `from` directly first (the server keeps them until the rendezvous is done), then
    /// trusts direct reads if they equal what `receive` delivered. An all-zero payload proves
    /// nothing (another process's zero page would match) and leaves the probe for the next one.
    fn probe<E>(
        &self,
        from: DirectPayload,
        len: usize,
        receive: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        let mut copy = vec![0u8; len];
        let read = read_peer_memory(from, &mut copy);
        let received = receive()?;
        match read {
            _ if received.iter().all(|&b| b == 0) => {}
            Ok(()) if copy == received => {
                log::debug!("direct reads from pid {} work", from.pid);
                self.enable();
            }
            Ok(()) => {
                log::info!("direct reads off: pid {} holds other bytes there", from.pid);
                self.disable();
            }
            Err(e) => {
                log::info!("direct reads off: reading pid {}: {e}", from.pid);
                self.disable();
            }
        }
        Ok(received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(bytes: &[u8]) -> DirectPayload {
        DirectPayload {
            address: bytes.as_ptr() as u64,
            pid: std::process::id(),
        }
    }

    #[test]
    fn reads_own_memory_and_probes() {
        let src: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        read_peer_memory(own(&src), &mut dst).unwrap();
        assert_eq!(dst, src);

        let state = DirectState::new(true);
        let zeros = || Ok::<_, ()>(vec![0u8; 64]);
        assert_eq!(state.probe(own(&src), 64, zeros), Ok(vec![0u8; 64]));
        assert_eq!(state.mode(), DirectMode::Probe, "zeros prove nothing");
        assert_eq!(state.probe(own(&src), 10, || Err(())), Err(()));
        assert_eq!(
            state.mode(),
            DirectMode::Probe,
            "a failed receive proves nothing"
        );
        let got = state.probe(own(&src), 1000, || Ok::<_, ()>(src[..1000].to_vec()));
        assert_eq!(got.unwrap(), &src[..1000]);
        assert_eq!(state.mode(), DirectMode::On);

        // A probe whose direct read is refused (EPERM under Yama; here an unmapped address)
        // delivers what UCX received and turns direct reads off for the connection.
        let refused = DirectState::new(true);
        let unreadable = DirectPayload {
            address: 8,
            pid: std::process::id(),
        };
        let got = refused.fetch(
            unreadable,
            1000,
            || true,
            || Ok::<_, ()>(src[..1000].to_vec()),
        );
        assert_eq!(got, Ok((src[..1000].to_vec(), false)));
        assert_eq!(refused.mode(), DirectMode::Off, "a refused probe: off");

        let other = DirectState::new(true);
        let _ = other.probe(own(&src), 1000, || Ok::<_, ()>(src[1..1001].to_vec()));
        assert_eq!(other.mode(), DirectMode::Off, "different bytes turn it off");
        other.enable();
        assert_eq!(other.mode(), DirectMode::Off, "off stays off");
        assert_eq!(DirectState::new(false).mode(), DirectMode::Off);
    }

    #[test]
    fn fetch_reads_directly_only_when_trusted() {
        let src: Vec<u8> = (0..4096u32).map(|i| (i * 3 + 1) as u8).collect();
        let receive = || Ok::<_, ()>(src.clone());
        let off = DirectState::new(false);
        assert_eq!(
            off.fetch(own(&src), 4096, || true, receive),
            Ok((src.clone(), false))
        );
        let tcp = DirectState::new(true);
        assert_eq!(
            tcp.fetch(own(&src), 4096, || false, receive),
            Ok((src.clone(), false))
        );
        assert_eq!(tcp.mode(), DirectMode::Off, "not on shared memory: off");
        let shm = DirectState::new(true);
        assert_eq!(
            shm.fetch(own(&src), 4096, || true, receive),
            Ok((src.clone(), false))
        );
        assert_eq!(shm.mode(), DirectMode::On, "the probe agreed");
        let never = || -> Result<Vec<u8>, ()> { panic!("received through UCX") };
        assert_eq!(
            shm.fetch(own(&src), 4096, || true, never),
            Ok((src.clone(), true))
        );
        let unmapped = DirectPayload {
            address: 8,
            pid: std::process::id(),
        };
        assert_eq!(shm.fetch(unmapped, 16, || true, || Err(())), Err(()));
        assert_eq!(
            shm.mode(),
            DirectMode::Off,
            "a failed direct read turns them off"
        );
    }

    #[test]
    fn unmapped_memory_and_missing_processes_are_errors() {
        let mut dst = [0u8; 16];
        let unmapped = DirectPayload {
            address: 8,
            pid: std::process::id(),
        };
        assert!(read_peer_memory(unmapped, &mut dst).is_err());
        let gone = DirectPayload {
            address: dst.as_ptr() as u64,
            pid: i32::MAX as u32,
        };
        let err = read_peer_memory(gone, &mut dst).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
