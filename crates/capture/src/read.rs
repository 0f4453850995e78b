//! Reading captures: classic pcap (either byte order, microsecond or
//! nanosecond timestamps) and pcapng (Section Header, Interface Description,
//! Enhanced and Simple Packet Blocks; other blocks are skipped).

use std::time::Duration;

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    /// The first bytes are neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (first bytes {0})")]
    UnknownFormat(String),
    /// The file ends inside a header, record or block.
    #[error("truncated {what} at byte offset {offset}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Its byte offset in the file.
        offset: usize,
    },
    /// A pcapng block is malformed.
    #[error("pcapng block at byte offset {offset}: {why}")]
    BadBlock {
        /// The block's byte offset in the file.
        offset: usize,
        /// What is wrong.
        why: &'static str,
    },
}

/// One interface (link type) of a capture. A classic pcap file has one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The LINKTYPE_* value.
    pub link_type: u32,
    /// Snapshot length (0 = unlimited).
    pub snaplen: u32,
    /// Timestamp units per second (1_000_000 or 1_000_000_000 for pcap).
    pub ticks_per_second: u64,
}

/// One captured packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Index into [`Capture::interfaces`].
    pub interface: u32,
    /// Time since the Unix epoch.
    pub time: Duration,
    /// The captured bytes (link-layer frame).
    pub data: Vec<u8>,
    /// The length of the packet on the wire (more than `data.len()` when
    /// the capture cut it).
    pub orig_len: u32,
    /// Packet comments (pcapng opt_comment) the packet already had.
    pub comments: Vec<String>,
}

/// A whole capture in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// The interfaces, in order of appearance.
    pub interfaces: Vec<Interface>,
    /// The packets, in file order.
    pub records: Vec<Record>,
}

fn take<'a>(b: &'a [u8], at: usize, len: usize, what: &'static str) -> Result<&'a [u8], ReadError> {
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or(ReadError::Truncated { what, offset: at })
}

/// Read a pcap or pcapng capture from its bytes.
pub fn read_capture(b: &[u8]) -> Result<Capture, ReadError> {
    let magic = take(b, 0, 4, "file header")?;
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => read_pcapng(b),
        _ => read_pcap(b),
    }
}

fn read_pcap(b: &[u8]) -> Result<Capture, ReadError> {
    let m = take(b, 0, 4, "file header")?;
    let (be, ticks) = match m {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, 1_000_000),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, 1_000_000),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, 1_000_000_000),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, 1_000_000_000),
        _ => return Err(ReadError::UnknownFormat(hex::encode(m))),
    };
    let u32_at = |s: &[u8]| {
        let a = [s[0], s[1], s[2], s[3]];
        if be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    let h = take(b, 0, 24, "pcap file header")?;
    let iface = Interface {
        snaplen: u32_at(&h[16..20]),
        link_type: u32_at(&h[20..24]) & 0x0fff_ffff,
        ticks_per_second: ticks,
    };
    let mut records = Vec::new();
    let mut at = 24;
    while at < b.len() {
        let r = take(b, at, 16, "pcap record header")?;
        let (secs, frac, incl, orig) = (
            u32_at(&r[0..4]),
            u32_at(&r[4..8]),
            u32_at(&r[8..12]),
            u32_at(&r[12..16]),
        );
        let data = take(b, at + 16, incl as usize, "pcap record")?;
        let nanos = u64::from(frac) * (1_000_000_000 / ticks);
        records.push(Record {
            interface: 0,
            time: Duration::from_secs(u64::from(secs)) + Duration::from_nanos(nanos),
            data: data.to_vec(),
            orig_len: orig,
            comments: Vec::new(),
        });
        at += 16 + incl as usize;
    }
    Ok(Capture {
        interfaces: vec![iface],
        records,
    })
}

fn read_pcapng(b: &[u8]) -> Result<Capture, ReadError> {
    let mut cap = Capture::default();
    // Interfaces are numbered per section; map them to capture-wide ones.
    let mut section_ifaces: Vec<u32> = Vec::new();
    let mut be = false;
    let mut at = 0;
    while at < b.len() {
        let head = take(b, at, 12, "pcapng block header")?;
        let block_type = [head[0], head[1], head[2], head[3]];
        if block_type == [0x0a, 0x0d, 0x0d, 0x0a] {
            be = match &head[8..12] {
                [0x1a, 0x2b, 0x3c, 0x4d] => true,
                [0x4d, 0x3c, 0x2b, 0x1a] => false,
                _ => {
                    return Err(ReadError::BadBlock {
                        offset: at,
                        why: "bad byte-order magic",
                    })
                }
            };
            section_ifaces.clear();
        }
        let u32_at = |s: &[u8]| {
            let a = [s[0], s[1], s[2], s[3]];
            if be {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        let u16_at = |s: &[u8]| {
            if be {
                u16::from_be_bytes([s[0], s[1]])
            } else {
                u16::from_le_bytes([s[0], s[1]])
            }
        };
        let kind = u32_at(&head[0..4]);
        let len = u32_at(&head[4..8]) as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return Err(ReadError::BadBlock {
                offset: at,
                why: "block length not a multiple of 4 or below 12",
            });
        }
        let block = take(b, at, len, "pcapng block")?;
        let body = &block[8..len - 4];
        match kind {
            // Interface Description Block.
            1 => {
                if body.len() < 8 {
                    return Err(ReadError::BadBlock {
                        offset: at,
                        why: "short interface description",
                    });
                }
                let mut ticks = 1_000_000u64;
                for (code, value) in options(&body[8..], u16_at) {
                    if code == 9 && value.len() == 1 {
                        // if_tsresol: 2^-n if the top bit is set, else 10^-n.
                        let v = value[0];
                        ticks = if v & 0x80 != 0 {
                            1u64.checked_shl(u32::from(v & 0x7f)).unwrap_or(1_000_000)
                        } else {
                            10u64.checked_pow(u32::from(v)).unwrap_or(1_000_000)
                        };
                    }
                }
                section_ifaces.push(cap.interfaces.len() as u32);
                cap.interfaces.push(Interface {
                    link_type: u32::from(u16_at(&body[0..2])),
                    snaplen: u32_at(&body[4..8]),
                    ticks_per_second: ticks.max(1),
                });
            }
            // Enhanced Packet Block.
            6 => {
                if body.len() < 20 {
                    return Err(ReadError::BadBlock {
                        offset: at,
                        why: "short enhanced packet block",
                    });
                }
                let iface = u32_at(&body[0..4]) as usize;
                let &global = section_ifaces.get(iface).ok_or(ReadError::BadBlock {
                    offset: at,
                    why: "packet of an undeclared interface",
                })?;
                let ticks = cap.interfaces[global as usize].ticks_per_second;
                let ts = (u64::from(u32_at(&body[4..8])) << 32) | u64::from(u32_at(&body[8..12]));
                let incl = u32_at(&body[12..16]) as usize;
                let orig = u32_at(&body[16..20]);
                let padded = incl.div_ceil(4) * 4;
                if 20 + padded > body.len() {
                    return Err(ReadError::BadBlock {
                        offset: at,
                        why: "packet data longer than its block",
                    });
                }
                let comments = options(&body[20 + padded..], u16_at)
                    .filter(|(c, _)| *c == 1)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .collect();
                records_push(
                    &mut cap,
                    global,
                    ts,
                    ticks,
                    &body[20..20 + incl],
                    orig,
                    comments,
                );
            }
            // Simple Packet Block: interface 0 of the section, no time.
            3 => {
                let &global = section_ifaces.first().ok_or(ReadError::BadBlock {
                    offset: at,
                    why: "packet before any interface",
                })?;
                if body.len() < 4 {
                    return Err(ReadError::BadBlock {
                        offset: at,
                        why: "short simple packet block",
                    });
                }
                let orig = u32_at(&body[0..4]);
                let incl = (orig as usize).min(body.len() - 4);
                records_push(&mut cap, global, 0, 1, &body[4..4 + incl], orig, Vec::new());
            }
            _ => {}
        }
        at += len;
    }
    Ok(cap)
}

fn records_push(
    cap: &mut Capture,
    interface: u32,
    ts: u64,
    ticks: u64,
    data: &[u8],
    orig_len: u32,
    comments: Vec<String>,
) {
    let secs = ts / ticks;
    let frac = ts % ticks;
    let nanos = (u128::from(frac) * 1_000_000_000 / u128::from(ticks)) as u64;
    cap.records.push(Record {
        interface,
        time: Duration::from_secs(secs) + Duration::from_nanos(nanos),
        data: data.to_vec(),
        orig_len,
        comments,
    });
}

/// The options (code, value) of a pcapng block, up to opt_endofopt or a
/// malformed option.
fn options<'a>(
    mut b: &'a [u8],
    u16_at: impl Fn(&[u8]) -> u16 + 'a,
) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let code = u16_at(&b[0..2]);
        let len = u16_at(&b[2..4]) as usize;
        if code == 0 || 4 + len > b.len() {
            return None;
        }
        let value = &b[4..4 + len];
        let next = (4 + len.div_ceil(4) * 4).min(b.len());
        b = &b[next..];
        Some((code, value))
    })
}
