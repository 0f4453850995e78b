//! Builders and readers for every MBMS MIKEY message of `PROFILE.md`
//! section 6: MSK delivery (and its variants solicited pull, inactive MSK and
//! activation), the MSK acknowledgement, and MTK delivery for download and
//! streaming.
//!
//! Readers parse by next-payload chaining (never by position), skip General
//! Extensions of unknown types, and reject anything else the profile does not
//! allow with a [`ProfileError`] that says what was wrong. Reading is split in
//! two steps, as the MGV-F needs: `parse` reads the identifiers and the
//! counter without any key; `open` verifies the MAC with the key and only then
//! decrypts.

use mikey::crypto::{self, InitiatorFields, PskKeys};
use mikey::{
    CsIdMap, DataType, EncrAlg, GeneralExtension, KeyData, KeyKind, KeyValidity, MacAlg, Message,
    MessageBuilder, Payload, PrfFunc, SecretBytes, SrtpIdEntry, SrtpPolicy, Timestamp,
};

use crate::ids::{KeyDomainId, MskId, MskName, MtkId, MukId};
use crate::keys::{Msk, Mtk, MtkKey, MtkSalt, Muk};
use crate::profile::*;

/// A message breaks the MBMS profile, or does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// Not a well-formed MIKEY message.
    #[error("malformed MIKEY message: {0}")]
    Malformed(#[from] mikey::ParseError),
    /// Well-formed MIKEY that breaks the profile.
    #[error("{message}: {why}")]
    Violation {
        /// Which message kind was expected.
        message: &'static str,
        /// What was wrong.
        why: String,
    },
    /// The MAC does not verify with the key given.
    #[error("MAC mismatch")]
    MacMismatch,
    /// Another cryptographic failure (e.g. decrypted key data malformed).
    #[error("{0}")]
    Crypto(mikey::CryptoError),
    /// The SRTP policy of an MTK message cannot drive an SRTP context
    /// (`PROFILE.md` section 8; [`crate::traffic::srtp_config`]).
    #[error(transparent)]
    Policy(#[from] crate::traffic::PolicyRefused),
}

impl From<mikey::CryptoError> for ProfileError {
    fn from(e: mikey::CryptoError) -> Self {
        match e {
            mikey::CryptoError::MacMismatch => ProfileError::MacMismatch,
            other => ProfileError::Crypto(other),
        }
    }
}

fn violation(message: &'static str, why: impl Into<String>) -> ProfileError {
    ProfileError::Violation {
        message,
        why: why.into(),
    }
}

/// The kind of an MBMS MIKEY message, decided from its header and EXT
/// payloads (seed 004 6.5.3/6.5.4: "it first determines the type of message
/// by reading the EXT").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// MSK delivery, solicited pull, inactive MSK or activation (MUK-protected).
    Msk,
    /// MTK delivery (MSK-protected).
    Mtk,
    /// MSK acknowledgement (verification message).
    Ack,
}

/// Classify a message without checking it further.
pub fn classify(bytes: &[u8]) -> Result<MessageKind, ProfileError> {
    let m = Message::parse(bytes)?;
    if m.header().data_type == DataType::PSK_RESP {
        return Ok(MessageKind::Ack);
    }
    if m.key_ids().any(|k| k.key_id_type == KEY_ID_TYPE_MTK) {
        Ok(MessageKind::Mtk)
    } else {
        Ok(MessageKind::Msk)
    }
}

// ---------------------------------------------------------------------------
// Common checks

fn check_header(
    m: &Message<'_>,
    what: &'static str,
    data_type: DataType,
) -> Result<(), ProfileError> {
    let h = m.header();
    if h.data_type != data_type {
        return Err(violation(
            what,
            format!("data type {} (expected {})", h.data_type.0, data_type.0),
        ));
    }
    if h.prf != PrfFunc::MIKEY_1 {
        return Err(violation(
            what,
            format!("PRF func {} (expected MIKEY-1)", h.prf.0),
        ));
    }
    Ok(())
}

fn check_empty_map(m: &Message<'_>, what: &'static str) -> Result<(), ProfileError> {
    match m.header().cs_id_map {
        CsIdMap::Empty { cs_count: 0 } => Ok(()),
        ref other => Err(violation(
            what,
            format!("CS ID map {other:?} (expected the empty map with #CS 0)"),
        )),
    }
}

/// The counter of the single T payload (COUNTER).
fn counter_of(m: &Message<'_>, what: &'static str) -> Result<u32, ProfileError> {
    let mut ts = m.payloads().iter().filter_map(|p| match p {
        Payload::Timestamp(t) => Some(t),
        _ => None,
    });
    match (ts.next(), ts.next()) {
        (Some(Timestamp::Counter(c)), None) => Ok(*c),
        (Some(t), None) => Err(violation(
            what,
            format!("timestamp type {} (expected COUNTER)", t.type_name()),
        )),
        (None, _) => Err(violation(what, "no T payload")),
        _ => Err(violation(what, "more than one T payload")),
    }
}

fn rand_of(m: &Message<'_>, what: &'static str) -> Result<[u8; RAND_LEN], ProfileError> {
    let r = m.rand().ok_or_else(|| violation(what, "no RAND payload"))?;
    r.try_into().map_err(|_| {
        violation(
            what,
            format!("RAND of {} bytes (expected {RAND_LEN})", r.len()),
        )
    })
}

/// The MSK Key ID and, if present, the MTK Key ID of the EXT payloads;
/// General Extensions of other types are skipped.
fn key_ids_of(
    m: &Message<'_>,
    what: &'static str,
) -> Result<(MskName, Option<MtkId>), ProfileError> {
    let mut msk = None;
    let mut mtk = None;
    for e in m.extensions() {
        if let GeneralExtension::KeyId(k) = e {
            if k.key_id_type == KEY_ID_TYPE_MSK {
                if msk.is_some() {
                    return Err(violation(what, "two MSK Key IDs"));
                }
                msk = Some(
                    MskName::from_key_id(&k.key_id).map_err(|e| violation(what, e.to_string()))?,
                );
            } else if k.key_id_type == KEY_ID_TYPE_MTK {
                if mtk.is_some() {
                    return Err(violation(what, "two MTK Key IDs"));
                }
                mtk =
                    Some(MtkId::from_slice(&k.key_id).map_err(|e| violation(what, e.to_string()))?);
            } else {
                return Err(violation(what, format!("Key ID type {}", k.key_id_type.0)));
            }
        }
    }
    Ok((msk.ok_or_else(|| violation(what, "no MSK Key ID"))?, mtk))
}

/// Refuse payloads the message kind does not use (EXT payloads are always
/// allowed: unknown extension types are skipped).
fn check_allowed(
    m: &Message<'_>,
    what: &'static str,
    allowed: &[mikey::PayloadType],
) -> Result<(), ProfileError> {
    for p in m.payloads() {
        let t = p.payload_type();
        if t != mikey::PayloadType::GENERAL_EXT && !allowed.contains(&t) {
            return Err(violation(
                what,
                format!("unexpected {} payload", t.name().unwrap_or("?")),
            ));
        }
    }
    Ok(())
}

fn check_kemac_last(m: &Message<'_>, what: &'static str) -> Result<(), ProfileError> {
    match m.payloads().last() {
        Some(Payload::Kemac(k)) => {
            if k.mac_alg != MacAlg::HmacSha1_160 {
                return Err(violation(what, "KEMAC MAC algorithm is not HMAC-SHA-1-160"));
            }
            let ok =
                k.encr_alg == KEMAC_ENCR || (k.encr_alg == EncrAlg::NULL && k.encr_data.is_empty());
            if !ok {
                return Err(violation(
                    what,
                    format!(
                        "KEMAC encryption {} (expected AES-CM-128; NULL only without key data)",
                        k.encr_alg.0
                    ),
                ));
            }
            Ok(())
        }
        _ => Err(violation(what, "the KEMAC payload is not the last payload")),
    }
}

fn u16_field(b: &[u8]) -> Option<u16> {
    match b {
        [x, y] => Some(u16::from_be_bytes([*x, *y])),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// MSK delivery

const MSK_MSG: &str = "MSK message";

/// The key and key validity carried by an MSK message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MskKeyData {
    /// The MSK.
    pub msk: Msk,
    /// Key validity VF: the lower limit SEQs of the MTK ID window.
    pub seq_s: MtkId,
    /// Key validity VT: the upper limit SEQu.
    pub seq_u: MtkId,
}

impl MskKeyData {
    /// True when SEQs > SEQu by RFC 1982: the MSK is inactive (seed 004
    /// 6.3.2.3.3). Equal or undefined comparisons count as not inactive.
    pub fn is_inactive(&self) -> bool {
        self.seq_s.0.gt(self.seq_u.0)
    }
}

/// An MSK message to build: MSK delivery, solicited pull (no key, Key Number
/// 0), inactive MSK or activation (`PROFILE.md` section 6).
#[derive(Clone, Debug)]
pub struct MskMessage {
    /// The MUK ID (IDi = BM-SC FQDN, IDr = B-TID).
    pub muk_id: MukId,
    /// The replay counter of this MUK (T payload, COUNTER).
    pub counter: u32,
    /// 16 fresh random bytes.
    pub rand: [u8; RAND_LEN],
    /// The MSK's name (Key Number 0 for a solicited pull).
    pub msk: MskName,
    /// The V bit: an acknowledgement is requested.
    pub v: bool,
    /// The key; `None` for a solicited pull (KEMAC with Encr data len 0).
    pub key: Option<MskKeyData>,
}

/// A built MSK message with what is needed to verify its acknowledgement.
#[derive(Debug)]
pub struct BuiltMsk {
    /// The encoded message.
    pub bytes: Vec<u8>,
    /// The keys that protect it (its `auth_key` keys the acknowledgement).
    pub keys: PskKeys,
    /// IDi, IDr and T of the message, covered by the acknowledgement MAC.
    pub initiator: InitiatorFields,
}

impl MskMessage {
    /// A solicited pull for a key group (seed 002/003 6.3.2.2.4): Key Number 0,
    /// no key, V never set.
    pub fn solicited_pull(
        muk_id: MukId,
        counter: u32,
        rand: [u8; RAND_LEN],
        key_domain: KeyDomainId,
        key_group: u16,
    ) -> Self {
        MskMessage {
            muk_id,
            counter,
            rand,
            msk: MskName {
                key_domain,
                msk_id: MskId::current(key_group),
            },
            v: false,
            key: None,
        }
    }

    /// Build and protect with the MUK.
    pub fn build(&self, muk: &Muk) -> Result<BuiltMsk, ProfileError> {
        if self.key.is_none() != self.msk.msk_id.is_current_request() {
            return Err(violation(
                MSK_MSG,
                "a key goes with Key Number 1..65535; Key Number 0 (solicited pull) carries none",
            ));
        }
        if self.key.is_none() && self.v {
            return Err(violation(MSK_MSG, "a solicited pull never sets the V bit"));
        }
        let key_data: Vec<KeyData> = self
            .key
            .iter()
            .map(|k| KeyData {
                kind: KeyKind::Tgk,
                key: SecretBytes::from_slice(k.msk.as_bytes()),
                salt: None,
                validity: KeyValidity::Interval {
                    from: k.seq_s.to_bytes().to_vec().into(),
                    to: k.seq_u.to_bytes().to_vec().into(),
                },
            })
            .collect();
        let keys = PskKeys::derive(muk.as_bytes(), MSK_CSB_ID, &self.rand);
        let p = MessageBuilder::new(DataType::PSK_INIT)
            .verification_requested(self.v)
            .csb_id(MSK_CSB_ID)
            .timestamp(Timestamp::Counter(self.counter))
            .rand(self.rand)
            .id(IDI_TYPE, self.muk_id.idi.as_bytes())
            .id(IDR_TYPE, self.muk_id.idr.as_bytes())
            .key_id(KEY_ID_TYPE_MSK, self.msk.key_id())
            .protect_with_keys(&keys, KEMAC_ENCR, &key_data)?;
        let initiator = InitiatorFields::of(p.message());
        Ok(BuiltMsk {
            bytes: p.into_bytes(),
            keys,
            initiator,
        })
    }
}

/// An MSK message read without its key: what the MGV-F needs to find the MUK
/// and check the counter before any cryptography.
#[derive(Debug)]
pub struct MskEnvelope<'a> {
    bytes: &'a [u8],
    message: Message<'a>,
    /// The MUK ID from IDi and IDr.
    pub muk_id: MukId,
    /// The counter (T).
    pub counter: u32,
    /// The MSK named in the EXT.
    pub msk: MskName,
    /// The V bit.
    pub v: bool,
}

/// An opened MSK message.
#[derive(Debug)]
pub struct OpenedMsk {
    /// The key; `None` for a solicited pull.
    pub key: Option<MskKeyData>,
    /// The message keys (for the acknowledgement).
    pub keys: PskKeys,
    /// IDi, IDr and T, for the acknowledgement MAC.
    pub initiator: InitiatorFields,
}

impl<'a> MskEnvelope<'a> {
    /// Parse and check the profile, without a key.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProfileError> {
        let message = Message::parse(bytes)?;
        check_header(&message, MSK_MSG, DataType::PSK_INIT)?;
        if message.header().csb_id != MSK_CSB_ID {
            return Err(violation(
                MSK_MSG,
                format!("CSB ID {:#x} (expected 0)", message.header().csb_id),
            ));
        }
        check_empty_map(&message, MSK_MSG)?;
        use mikey::PayloadType as T;
        check_allowed(&message, MSK_MSG, &[T::T, T::RAND, T::ID, T::KEMAC])?;
        let counter = counter_of(&message, MSK_MSG)?;
        rand_of(&message, MSK_MSG)?;
        let ids: Vec<_> = message.ids().collect();
        let (idi, idr) = match ids.as_slice() {
            [i, r] if i.id_type == IDI_TYPE && r.id_type == IDR_TYPE => (i, r),
            _ => return Err(violation(MSK_MSG, "expected IDi (URI) then IDr (NAI)")),
        };
        let text = |b: &[u8], what: &str| {
            String::from_utf8(b.to_vec())
                .map_err(|_| violation(MSK_MSG, format!("{what} is not UTF-8")))
        };
        let muk_id = MukId::new(text(&idi.data, "IDi")?, text(&idr.data, "IDr")?);
        let (msk, mtk) = key_ids_of(&message, MSK_MSG)?;
        if mtk.is_some() {
            return Err(violation(MSK_MSG, "an MTK Key ID in an MSK message"));
        }
        check_kemac_last(&message, MSK_MSG)?;
        let v = message.header().v;
        if msk.msk_id.is_current_request() && v {
            return Err(violation(
                MSK_MSG,
                "a solicited pull (Key Number 0) with the V bit set",
            ));
        }
        Ok(MskEnvelope {
            bytes,
            message,
            muk_id,
            counter,
            msk,
            v,
        })
    }

    /// True for a solicited pull (Key Number 0).
    pub fn is_solicited_pull(&self) -> bool {
        self.msk.msk_id.is_current_request()
    }

    /// Verify the MAC with the MUK, then decrypt and check the key data.
    pub fn open(&self, muk: &Muk) -> Result<OpenedMsk, ProfileError> {
        let keys = crypto::open_check(self.bytes, &self.message, muk.as_bytes())?;
        let kd = crypto::decrypt_kemac(&self.message, &keys)?;
        let key = match (kd.as_slice(), self.is_solicited_pull()) {
            ([], true) => None,
            ([k], false) => Some(Self::msk_key_data(k)?),
            (_, true) => return Err(violation(MSK_MSG, "a solicited pull carries key data")),
            (_, false) => {
                return Err(violation(
                    MSK_MSG,
                    format!("{} key data sub-payloads (expected 1)", kd.len()),
                ))
            }
        };
        Ok(OpenedMsk {
            key,
            keys,
            initiator: InitiatorFields::of(&self.message),
        })
    }

    fn msk_key_data(k: &KeyData) -> Result<MskKeyData, ProfileError> {
        if k.kind != KeyKind::Tgk || k.salt.is_some() {
            return Err(violation(
                MSK_MSG,
                format!("key data type {} (expected TGK)", k.type_name()),
            ));
        }
        let (seq_s, seq_u) = match &k.validity {
            KeyValidity::Interval { from, to } => match (u16_field(from), u16_field(to)) {
                (Some(f), Some(t)) => (MtkId::new(f), MtkId::new(t)),
                _ => return Err(violation(MSK_MSG, "VF and VT must be 2 bytes each")),
            },
            other => {
                return Err(violation(
                    MSK_MSG,
                    format!("key validity {} (expected Interval)", other.type_name()),
                ))
            }
        };
        let msk = Msk::from_slice(k.key.expose()).map_err(|e| violation(MSK_MSG, e.to_string()))?;
        Ok(MskKeyData { msk, seq_s, seq_u })
    }
}

// ---------------------------------------------------------------------------
// MSK acknowledgement

const ACK_MSG: &str = "MSK acknowledgement";

/// An MSK acknowledgement (`PROFILE.md` section 6): HDR(data type 1, V 0, CSB
/// ID copied, #CS 0, empty map) · T(counter copied) · IDr(B-TID) · EXT(Key ID
/// MSK) · V(HMAC-SHA-1-160).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MskAck {
    /// CSB ID of the acknowledged message.
    pub csb_id: u32,
    /// Counter of the acknowledged message.
    pub counter: u32,
    /// The UE's B-TID.
    pub btid: String,
    /// The acknowledged MSK.
    pub msk: MskName,
}

impl MskAck {
    /// The acknowledgement of an opened MSK message.
    pub fn for_message(env: &MskEnvelope<'_>) -> Self {
        MskAck {
            csb_id: env.message.header().csb_id,
            counter: env.counter,
            btid: env.muk_id.idr.clone(),
            msk: env.msk,
        }
    }

    /// Build it, MACed with the acknowledged message's `auth_key` over the
    /// acknowledgement and that message's IDi, IDr and T (RFC 3830 5.2).
    pub fn build(
        &self,
        auth_key: &[u8],
        initiator: &InitiatorFields,
    ) -> Result<Vec<u8>, ProfileError> {
        Ok(MessageBuilder::new(DataType::PSK_RESP)
            .csb_id(self.csb_id)
            .timestamp(Timestamp::Counter(self.counter))
            .id(IDR_TYPE, self.btid.as_bytes())
            .key_id(KEY_ID_TYPE_MSK, self.msk.key_id())
            .sign_verification(auth_key, initiator)?
            .into_bytes())
    }

    /// Read an acknowledgement (without verifying its MAC).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProfileError> {
        let m = Message::parse(bytes)?;
        check_header(&m, ACK_MSG, DataType::PSK_RESP)?;
        check_empty_map(&m, ACK_MSG)?;
        use mikey::PayloadType as T;
        check_allowed(&m, ACK_MSG, &[T::T, T::ID, T::V])?;
        let counter = counter_of(&m, ACK_MSG)?;
        let ids: Vec<_> = m.ids().collect();
        let btid = match ids.as_slice() {
            [r] => String::from_utf8(r.data.to_vec())
                .map_err(|_| violation(ACK_MSG, "IDr is not UTF-8"))?,
            _ => return Err(violation(ACK_MSG, "expected exactly one ID payload (IDr)")),
        };
        let (msk, mtk) = key_ids_of(&m, ACK_MSG)?;
        if mtk.is_some() {
            return Err(violation(ACK_MSG, "an MTK Key ID in an acknowledgement"));
        }
        match m.payloads().last() {
            Some(Payload::Verification(v)) if v.auth_alg == MacAlg::HmacSha1_160 => {}
            _ => {
                return Err(violation(
                    ACK_MSG,
                    "the last payload is not V with HMAC-SHA-1-160",
                ))
            }
        }
        Ok(MskAck {
            csb_id: m.header().csb_id,
            counter,
            btid,
            msk,
        })
    }

    /// Verify the MAC of an acknowledgement against the message it acknowledges.
    pub fn verify(
        bytes: &[u8],
        auth_key: &[u8],
        initiator: &InitiatorFields,
    ) -> Result<Self, ProfileError> {
        let ack = Self::parse(bytes)?;
        let m = Message::parse(bytes)?;
        crypto::verify_verification_mac(bytes, &m, auth_key, initiator)?;
        Ok(ack)
    }
}

// ---------------------------------------------------------------------------
// MTK delivery

const MTK_MSG: &str = "MTK message";

/// The SRTP parameters of a streaming MTK message: the SRTP-ID map (one entry
/// per stream: policy number, SSRC, ROC) and the SP payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streaming {
    /// The crypto sessions (SRTP streams).
    pub streams: Vec<SrtpIdEntry>,
    /// The SRTP policy (SP payload, policy number 0).
    pub policy: SrtpPolicy,
}

/// The SP policy number used by streaming MTK messages.
pub const STREAMING_POLICY_NO: u8 = 0;

/// An MTK message (`PROFILE.md` section 6).
#[derive(Clone, Debug)]
pub struct MtkMessage {
    /// The replay counter of the protecting MSK (T payload, COUNTER).
    pub counter: u32,
    /// 16 fresh random bytes.
    pub rand: [u8; RAND_LEN],
    /// The protecting MSK.
    pub msk: MskName,
    /// The MTK ID (SEQp).
    pub mtk_id: MtkId,
    /// The MTK and its salt.
    pub mtk: Mtk,
    /// Streaming parameters; `None` for download.
    pub streaming: Option<Streaming>,
}

/// The CSB ID of MTK messages (`PROFILE.md` section 6: CSB ID 0).
pub const MTK_CSB_ID: u32 = 0;

/// The SPI of an MTK key data sub-payload and the SRTP MKI: MSK ID || MTK ID
/// (`PROFILE.md` sections 6 and 8).
pub fn mki(msk_id: MskId, mtk_id: MtkId) -> [u8; MKI_LEN] {
    let mut m = [0u8; MKI_LEN];
    m[..4].copy_from_slice(&msk_id.to_bytes());
    m[4..].copy_from_slice(&mtk_id.to_bytes());
    m
}

impl MtkMessage {
    /// Build and protect with the MSK.
    pub fn build(&self, msk: &Msk) -> Result<Vec<u8>, ProfileError> {
        let key = KeyData {
            kind: KeyKind::Tek,
            key: SecretBytes::from_slice(self.mtk.key.as_bytes()),
            salt: Some(SecretBytes::from_slice(self.mtk.salt.as_bytes())),
            validity: KeyValidity::SpiMki(mki(self.msk.msk_id, self.mtk_id).to_vec().into()),
        };
        let mut b = MessageBuilder::new(DataType::PSK_INIT).csb_id(MTK_CSB_ID);
        if let Some(s) = &self.streaming {
            b = b.cs_id_map(CsIdMap::SrtpId(s.streams.clone()));
        }
        b = b
            .timestamp(Timestamp::Counter(self.counter))
            .rand(self.rand)
            .key_id(KEY_ID_TYPE_MSK, self.msk.key_id())
            .key_id(KEY_ID_TYPE_MTK, self.mtk_id.to_bytes());
        if let Some(s) = &self.streaming {
            b = b.security_policy(s.policy.to_payload(STREAMING_POLICY_NO));
        }
        Ok(b.protect(msk.as_bytes(), KEMAC_ENCR, &[key])?.into_bytes())
    }
}

/// An MTK message read without its key.
#[derive(Debug)]
pub struct MtkEnvelope<'a> {
    bytes: &'a [u8],
    message: Message<'a>,
    /// The counter (T).
    pub counter: u32,
    /// The protecting MSK.
    pub msk: MskName,
    /// The MTK ID (SEQp).
    pub mtk_id: MtkId,
    /// The RAND (part of the download key labels).
    pub rand: [u8; RAND_LEN],
    /// Streaming parameters; `None` for download.
    pub streaming: Option<Streaming>,
}

impl<'a> MtkEnvelope<'a> {
    /// Parse and check the profile, without a key.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProfileError> {
        let message = Message::parse(bytes)?;
        check_header(&message, MTK_MSG, DataType::PSK_INIT)?;
        if message.header().v {
            return Err(violation(MTK_MSG, "the V bit is set"));
        }
        if message.header().csb_id != MTK_CSB_ID {
            return Err(violation(
                MTK_MSG,
                format!("CSB ID {:#x} (expected 0)", message.header().csb_id),
            ));
        }
        use mikey::PayloadType as T;
        check_allowed(&message, MTK_MSG, &[T::T, T::RAND, T::SP, T::KEMAC])?;
        let counter = counter_of(&message, MTK_MSG)?;
        let rand = rand_of(&message, MTK_MSG)?;
        let (msk, mtk_id) = key_ids_of(&message, MTK_MSG)?;
        let mtk_id = mtk_id.ok_or_else(|| violation(MTK_MSG, "no MTK Key ID"))?;
        let policies: Vec<_> = message.security_policies().collect();
        let streaming = match (&message.header().cs_id_map, policies.as_slice()) {
            (CsIdMap::Empty { cs_count: 0 }, []) => None,
            (CsIdMap::SrtpId(streams), [sp]) if !streams.is_empty() => {
                if streams.iter().any(|s| s.policy_no != sp.policy_no) {
                    return Err(violation(MTK_MSG, "an SRTP-ID map entry names another policy"));
                }
                let policy = SrtpPolicy::from_payload(sp).map_err(|e| violation(MTK_MSG, e.to_string()))?;
                // Every combination of confidentiality and integrity is
                // fine (seed 000 6.3.2.2.2); what no SRTP context can
                // follow is refused here, before the MGV-F looks at it.
                crate::traffic::srtp_config(&policy)?;
                Some(Streaming {
                    streams: streams.clone(),
                    policy,
                })
            }
            _ => {
                return Err(violation(
                    MTK_MSG,
                    "expected either the empty map and no SP (download) or an SRTP-ID map and one SP (streaming)",
                ))
            }
        };
        check_kemac_last(&message, MTK_MSG)?;
        Ok(MtkEnvelope {
            bytes,
            message,
            counter,
            msk,
            mtk_id,
            rand,
            streaming,
        })
    }

    /// The CSB ID (part of the download key labels).
    pub fn csb_id(&self) -> u32 {
        self.message.header().csb_id
    }

    /// Verify the MAC with the MSK, then decrypt and check the key data.
    pub fn open(&self, msk: &Msk) -> Result<Mtk, ProfileError> {
        let keys = crypto::open_check(self.bytes, &self.message, msk.as_bytes())?;
        let kd = crypto::decrypt_kemac(&self.message, &keys)?;
        let [k] = kd.as_slice() else {
            return Err(violation(
                MTK_MSG,
                format!("{} key data sub-payloads (expected 1)", kd.len()),
            ));
        };
        if k.kind != KeyKind::Tek {
            return Err(violation(
                MTK_MSG,
                format!("key data type {} (expected TEK+SALT)", k.type_name()),
            ));
        }
        let salt = k.salt.as_ref().ok_or_else(|| {
            violation(
                MTK_MSG,
                "key data type TEK without salt (expected TEK+SALT)",
            )
        })?;
        match &k.validity {
            KeyValidity::SpiMki(spi) if spi[..] == mki(self.msk.msk_id, self.mtk_id)[..] => {}
            _ => {
                return Err(violation(
                    MTK_MSG,
                    "key validity is not SPI/MKI = MSK ID || MTK ID of the EXT",
                ))
            }
        }
        Ok(Mtk {
            key: MtkKey::from_slice(k.key.expose())
                .map_err(|e| violation(MTK_MSG, e.to_string()))?,
            salt: MtkSalt::from_slice(salt.expose())
                .map_err(|e| violation(MTK_MSG, e.to_string()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn muk() -> Muk {
        Muk::from_bytes([0x4d; 32])
    }

    fn name(n: u16) -> MskName {
        MskName {
            key_domain: "001-01".parse().unwrap(),
            msk_id: MskId::new(1, n),
        }
    }

    fn delivery() -> MskMessage {
        MskMessage {
            muk_id: MukId::new("bmsc.home1.net", "b@bsf.home1.net"),
            counter: 3,
            rand: [5; 16],
            msk: name(2),
            v: true,
            key: Some(MskKeyData {
                msk: Msk::from_bytes([0x11; 16]),
                seq_s: MtkId::new(0),
                seq_u: MtkId::new(100),
            }),
        }
    }

    #[test]
    fn msk_delivery_round_trip_and_ack() {
        let built = delivery().build(&muk()).unwrap();
        assert_eq!(classify(&built.bytes).unwrap(), MessageKind::Msk);
        let env = MskEnvelope::parse(&built.bytes).unwrap();
        assert_eq!(env.counter, 3);
        assert_eq!(env.msk, name(2));
        assert!(env.v);
        let opened = env.open(&muk()).unwrap();
        assert_eq!(opened.key, delivery().key);
        assert!(matches!(
            env.open(&Muk::from_bytes([0; 32])),
            Err(ProfileError::MacMismatch)
        ));
        let ack = MskAck::for_message(&env);
        let bytes = ack.build(&opened.keys.auth_key, &opened.initiator).unwrap();
        assert_eq!(classify(&bytes).unwrap(), MessageKind::Ack);
        assert_eq!(
            MskAck::verify(&bytes, &built.keys.auth_key, &built.initiator).unwrap(),
            ack
        );
        assert!(MskAck::verify(&bytes, &[0; 20], &built.initiator).is_err());
    }

    #[test]
    fn solicited_pull_rules() {
        let m = MskMessage::solicited_pull(
            MukId::new("bmsc.home1.net", "b@bsf.home1.net"),
            9,
            [1; 16],
            "001-01".parse().unwrap(),
            1,
        );
        let built = m.build(&muk()).unwrap();
        let env = MskEnvelope::parse(&built.bytes).unwrap();
        assert!(env.is_solicited_pull());
        assert!(env.open(&muk()).unwrap().key.is_none());
        let mut bad = m.clone();
        bad.v = true;
        assert!(bad.build(&muk()).is_err());
        let mut bad = delivery();
        bad.key = None;
        assert!(bad.build(&muk()).is_err());
    }

    #[test]
    fn mtk_round_trip_download_and_streaming() {
        let msk = Msk::from_bytes([0x22; 16]);
        let mut m = MtkMessage {
            counter: 1,
            rand: [7; 16],
            msk: name(2),
            mtk_id: MtkId::new(5),
            mtk: Mtk {
                key: MtkKey::from_bytes([0x33; 16]),
                salt: MtkSalt::from_bytes([0x44; 14]),
            },
            streaming: None,
        };
        let b = m.build(&msk).unwrap();
        assert_eq!(classify(&b).unwrap(), MessageKind::Mtk);
        let env = MtkEnvelope::parse(&b).unwrap();
        assert_eq!(
            (env.mtk_id, env.msk, env.streaming.clone()),
            (MtkId::new(5), name(2), None)
        );
        assert_eq!(env.open(&msk).unwrap(), m.mtk);
        m.streaming = Some(Streaming {
            streams: vec![SrtpIdEntry {
                policy_no: 0,
                ssrc: 0xabcd,
                roc: 3,
            }],
            policy: SrtpPolicy {
                roc_transmission_rate: Some(1),
                ..Default::default()
            },
        });
        let b = m.build(&msk).unwrap();
        let env = MtkEnvelope::parse(&b).unwrap();
        assert_eq!(env.streaming, m.streaming);
        assert_eq!(env.open(&msk).unwrap(), m.mtk);
        assert!(matches!(
            env.open(&Msk::from_bytes([0; 16])),
            Err(ProfileError::MacMismatch)
        ));
        // An MTK message is not an MSK message and vice versa.
        assert!(MskEnvelope::parse(&b).is_err());
        let built = delivery().build(&muk()).unwrap();
        assert!(MtkEnvelope::parse(&built.bytes).is_err());
    }

    /// Seed 000 6.3.2.2.2: every confidentiality x integrity combination
    /// travels in the SP payload; an impossible policy is refused at parse
    /// with the parameter named.
    #[test]
    fn mtk_policy_every_combination_and_the_impossible_refused() {
        let msk = Msk::from_bytes([0x22; 16]);
        let mut m = MtkMessage {
            counter: 1,
            rand: [7; 16],
            msk: name(2),
            mtk_id: MtkId::new(5),
            mtk: Mtk {
                key: MtkKey::from_bytes([0x33; 16]),
                salt: MtkSalt::from_bytes([0x44; 14]),
            },
            streaming: None,
        };
        for (label, suite) in srtp::Suite::NAMED {
            let cfg = crate::traffic::canonical(srtp::Config {
                suite,
                ..srtp::Config::mbms()
            });
            m.streaming = Some(Streaming {
                streams: vec![SrtpIdEntry {
                    policy_no: 0,
                    ssrc: 1,
                    roc: 0,
                }],
                policy: crate::traffic::srtp_policy(&cfg).unwrap(),
            });
            let b = m.build(&msk).unwrap();
            let env = MtkEnvelope::parse(&b).unwrap();
            let policy = &env.streaming.as_ref().unwrap().policy;
            assert_eq!(crate::traffic::srtp_config(policy).unwrap(), cfg, "{label}");
        }
        m.streaming = Some(Streaming {
            streams: vec![SrtpIdEntry {
                policy_no: 0,
                ssrc: 1,
                roc: 0,
            }],
            policy: SrtpPolicy {
                auth_alg: Some(mikey::SrtpAuthAlg::NULL),
                auth_tag_len: Some(10),
                ..Default::default()
            },
        });
        let b = m.build(&msk).unwrap();
        let e = MtkEnvelope::parse(&b).unwrap_err();
        assert!(
            matches!(
                e,
                ProfileError::Policy(crate::traffic::PolicyRefused::Srtp(
                    srtp::ConfigError::TagWithoutAuthentication { tag_len: 10 }
                ))
            ),
            "{e}"
        );
    }

    #[test]
    fn download_keys_follow_rfc3830_4_1_3() {
        let mtk = Mtk {
            key: MtkKey::from_bytes([0x33; 16]),
            salt: MtkSalt::from_bytes([0x44; 14]),
        };
        let k = mtk.download_keys(0, &[7; 16]);
        let e = mikey::crypto::derive_from_tgk(
            &[0x33; 16],
            mikey::crypto::TgkKey::Encryption,
            0,
            0,
            &[7; 16],
            16,
        );
        let a = mikey::crypto::derive_from_tgk(
            &[0x33; 16],
            mikey::crypto::TgkKey::Authentication,
            0,
            0,
            &[7; 16],
            20,
        );
        assert_eq!(k.encr.as_bytes(), e.expose());
        assert_eq!(k.auth.as_bytes(), a.expose());
    }
}
