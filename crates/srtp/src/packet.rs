//! RTP and RTCP header parsing with bounds checks (RFC 3550 5.1, 5.3.1,
//! 6.4.1).

use crate::error::{Error, PacketKind};

/// Fixed RTP header length.
pub(crate) const RTP_FIXED: usize = 12;
/// The part of an RTCP packet that SRTCP leaves in clear: V/P/RC, PT,
/// length, SSRC of the first packet (RFC 3711 3.4).
pub(crate) const RTCP_CLEAR: usize = 8;

/// What the SRTP transform needs of an RTP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RtpHeader {
    /// Header length including CSRCs and the header extension.
    pub(crate) len: usize,
    pub(crate) seq: u16,
    pub(crate) ssrc: u32,
}

fn truncated(kind: PacketKind, len: usize, needed: usize, what: &'static str) -> Error {
    Error::Truncated {
        kind,
        len,
        needed,
        what,
    }
}

/// Parses the RTP header of `p` (which must contain the whole header):
/// version 2, CSRC count, and the header extension (RFC 3550 5.3.1: a
/// 4-byte extension header whose second half is the length in 32-bit words,
/// not counting those 4 bytes).
#[inline]
pub(crate) fn parse_rtp(p: &[u8]) -> Result<RtpHeader, Error> {
    if p.len() < RTP_FIXED {
        return Err(truncated(
            PacketKind::Rtp,
            p.len(),
            RTP_FIXED,
            "RTP fixed header",
        ));
    }
    let version = p[0] >> 6;
    if version != 2 {
        return Err(Error::BadVersion {
            kind: PacketKind::Rtp,
            version,
        });
    }
    let mut len = RTP_FIXED + 4 * (p[0] & 0x0f) as usize;
    if p.len() < len {
        return Err(truncated(PacketKind::Rtp, p.len(), len, "RTP CSRC list"));
    }
    if p[0] & 0x10 != 0 {
        if p.len() < len + 4 {
            return Err(truncated(
                PacketKind::Rtp,
                p.len(),
                len + 4,
                "RTP header extension header",
            ));
        }
        let words = u16::from_be_bytes([p[len + 2], p[len + 3]]) as usize;
        len += 4 + 4 * words;
        if p.len() < len {
            return Err(truncated(
                PacketKind::Rtp,
                p.len(),
                len,
                "RTP header extension",
            ));
        }
    }
    Ok(RtpHeader {
        len,
        seq: u16::from_be_bytes([p[2], p[3]]),
        ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
    })
}

/// Checks the clear part of an RTCP packet and returns the SSRC of its
/// first packet.
#[inline]
pub(crate) fn parse_rtcp(p: &[u8]) -> Result<u32, Error> {
    if p.len() < RTCP_CLEAR {
        return Err(truncated(
            PacketKind::Rtcp,
            p.len(),
            RTCP_CLEAR,
            "RTCP header",
        ));
    }
    let version = p[0] >> 6;
    if version != 2 {
        return Err(Error::BadVersion {
            kind: PacketKind::Rtcp,
            version,
        });
    }
    Ok(u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_header() {
        let p = [
            0x80, 0x0f, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xca, 0xfb, 0xad, 0xab,
        ];
        assert_eq!(
            parse_rtp(&p).unwrap(),
            RtpHeader {
                len: 12,
                seq: 0x1234,
                ssrc: 0xdeca_fbad
            }
        );
    }

    #[test]
    fn csrcs_and_extension() {
        let mut p = vec![0x92, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
        p.extend_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2]); // 2 CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 2]); // extension, 2 words
        p.extend_from_slice(&[0; 8]);
        assert_eq!(parse_rtp(&p).unwrap().len, 12 + 8 + 4 + 8);
        // Every truncation is an error, never a panic.
        for n in 0..p.len() {
            assert!(
                matches!(parse_rtp(&p[..n]), Err(Error::Truncated { .. })),
                "{n}"
            );
        }
    }

    #[test]
    fn bad_versions() {
        let mut p = [0u8; 12];
        for v in [0u8, 1, 3] {
            p[0] = v << 6;
            assert_eq!(
                parse_rtp(&p),
                Err(Error::BadVersion {
                    kind: PacketKind::Rtp,
                    version: v
                })
            );
            assert!(matches!(parse_rtcp(&p), Err(Error::BadVersion { .. })));
        }
        assert!(matches!(
            parse_rtcp(&[0x80; 7]),
            Err(Error::Truncated { .. })
        ));
        assert_eq!(
            parse_rtcp(&[0x80, 200, 0, 1, 1, 2, 3, 4]).unwrap(),
            0x0102_0304
        );
    }
}
