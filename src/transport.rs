//! Which transports an endpoint uses, read from UCX's own endpoint report.

use std::fmt;

/// One transport/device pair an endpoint has a lane on, e.g. `posix` on `memory`, `tcp` on `lo`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransportUse {
    /// UCX transport name: `posix`, `sysv`, `cma`, `tcp`, `self`, `rc_mlx5`, ...
    pub transport: String,
    /// Device name: `memory`, `lo`, `eth0`, `mlx5_0:1`, ...
    pub device: String,
}

impl TransportUse {
    /// True for the shared-memory transports (posix, sysv, cma, knem, xpmem).
    pub fn is_shared_memory(&self) -> bool {
        matches!(
            self.transport.as_str(),
            "posix" | "sysv" | "cma" | "knem" | "xpmem"
        )
    }
}

impl fmt::Display for TransportUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.transport, self.device)
    }
}

/// Extracts the distinct `transport/device` pairs from the lane lines of `ucp_ep_print_info`,
/// e.g. `#   lane[0]:  8:posix/memory.0 md[4] -> md[4]/posix/sysdev[255] am am_bw#0`.
pub(crate) fn parse_ep_info(text: &str) -> Vec<TransportUse> {
    let mut uses: Vec<TransportUse> = Vec::new();
    for line in text.lines().filter(|l| l.contains("lane[")) {
        let Some(entry) = line.split_whitespace().find(|w| {
            w.split_once(':').is_some_and(|(n, rest)| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && rest.contains('/')
            })
        }) else {
            continue;
        };
        let (_, rest) = entry.split_once(':').unwrap_or_default();
        let (transport, device) = rest.split_once('/').unwrap_or_default();
        let device = match device.rsplit_once('.') {
            Some((name, index))
                if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => device,
        };
        let found = TransportUse {
            transport: transport.to_string(),
            device: device.to_string(),
        };
        if !uses.contains(&found) {
            uses.push(found);
        }
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lane_lines() {
        let text = "#\n# UCP endpoint\n#\n#               peer: <no debug data>\n\
            #   lane[0]:  8:posix/memory.0 md[4]          -> md[4]/posix/sysdev[255] rkey_ptr_dst am am_bw#0\n\
            #   lane[1]:  3:cma/memory.0 md[3]            -> md[3]/cma/sysdev[255] rma_bw#0\n\
            #   lane[2]:  0:tcp/lo.0 md[0]                -> md[0]/tcp/sysdev[255] am am_bw#1 wireup\n\
            #   lane[3]:  0:tcp/lo.0 md[0]                -> md[0]/tcp/sysdev[255] keepalive\n";
        let uses = parse_ep_info(text);
        let names: Vec<String> = uses.iter().map(|u| u.to_string()).collect();
        assert_eq!(names, ["posix/memory", "cma/memory", "tcp/lo"]);
        assert!(uses[0].is_shared_memory() && !uses[2].is_shared_memory());
        assert!(parse_ep_info("garbage\nlane[0]: nothing here\n").is_empty());
    }
}
