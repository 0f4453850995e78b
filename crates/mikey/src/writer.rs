//! A writer that encodes a message straight into the caller's buffer,
//! payload by payload, and protects it in place: no allocation of its own
//! (a reused `Vec` with enough capacity never reallocates). The
//! [`crate::MessageBuilder`] is a wrapper over it, so lengths, next-payload
//! fields, the KEMAC encryption and the MACs have one home.

use core::ops::Range;

use zeroize::Zeroize;

use crate::codes::{EncrAlg, IdType, KeyIdType, PayloadType, PrfFunc, HMAC_SHA1_LEN};
use crate::crypto::{self, HmacSha1Key, InitiatorRef, Prf, PskKeys};
use crate::error::{BuildError, CryptoError};
use crate::payload::*;

/// Where the finished message is in the buffer and what protects it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The message's bytes in the buffer.
    pub range: Range<usize>,
    /// The MAC (KEMAC or V) just written.
    pub mac: [u8; HMAC_SHA1_LEN],
}

/// Encodes one message at the end of `out` ([`MessageWriter::new`]).
///
/// ```
/// use mikey::*;
/// let prf = crypto::Prf::new(&[0x42; 32]); // once per pre-shared key
/// let msk = KeyDataRef { kind: KeyKind::Tgk, key: &[0x11; 16], salt: None,
///     validity: KeyValidity::Interval { from: (&[0u8, 1][..]).into(), to: (&[0u8, 100][..]).into() } };
/// let mut out = Vec::with_capacity(256); // reused for every message
/// let mut w = MessageWriter::new(&mut out, &CommonHeader::new(DataType::PSK_INIT, 0))?;
/// w.timestamp(Timestamp::Counter(1))?.rand(&[7; 16])?.id(IdType::URI, b"bmsc.home1.net")?;
/// let (keys, _) = w.protect_psk(&prf, EncrAlg::AES_CM_128, &[msk])?;
/// let opened = open_psk(&out, &[0x42; 32])?;
/// assert_eq!(opened.key_data[0].key.expose(), &[0x11; 16]);
/// assert_eq!(opened.keys.auth_key, keys.auth_key);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct MessageWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
    /// Index of the next-payload field the next payload's type goes into.
    next_field: Option<usize>,
    prf: PrfFunc,
    csb_id: u32,
    /// The first T payload (the AES-CM IV uses it, RFC 3830 4.2.3).
    timestamp: Option<Timestamp>,
    /// Where the value of the first RAND payload is (the PSK key labels use
    /// it, RFC 3830 4.1.4).
    rand: Option<Range<usize>>,
}

impl<'o> MessageWriter<'o> {
    /// Append the common header to `out` (its existing contents are kept;
    /// the message starts at `out.len()`).
    pub fn new(out: &'o mut Vec<u8>, header: &CommonHeader) -> Result<Self, BuildError> {
        header.validate()?;
        let start = out.len();
        header.emit(PayloadType::LAST.0, out);
        Ok(MessageWriter {
            out,
            start,
            next_field: Some(start + 2),
            prf: header.prf,
            csb_id: header.csb_id,
            timestamp: None,
            rand: None,
        })
    }

    /// Append any payload except a KEMAC or V that [`Self::protect`] and
    /// [`Self::sign_verification`] compute.
    pub fn payload(&mut self, p: &Payload<'_>) -> Result<&mut Self, BuildError> {
        p.validate()?;
        let at = self.link(p.payload_type())?;
        p.emit(PayloadType::LAST.0, self.out);
        match p {
            Payload::Timestamp(t) if self.timestamp.is_none() => self.timestamp = Some(*t),
            Payload::Rand(r) if self.rand.is_none() => {
                self.rand = Some(at + 2..at + 2 + r.value.len())
            }
            _ => {}
        }
        // SIGN has no next-payload field and must be last.
        self.next_field = (!matches!(p, Payload::Sign(_))).then_some(at);
        Ok(self)
    }

    /// Write `ptype` into the previous next-payload field; returns where the
    /// new payload starts.
    fn link(&mut self, ptype: PayloadType) -> Result<usize, BuildError> {
        let field = self.next_field.ok_or(BuildError::SignNotLast)?;
        self.out[field] = ptype.0;
        Ok(self.out.len())
    }

    /// Append a T payload.
    pub fn timestamp(&mut self, ts: Timestamp) -> Result<&mut Self, BuildError> {
        self.payload(&Payload::Timestamp(ts))
    }

    /// Append a RAND payload.
    pub fn rand(&mut self, value: &[u8]) -> Result<&mut Self, BuildError> {
        self.payload(&Payload::Rand(Rand {
            value: value.into(),
        }))
    }

    /// Append an ID payload.
    pub fn id(&mut self, id_type: IdType, data: &[u8]) -> Result<&mut Self, BuildError> {
        self.payload(&Payload::Id(Id {
            id_type,
            data: data.into(),
        }))
    }

    /// Append a General Extension payload with RFC 4563 Key ID information.
    pub fn key_id(
        &mut self,
        key_id_type: KeyIdType,
        key_id: &[u8],
    ) -> Result<&mut Self, BuildError> {
        self.payload(&Payload::GeneralExtension(GeneralExtension::KeyId(
            KeyIdInfo {
                key_id_type,
                key_id: key_id.into(),
            },
        )))
    }

    /// The message written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.out[self.start..]
    }

    /// Finish with a KEMAC whose keys are derived from the pre-shared key
    /// (prepared once, [`Prf::new`]), the CSB ID and the first RAND payload
    /// (RFC 3830 4.1.4); see [`Self::protect`]. Returns the keys (the
    /// `auth_key` keys the verification message) and where the message is.
    pub fn protect_psk(
        self,
        psk: &Prf,
        encr_alg: EncrAlg,
        key_data: &[KeyDataRef<'_>],
    ) -> Result<(PskKeys, Written), CryptoError> {
        if self.prf != PrfFunc::MIKEY_1 {
            return Err(CryptoError::UnsupportedPrf(self.prf.0));
        }
        let rand = self.rand.clone().map_or(&[][..], |r| &self.out[r]);
        let keys = PskKeys::derive_prepared(psk, self.csb_id, rand);
        let written = self.protect(&keys, encr_alg, key_data)?;
        Ok((keys, written))
    }

    /// Finish with a KEMAC (the last payload) carrying `key_data` encrypted
    /// with `encr_alg` under `keys` (AES-CM-128 with the IV of RFC 3830
    /// 4.2.3, or NULL) and the HMAC-SHA-1-160 MAC keyed with `auth_key` over
    /// the whole message up to and including the MAC algorithm byte (RFC
    /// 3830 5.2). On an error `out` is cut back to where the message started.
    pub fn protect(
        mut self,
        keys: &PskKeys,
        encr_alg: EncrAlg,
        key_data: &[KeyDataRef<'_>],
    ) -> Result<Written, CryptoError> {
        let start = self.start;
        let r = self.protect_inner(keys, encr_alg, key_data);
        if r.is_err() {
            // The plaintext may be in the buffer already.
            self.out[start..].zeroize();
            self.out.truncate(start);
        }
        r
    }

    fn protect_inner(
        &mut self,
        keys: &PskKeys,
        encr_alg: EncrAlg,
        key_data: &[KeyDataRef<'_>],
    ) -> Result<Written, CryptoError> {
        let iv_t = match encr_alg {
            EncrAlg::NULL => None,
            EncrAlg::AES_CM_128 => Some(crypto::iv_timestamp(
                &self.timestamp.ok_or(CryptoError::NoTimestamp)?,
            )),
            other => return Err(CryptoError::UnsupportedEncryption(other.0)),
        };
        let at = self.link(PayloadType::KEMAC)?;
        self.out.push(PayloadType::LAST.0);
        self.out.push(encr_alg.0);
        self.out.extend_from_slice(&[0, 0]);
        let data_at = self.out.len();
        KeyDataRef::emit_list(key_data, self.out)?;
        let data_len = self.out.len() - data_at;
        let len = u16::try_from(data_len).map_err(|_| BuildError::TooLong {
            payload: crate::PayloadName::Kemac,
            field: "Encr data",
            len: data_len,
            max: 0xffff,
        })?;
        self.out[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
        if let Some(t) = iv_t {
            crypto::aes_cm_apply(keys, self.csb_id, t, &mut self.out[data_at..]);
        }
        self.out.push(MacAlg::HmacSha1_160.code());
        let mac = HmacSha1Key::new(&keys.auth_key).mac_contiguous(&self.out[self.start..]);
        self.out.extend_from_slice(&mac);
        Ok(Written {
            range: self.start..self.out.len(),
            mac,
        })
    }

    /// Finish with a V payload (HMAC-SHA-1-160, the last payload) whose MAC
    /// covers this message and the IDi, IDr and T of the acknowledged
    /// initiator message, keyed with the `auth_key` that protected it (RFC
    /// 3830 5.2): `auth` is its key schedule ([`HmacSha1Key::new`]).
    pub fn sign_verification(
        mut self,
        auth: &HmacSha1Key,
        initiator: InitiatorRef<'_>,
    ) -> Result<Written, CryptoError> {
        self.link(PayloadType::V)?;
        self.out.push(PayloadType::LAST.0);
        self.out.push(MacAlg::HmacSha1_160.code());
        let mac = auth.mac(&[
            &self.out[self.start..],
            initiator.idi,
            initiator.idr,
            initiator.t,
        ]);
        self.out.extend_from_slice(&mac);
        Ok(Written {
            range: self.start..self.out.len(),
            mac,
        })
    }
}
