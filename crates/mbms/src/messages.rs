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

use std::borrow::Cow;

use mikey::crypto::{self, HmacSha1Key, InitiatorFields, InitiatorRef, Prf, PskKeys};
use mikey::{
    CommonHeader, CryptoError, CsIdMap, DataType, EncrAlg, GeneralExtension, Kemac, KeyDataRef,
    KeyIdInfo, KeyKind, KeyValidity, MacAlg, Message, MessageWriter, Payload, PrfFunc, SrtpIdEntry,
    SrtpPolicy, Timestamp, HMAC_SHA1_LEN,
};
use zeroize::Zeroizing;

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
    let (header, walk) = Message::walk(bytes)?;
    let mut mtk = false;
    for item in walk {
        if let (_, Payload::GeneralExtension(GeneralExtension::KeyId(k))) = item? {
            mtk |= k.key_id_type == KEY_ID_TYPE_MTK;
        }
    }
    if header.data_type == DataType::PSK_RESP {
        return Ok(MessageKind::Ack);
    }
    if mtk {
        Ok(MessageKind::Mtk)
    } else {
        Ok(MessageKind::Msk)
    }
}

// ---------------------------------------------------------------------------
// Prepared keys

/// A MUK with the HMAC key schedule of the MIKEY PRF computed once (RFC 3830
/// 4.1.2 keyed with the MUK; RFC 2104 section 4): every MSK message to or
/// from this MUK then derives its three keys with six one-block HMACs and
/// no key setup. Build it when the MUK is stored or loaded, keep it as long
/// as the MUK. The states are zeroized on drop; `Debug` shows nothing.
#[derive(Clone)]
pub struct PreparedMuk {
    prf: Prf,
}

impl PreparedMuk {
    /// Prepare `muk`.
    pub fn new(muk: &Muk) -> Self {
        PreparedMuk {
            prf: Prf::new(muk.as_bytes()),
        }
    }

    /// Whether this is the prepared form of `muk` (constant time).
    pub fn same_key(&self, muk: &Muk) -> bool {
        self.prf.ct_eq(&Prf::new(muk.as_bytes()))
    }

    /// The keys of the MSK message with this RAND (RFC 3830 4.1.4, CSB ID
    /// [`MSK_CSB_ID`]): what a BM-SC that keeps no per-message copy
    /// recomputes to verify an acknowledgement (its `auth_key`).
    pub fn msk_message_keys(&self, rand: &[u8; RAND_LEN]) -> PskKeys {
        PskKeys::derive_prepared(&self.prf, MSK_CSB_ID, rand)
    }

    /// The key schedule of the `auth_key` of the MSK message with this RAND
    /// (RFC 3830 4.1.4, CSB ID [`MSK_CSB_ID`]), and nothing else: what
    /// verifying its acknowledgement ([`MskAckView::verify`], RFC 3830 5.2)
    /// needs. A third of the PRF work of [`Self::msk_message_keys`].
    pub fn msk_ack_key(&self, rand: &[u8; RAND_LEN]) -> HmacSha1Key {
        PskKeys::derive_auth_key_prepared(&self.prf, MSK_CSB_ID, rand)
    }
}

impl From<&Muk> for PreparedMuk {
    fn from(muk: &Muk) -> Self {
        Self::new(muk)
    }
}

impl core::fmt::Debug for PreparedMuk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PreparedMuk(<redacted>)")
    }
}

/// An MSK with the HMAC key schedule of the MIKEY PRF computed once, for the
/// MTK messages it protects (as [`PreparedMuk`] for the MUK).
#[derive(Clone)]
pub struct PreparedMsk {
    prf: Prf,
}

impl PreparedMsk {
    /// Prepare `msk`.
    pub fn new(msk: &Msk) -> Self {
        PreparedMsk {
            prf: Prf::new(msk.as_bytes()),
        }
    }
}

impl From<&Msk> for PreparedMsk {
    fn from(msk: &Msk) -> Self {
        Self::new(msk)
    }
}

impl core::fmt::Debug for PreparedMsk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PreparedMsk(<redacted>)")
    }
}

// ---------------------------------------------------------------------------
// Common checks

fn check_header(
    h: &CommonHeader,
    what: &'static str,
    data_type: DataType,
) -> Result<(), ProfileError> {
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

fn check_empty_map(h: &CommonHeader, what: &'static str) -> Result<(), ProfileError> {
    match h.cs_id_map {
        CsIdMap::Empty { cs_count: 0 } => Ok(()),
        ref other => Err(violation(
            what,
            format!("CS ID map {other:?} (expected the empty map with #CS 0)"),
        )),
    }
}

/// The counter of the single T payload (COUNTER), from the number of T
/// payloads and the first one.
fn single_counter(
    count: usize,
    first: Option<&Timestamp>,
    what: &'static str,
) -> Result<u32, ProfileError> {
    match (first, count) {
        (Some(Timestamp::Counter(c)), 1) => Ok(*c),
        (Some(t), 1) => Err(violation(
            what,
            format!("timestamp type {} (expected COUNTER)", t.type_name()),
        )),
        (None, _) => Err(violation(what, "no T payload")),
        _ => Err(violation(what, "more than one T payload")),
    }
}

/// The counter of the single T payload (COUNTER).
fn counter_of(m: &Message<'_>, what: &'static str) -> Result<u32, ProfileError> {
    let mut ts = m.payloads().iter().filter_map(|p| match p {
        Payload::Timestamp(t) => Some(t),
        _ => None,
    });
    let first = ts.next();
    single_counter(first.map_or(0, |_| 1 + ts.count()), first, what)
}

fn rand_array<'a>(
    r: Option<&'a [u8]>,
    what: &'static str,
) -> Result<&'a [u8; RAND_LEN], ProfileError> {
    let r = r.ok_or_else(|| violation(what, "no RAND payload"))?;
    r.try_into().map_err(|_| {
        violation(
            what,
            format!("RAND of {} bytes (expected {RAND_LEN})", r.len()),
        )
    })
}

/// The MSK Key ID and, if present, the MTK Key ID of the EXT payloads, fed
/// one at a time; General Extensions of other types are skipped. The first
/// problem is kept and reported by [`KeyIdScan::finish`].
#[derive(Default)]
struct KeyIdScan {
    msk: Option<MskName>,
    mtk: Option<MtkId>,
    problem: Option<ProfileError>,
}

impl KeyIdScan {
    fn add(&mut self, k: &KeyIdInfo<'_>, what: &'static str) {
        if self.problem.is_none() {
            if let Err(e) = self.try_add(k, what) {
                self.problem = Some(e);
            }
        }
    }

    fn try_add(&mut self, k: &KeyIdInfo<'_>, what: &'static str) -> Result<(), ProfileError> {
        if k.key_id_type == KEY_ID_TYPE_MSK {
            if self.msk.is_some() {
                return Err(violation(what, "two MSK Key IDs"));
            }
            self.msk =
                Some(MskName::from_key_id(&k.key_id).map_err(|e| violation(what, e.to_string()))?);
        } else if k.key_id_type == KEY_ID_TYPE_MTK {
            if self.mtk.is_some() {
                return Err(violation(what, "two MTK Key IDs"));
            }
            self.mtk =
                Some(MtkId::from_slice(&k.key_id).map_err(|e| violation(what, e.to_string()))?);
        } else {
            return Err(violation(what, format!("Key ID type {}", k.key_id_type.0)));
        }
        Ok(())
    }

    fn finish(self, what: &'static str) -> Result<(MskName, Option<MtkId>), ProfileError> {
        if let Some(e) = self.problem {
            return Err(e);
        }
        Ok((
            self.msk.ok_or_else(|| violation(what, "no MSK Key ID"))?,
            self.mtk,
        ))
    }
}

/// The MSK Key ID and, if present, the MTK Key ID of the EXT payloads;
/// General Extensions of other types are skipped.
fn key_ids_of(
    m: &Message<'_>,
    what: &'static str,
) -> Result<(MskName, Option<MtkId>), ProfileError> {
    let mut scan = KeyIdScan::default();
    for k in m.key_ids() {
        scan.add(k, what);
    }
    scan.finish(what)
}

fn unexpected(what: &'static str, t: mikey::PayloadType) -> ProfileError {
    violation(
        what,
        format!("unexpected {} payload", t.name().unwrap_or("?")),
    )
}

fn is_allowed(t: mikey::PayloadType, allowed: &[mikey::PayloadType]) -> bool {
    t == mikey::PayloadType::GENERAL_EXT || allowed.contains(&t)
}

/// Refuse payloads the message kind does not use (EXT payloads are always
/// allowed: unknown extension types are skipped).
fn check_allowed(
    m: &Message<'_>,
    what: &'static str,
    allowed: &[mikey::PayloadType],
) -> Result<(), ProfileError> {
    match m
        .payloads()
        .iter()
        .map(Payload::payload_type)
        .find(|t| !is_allowed(*t, allowed))
    {
        Some(t) => Err(unexpected(what, t)),
        None => Ok(()),
    }
}

/// The last payload must be a KEMAC with HMAC-SHA-1-160 and AES-CM-128
/// (NULL only without key data).
fn check_kemac_last<'p, 'a>(
    last: Option<&'p Payload<'a>>,
    what: &'static str,
) -> Result<&'p Kemac<'a>, ProfileError> {
    match last {
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
            Ok(k)
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

/// The bytes of a parsed field (parsing always borrows).
fn borrowed<'a>(b: &Cow<'a, [u8]>) -> &'a [u8] {
    match *b {
        Cow::Borrowed(b) => b,
        Cow::Owned(_) => &[],
    }
}

/// One pass over the payloads of a message ([`Message::walk`]), keeping what
/// the profile checks of an MSK message or an acknowledgement need; nothing
/// is copied or allocated. The checks then run in the order the readers
/// have always applied them, so the errors stay the same.
struct Scan<'a> {
    header: CommonHeader,
    /// The first payload of a type the message kind does not use.
    unexpected: Option<mikey::PayloadType>,
    timestamps: usize,
    /// The first T payload and the offset of its value.
    timestamp: Option<(Timestamp, usize)>,
    /// The value of the first RAND payload.
    rand: Option<&'a [u8]>,
    /// The number of ID payloads and the first two (type, data).
    ids: usize,
    id: [Option<(mikey::IdType, &'a [u8])>; 2],
    key_ids: KeyIdScan,
    /// The last payload and its offset.
    last: Option<(usize, Payload<'a>)>,
}

impl<'a> Scan<'a> {
    fn of(
        bytes: &'a [u8],
        what: &'static str,
        allowed: &[mikey::PayloadType],
    ) -> Result<Self, ProfileError> {
        let (header, walk) = Message::walk(bytes)?;
        let mut s = Scan {
            header,
            unexpected: None,
            timestamps: 0,
            timestamp: None,
            rand: None,
            ids: 0,
            id: [None, None],
            key_ids: KeyIdScan::default(),
            last: None,
        };
        for item in walk {
            let (at, p) = item?;
            let t = p.payload_type();
            if s.unexpected.is_none() && !is_allowed(t, allowed) {
                s.unexpected = Some(t);
            }
            match &p {
                Payload::Timestamp(ts) => {
                    s.timestamps += 1;
                    if s.timestamp.is_none() {
                        // next payload (1), TS type (1), TS value.
                        s.timestamp = Some((*ts, at + 2));
                    }
                }
                Payload::Rand(r) if s.rand.is_none() => s.rand = Some(borrowed(&r.value)),
                Payload::Id(i) => {
                    if let Some(slot) = s.id.get_mut(s.ids) {
                        *slot = Some((i.id_type, borrowed(&i.data)));
                    }
                    s.ids += 1;
                }
                Payload::GeneralExtension(GeneralExtension::KeyId(k)) => s.key_ids.add(k, what),
                _ => {}
            }
            s.last = Some((at, p));
        }
        Ok(s)
    }

    fn check_allowed(&self, what: &'static str) -> Result<(), ProfileError> {
        match self.unexpected {
            Some(t) => Err(unexpected(what, t)),
            None => Ok(()),
        }
    }

    /// The counter and the offset of its 4 bytes.
    fn counter(&self, what: &'static str) -> Result<(u32, usize), ProfileError> {
        let c = single_counter(self.timestamps, self.timestamp.as_ref().map(|t| &t.0), what)?;
        Ok((c, self.timestamp.as_ref().map_or(0, |t| t.1)))
    }
}

fn utf8<'a>(b: &'a [u8], what: &'static str, field: &str) -> Result<&'a str, ProfileError> {
    core::str::from_utf8(b).map_err(|_| violation(what, format!("{field} is not UTF-8")))
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

    /// Read the key data sub-payload of an MSK message: TGK, KV Interval
    /// with VF = SEQs and VT = SEQu of 2 bytes each (`PROFILE.md` section 6).
    fn from_key_data(k: &KeyDataRef<'_>) -> Result<Self, ProfileError> {
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
        let msk = Msk::from_slice(k.key).map_err(|e| violation(MSK_MSG, e.to_string()))?;
        Ok(MskKeyData { msk, seq_s, seq_u })
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

/// An MSK message to build, borrowing its identifiers and key: the form
/// [`MskMessageRef::build_into`] encodes with no allocation (`PROFILE.md`
/// section 6: HDR(data type 0, V, CSB ID 0, #CS 0, empty map) · T(COUNTER)
/// · RAND · IDi(URI) · IDr(NAI) · EXT(Key ID MSK) · KEMAC(AES-CM-128,
/// HMAC-SHA-1-160)).
#[derive(Clone, Copy, Debug)]
pub struct MskMessageRef<'a> {
    /// IDi: the BM-SC FQDN.
    pub idi: &'a str,
    /// IDr: the UE's B-TID.
    pub idr: &'a str,
    /// The replay counter of this MUK (T payload, COUNTER).
    pub counter: u32,
    /// 16 fresh random bytes.
    pub rand: [u8; RAND_LEN],
    /// The MSK's name (Key Number 0 for a solicited pull).
    pub msk: MskName,
    /// The V bit: an acknowledgement is requested.
    pub v: bool,
    /// The key; `None` for a solicited pull (KEMAC with Encr data len 0).
    pub key: Option<&'a MskKeyData>,
}

impl MskMessageRef<'_> {
    /// IDi, IDr and T of the message: what its acknowledgement's MAC covers
    /// (RFC 3830 5.2). `t` is the caller's copy of `counter.to_be_bytes()`.
    pub fn initiator<'s>(&'s self, t: &'s [u8; 4]) -> InitiatorRef<'s> {
        InitiatorRef {
            idi: self.idi.as_bytes(),
            idr: self.idr.as_bytes(),
            t,
        }
    }

    /// Build and protect with the prepared MUK into `out` (its contents are
    /// replaced; a buffer reused with 256 bytes of capacity never
    /// reallocates). Returns the message keys: `auth_key` keys the
    /// acknowledgement's MAC. Nothing is allocated. On an error `out` is
    /// left empty.
    pub fn build_into(
        &self,
        muk: &PreparedMuk,
        out: &mut Vec<u8>,
    ) -> Result<PskKeys, ProfileError> {
        if self.key.is_none() != self.msk.msk_id.is_current_request() {
            return Err(violation(
                MSK_MSG,
                "a key goes with Key Number 1..65535; Key Number 0 (solicited pull) carries none",
            ));
        }
        if self.key.is_none() && self.v {
            return Err(violation(MSK_MSG, "a solicited pull never sets the V bit"));
        }
        out.clear();
        if let Some(keys) = write_msk_canonical(self, muk, out) {
            return Ok(keys);
        }
        out.clear();
        let r = self.write(muk, out);
        if r.is_err() {
            out.clear();
        }
        r
    }

    /// The general writer: the same bytes as the canonical writer, and the
    /// errors for what does not fit.
    fn write(&self, muk: &PreparedMuk, out: &mut Vec<u8>) -> Result<PskKeys, ProfileError> {
        let mut header = CommonHeader::new(DataType::PSK_INIT, MSK_CSB_ID);
        header.v = self.v;
        let mut w = MessageWriter::new(out, &header).map_err(CryptoError::from)?;
        w.timestamp(Timestamp::Counter(self.counter))
            .and_then(|w| w.rand(&self.rand))
            .and_then(|w| w.id(IDI_TYPE, self.idi.as_bytes()))
            .and_then(|w| w.id(IDR_TYPE, self.idr.as_bytes()))
            .and_then(|w| w.key_id(KEY_ID_TYPE_MSK, &self.msk.key_id()))
            .map_err(CryptoError::from)?;
        let window = self.key.map(|k| (k.seq_s.to_bytes(), k.seq_u.to_bytes()));
        let key_data = match (self.key, &window) {
            (Some(k), Some((from, to))) => Some(KeyDataRef {
                kind: KeyKind::Tgk,
                key: k.msk.as_bytes(),
                salt: None,
                validity: KeyValidity::Interval {
                    from: Cow::Borrowed(from),
                    to: Cow::Borrowed(to),
                },
            }),
            _ => None,
        };
        let (keys, _) = w.protect_psk(&muk.prf, KEMAC_ENCR, key_data.as_slice())?;
        Ok(keys)
    }
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

    /// Borrow as an [`MskMessageRef`].
    pub fn as_ref(&self) -> MskMessageRef<'_> {
        MskMessageRef {
            idi: &self.muk_id.idi,
            idr: &self.muk_id.idr,
            counter: self.counter,
            rand: self.rand,
            msk: self.msk,
            v: self.v,
            key: self.key.as_ref(),
        }
    }

    /// Build and protect with the prepared MUK into `out`
    /// ([`MskMessageRef::build_into`]).
    pub fn build_into(
        &self,
        muk: &PreparedMuk,
        out: &mut Vec<u8>,
    ) -> Result<PskKeys, ProfileError> {
        self.as_ref().build_into(muk, out)
    }

    /// Build and protect with the MUK (prepares the MUK for this one message;
    /// keep a [`PreparedMuk`] and use [`MskMessage::build_into`] to send many).
    pub fn build(&self, muk: &Muk) -> Result<BuiltMsk, ProfileError> {
        let mut bytes = Vec::new();
        let keys = self.build_into(&PreparedMuk::new(muk), &mut bytes)?;
        let t = self.counter.to_be_bytes();
        let initiator = self.as_ref().initiator(&t).to_owned();
        Ok(BuiltMsk {
            bytes,
            keys,
            initiator,
        })
    }
}

/// An MSK message read without its key and without copying anything: what
/// the MGV-F needs to find the MUK and check the counter before any
/// cryptography, borrowed from the datagram. [`MskView::open`] then
/// verifies and decrypts, [`MskView::ack_into`] builds the acknowledgement.
#[derive(Clone, Debug)]
pub struct MskView<'a> {
    bytes: &'a [u8],
    /// IDi: the BM-SC FQDN.
    pub idi: &'a str,
    /// IDr: the B-TID.
    pub idr: &'a str,
    /// The counter (T).
    pub counter: u32,
    /// Offset of the counter's 4 bytes.
    t_at: usize,
    /// The RAND.
    pub rand: &'a [u8; RAND_LEN],
    /// The MSK named in the EXT.
    pub msk: MskName,
    /// The V bit.
    pub v: bool,
    /// The KEMAC's Encr data.
    encr_data: core::ops::Range<usize>,
    /// AES-CM-128 (else NULL, with no data).
    encrypted: bool,
}

/// The key data an MSK message decrypts on the stack (the profile's is 26
/// bytes: [`MskView::open`]).
const KEY_STREAM_LEN: usize = 32;

/// The key stream, then the key data, of [`MskView::open`], wiped on drop
/// as one slice (`zeroize` wipes an array byte by byte with volatile
/// stores, a slice with one store sequence and a barrier).
struct KeyStream([u8; KEY_STREAM_LEN]);

impl Drop for KeyStream {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self.0.as_mut_slice());
    }
}

/// An MSK message verified with its MUK and decrypted ([`MskView::open`]).
#[derive(Debug)]
pub struct VerifiedMsk {
    /// The key; `None` for a solicited pull.
    pub key: Option<MskKeyData>,
    /// The message keys.
    pub keys: PskKeys,
    /// The key schedule of `keys.auth_key`, which MACs the acknowledgement.
    pub auth: HmacSha1Key,
}

impl<'a> MskView<'a> {
    /// Parse and check the profile, without a key, in one pass over the
    /// payloads with no allocation.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProfileError> {
        match canonical_msk(bytes) {
            Some(v) => Ok(v),
            None => Self::parse_general(bytes),
        }
    }

    /// The general reader: every payload order the profile allows, and the
    /// errors.
    fn parse_general(bytes: &'a [u8]) -> Result<Self, ProfileError> {
        use mikey::PayloadType as T;
        let s = Scan::of(bytes, MSK_MSG, &[T::T, T::RAND, T::ID, T::KEMAC])?;
        check_header(&s.header, MSK_MSG, DataType::PSK_INIT)?;
        if s.header.csb_id != MSK_CSB_ID {
            return Err(violation(
                MSK_MSG,
                format!("CSB ID {:#x} (expected 0)", s.header.csb_id),
            ));
        }
        check_empty_map(&s.header, MSK_MSG)?;
        s.check_allowed(MSK_MSG)?;
        let (counter, t_at) = s.counter(MSK_MSG)?;
        let rand = rand_array(s.rand, MSK_MSG)?;
        let (idi, idr) = match s.id {
            [Some((ti, i)), Some((tr, r))] if s.ids == 2 && ti == IDI_TYPE && tr == IDR_TYPE => {
                (i, r)
            }
            _ => return Err(violation(MSK_MSG, "expected IDi (URI) then IDr (NAI)")),
        };
        let idi = utf8(idi, MSK_MSG, "IDi")?;
        let idr = utf8(idr, MSK_MSG, "IDr")?;
        let (msk, mtk) = s.key_ids.finish(MSK_MSG)?;
        if mtk.is_some() {
            return Err(violation(MSK_MSG, "an MTK Key ID in an MSK message"));
        }
        let kemac = check_kemac_last(s.last.as_ref().map(|l| &l.1), MSK_MSG)?;
        // next payload (1), Encr alg (1), Encr data len (2), Encr data.
        let data_at = s.last.as_ref().map_or(0, |l| l.0) + 4;
        let encr_data = data_at..data_at + kemac.encr_data.len();
        let encrypted = kemac.encr_alg == KEMAC_ENCR;
        let v = s.header.v;
        if msk.msk_id.is_current_request() && v {
            return Err(violation(
                MSK_MSG,
                "a solicited pull (Key Number 0) with the V bit set",
            ));
        }
        Ok(MskView {
            bytes,
            idi,
            idr,
            counter,
            t_at,
            rand,
            msk,
            v,
            encr_data,
            encrypted,
        })
    }

    /// True for a solicited pull (Key Number 0).
    pub fn is_solicited_pull(&self) -> bool {
        self.msk.msk_id.is_current_request()
    }

    /// The message's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The KEMAC MAC (the last 20 bytes): equal MACs under one MUK mean the
    /// same message.
    pub fn mac(&self) -> &'a [u8] {
        &self.bytes[self.bytes.len().saturating_sub(HMAC_SHA1_LEN)..]
    }

    /// IDi, IDr and T of the message, which its acknowledgement's MAC
    /// covers (RFC 3830 5.2), borrowed from the message.
    pub fn initiator(&self) -> InitiatorRef<'a> {
        InitiatorRef {
            idi: self.idi.as_bytes(),
            idr: self.idr.as_bytes(),
            t: self.bytes.get(self.t_at..self.t_at + 4).unwrap_or(&[]),
        }
    }

    /// Verify the KEMAC MAC with the prepared MUK (HMAC-SHA-1-160 over the
    /// message up to the MAC, compared in constant time; RFC 3830 5.2), then
    /// decrypt (AES-CM-128, RFC 3830 4.2.3) into a stack buffer that is
    /// wiped, and check the key data. Nothing is allocated.
    pub fn open(&self, muk: &PreparedMuk) -> Result<VerifiedMsk, ProfileError> {
        let keys = PskKeys::derive_prepared(&muk.prf, MSK_CSB_ID, self.rand);
        let data = &self.bytes[self.encr_data.clone()];
        // The profile's key data is 26 bytes. Its AES-CM key stream (RFC
        // 3830 4.2.3) depends only on the keys and the counter: it is
        // computed here, on the stack, so that the processor overlaps it
        // with the SHA-1 work of the MAC; the data is decrypted only once
        // the MAC verified. Zero for NULL encryption. Wiped.
        let mut stream = KeyStream([0u8; KEY_STREAM_LEN]);
        let short = data.len() <= KEY_STREAM_LEN;
        if short && self.encrypted {
            crypto::aes_cm_apply(
                &keys,
                MSK_CSB_ID,
                u64::from(self.counter),
                &mut stream.0[..data.len()],
            );
        }
        let auth = HmacSha1Key::new(&keys.auth_key);
        let mac_at = self.bytes.len().saturating_sub(HMAC_SHA1_LEN);
        let mac = auth.mac_contiguous(&self.bytes[..mac_at]);
        if !crypto::ct_eq(&mac, &self.bytes[mac_at..]) {
            return Err(ProfileError::MacMismatch);
        }
        let key = if short {
            let plain = &mut stream.0[..data.len()];
            for (p, c) in plain.iter_mut().zip(data) {
                *p ^= c;
            }
            self.key_data_of(plain)?
        } else {
            // Anything longer that still verified is decrypted on the heap.
            let mut heap = Zeroizing::new(data.to_vec());
            if self.encrypted {
                crypto::aes_cm_apply(&keys, MSK_CSB_ID, u64::from(self.counter), &mut heap);
            }
            self.key_data_of(&heap)?
        };
        Ok(VerifiedMsk { key, keys, auth })
    }

    /// Check the decrypted key data.
    fn key_data_of(&self, plain: &[u8]) -> Result<Option<MskKeyData>, ProfileError> {
        // The canonical key data sub-payload (RFC 3830 6.13): next payload
        // 0, TGK with KV Interval, key length 16, the MSK, VF and VT of 2
        // bytes each; anything else goes through the general reader.
        if let ([0, 0x02, 0, 16, msk @ .., 2, s0, s1, 2, u0, u1], false) =
            (plain, self.is_solicited_pull())
        {
            if let Ok(msk) = Msk::from_slice(msk) {
                return Ok(Some(MskKeyData {
                    msk,
                    seq_s: MtkId::new(u16::from_be_bytes([*s0, *s1])),
                    seq_u: MtkId::new(u16::from_be_bytes([*u0, *u1])),
                }));
            }
        }
        let mut count = 0usize;
        let mut first = None;
        for kd in KeyDataRef::parse_list(plain, self.encr_data.start) {
            let kd = kd.map_err(CryptoError::KeyData)?;
            if first.is_none() {
                first = Some(kd);
            }
            count += 1;
        }
        Ok(match (first, count, self.is_solicited_pull()) {
            (None, _, true) => None,
            (Some(k), 1, false) => Some(MskKeyData::from_key_data(&k)?),
            (_, _, true) => return Err(violation(MSK_MSG, "a solicited pull carries key data")),
            (_, n, false) => {
                return Err(violation(
                    MSK_MSG,
                    format!("{n} key data sub-payloads (expected 1)"),
                ))
            }
        })
    }

    /// Build the acknowledgement of this message (`PROFILE.md` section 6)
    /// into `out` (contents replaced), MACed with the opened message's
    /// `auth_key` over the acknowledgement and this message's IDi, IDr and T.
    /// Nothing is allocated.
    pub fn ack_into(&self, opened: &VerifiedMsk, out: &mut Vec<u8>) -> Result<(), ProfileError> {
        write_ack(
            MSK_CSB_ID,
            self.counter,
            self.idr.as_bytes(),
            self.msk,
            &opened.auth,
            self.initiator(),
            out,
        )
    }
}

/// An MSK message read without its key: what the MGV-F needs to find the MUK
/// and check the counter before any cryptography.
#[derive(Debug)]
pub struct MskEnvelope<'a> {
    view: MskView<'a>,
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
    /// Parse and check the profile, without a key ([`MskView::parse`], with
    /// the identifiers copied).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProfileError> {
        let view = MskView::parse(bytes)?;
        Ok(MskEnvelope {
            muk_id: MukId::new(view.idi, view.idr),
            counter: view.counter,
            msk: view.msk,
            v: view.v,
            view,
        })
    }

    /// The borrowed view it was read from.
    pub fn view(&self) -> &MskView<'a> {
        &self.view
    }

    /// True for a solicited pull (Key Number 0).
    pub fn is_solicited_pull(&self) -> bool {
        self.view.is_solicited_pull()
    }

    /// Verify the MAC with the MUK, then decrypt and check the key data
    /// ([`MskView::open`] with the MUK prepared for this one message).
    pub fn open(&self, muk: &Muk) -> Result<OpenedMsk, ProfileError> {
        let v = self.view.open(&PreparedMuk::new(muk))?;
        Ok(OpenedMsk {
            key: v.key,
            keys: v.keys,
            initiator: self.view.initiator().to_owned(),
        })
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

/// Write an acknowledgement into `out` (contents replaced); `auth` is the
/// key schedule of the acknowledged message's `auth_key` (RFC 3830 5.2).
fn write_ack(
    csb_id: u32,
    counter: u32,
    btid: &[u8],
    msk: MskName,
    auth: &HmacSha1Key,
    initiator: InitiatorRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ProfileError> {
    out.clear();
    if write_ack_canonical(csb_id, counter, btid, msk, auth, initiator, out).is_some() {
        return Ok(());
    }
    out.clear();
    let r = write_ack_payloads(csb_id, counter, btid, msk, out)
        .and_then(|w| w.sign_verification(auth, initiator));
    if r.is_err() {
        out.clear();
    }
    r.map(|_| ()).map_err(ProfileError::from)
}

fn write_ack_payloads<'o>(
    csb_id: u32,
    counter: u32,
    btid: &[u8],
    msk: MskName,
    out: &'o mut Vec<u8>,
) -> Result<MessageWriter<'o>, CryptoError> {
    let mut w = MessageWriter::new(out, &CommonHeader::new(DataType::PSK_RESP, csb_id))?;
    w.timestamp(Timestamp::Counter(counter))?
        .id(IDR_TYPE, btid)?
        .key_id(KEY_ID_TYPE_MSK, &msk.key_id())?;
    Ok(w)
}

/// An acknowledgement read without copying ([`MskAckView::parse`]); the
/// BM-SC matches it by `btid` and `counter`, then [`MskAckView::verify`]s it.
#[derive(Clone, Debug)]
pub struct MskAckView<'a> {
    bytes: &'a [u8],
    /// CSB ID of the acknowledged message.
    pub csb_id: u32,
    /// Counter of the acknowledged message.
    pub counter: u32,
    /// The UE's B-TID.
    pub btid: &'a str,
    /// The acknowledged MSK.
    pub msk: MskName,
}

impl<'a> MskAckView<'a> {
    /// Read an acknowledgement (without verifying its MAC) in one pass with
    /// no allocation.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ProfileError> {
        match canonical_ack(bytes) {
            Some(v) => Ok(v),
            None => Self::parse_general(bytes),
        }
    }

    /// The general reader (every layout, and the errors).
    fn parse_general(bytes: &'a [u8]) -> Result<Self, ProfileError> {
        use mikey::PayloadType as T;
        let s = Scan::of(bytes, ACK_MSG, &[T::T, T::ID, T::V])?;
        check_header(&s.header, ACK_MSG, DataType::PSK_RESP)?;
        check_empty_map(&s.header, ACK_MSG)?;
        s.check_allowed(ACK_MSG)?;
        let (counter, _) = s.counter(ACK_MSG)?;
        let btid = match s.id {
            [Some((_, r)), None] if s.ids == 1 => utf8(r, ACK_MSG, "IDr")?,
            _ => return Err(violation(ACK_MSG, "expected exactly one ID payload (IDr)")),
        };
        let (msk, mtk) = s.key_ids.finish(ACK_MSG)?;
        if mtk.is_some() {
            return Err(violation(ACK_MSG, "an MTK Key ID in an acknowledgement"));
        }
        match s.last.as_ref().map(|l| &l.1) {
            Some(Payload::Verification(v)) if v.auth_alg == MacAlg::HmacSha1_160 => {}
            _ => {
                return Err(violation(
                    ACK_MSG,
                    "the last payload is not V with HMAC-SHA-1-160",
                ))
            }
        }
        Ok(MskAckView {
            bytes,
            csb_id: s.header.csb_id,
            counter,
            btid,
            msk,
        })
    }

    /// Verify the MAC (the last 20 bytes): HMAC-SHA-1 keyed with the
    /// acknowledged message's `auth_key` (`auth` is its key schedule) over
    /// the acknowledgement up to the MAC and that message's IDi, IDr and T
    /// (RFC 3830 5.2), compared in constant time. Nothing is allocated.
    pub fn verify(
        &self,
        auth: &HmacSha1Key,
        initiator: InitiatorRef<'_>,
    ) -> Result<(), ProfileError> {
        let mac_at = self.bytes.len().saturating_sub(HMAC_SHA1_LEN);
        let mac = auth.mac(&[
            &self.bytes[..mac_at],
            initiator.idi,
            initiator.idr,
            initiator.t,
        ]);
        if crypto::ct_eq(&mac, &self.bytes[mac_at..]) {
            Ok(())
        } else {
            Err(ProfileError::MacMismatch)
        }
    }

    /// Copy into an [`MskAck`].
    pub fn to_owned(&self) -> MskAck {
        MskAck {
            csb_id: self.csb_id,
            counter: self.counter,
            btid: self.btid.to_owned(),
            msk: self.msk,
        }
    }
}

impl MskAck {
    /// The acknowledgement of an opened MSK message.
    pub fn for_message(env: &MskEnvelope<'_>) -> Self {
        MskAck {
            csb_id: MSK_CSB_ID,
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
        let mut out = Vec::new();
        write_ack(
            self.csb_id,
            self.counter,
            self.btid.as_bytes(),
            self.msk,
            &HmacSha1Key::new(auth_key),
            initiator.as_ref(),
            &mut out,
        )?;
        Ok(out)
    }

    /// Read an acknowledgement (without verifying its MAC).
    pub fn parse(bytes: &[u8]) -> Result<Self, ProfileError> {
        Ok(MskAckView::parse(bytes)?.to_owned())
    }

    /// Verify the MAC of an acknowledgement against the message it acknowledges.
    pub fn verify(
        bytes: &[u8],
        auth_key: &[u8],
        initiator: &InitiatorFields,
    ) -> Result<Self, ProfileError> {
        let ack = MskAckView::parse(bytes)?;
        ack.verify(&HmacSha1Key::new(auth_key), initiator.as_ref())?;
        Ok(ack.to_owned())
    }
}

// ---------------------------------------------------------------------------
// The canonical encodings, written and recognized directly
//
// The MSK message and its acknowledgement have one canonical layout
// (`PROFILE.md` section 6). Building writes it byte by byte; reading first
// tries to recognize it byte by byte and, for anything else, falls back to
// the general reader (the payload walk with every profile check), which
// gives the error or accepts a valid message laid out otherwise. Whatever
// the recognizer accepts, the general reader accepts with the same fields
// (tests: `canonical_and_general_readers_agree`, the proptests of
// `tests/fast_path.rs`).

use mikey::codes::{ExtType, PayloadType as PT};

/// T payload: next payload, TS type COUNTER, 4-byte value (RFC 3830 6.6).
const TS_TYPE_COUNTER: u8 = 2;
/// EXT payload with an MSK Key ID: next, type, length 10, Key ID type,
/// Key ID length 7, the Key ID (RFC 3830 6.15, RFC 4563).
const KEY_ID_EXT_LEN: usize = 4 + 3 + MSK_KEY_ID_LEN;

fn put_header(out: &mut Vec<u8>, data_type: DataType, v: bool, csb_id: u32) {
    // RFC 3830 6.1: version, data type, next payload (T), V || PRF func,
    // CSB ID, #CS 0, CS ID map type empty (RFC 4563 section 5).
    out.extend_from_slice(&[
        mikey::MIKEY_VERSION,
        data_type.0,
        PT::T.0,
        (u8::from(v) << 7) | PrfFunc::MIKEY_1.0,
    ]);
    out.extend_from_slice(&csb_id.to_be_bytes());
    out.extend_from_slice(&[0, CsIdMap::TYPE_EMPTY]);
}

fn put_counter(out: &mut Vec<u8>, next: PT, counter: u32) {
    out.extend_from_slice(&[next.0, TS_TYPE_COUNTER]);
    out.extend_from_slice(&counter.to_be_bytes());
}

fn put_id(out: &mut Vec<u8>, next: PT, id_type: mikey::IdType, data: &[u8]) {
    out.extend_from_slice(&[next.0, id_type.0]);
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

fn put_msk_key_id(out: &mut Vec<u8>, next: PT, msk: &MskName) {
    out.extend_from_slice(&[
        next.0,
        ExtType::KEY_ID.0,
        0,
        (3 + MSK_KEY_ID_LEN) as u8,
        KEY_ID_TYPE_MSK.0,
        0,
        MSK_KEY_ID_LEN as u8,
    ]);
    out.extend_from_slice(&msk.key_id());
}

/// The canonical MSK message (`PROFILE.md` section 6). Identifiers longer
/// than an ID payload holds go to the general writer, which reports them.
fn write_msk_canonical(
    m: &MskMessageRef<'_>,
    muk: &PreparedMuk,
    out: &mut Vec<u8>,
) -> Option<PskKeys> {
    let (idi, idr) = (m.idi.as_bytes(), m.idr.as_bytes());
    if idi.len() > 0xffff || idr.len() > 0xffff {
        return None;
    }
    put_header(out, DataType::PSK_INIT, m.v, MSK_CSB_ID);
    put_counter(out, PT::RAND, m.counter);
    out.extend_from_slice(&[PT::ID.0, RAND_LEN as u8]);
    out.extend_from_slice(&m.rand);
    put_id(out, PT::ID, IDI_TYPE, idi);
    put_id(out, PT::GENERAL_EXT, IDR_TYPE, idr);
    put_msk_key_id(out, PT::KEMAC, &m.msk);
    // KEMAC (RFC 3830 6.2): next (last), Encr alg, Encr data len, the key
    // data sub-payload (6.13: TGK, KV Interval, VF = SEQs, VT = SEQu).
    let at = out.len();
    out.extend_from_slice(&[PT::LAST.0, KEMAC_ENCR.0, 0, 0]);
    if let Some(k) = m.key {
        let (from, to) = (k.seq_s.to_bytes(), k.seq_u.to_bytes());
        KeyDataRef {
            kind: KeyKind::Tgk,
            key: k.msk.as_bytes(),
            salt: None,
            validity: KeyValidity::Interval {
                from: Cow::Borrowed(&from),
                to: Cow::Borrowed(&to),
            },
        }
        .emit(PT::LAST.0, out);
    }
    let data_len = (out.len() - at - 4) as u16;
    out[at + 2..at + 4].copy_from_slice(&data_len.to_be_bytes());
    let keys = PskKeys::derive_prepared(&muk.prf, MSK_CSB_ID, &m.rand);
    crypto::aes_cm_apply(&keys, MSK_CSB_ID, u64::from(m.counter), &mut out[at + 4..]);
    // The MAC covers everything up to and including the MAC alg byte
    // (RFC 3830 5.2, `PROFILE.md` section 6).
    out.push(MacAlg::HmacSha1_160.code());
    let mac = HmacSha1Key::new(&keys.auth_key).mac_contiguous(out);
    out.extend_from_slice(&mac);
    Some(keys)
}

/// The canonical acknowledgement; `None` for a B-TID no ID payload holds.
fn write_ack_canonical(
    csb_id: u32,
    counter: u32,
    btid: &[u8],
    msk: MskName,
    auth: &HmacSha1Key,
    initiator: InitiatorRef<'_>,
    out: &mut Vec<u8>,
) -> Option<()> {
    if btid.len() > 0xffff {
        return None;
    }
    put_header(out, DataType::PSK_RESP, false, csb_id);
    put_counter(out, PT::ID, counter);
    put_id(out, PT::GENERAL_EXT, IDR_TYPE, btid);
    put_msk_key_id(out, PT::V, &msk);
    out.extend_from_slice(&[PT::LAST.0, MacAlg::HmacSha1_160.code()]);
    let mac = auth.mac(&[out, initiator.idi, initiator.idr, initiator.t]);
    out.extend_from_slice(&mac);
    Some(())
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    b.get(at..at + 2)
        .map(|x| usize::from(u16::from_be_bytes([x[0], x[1]])))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
}

/// The common header of a canonical message: returns (V, CSB ID).
fn canonical_header(b: &[u8], data_type: DataType) -> Option<(bool, u32)> {
    let h = b.get(..10)?;
    let ok = h[0] == mikey::MIKEY_VERSION
        && h[1] == data_type.0
        && h[2] == PT::T.0
        && h[3] & 0x7f == PrfFunc::MIKEY_1.0
        && h[8] == 0
        && h[9] == CsIdMap::TYPE_EMPTY;
    ok.then(|| (h[3] & 0x80 != 0, u32_at(h, 4).unwrap_or(0)))
}

/// An ID payload at `at` with the given next payload and type (`None`: any
/// type): its data and the offset after it.
fn canonical_id(
    b: &[u8],
    at: usize,
    next: PT,
    id_type: Option<mikey::IdType>,
) -> Option<(&[u8], usize)> {
    let h = b.get(at..at + 4)?;
    if h[0] != next.0 || id_type.is_some_and(|t| t.0 != h[1]) {
        return None;
    }
    let end = at + 4 + u16_at(h, 2)?;
    Some((b.get(at + 4..end)?, end))
}

/// The EXT payload with one MSK Key ID at `at`.
fn canonical_msk_key_id(b: &[u8], at: usize, next: PT) -> Option<MskName> {
    let e = b.get(at..at + KEY_ID_EXT_LEN)?;
    let ok = e[0] == next.0
        && e[1] == ExtType::KEY_ID.0
        && u16_at(e, 2)? == 3 + MSK_KEY_ID_LEN
        && e[4] == KEY_ID_TYPE_MSK.0
        && u16_at(e, 5)? == MSK_KEY_ID_LEN;
    if !ok {
        return None;
    }
    MskName::from_key_id(&e[7..]).ok()
}

/// Recognize a canonical MSK message; `None` for anything else.
fn canonical_msk(b: &[u8]) -> Option<MskView<'_>> {
    let (v, csb_id) = canonical_header(b, DataType::PSK_INIT)?;
    let t = b.get(10..16)?;
    if csb_id != MSK_CSB_ID || t[0] != PT::RAND.0 || t[1] != TS_TYPE_COUNTER {
        return None;
    }
    let counter = u32_at(t, 2)?;
    let r = b.get(16..18 + RAND_LEN)?;
    if r[0] != PT::ID.0 || usize::from(r[1]) != RAND_LEN {
        return None;
    }
    let rand: &[u8; RAND_LEN] = b.get(18..18 + RAND_LEN)?.try_into().ok()?;
    let (idi, at) = canonical_id(b, 18 + RAND_LEN, PT::ID, Some(IDI_TYPE))?;
    let (idr, at) = canonical_id(b, at, PT::GENERAL_EXT, Some(IDR_TYPE))?;
    let msk = canonical_msk_key_id(b, at, PT::KEMAC)?;
    let k = at + KEY_ID_EXT_LEN;
    let h = b.get(k..k + 4)?;
    let data = k + 4..k + 4 + u16_at(h, 2)?;
    let encrypted = match EncrAlg(h[1]) {
        KEMAC_ENCR => true,
        EncrAlg::NULL if data.is_empty() => false,
        _ => return None,
    };
    let ok = h[0] == PT::LAST.0
        && b.get(data.end) == Some(&MacAlg::HmacSha1_160.code())
        && b.len() == data.end + 1 + HMAC_SHA1_LEN
        && !(msk.msk_id.is_current_request() && v);
    if !ok {
        return None;
    }
    Some(MskView {
        bytes: b,
        idi: core::str::from_utf8(idi).ok()?,
        idr: core::str::from_utf8(idr).ok()?,
        counter,
        t_at: 12,
        rand,
        msk,
        v,
        encr_data: data,
        encrypted,
    })
}

/// Recognize a canonical acknowledgement; `None` for anything else.
fn canonical_ack(b: &[u8]) -> Option<MskAckView<'_>> {
    let (_, csb_id) = canonical_header(b, DataType::PSK_RESP)?;
    let t = b.get(10..16)?;
    if t[0] != PT::ID.0 || t[1] != TS_TYPE_COUNTER {
        return None;
    }
    let counter = u32_at(t, 2)?;
    let (btid, at) = canonical_id(b, 16, PT::GENERAL_EXT, None)?;
    let msk = canonical_msk_key_id(b, at, PT::V)?;
    let v = at + KEY_ID_EXT_LEN;
    let ok = b.get(v..v + 2) == Some(&[PT::LAST.0, MacAlg::HmacSha1_160.code()][..])
        && b.len() == v + 2 + HMAC_SHA1_LEN;
    if !ok {
        return None;
    }
    Some(MskAckView {
        bytes: b,
        csb_id,
        counter,
        btid: core::str::from_utf8(btid).ok()?,
        msk,
    })
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
    /// Build and protect with the prepared MSK into `out` (contents
    /// replaced; left empty on an error). A download message allocates
    /// nothing; a streaming one copies its SRTP-ID map and SP parameters
    /// (one MTK message per key group and MTK, not per UE).
    pub fn build_into(&self, msk: &PreparedMsk, out: &mut Vec<u8>) -> Result<(), ProfileError> {
        out.clear();
        let r = self.write(msk, out);
        if r.is_err() {
            out.clear();
        }
        r
    }

    fn write(&self, msk: &PreparedMsk, out: &mut Vec<u8>) -> Result<(), ProfileError> {
        let mut header = CommonHeader::new(DataType::PSK_INIT, MTK_CSB_ID);
        if let Some(s) = &self.streaming {
            header.cs_id_map = CsIdMap::SrtpId(s.streams.clone());
        }
        let mut w = MessageWriter::new(out, &header).map_err(CryptoError::from)?;
        w.timestamp(Timestamp::Counter(self.counter))
            .and_then(|w| w.rand(&self.rand))
            .and_then(|w| w.key_id(KEY_ID_TYPE_MSK, &self.msk.key_id()))
            .and_then(|w| w.key_id(KEY_ID_TYPE_MTK, &self.mtk_id.to_bytes()))
            .map_err(CryptoError::from)?;
        if let Some(s) = &self.streaming {
            w.payload(&Payload::SecurityPolicy(
                s.policy.to_payload(STREAMING_POLICY_NO),
            ))
            .map_err(CryptoError::from)?;
        }
        let spi = mki(self.msk.msk_id, self.mtk_id);
        let key = KeyDataRef {
            kind: KeyKind::Tek,
            key: self.mtk.key.as_bytes(),
            salt: Some(self.mtk.salt.as_bytes()),
            validity: KeyValidity::SpiMki(Cow::Borrowed(&spi)),
        };
        w.protect_psk(&msk.prf, KEMAC_ENCR, &[key])?;
        Ok(())
    }

    /// Build and protect with the MSK.
    pub fn build(&self, msk: &Msk) -> Result<Vec<u8>, ProfileError> {
        let mut out = Vec::new();
        self.build_into(&PreparedMsk::new(msk), &mut out)?;
        Ok(out)
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
        check_header(message.header(), MTK_MSG, DataType::PSK_INIT)?;
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
        let rand = *rand_array(message.rand(), MTK_MSG)?;
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
        check_kemac_last(message.payloads().last(), MTK_MSG)?;
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
        self.open_prepared(&PreparedMsk::new(msk))
    }

    /// Verify the MAC with the prepared MSK, then decrypt and check the key
    /// data.
    pub fn open_prepared(&self, msk: &PreparedMsk) -> Result<Mtk, ProfileError> {
        let keys = PskKeys::derive_prepared(&msk.prf, self.csb_id(), &self.rand);
        crypto::verify_kemac_mac(self.bytes, &self.message, &keys.auth_key)?;
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
    use proptest::prelude::*;

    /// A canonical MSK message and its acknowledgement from arbitrary
    /// fields.
    fn canonical_pair(idr: &str, counter: u32, number: u16, v: bool) -> (Vec<u8>, Vec<u8>) {
        let muk = PreparedMuk::new(&muk());
        let key = MskKeyData {
            msk: Msk::from_bytes([0x11; 16]),
            seq_s: MtkId::new(1),
            seq_u: MtkId::new(9),
        };
        let m = MskMessageRef {
            idi: "bmsc.home1.net",
            idr,
            counter,
            rand: [counter as u8; 16],
            msk: name(number),
            v: v && number != 0,
            key: (number != 0).then_some(&key),
        };
        let mut msg = Vec::new();
        m.build_into(&muk, &mut msg).unwrap();
        let opened = MskView::parse(&msg).unwrap().open(&muk).unwrap();
        let mut ack = Vec::new();
        MskView::parse(&msg)
            .unwrap()
            .ack_into(&opened, &mut ack)
            .unwrap();
        (msg, ack)
    }

    fn mutate(mut b: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        for &(at, value, how) in edits {
            if b.is_empty() {
                break;
            }
            let at = at % b.len();
            match how % 4 {
                0 | 1 => b[at] = value,
                2 => b.truncate(at),
                _ => b.insert(at, value),
            }
        }
        b
    }

    proptest! {
        /// Whatever the canonical recognizer accepts, the general reader
        /// accepts with the same fields; everything else the general reader
        /// decides: `parse` and `parse_general` always give the same answer,
        /// for canonical messages and for damaged ones.
        #[test]
        fn canonical_and_general_readers_agree(
            idr in "[A-Za-z0-9@.]{0,50}",
            counter in any::<u32>(),
            number in 0u16..3,
            v in any::<bool>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..4),
        ) {
            let (msg, ack) = canonical_pair(&idr, counter, number, v);
            prop_assert!(canonical_msk(&msg).is_some());
            prop_assert!(canonical_ack(&ack).is_some());
            for (b, is_ack) in [(mutate(msg, &edits), false), (mutate(ack, &edits), true)] {
                if is_ack {
                    let fast = MskAckView::parse(&b);
                    let general = MskAckView::parse_general(&b);
                    prop_assert_eq!(format!("{fast:?}"), format!("{general:?}"));
                } else {
                    let fast = MskView::parse(&b);
                    let general = MskView::parse_general(&b);
                    prop_assert_eq!(format!("{fast:?}"), format!("{general:?}"));
                }
            }
        }
    }

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

    /// The BM-SC verifies an acknowledgement from the prepared MUK and the
    /// message's RAND alone (`msk_ack_key`), with no copy of the message's
    /// keys; another RAND or MUK does not verify it.
    #[test]
    fn ack_verifies_with_the_auth_key_alone() {
        let prepared = PreparedMuk::new(&muk());
        let m = delivery();
        let mut bytes = Vec::new();
        let keys = m.build_into(&prepared, &mut bytes).unwrap();
        let view = MskView::parse(&bytes).unwrap();
        let opened = view.open(&prepared).unwrap();
        let mut ack = Vec::new();
        view.ack_into(&opened, &mut ack).unwrap();
        let ack = MskAckView::parse(&ack).unwrap();
        let t = m.counter.to_be_bytes();
        let r = m.as_ref();
        let initiator = r.initiator(&t);
        let auth = prepared.msk_ack_key(&m.rand);
        assert_eq!(auth.mac(&[b"x"]), keys.mac_key().mac(&[b"x"]));
        ack.verify(&auth, initiator).unwrap();
        let mut other_rand = m.rand;
        other_rand[0] ^= 1;
        assert_eq!(
            ack.verify(&prepared.msk_ack_key(&other_rand), initiator),
            Err(ProfileError::MacMismatch)
        );
        let other_muk = PreparedMuk::new(&Muk::from_bytes([0; 32]));
        assert_eq!(
            ack.verify(&other_muk.msk_ack_key(&m.rand), initiator),
            Err(ProfileError::MacMismatch)
        );
    }

    /// Key data longer than the stack buffer of `open` (two sub-payloads,
    /// 52 bytes) is verified, decrypted on the heap, and refused by the
    /// profile; with the wrong MUK the MAC fails first.
    #[test]
    fn long_key_data_is_decrypted_after_the_mac_and_refused() {
        let kd = mikey::KeyData {
            kind: KeyKind::Tgk,
            key: mikey::SecretBytes::new(vec![0x11; 16]),
            salt: None,
            validity: KeyValidity::Interval {
                from: vec![0, 1].into(),
                to: vec![0, 9].into(),
            },
        };
        let p = mikey::MessageBuilder::new(DataType::PSK_INIT)
            .verification_requested(true)
            .timestamp(Timestamp::Counter(5))
            .rand([0x33; RAND_LEN])
            .id(IDI_TYPE, "bmsc.home1.net")
            .id(IDR_TYPE, "btid@bsf.home1.net")
            .key_id(KEY_ID_TYPE_MSK, name(2).key_id())
            .protect(muk().as_bytes(), KEMAC_ENCR, &[kd.clone(), kd])
            .unwrap();
        let view = MskView::parse(p.bytes()).unwrap();
        let e = view.open(&PreparedMuk::new(&muk())).unwrap_err();
        assert!(e.to_string().contains("2 key data sub-payloads"), "{e}");
        assert_eq!(
            view.open(&PreparedMuk::new(&Muk::from_bytes([0; 32])))
                .unwrap_err(),
            ProfileError::MacMismatch
        );
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
