//! Measurements read from Linux's /proc: the server's CPU time and memory,
//! the generator's own CPU time, and the kernel's UDP counters, so that a
//! run can say what each message or match cost and whether datagrams were
//! dropped below QUIC. Anything unreadable is `None`, never an error.

use tokio::time::Instant;

/// Samples of the server process and the machine at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// When it was taken (`None` only in a default, untaken sample).
    pub at: Option<Instant>,
    /// The server's utime + stime, in clock ticks.
    pub server_cpu_ticks: Option<u64>,
    /// The generator's utime + stime, in clock ticks.
    pub self_cpu_ticks: Option<u64>,
    /// The server's resident set size, in KiB.
    pub server_rss_kib: Option<u64>,
    /// The kernel's UDP counters.
    pub udp: Option<UdpCounters>,
}

/// The kernel's UDP counters, from /proc/net/snmp.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpCounters {
    /// Datagrams delivered to sockets.
    pub in_datagrams: u64,
    /// Datagrams dropped because a receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped because a send buffer was full.
    pub sndbuf_errors: u64,
    /// Datagrams that could not be delivered, for any reason.
    pub in_errors: u64,
}

/// Samples the server processes `pids` (summed: the nodes of a pool), this
/// process and the machine now. Server figures are `None` when no pid is
/// given or any is unreadable.
pub fn sample(pids: &[u32]) -> Sample {
    let sum = |read: &dyn Fn(u32) -> Option<u64>| -> Option<u64> {
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&pid| read(pid)).sum()
    };
    Sample {
        at: Some(Instant::now()),
        server_cpu_ticks: sum(&|pid| cpu_ticks(&format!("/proc/{pid}/stat"))),
        self_cpu_ticks: cpu_ticks("/proc/self/stat"),
        server_rss_kib: sum(&rss_kib),
        udp: udp_counters(),
    }
}

/// utime + stime of a process, in clock ticks, from its `stat` file at `path`.
fn cpu_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name, from field 3 (state) on.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's UDP error counters (for this network namespace).
fn udp_counters() -> Option<UdpCounters> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp.next()?.split_whitespace().collect();
    let values: Vec<&str> = udp.next()?.split_whitespace().collect();
    let get = |name: &str| -> u64 {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(UdpCounters {
        in_datagrams: get("InDatagrams"),
        rcvbuf_errors: get("RcvbufErrors"),
        sndbuf_errors: get("SndbufErrors"),
        in_errors: get("InErrors"),
    })
}

/// Datagrams the kernel dropped on the UDP sockets bound to any of `ports`
/// (the `drops` column of /proc/net/udp and udp6).
pub fn socket_drops(ports: &[u16]) -> Option<u64> {
    let mut total = None;
    for path in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(table) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields
                .get(1)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|hex| u16::from_str_radix(hex, 16).ok());
            if port.is_some_and(|port| ports.contains(&port))
                && let Some(drops) = fields.last().and_then(|d| d.parse::<u64>().ok())
            {
                *total.get_or_insert(0) += drops;
            }
        }
    }
    total
}

/// Clock ticks per second of /proc's CPU times.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU time between two samples of a tick count, in microseconds.
pub fn cpu_us(from: Option<u64>, to: Option<u64>, ticks: u64) -> Option<u64> {
    Some(to?.saturating_sub(from?) * 1_000_000 / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_is_readable() {
        assert!(cpu_ticks("/proc/self/stat").is_some());
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
