//! A builder that makes a correct message easy to write: lengths, next-payload
//! fields, `#CS`, the KEMAC encryption and the MACs are all computed.

use std::borrow::Cow;

use crate::codes::{DataType, EncrAlg, IdType, KeyIdType, PrfFunc};
use crate::crypto::{HmacSha1Key, InitiatorFields, Prf, PskKeys};
use crate::error::{BuildError, CryptoError};
use crate::message::Message;
use crate::payload::*;
use crate::writer::{MessageWriter, Written};

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
        let prf = Prf::new(psk);
        let refs: Vec<KeyDataRef<'_>> = key_data.iter().map(KeyData::as_ref).collect();
        self.finish(|w| w.protect_psk(&prf, encr_alg, &refs).map(|(_, w)| w))
    }

    /// As [`MessageBuilder::protect`] with keys already derived.
    pub fn protect_with_keys(
        self,
        keys: &PskKeys,
        encr_alg: EncrAlg,
        key_data: &[KeyData],
    ) -> Result<Protected, CryptoError> {
        let refs: Vec<KeyDataRef<'_>> = key_data.iter().map(KeyData::as_ref).collect();
        self.finish(|w| w.protect(keys, encr_alg, &refs))
    }

    /// Append a V payload (HMAC-SHA-1-160) and compute its MAC over this
    /// message and the IDi, IDr and T of the acknowledged initiator message,
    /// keyed with the `auth_key` that protected it (RFC 3830 5.2).
    pub fn sign_verification(
        self,
        auth_key: &[u8],
        initiator: &InitiatorFields,
    ) -> Result<Protected, CryptoError> {
        let auth = HmacSha1Key::new(auth_key);
        self.finish(|w| w.sign_verification(&auth, initiator.as_ref()))
    }

    /// Write the header and payloads with a [`MessageWriter`], let `last`
    /// append the protected last payload, and read the result back.
    fn finish(
        self,
        last: impl FnOnce(MessageWriter<'_>) -> Result<Written, CryptoError>,
    ) -> Result<Protected, CryptoError> {
        let mut bytes = Vec::new();
        let mut w = MessageWriter::new(&mut bytes, &self.header)?;
        for p in &self.payloads {
            w.payload(p)?;
        }
        last(w)?;
        // parse(emit(x)) == x: the message is the header, the payloads and
        // the computed last payload, read back from the bytes (a failure
        // would be an encoder bug, reported as such).
        let computed = Message::walk(&bytes)
            .ok()
            .and_then(|(_, walk)| walk.last())
            .and_then(Result::ok)
            .map(|(_, p)| p.into_owned())
            .ok_or(CryptoError::EncodingMismatch)?;
        let mut payloads = self.payloads;
        payloads.push(computed);
        let message = Message::new(self.header, payloads)?;
        Ok(Protected { message, bytes })
    }
}
