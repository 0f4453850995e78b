//! A builder that makes a correct message easy to write: lengths, next-payload
//! fields, `#CS`, the KEMAC encryption and the MACs are all computed.

use std::borrow::Cow;

use zeroize::Zeroize;

use crate::codes::{DataType, EncrAlg, IdType, KeyIdType, PrfFunc};
use crate::crypto::{self, InitiatorFields, PskKeys};
use crate::error::{BuildError, CryptoError};
use crate::message::Message;
use crate::payload::*;

/// Builds a [`Message`].
///
/// ```
/// use mikey::{MessageBuilder, DataType, EncrAlg, IdType, KeyIdType, KeyData, KeyKind,
///             KeyValidity, Timestamp, SecretBytes};
/// let msk = KeyData {
///     kind: KeyKind::Tgk,
///     key: SecretBytes::new(vec![0x11; 16]),
///     salt: None,
///     validity: KeyValidity::Interval { from: vec![0, 1].into(), to: vec![0, 100].into() },
/// };
/// let muk = [0x42u8; 32];
/// let protected = MessageBuilder::new(DataType::PSK_INIT)
///     .verification_requested(true)
///     .timestamp(Timestamp::Counter(1))
///     .rand([7u8; 16])
///     .id(IdType::URI, "bmsc.home1.net")
///     .id(IdType::NAI, "btid@bsf.home1.net")
///     .key_id(KeyIdType::MSK, [0x00, 0xf1, 0x10, 0, 1, 0, 1])
///     .protect(&muk, EncrAlg::AES_CM_128, &[msk])
///     .unwrap();
/// let opened = mikey::open_psk(protected.bytes(), &muk).unwrap();
/// assert_eq!(opened.key_data[0].key.expose(), &[0x11; 16]);
/// ```
#[derive(Clone, Debug)]
pub struct MessageBuilder {
    header: CommonHeader,
    payloads: Vec<Payload<'static>>,
}

/// A message protected by the builder, with its encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protected {
    message: Message<'static>,
    bytes: Vec<u8>,
}

impl Protected {
    /// The message.
    pub fn message(&self) -> &Message<'static> {
        &self.message
    }

    /// Its encoding, ready to send.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoding, consuming `self`.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl MessageBuilder {
    /// Start a message of `data_type` with CSB ID 0, V = 0, the MIKEY-1 PRF
    /// and the empty CS ID map with `#CS` = 0.
    pub fn new(data_type: DataType) -> Self {
        MessageBuilder {
            header: CommonHeader::new(data_type, 0),
            payloads: Vec::new(),
        }
    }

    /// Set the CSB ID.
    pub fn csb_id(mut self, csb_id: u32) -> Self {
        self.header.csb_id = csb_id;
        self
    }

    /// Set the V flag (a verification message is requested).
    pub fn verification_requested(mut self, v: bool) -> Self {
        self.header.v = v;
        self
    }

    /// Set the PRF function.
    pub fn prf(mut self, prf: PrfFunc) -> Self {
        self.header.prf = prf;
        self
    }

    /// Set the CS ID map (`#CS` follows from it).
    pub fn cs_id_map(mut self, map: CsIdMap) -> Self {
        self.header.cs_id_map = map;
        self
    }

    /// Append any payload.
    pub fn payload(mut self, p: Payload<'static>) -> Self {
        self.payloads.push(p);
        self
    }

    /// Append a T payload.
    pub fn timestamp(self, ts: Timestamp) -> Self {
        self.payload(Payload::Timestamp(ts))
    }

    /// Append a RAND payload.
    pub fn rand(self, value: impl Into<Vec<u8>>) -> Self {
        self.payload(Payload::Rand(Rand {
            value: Cow::Owned(value.into()),
        }))
    }

    /// Append an ID payload.
    pub fn id(self, id_type: IdType, data: impl Into<Vec<u8>>) -> Self {
        self.payload(Payload::Id(Id::new(id_type, data)))
    }

    /// Append a General Extension payload with RFC 4563 Key ID information.
    pub fn key_id(self, key_id_type: KeyIdType, key_id: impl Into<Vec<u8>>) -> Self {
        self.payload(Payload::GeneralExtension(GeneralExtension::key_id(
            key_id_type,
            key_id,
        )))
    }

    /// Append a General Extension payload.
    pub fn extension(self, ext: GeneralExtension<'static>) -> Self {
        self.payload(Payload::GeneralExtension(ext))
    }

    /// Append an SP payload.
    pub fn security_policy(self, sp: SecurityPolicy<'static>) -> Self {
        self.payload(Payload::SecurityPolicy(sp))
    }

    /// Finish without protection.
    pub fn build(self) -> Result<Message<'static>, BuildError> {
        Message::new(self.header, self.payloads)
    }

    /// Append a KEMAC carrying `key_data` (encrypted with `encr_alg`, MAC
    /// HMAC-SHA-1-160), with keys derived from the pre-shared key `psk`, the
    /// CSB ID and the RAND payload (RFC 3830 4.1.4, 4.2.3, 5.2).
    pub fn protect(
        self,
        psk: &[u8],
        encr_alg: EncrAlg,
        key_data: &[KeyData],
    ) -> Result<Protected, CryptoError> {
        if self.header.prf != PrfFunc::MIKEY_1 {
            return Err(CryptoError::UnsupportedPrf(self.header.prf.0));
        }
        let rand = self
            .payloads
            .iter()
            .find_map(|p| match p {
                Payload::Rand(r) => Some(r.value.to_vec()),
                _ => None,
            })
            .unwrap_or_default();
        let keys = PskKeys::derive(psk, self.header.csb_id, &rand);
        self.protect_with_keys(&keys, encr_alg, key_data)
    }

    /// As [`MessageBuilder::protect`] with keys already derived.
    pub fn protect_with_keys(
        mut self,
        keys: &PskKeys,
        encr_alg: EncrAlg,
        key_data: &[KeyData],
    ) -> Result<Protected, CryptoError> {
        let mut data = Vec::new();
        KeyData::emit_list(key_data, &mut data)?;
        match encr_alg {
            EncrAlg::NULL => {}
            EncrAlg::AES_CM_128 => {
                let t = self
                    .payloads
                    .iter()
                    .find_map(|p| match p {
                        Payload::Timestamp(t) => Some(*t),
                        _ => None,
                    })
                    .ok_or(CryptoError::NoTimestamp)?;
                crypto::aes_cm_apply(
                    keys,
                    self.header.csb_id,
                    crypto::iv_timestamp(&t),
                    &mut data,
                );
            }
            other => {
                data.zeroize();
                return Err(CryptoError::UnsupportedEncryption(other.0));
            }
        }
        self.payloads.push(Payload::Kemac(Kemac {
            encr_alg,
            encr_data: Cow::Owned(data),
            mac_alg: MacAlg::HmacSha1_160,
            mac: Cow::Owned(vec![0; MacAlg::HmacSha1_160.mac_len()]),
        }));
        let message = Message::new(self.header, self.payloads)?;
        finish_mac(message, &keys.auth_key, &[])
    }

    /// Append a V payload (HMAC-SHA-1-160) and compute its MAC over this
    /// message and the IDi, IDr and T of the acknowledged initiator message,
    /// keyed with the `auth_key` that protected it (RFC 3830 5.2).
    pub fn sign_verification(
        mut self,
        auth_key: &[u8],
        initiator: &InitiatorFields,
    ) -> Result<Protected, CryptoError> {
        self.payloads.push(Payload::Verification(Verification {
            auth_alg: MacAlg::HmacSha1_160,
            mac: Cow::Owned(vec![0; MacAlg::HmacSha1_160.mac_len()]),
        }));
        let message = Message::new(self.header, self.payloads)?;
        finish_mac(
            message,
            auth_key,
            &[&initiator.idi, &initiator.idr, &initiator.t],
        )
    }
}

fn finish_mac(
    mut message: Message<'static>,
    auth_key: &[u8],
    extra: &[&[u8]],
) -> Result<Protected, CryptoError> {
    let mut bytes = message.to_bytes();
    // The MAC belongs to the payload just appended: the last one.
    let last_at = message
        .payload_offsets()
        .last()
        .copied()
        .ok_or(CryptoError::NoKemac)?;
    let range = match message.payloads().last() {
        Some(Payload::Kemac(k)) => {
            let start = last_at + 4 + k.encr_data.len() + 1;
            start..start + k.mac.len()
        }
        Some(Payload::Verification(v)) => last_at + 2..last_at + 2 + v.mac.len(),
        _ => return Err(CryptoError::NoKemac),
    };
    let mac = crypto::write_mac(&mut bytes, range, auth_key, extra);
    match message.payloads_mut().last_mut() {
        Some(Payload::Kemac(k)) => k.mac = Cow::Owned(mac.to_vec()),
        Some(Payload::Verification(v)) => v.mac = Cow::Owned(mac.to_vec()),
        _ => return Err(CryptoError::NoKemac),
    }
    Ok(Protected { message, bytes })
}
