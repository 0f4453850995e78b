//! A whole MIKEY message: the common header and the payload chain.

use core::ops::Range;

use crate::codes::PayloadType;
use crate::error::{BuildError, ParseError, ParseErrorKind, PayloadName};
use crate::payload::*;
use crate::reader::Reader;

/// A MIKEY message (RFC 3830 section 6).
///
/// Parsed messages borrow from their input ([`Message::parse`]); built
/// messages own their data ([`Message::new`], [`crate::MessageBuilder`]).
/// A `Message` is always encodable: [`Message::new`] checks every length, so
/// [`Message::to_bytes`] cannot fail, and for every input `b` that
/// [`Message::parse`] accepts, `parse(b)?.to_bytes() == b`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Message<'a> {
    header: CommonHeader,
    payloads: Vec<Payload<'a>>,
}

impl<'a> Message<'a> {
    /// Assemble a message, checking that every field fits its encoding and
    /// that SIGN (which has no next-payload field) is last.
    pub fn new(header: CommonHeader, payloads: Vec<Payload<'a>>) -> Result<Self, BuildError> {
        header.validate()?;
        for (i, p) in payloads.iter().enumerate() {
            p.validate()?;
            if matches!(p, Payload::Sign(_)) && i + 1 != payloads.len() {
                return Err(BuildError::SignNotLast);
            }
        }
        Ok(Message { header, payloads })
    }

    /// Parse a message by walking the next-payload chain with bounds checks.
    ///
    /// Errors name the payload and the byte offset. Parsing never panics and
    /// allocates at most in proportion to the input length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ParseError> {
        let (header, walk) = Self::walk(bytes)?;
        let payloads = walk
            .map(|p| p.map(|(_, p)| p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Message { header, payloads })
    }

    /// Parse the common header and return an iterator that decodes the
    /// payloads one at a time, each with its byte offset, borrowing from
    /// `bytes` and allocating nothing (except for the entries of an SRTP-ID
    /// map or an SP payload's parameter list): the zero-copy reader under
    /// [`Message::parse`]. After the last payload the iterator checks that
    /// no bytes follow; an error ends the walk.
    pub fn walk(bytes: &'a [u8]) -> Result<(CommonHeader, PayloadWalk<'a>), ParseError> {
        let mut r = Reader::new(bytes, 0, PayloadName::CommonHeader);
        let (header, next) = CommonHeader::decode(&mut r)?;
        Ok((
            header,
            PayloadWalk {
                r,
                next,
                done: false,
            },
        ))
    }

    /// The common header.
    pub fn header(&self) -> &CommonHeader {
        &self.header
    }

    /// The payloads in wire order.
    pub fn payloads(&self) -> &[Payload<'a>] {
        &self.payloads
    }

    /// Take the message apart.
    pub fn into_parts(self) -> (CommonHeader, Vec<Payload<'a>>) {
        (self.header, self.payloads)
    }

    /// Detach from the input.
    pub fn into_owned(self) -> Message<'static> {
        Message {
            header: self.header,
            payloads: self.payloads.into_iter().map(Payload::into_owned).collect(),
        }
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.header.encoded_len()
            + self
                .payloads
                .iter()
                .map(Payload::encoded_len)
                .sum::<usize>()
    }

    /// Append the encoding to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let type_at = |i: usize| {
            self.payloads
                .get(i)
                .map_or(PayloadType::LAST.0, |p| p.payload_type().0)
        };
        self.header.emit(type_at(0), out);
        for (i, p) in self.payloads.iter().enumerate() {
            p.emit(type_at(i + 1), out);
        }
    }

    /// The encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.emit(&mut out);
        out
    }

    // -- accessors --------------------------------------------------------

    /// The first T payload.
    pub fn timestamp(&self) -> Option<&Timestamp> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Timestamp(t) => Some(t),
            _ => None,
        })
    }

    /// The value of the first RAND payload.
    pub fn rand(&self) -> Option<&[u8]> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Rand(r) => Some(&*r.value),
            _ => None,
        })
    }

    /// The ID payloads in order (IDi before IDr in an initiator message).
    pub fn ids(&self) -> impl Iterator<Item = &Id<'a>> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Id(i) => Some(i),
            _ => None,
        })
    }

    /// The first KEMAC payload.
    pub fn kemac(&self) -> Option<&Kemac<'a>> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Kemac(k) => Some(k),
            _ => None,
        })
    }

    /// The first V payload.
    pub fn verification(&self) -> Option<&Verification<'a>> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Verification(v) => Some(v),
            _ => None,
        })
    }

    /// The General Extension payloads in order.
    pub fn extensions(&self) -> impl Iterator<Item = &GeneralExtension<'a>> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::GeneralExtension(e) => Some(e),
            _ => None,
        })
    }

    /// The RFC 4563 Key IDs in order.
    pub fn key_ids(&self) -> impl Iterator<Item = &KeyIdInfo<'a>> {
        self.extensions().filter_map(|e| match e {
            GeneralExtension::KeyId(k) => Some(k),
            _ => None,
        })
    }

    /// The SP payloads in order.
    pub fn security_policies(&self) -> impl Iterator<Item = &SecurityPolicy<'a>> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::SecurityPolicy(sp) => Some(sp),
            _ => None,
        })
    }

    /// Byte offset of each payload in the encoding (the header is at 0).
    pub fn payload_offsets(&self) -> Vec<usize> {
        let mut at = self.header.encoded_len();
        self.payloads
            .iter()
            .map(|p| {
                let o = at;
                at += p.encoded_len();
                o
            })
            .collect()
    }

    /// Byte range of the MAC field of the first KEMAC in the encoding.
    pub fn kemac_mac_range(&self) -> Option<Range<usize>> {
        let mut at = self.header.encoded_len();
        for p in &self.payloads {
            if let Payload::Kemac(k) = p {
                let start = at + 4 + k.encr_data.len() + 1;
                return Some(start..start + k.mac.len());
            }
            at += p.encoded_len();
        }
        None
    }

    /// Byte range of the Encr data field of the first KEMAC in the encoding.
    pub fn kemac_data_range(&self) -> Option<Range<usize>> {
        let mut at = self.header.encoded_len();
        for p in &self.payloads {
            if let Payload::Kemac(k) = p {
                return Some(at + 4..at + 4 + k.encr_data.len());
            }
            at += p.encoded_len();
        }
        None
    }

    /// Byte range of the MAC field of the first V payload in the encoding.
    pub fn verification_mac_range(&self) -> Option<Range<usize>> {
        let mut at = self.header.encoded_len();
        for p in &self.payloads {
            if let Payload::Verification(v) = p {
                return Some(at + 2..at + 2 + v.mac.len());
            }
            at += p.encoded_len();
        }
        None
    }
}

/// The payloads of a message, decoded one at a time ([`Message::walk`]).
#[derive(Clone, Debug)]
pub struct PayloadWalk<'a> {
    r: Reader<'a>,
    next: u8,
    done: bool,
}

impl<'a> Iterator for PayloadWalk<'a> {
    /// A payload and the byte offset where it starts.
    type Item = Result<(usize, Payload<'a>), ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.next == PayloadType::LAST.0 {
            self.done = true;
            if !self.r.is_empty() {
                return Some(Err(self
                    .r
                    .error(ParseErrorKind::TrailingData(self.r.remaining()))));
            }
            return None;
        }
        let at = self.r.offset();
        match Payload::decode(self.next, &mut self.r) {
            Ok((p, n)) => {
                self.next = n;
                Some(Ok((at, p)))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::*;
    use crate::error::ParseErrorKind as K;
    use std::borrow::Cow;

    fn sample() -> Message<'static> {
        let mut h = CommonHeader::new(DataType::PSK_INIT, 0x0102_0304);
        h.v = true;
        h.cs_id_map = CsIdMap::SrtpId(vec![SrtpIdEntry {
            policy_no: 0,
            ssrc: 0xdead_beef,
            roc: 7,
        }]);
        Message::new(
            h,
            vec![
                Payload::Timestamp(Timestamp::Counter(9)),
                Payload::Rand(Rand {
                    value: Cow::Owned(vec![1; 16]),
                }),
                Payload::GeneralExtension(GeneralExtension::key_id(KeyIdType::MTK, [0, 5])),
                Payload::GeneralExtension(GeneralExtension::Unknown {
                    ext_type: ExtType(200),
                    data: Cow::Owned(vec![9, 8, 7]),
                }),
                Payload::Error(ErrorPayload {
                    code: ErrorCode::INVALID_TS,
                    reserved: 0xabcd,
                }),
                Payload::Sign(Sign {
                    s_type: 1,
                    signature: Cow::Owned(vec![0x55; 5]),
                }),
            ],
        )
        .unwrap()
    }

    #[test]
    fn header_layout_is_rfc3830() {
        let b = sample().to_bytes();
        assert_eq!(
            &b[..19],
            &[1, 0, 5, 0x80, 1, 2, 3, 4, 1, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 7]
        );
        // T payload: next RAND (11), COUNTER (2), value.
        assert_eq!(&b[19..25], &[11, 2, 0, 0, 0, 9]);
    }

    #[test]
    fn round_trip_keeps_unknown_extensions_and_reserved_bits() {
        let m = sample();
        let b = m.to_bytes();
        let p = Message::parse(&b).unwrap();
        assert_eq!(p, m);
        assert_eq!(p.to_bytes(), b);
        assert_eq!(m.encoded_len(), b.len());
    }

    #[test]
    fn sign_must_be_last() {
        let (h, mut ps) = sample().into_parts();
        ps.push(Payload::Timestamp(Timestamp::Counter(1)));
        assert_eq!(Message::new(h, ps).unwrap_err(), BuildError::SignNotLast);
    }

    #[test]
    fn lengths_are_checked_when_building() {
        let h = CommonHeader::new(DataType::PSK_INIT, 0);
        let e = Message::new(
            h,
            vec![Payload::Rand(Rand {
                value: Cow::Owned(vec![0; 256]),
            })],
        )
        .unwrap_err();
        assert!(matches!(e, BuildError::TooLong { max: 255, .. }), "{e}");
    }

    #[test]
    fn errors_name_payload_and_offset() {
        let b = sample().to_bytes();
        // Cut inside the RAND value: RAND starts at 25 (next, len, value).
        let e = Message::parse(&b[..30]).unwrap_err();
        assert_eq!(e.payload, PayloadName::Rand);
        assert_eq!(e.offset, 27);
        assert!(matches!(
            e.kind,
            K::Truncated {
                needed: 16,
                available: 3
            }
        ));
        assert!(e.to_string().contains("RAND at byte offset 27"), "{e}");

        let mut bad = b.clone();
        bad[0] = 2;
        assert_eq!(
            Message::parse(&bad).unwrap_err().kind,
            K::UnsupportedVersion(2)
        );

        let mut bad = b.clone();
        bad[2] = 13; // unassigned payload type
        let e = Message::parse(&bad).unwrap_err();
        assert_eq!((e.kind, e.offset), (K::UnknownPayloadType(13), 19));

        let mut bad = b.clone();
        bad[9] = 7; // unknown CS ID map type
        assert_eq!(
            Message::parse(&bad).unwrap_err().kind,
            K::UnknownCsIdMapType(7)
        );

        let mut bad = b.clone();
        bad.push(0);
        assert_eq!(Message::parse(&bad).unwrap_err().kind, K::TrailingData(1));

        assert_eq!(Message::parse(&[]).unwrap_err().kind, K::Empty);
    }

    #[test]
    fn key_data_payload_type_is_refused_outside_kemac() {
        let mut b = CommonHeader::new(DataType::PSK_INIT, 0);
        b.cs_id_map = CsIdMap::Empty { cs_count: 0 };
        let mut out = Vec::new();
        b.emit(20, &mut out);
        out.extend_from_slice(&[0, 0x20, 0, 0]);
        assert_eq!(
            Message::parse(&out).unwrap_err().kind,
            K::BadKeyDataChain(20)
        );
    }

    #[test]
    fn key_id_extension_length_must_add_up() {
        let mut out = Vec::new();
        CommonHeader::new(DataType::PSK_INIT, 0).emit(21, &mut out);
        // EXT type 2, length 5, Key ID type 1, Key ID length 3 (needs 6).
        out.extend_from_slice(&[0, 2, 0, 5, 1, 0, 3, 0xaa, 0xbb]);
        let e = Message::parse(&out).unwrap_err();
        assert_eq!(
            e.kind,
            K::KeyIdLengthMismatch {
                declared: 6,
                actual: 5
            }
        );
        assert_eq!(e.payload, PayloadName::GeneralExtension);
    }

    #[test]
    fn ranges_point_at_the_mac_fields() {
        let h = CommonHeader::new(DataType::PSK_INIT, 0);
        let m = Message::new(
            h,
            vec![
                Payload::Timestamp(Timestamp::Counter(1)),
                Payload::Kemac(Kemac {
                    encr_alg: EncrAlg::NULL,
                    encr_data: Cow::Owned(vec![1, 2, 3]),
                    mac_alg: MacAlg::HmacSha1_160,
                    mac: Cow::Owned(vec![0xee; 20]),
                }),
            ],
        )
        .unwrap();
        let b = m.to_bytes();
        let r = m.kemac_mac_range().unwrap();
        assert_eq!(r, 24..44);
        assert_eq!(&b[r], &[0xee; 20]);
        assert_eq!(&b[m.kemac_data_range().unwrap()], &[1, 2, 3]);
        assert_eq!(m.payload_offsets(), vec![10, 16]);
    }
}
