//! What the harness reads from Linux `/proc` and from a BM-SC's
//! `/metrics`.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`,
/// 100 on every Linux architecture the project targets).
pub const CLK_TCK: f64 = 100.0;

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User + system CPU seconds of a process (`/proc/PID/stat` fields 14 and
/// 15); `None` when it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// User + system CPU seconds of this process (`getrusage(RUSAGE_SELF)`
/// through `/proc/self/stat`, the same counters).
pub fn self_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_cpu(&s))
        .unwrap_or(0.0)
}

/// Voluntary context switches of a process (`self` or a PID): the sum of
/// `voluntary_ctxt_switches` over its threads alive now
/// (`/proc/PID/task/*/status`; `/proc/PID/status` alone counts the main
/// thread). A thread that waits for work (a lock, a wake-up, a disk sync)
/// counts one each time. `None` when the process is gone.
pub fn voluntary_switches(pid: &str) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        total += status_voluntary(&s).unwrap_or(0);
    }
    Some(total)
}

fn status_voluntary(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

fn stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces: count after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

/// The kernel's UDP counters `RcvbufErrors` and `SndbufErrors`
/// (`/proc/net/snmp`, all sockets of the network namespace).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UdpCounters {
    /// Datagrams dropped because a receive buffer was full.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped because a send buffer was full.
    pub sndbuf_errors: u64,
}

impl UdpCounters {
    /// Reads them now (zeros when unreadable).
    pub fn read() -> Self {
        std::fs::read_to_string("/proc/net/snmp")
            .ok()
            .and_then(|s| Self::parse(&s))
            .unwrap_or_default()
    }

    fn parse(snmp: &str) -> Option<Self> {
        let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
        let names: Vec<&str> = udp.next()?.split_whitespace().collect();
        let values: Vec<&str> = udp.next()?.split_whitespace().collect();
        let get = |n: &str| -> u64 {
            names
                .iter()
                .position(|x| *x == n)
                .and_then(|i| values.get(i))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Some(UdpCounters {
            rcvbuf_errors: get("RcvbufErrors"),
            sndbuf_errors: get("SndbufErrors"),
        })
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        UdpCounters {
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
            sndbuf_errors: self.sndbuf_errors.saturating_sub(earlier.sndbuf_errors),
        }
    }
}

/// Bytes queued for reading on the IPv4 UDP sockets bound to one of
/// `ports` (`rx_queue` of `/proc/net/udp`); `None` when unreadable.
pub fn udp_rx_queue(ports: &[u16]) -> Option<u64> {
    Some(parse_rx_queue(
        &std::fs::read_to_string("/proc/net/udp").ok()?,
        ports,
    ))
}

fn parse_rx_queue(table: &str, ports: &[u16]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            let rx = u64::from_str_radix(f.get(4)?.split_once(':')?.1, 16).ok()?;
            ports.contains(&port).then_some(rx)
        })
        .sum()
}

/// A scrape of Prometheus text (`name{labels} value` lines): the value of
/// every series, keyed by `name{labels}` as written.
#[derive(Clone, Debug, Default)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    /// Parses Prometheus text format 0.0.4.
    pub fn parse(text: &str) -> Self {
        let mut m = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((series, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.trim().parse::<f64>() {
                    m.insert(series.trim().to_owned(), v);
                }
            }
        }
        Metrics(m)
    }

    /// `GET url` (a `/metrics` endpoint), parsed: the one scrape of the
    /// harness (the rekey's counters and the timeline's samples).
    pub async fn scrape(http: &reqwest::Client, url: &str) -> Result<Self, reqwest::Error> {
        let text = http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Metrics::parse(&text))
    }

    /// Adds every series of `other` (the counters of several BM-SC
    /// instances as one).
    pub fn add(&mut self, other: &Metrics) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0.0) += v;
        }
    }

    /// The sum of every series of the family `name` (all labels).
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                k.as_str() == name
                    || k.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with('{'))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The series `name` whose labels include `label="value"`.
    pub fn get(&self, name: &str, label: &str, value: &str) -> f64 {
        let want = format!("{label}=\"{value}\"");
        self.0
            .iter()
            .filter(|(k, _)| {
                k.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') && rest.contains(&want))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voluntary_switches_are_read_from_every_thread() {
        assert_eq!(
            status_voluntary(
                "Name:\tx\nvoluntary_ctxt_switches:\t42\nnonvoluntary_ctxt_switches:\t7\n"
            ),
            Some(42)
        );
        assert_eq!(status_voluntary("Name:\tx\n"), None);
        // This process: a thread that sleeps switches at least once.
        let before = voluntary_switches("self").unwrap();
        std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(5)))
            .join()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(voluntary_switches("self").unwrap() > before);
        assert_eq!(voluntary_switches("999999999"), None);
    }

    #[test]
    fn stat_fields() {
        let s = "123 (a b) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0";
        assert_eq!(stat_cpu(s), Some(4.0));
        assert!(cpu_seconds(std::process::id()).is_some());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn snmp_udp_line() {
        let t = "Ip: a b\nIp: 1 2\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\nUdp: 10 0 3 9 3 1\nUdpLite: x\nUdpLite: 0\n";
        assert_eq!(
            UdpCounters::parse(t),
            Some(UdpCounters {
                rcvbuf_errors: 3,
                sndbuf_errors: 1
            })
        );
    }

    #[test]
    fn udp_table_rx_queue() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  \
                 1: 0100007F:1F90 00000000:0000 07 00000000:00000140 00:00000000 00000000  1000        0 1 2 0 0\n  \
                 2: 0100007F:1F91 00000000:0000 07 00000000:00000010 00:00000000 00000000  1000        0 2 2 0 0\n";
        assert_eq!(parse_rx_queue(t, &[0x1f90]), 0x140);
        assert_eq!(parse_rx_queue(t, &[0x1f90, 0x1f91]), 0x150);
        assert_eq!(parse_rx_queue(t, &[1]), 0);
    }

    #[test]
    fn metrics_families() {
        let m = Metrics::parse(
            "# HELP x y\nbmsc_msk_acks_total{kind=\"accepted\"} 5\nbmsc_msk_acks_total{kind=\"stale\"} 2\nbmsc_msk_acks_totalx 9\nbmsc_registered_ues 3\n",
        );
        assert_eq!(m.sum("bmsc_msk_acks_total"), 7.0);
        assert_eq!(m.get("bmsc_msk_acks_total", "kind", "accepted"), 5.0);
        assert_eq!(m.sum("bmsc_registered_ues"), 3.0);
    }
}
