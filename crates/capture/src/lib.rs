//! Captures for independent checking of a run.
//!
//! * [`PcapWriter`] writes UDP datagrams as a classic pcap file (link type
//!   Ethernet) with well-formed Ethernet, IPv4 and UDP headers, checksums
//!   included, so tshark and Wireshark open it without complaint and decode
//!   MIKEY on its real port (2269) by default.
//! * [`KeyLog`] writes the keys of a run one per line, in the format
//!   documented in `docs/keylog.md`, so that `mbms mikey decode` and other
//!   tools can open every MIKEY message of the capture:
//!   `MUK <IDi> <IDr> <hex>`, `MSK <key-domain-hex> <msk-id-hex> <hex>`,
//!   `MTK <key-domain-hex> <msk-id-hex> <mtk-id-hex> <key-hex> <salt-hex>`.
//! * [`read_capture`] reads a pcap or pcapng file back, [`udp_in_frame`]
//!   finds the UDP datagram of a frame and [`replace_udp_payload`] swaps its
//!   payload with lengths and checksums redone; [`PcapngWriter`] writes
//!   pcapng with packet comments (`mbms pcap decrypt`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod frame;
mod pcapng;
mod read;

pub use frame::{replace_udp_payload, udp_in_frame, UdpInFrame, LINKTYPE_ETHERNET};
pub use pcapng::PcapngWriter;
pub use read::{read_capture, Capture, Interface, ReadError, Record};

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// pcap magic (microsecond timestamps), written little-endian.
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
/// Largest datagram payload that fits one IPv4 packet.
pub const MAX_UDP_PAYLOAD: usize = 65_535 - 20 - 8;

/// A capture error.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Writing failed.
    #[error("capture I/O: {0}")]
    Io(#[from] io::Error),
    /// The datagram does not fit in one IPv4 packet.
    #[error("datagram of {0} bytes does not fit in one IPv4 packet")]
    TooLarge(usize),
}

/// Writes UDP datagrams to a pcap stream.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    ip_id: u16,
    packets: u64,
}

/// The Internet checksum (RFC 1071) of the concatenated chunks.
pub(crate) fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut carry: Option<u8> = None;
    for c in chunks {
        for &b in c.iter() {
            match carry.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => carry = Some(b),
            }
        }
    }
    if let Some(hi) = carry {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A locally administered MAC address derived from an IPv4 address.
fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

impl<W: Write> PcapWriter<W> {
    /// Start a capture: writes the pcap global header.
    pub fn new(mut out: W) -> Result<Self, CaptureError> {
        out.write_all(&PCAP_MAGIC.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&65_535u32.to_le_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(PcapWriter {
            out,
            ip_id: 0,
            packets: 0,
        })
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Append one UDP datagram from `src` to `dst`, at `time` since the Unix
    /// epoch.
    pub fn write_udp(
        &mut self,
        time: Duration,
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
    ) -> Result<(), CaptureError> {
        if payload.len() > MAX_UDP_PAYLOAD {
            return Err(CaptureError::TooLarge(payload.len()));
        }
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let (s, d) = (src.ip().octets(), dst.ip().octets());

        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&mac_of(*dst.ip()));
        frame.extend_from_slice(&mac_of(*src.ip()));
        frame.extend_from_slice(&0x0800u16.to_be_bytes());

        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&s);
        ip[16..20].copy_from_slice(&d);
        let c = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        self.ip_id = self.ip_id.wrapping_add(1);
        frame.extend_from_slice(&ip);

        let mut udp = [0u8; 8];
        udp[0..2].copy_from_slice(&src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        let pseudo = {
            let mut p = [0u8; 12];
            p[0..4].copy_from_slice(&s);
            p[4..8].copy_from_slice(&d);
            p[9] = 17;
            p[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
            p
        };
        let mut c = checksum(&[&pseudo, &udp, payload]);
        if c == 0 {
            c = 0xffff;
        }
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        frame.extend_from_slice(&udp);
        frame.extend_from_slice(payload);

        let secs = u32::try_from(time.as_secs()).unwrap_or(u32::MAX);
        self.out.write_all(&secs.to_le_bytes())?;
        self.out.write_all(&time.subsec_micros().to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&frame)?;
        self.packets += 1;
        Ok(())
    }

    /// Flushes what was written to the underlying writer (a writer that
    /// must hold whole packets at any time, `mbms bmsc --pcap`, flushes a
    /// buffered file after each packet).
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.out.flush()?;
        Ok(())
    }

    /// Flush and return the underlying writer.
    pub fn finish(mut self) -> Result<W, CaptureError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Writes the keys of a run (`docs/keylog.md`). Each line is one key; the
/// file holds secrets.
#[derive(Debug)]
pub struct KeyLog<W: Write> {
    out: W,
}

impl<W: Write> KeyLog<W> {
    /// A key log writing to `out`.
    pub fn new(out: W) -> Self {
        KeyLog { out }
    }

    /// `MUK <IDi> <IDr> <hex>`.
    pub fn muk(&mut self, idi: &str, idr: &str, muk: &[u8]) -> io::Result<()> {
        writeln!(self.out, "MUK {idi} {idr} {}", hex::encode(muk))
    }

    /// `MSK <key-domain-hex> <msk-id-hex> <hex>`.
    pub fn msk(&mut self, key_domain: &[u8; 3], msk_id: &[u8; 4], msk: &[u8]) -> io::Result<()> {
        writeln!(
            self.out,
            "MSK {} {} {}",
            hex::encode(key_domain),
            hex::encode(msk_id),
            hex::encode(msk)
        )
    }

    /// `MTK <key-domain-hex> <msk-id-hex> <mtk-id-hex> <key-hex> <salt-hex>`.
    pub fn mtk(
        &mut self,
        key_domain: &[u8; 3],
        msk_id: &[u8; 4],
        mtk_id: u16,
        key: &[u8],
        salt: &[u8],
    ) -> io::Result<()> {
        writeln!(
            self.out,
            "MTK {} {} {} {} {}",
            hex::encode(key_domain),
            hex::encode(msk_id),
            hex::encode(mtk_id.to_be_bytes()),
            hex::encode(key),
            hex::encode(salt)
        )
    }

    /// Flush and return the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One line of a key log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyLogEntry {
    /// A MUK with its MUK ID.
    Muk {
        /// IDi (BM-SC FQDN).
        idi: String,
        /// IDr (B-TID).
        idr: String,
        /// The key.
        key: Vec<u8>,
    },
    /// An MSK.
    Msk {
        /// Key Domain ID.
        key_domain: [u8; 3],
        /// MSK ID.
        msk_id: [u8; 4],
        /// The key.
        key: Vec<u8>,
    },
    /// An MTK and its salt.
    Mtk {
        /// Key Domain ID.
        key_domain: [u8; 3],
        /// MSK ID.
        msk_id: [u8; 4],
        /// MTK ID.
        mtk_id: u16,
        /// The key.
        key: Vec<u8>,
        /// The salt.
        salt: Vec<u8>,
    },
}

/// Parse one key log line; blank lines and `#` comments give `None`.
pub fn parse_keylog_line(line: &str) -> Result<Option<KeyLogEntry>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let f: Vec<&str> = line.split_whitespace().collect();
    let hx = |s: &str| hex::decode(s).map_err(|e| format!("{s:?}: {e}"));
    fn arr<const N: usize>(v: Vec<u8>) -> Result<[u8; N], String> {
        <[u8; N]>::try_from(v.as_slice()).map_err(|_| format!("expected {N} bytes"))
    }
    match f.as_slice() {
        ["MUK", idi, idr, key] => Ok(Some(KeyLogEntry::Muk {
            idi: (*idi).into(),
            idr: (*idr).into(),
            key: hx(key)?,
        })),
        ["MSK", kd, id, key] => Ok(Some(KeyLogEntry::Msk {
            key_domain: arr(hx(kd)?)?,
            msk_id: arr(hx(id)?)?,
            key: hx(key)?,
        })),
        ["MTK", kd, id, mtk, key, salt] => Ok(Some(KeyLogEntry::Mtk {
            key_domain: arr(hx(kd)?)?,
            msk_id: arr(hx(id)?)?,
            mtk_id: u16::from_be_bytes(arr(hx(mtk)?)?),
            key: hx(key)?,
            salt: hx(salt)?,
        })),
        _ => Err(format!("not a key log line: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_checksum_matches_a_known_packet() {
        // RFC 1071 example data: sum of 0x0001 f203 f4f5 f6f7 = 0xddf2 -> !0x220d
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
        // Split across chunks at an odd boundary gives the same result.
        assert_eq!(
            checksum(&[&[0x00, 0x01, 0xf2], &[0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            !0xddf2
        );
    }

    #[test]
    fn frame_layout() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let src = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 2269);
        let dst = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 40000);
        w.write_udp(Duration::from_millis(1500), src, dst, b"abc")
            .unwrap();
        let b = w.finish().unwrap();
        assert_eq!(b.len(), 24 + 16 + 14 + 20 + 8 + 3);
        let frame = &b[40..];
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        let ip = &frame[14..34];
        assert_eq!(checksum(&[ip]), 0, "IPv4 header checksum verifies");
        assert_eq!(&frame[34..36], &2269u16.to_be_bytes());
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 500_000);
    }

    #[test]
    fn keylog_round_trip() {
        let mut k = KeyLog::new(Vec::new());
        k.muk("bmsc.home1.net", "b==@bsf.home1.net", &[1; 32])
            .unwrap();
        k.msk(&[0, 0xf1, 0x10], &[0, 1, 0, 2], &[2; 16]).unwrap();
        k.mtk(&[0, 0xf1, 0x10], &[0, 1, 0, 2], 7, &[3; 16], &[4; 14])
            .unwrap();
        let text = String::from_utf8(k.finish().unwrap()).unwrap();
        let entries: Vec<_> = text
            .lines()
            .map(|l| parse_keylog_line(l).unwrap().unwrap())
            .collect();
        assert_eq!(entries.len(), 3);
        assert!(matches!(&entries[2], KeyLogEntry::Mtk { mtk_id: 7, .. }));
        assert!(text
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("MTK 00f110 00010002 0007 "));
        assert_eq!(parse_keylog_line("# comment").unwrap(), None);
        assert!(parse_keylog_line("MSK 00 11 22").is_err());
    }

    #[test]
    fn pcap_reads_back_and_a_payload_is_replaced_with_valid_checksums() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let src = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 2269);
        let dst = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 7), 5006);
        w.write_udp(
            Duration::from_micros(1_700_000_000_250_001),
            src,
            dst,
            b"hello world",
        )
        .unwrap();
        let cap = read_capture(&w.finish().unwrap()).unwrap();
        assert_eq!(cap.interfaces.len(), 1);
        assert_eq!(cap.interfaces[0].link_type, 1);
        let [r] = cap.records.as_slice() else {
            panic!("one record")
        };
        assert_eq!(r.time, Duration::from_micros(1_700_000_000_250_001));
        let udp = udp_in_frame(1, &r.data).unwrap();
        assert_eq!(udp.src, std::net::SocketAddr::V4(src));
        assert_eq!(udp.dst, std::net::SocketAddr::V4(dst));
        assert_eq!(&r.data[udp.payload.clone()], b"hello world");

        let f = replace_udp_payload(&r.data, &udp, b"hi").unwrap();
        let udp2 = udp_in_frame(1, &f).unwrap();
        assert_eq!(&f[udp2.payload.clone()], b"hi");
        // The frame equals what the writer makes of the shorter datagram,
        // except the IP identification (the writer counts).
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.ip_id = 0;
        w.write_udp(Duration::ZERO, src, dst, b"hi").unwrap();
        let want = w.finish().unwrap()[40..].to_vec();
        assert_eq!(f, want);
        assert_eq!(checksum(&[&f[14..34]]), 0);
    }

    #[test]
    fn pcapng_round_trip_keeps_times_and_comments() {
        let mut w = PcapngWriter::new(Vec::new(), "test").unwrap();
        let i = w.add_interface(1, 65_535).unwrap();
        let t = Duration::new(1_700_000_000, 123_456_789);
        w.write_packet(i, t, b"abcde", 5, &["ünïcode comment".into()])
            .unwrap();
        w.write_packet(i, t, b"xyz", 9, &[]).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let cap = read_capture(&bytes).unwrap();
        assert_eq!(cap.interfaces[0].ticks_per_second, 1_000_000_000);
        assert_eq!(cap.records.len(), 2);
        assert_eq!(cap.records[0].time, t);
        assert_eq!(cap.records[0].data, b"abcde");
        assert_eq!(cap.records[0].comments, ["ünïcode comment"]);
        assert_eq!(cap.records[1].orig_len, 9);
        assert!(cap.records[1].comments.is_empty());
    }

    #[test]
    fn damaged_captures_are_errors_not_panics() {
        assert!(matches!(
            read_capture(b"nope"),
            Err(ReadError::UnknownFormat(_))
        ));
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        let a = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        w.write_udp(Duration::ZERO, a, a, b"x").unwrap();
        let b = w.finish().unwrap();
        for cut in 0..b.len() {
            let _ = read_capture(&b[..cut]);
        }
        assert!(matches!(
            read_capture(&b[..b.len() - 1]),
            Err(ReadError::Truncated { .. })
        ));
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        w.add_interface(1, 0).unwrap();
        w.write_packet(0, Duration::ZERO, b"abc", 3, &["c".into()])
            .unwrap();
        let b = w.finish().unwrap();
        for cut in 0..b.len() {
            let _ = read_capture(&b[..cut]);
        }
        // Frames that are not UDP over IP give None, never a panic.
        for cut in 0..60 {
            let _ = udp_in_frame(1, &vec![0x45; cut]);
            let _ = udp_in_frame(0, &vec![2; cut]);
            let _ = udp_in_frame(113, &vec![0x86; cut]);
        }
    }
}
