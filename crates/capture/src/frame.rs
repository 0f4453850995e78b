//! UDP datagrams inside captured link-layer frames: find them, and replace
//! a datagram's payload with the IP and UDP lengths and checksums redone.
//!
//! Link types: Ethernet (1, with up to two 802.1Q tags), BSD loopback (0),
//! raw IP (101, 228 IPv4, 229 IPv6) and Linux cooked capture (113). IP:
//! IPv4 without fragmentation, IPv6 with UDP as the first next header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

use crate::checksum;

/// LINKTYPE_ETHERNET.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// A UDP datagram found in a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpInFrame {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Where the IP header starts in the frame.
    ip_start: usize,
    /// Where the UDP header starts in the frame.
    udp_start: usize,
    /// The UDP payload's bytes in the frame.
    pub payload: Range<usize>,
}

/// Where the network layer starts, and its version (4 or 6), for a link
/// type.
fn network_start(link_type: u32, f: &[u8]) -> Option<(usize, u8)> {
    let ethertype = |t: u16| match t {
        0x0800 => Some(4),
        0x86dd => Some(6),
        _ => None,
    };
    match link_type {
        LINKTYPE_ETHERNET => {
            let mut at = 12;
            let mut t = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
            let mut tags = 0;
            while (t == 0x8100 || t == 0x88a8) && tags < 2 {
                at += 4;
                t = u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]);
                tags += 1;
            }
            Some((at + 2, ethertype(t)?))
        }
        // BSD loopback: 4-byte address family in host byte order.
        0 => {
            let fam = f.get(0..4)?;
            let v = u32::from_le_bytes(fam.try_into().ok()?)
                .min(u32::from_be_bytes(fam.try_into().ok()?));
            match v {
                2 => Some((4, 4)),
                24 | 28 | 30 => Some((4, 6)),
                _ => None,
            }
        }
        101 => Some((0, *f.first()? >> 4)).filter(|(_, v)| *v == 4 || *v == 6),
        228 => Some((0, 4)),
        229 => Some((0, 6)),
        113 => Some((
            16,
            ethertype(u16::from_be_bytes([*f.get(14)?, *f.get(15)?]))?,
        )),
        _ => None,
    }
}

/// The UDP datagram of a frame, if it is one (complete, not a fragment).
pub fn udp_in_frame(link_type: u32, f: &[u8]) -> Option<UdpInFrame> {
    let (ip_start, version) = network_start(link_type, f)?;
    let ip = f.get(ip_start..)?;
    let (src, dst, udp_start, ip_end) = match version {
        4 => {
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if ip[9] != 17 || ihl < 20 || total < ihl + 8 || total > ip.len() {
                return None;
            }
            if frag & 0x3fff != 0 {
                return None; // a fragment (MF set or offset non-zero)
            }
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (
                IpAddr::V4(s),
                IpAddr::V4(d),
                ip_start + ihl,
                ip_start + total,
            )
        }
        6 => {
            if ip.len() < 48 || ip[0] >> 4 != 6 || ip[6] != 17 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + plen > ip.len() {
                return None;
            }
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                ip_start + 40,
                ip_start + 40 + plen,
            )
        }
        _ => return None,
    };
    let udp = f.get(udp_start..udp_start + 8)?;
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_start + udp_len > ip_end {
        return None;
    }
    Some(UdpInFrame {
        src: SocketAddr::new(src, u16::from_be_bytes([udp[0], udp[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([udp[2], udp[3]])),
        ip_start,
        udp_start,
        payload: udp_start + 8..udp_start + udp_len,
    })
}

/// The frame with the datagram's payload replaced by `payload`: IP total
/// (IPv4) or payload (IPv6) length, the IPv4 header checksum, the UDP length
/// and checksum are recomputed; link-layer bytes after the IP packet
/// (Ethernet padding) are dropped. `None` if the new datagram does not fit
/// in one IP packet.
pub fn replace_udp_payload(f: &[u8], udp: &UdpInFrame, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = u16::try_from(8 + payload.len()).ok()?;
    let ip_hdr_len = udp.udp_start - udp.ip_start;
    let mut out = Vec::with_capacity(udp.udp_start + 8 + payload.len());
    out.extend_from_slice(&f[..udp.udp_start + 8]);
    out.extend_from_slice(payload);
    let ip = udp.ip_start;
    let pseudo: Vec<u8> = match (udp.src.ip(), udp.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(ip_hdr_len + usize::from(udp_len)).ok()?;
            out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
            out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
            let c = checksum(&[&out[ip..udp.udp_start]]);
            out[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
            let mut p = Vec::with_capacity(12);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, 17]);
            p.extend_from_slice(&udp_len.to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out[ip + 4..ip + 6].copy_from_slice(&udp_len.to_be_bytes());
            let mut p = Vec::with_capacity(40);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 17]);
            p
        }
        _ => return None,
    };
    let u = udp.udp_start;
    out[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
    out[u + 6..u + 8].copy_from_slice(&[0, 0]);
    let mut c = checksum(&[&pseudo, &out[u..]]);
    if c == 0 {
        c = 0xffff;
    }
    out[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
    Some(out)
}
