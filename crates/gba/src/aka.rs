//! UMTS AKA (TS 33.102 clause 6.3): authentication vectors on the network
//! side and a USIM model on the terminal side.
//!
//! * Network side (the HSS role, played by the BSF; TS 33.102 6.3.2):
//!   [`generate_vector`] builds `AV = RAND || XRES || CK || IK || AUTN` with
//!   `AUTN = (SQN xor AK) || AMF || MAC-A`; [`resync`] handles a
//!   synchronisation failure (TS 33.102 6.3.5) by checking MAC-S and
//!   returning SQN_MS.
//! * Terminal side (TS 33.102 6.3.3): [`Usim::authenticate`] checks AUTN and
//!   either returns RES, CK, IK or an AUTS for resynchronisation.
//!
//! Sequence number freshness follows the idea of TS 33.102 Annex C in a
//! simplified form: the USIM keeps only the highest accepted SQN (SQN_MS) and
//! accepts SQN when `SQN_MS < SQN <= SQN_MS + delta` (default delta 2^28,
//! [`DEFAULT_MAX_SQN_DELTA`]). No SEQ/IND split and no array of previous
//! SQNs.
//!
//! The nonce helpers [`aka_nonce_prefix`] and [`parse_aka_nonce`] implement
//! the Ub nonce layout `base64(RAND || AUTN || server data)` of TS 24.109
//! (PROFILE.md section 4).

use core::fmt;

use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::keys::{Ck, Ik, Opc, Res, SubscriberKey};
use crate::milenage::Milenage;

/// A RAND challenge (128 bits, TS 33.102 6.3.2).
pub type Rand = [u8; 16];

/// The Authentication Management Field (16 bits, TS 33.102 6.3.2).
pub type Amf = [u8; 2];

/// The dummy AMF used in MAC-S = f1*(SQN_MS || RAND || AMF) for
/// resynchronisation (TS 33.102 6.3.3 / 6.3.5: "a dummy value of all zeros").
pub const RESYNC_AMF: Amf = [0x00, 0x00];

/// Default freshness window of the [`Usim`]: SQN may exceed SQN_MS by at most
/// 2^28 (TS 33.102 Annex C.2.2 suggests a limit "delta"; the value is ours).
pub const DEFAULT_MAX_SQN_DELTA: u64 = 1 << 28;

/// Errors of the AKA procedures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AkaError {
    /// AUTN's MAC-A did not verify: network authentication failure
    /// (TS 33.102 6.3.3; TS 24.109 4.4). The UE must stop.
    #[error("AUTN MAC-A verification failed (network authentication failure)")]
    MacFailure,
    /// AUTS's MAC-S did not verify (TS 33.102 6.3.5).
    #[error("AUTS MAC-S verification failed")]
    ResyncMacFailure,
    /// A sequence number does not fit in 48 bits.
    #[error("sequence number {0:#x} does not fit in 48 bits")]
    SqnOutOfRange(u64),
    /// The 48-bit sequence number space is exhausted.
    #[error("sequence number space exhausted")]
    SqnExhausted,
    /// A value had the wrong length.
    #[error("{what}: expected {expected} bytes, got {got}")]
    InvalidLength {
        /// What was being decoded.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Supplied length.
        got: usize,
    },
    /// A base64 field (nonce or `auts`) did not decode.
    #[error("{0}: invalid base64")]
    InvalidBase64(&'static str),
}

/// A 48-bit sequence number SQN (TS 33.102 6.3.2, Annex C).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sqn48(u64);

impl Sqn48 {
    /// The largest SQN, 2^48 - 1.
    pub const MAX: Sqn48 = Sqn48((1 << 48) - 1);
    /// SQN 0.
    pub const ZERO: Sqn48 = Sqn48(0);

    /// A SQN from an integer; fails if it needs more than 48 bits.
    pub fn new(value: u64) -> Result<Self, AkaError> {
        if value > Self::MAX.0 {
            Err(AkaError::SqnOutOfRange(value))
        } else {
            Ok(Self(value))
        }
    }

    /// The SQN from its 6-octet big-endian encoding.
    pub fn from_bytes(bytes: [u8; 6]) -> Self {
        let mut b = [0u8; 8];
        b[2..].copy_from_slice(&bytes);
        Self(u64::from_be_bytes(b))
    }

    /// The 6-octet big-endian encoding.
    pub fn to_bytes(self) -> [u8; 6] {
        let b = self.0.to_be_bytes();
        let mut out = [0u8; 6];
        out.copy_from_slice(&b[2..]);
        out
    }

    /// The value as an integer.
    pub fn value(self) -> u64 {
        self.0
    }

    /// `self + n`, or `None` past 2^48 - 1.
    pub fn checked_add(self, n: u64) -> Option<Self> {
        self.0.checked_add(n).and_then(|v| Self::new(v).ok())
    }

    /// The next SQN (`self + 1`).
    pub fn next(self) -> Result<Self, AkaError> {
        self.checked_add(1).ok_or(AkaError::SqnExhausted)
    }

    /// Increments in place; on exhaustion leaves `self` unchanged.
    pub fn increment(&mut self) -> Result<(), AkaError> {
        *self = self.next()?;
        Ok(())
    }
}

impl fmt::Display for Sqn48 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// AUTN = (SQN xor AK) || AMF || MAC-A (128 bits, TS 33.102 6.3.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Autn(pub [u8; 16]);

impl Autn {
    /// Assembles AUTN from its parts.
    pub fn new(sqn_xor_ak: [u8; 6], amf: Amf, mac_a: [u8; 8]) -> Self {
        let mut b = [0u8; 16];
        b[0..6].copy_from_slice(&sqn_xor_ak);
        b[6..8].copy_from_slice(&amf);
        b[8..16].copy_from_slice(&mac_a);
        Self(b)
    }

    /// Parses AUTN from a slice of exactly 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, AkaError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| AkaError::InvalidLength {
                what: "AUTN",
                expected: 16,
                got: bytes.len(),
            })
    }

    /// SQN xor AK.
    pub fn sqn_xor_ak(&self) -> [u8; 6] {
        let mut o = [0u8; 6];
        o.copy_from_slice(&self.0[0..6]);
        o
    }

    /// AMF.
    pub fn amf(&self) -> Amf {
        [self.0[6], self.0[7]]
    }

    /// MAC-A.
    pub fn mac_a(&self) -> [u8; 8] {
        let mut o = [0u8; 8];
        o.copy_from_slice(&self.0[8..16]);
        o
    }

    /// The 16 octets.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for Autn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Autn({})", hex::encode(self.0))
    }
}

/// AUTS = (SQN_MS xor AK*) || MAC-S (112 bits, TS 33.102 6.3.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Auts(pub [u8; 14]);

impl Auts {
    /// Parses AUTS from a slice of exactly 14 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, AkaError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| AkaError::InvalidLength {
                what: "AUTS",
                expected: 14,
                got: bytes.len(),
            })
    }

    /// Decodes the RFC 3310 3.4 `auts` Digest parameter (standard base64).
    pub fn from_base64(text: &str) -> Result<Self, AkaError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| AkaError::InvalidBase64("auts"))?;
        Self::from_slice(&bytes)
    }

    /// Standard base64, the value of the RFC 3310 `auts` Digest parameter.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// SQN_MS xor AK*.
    pub fn concealed_sqn(&self) -> [u8; 6] {
        let mut o = [0u8; 6];
        o.copy_from_slice(&self.0[0..6]);
        o
    }

    /// MAC-S.
    pub fn mac_s(&self) -> [u8; 8] {
        let mut o = [0u8; 8];
        o.copy_from_slice(&self.0[6..14]);
        o
    }

    /// The 14 octets.
    pub fn as_bytes(&self) -> &[u8; 14] {
        &self.0
    }
}

impl fmt::Debug for Auts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Auts({})", hex::encode(self.0))
    }
}

/// An authentication vector (TS 33.102 6.3.2). XRES, CK and IK are secrets
/// that zeroize on drop; `Debug` shows only RAND and AUTN.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthVector {
    /// The random challenge.
    pub rand: Rand,
    /// Expected response XRES = f2.
    pub xres: Res,
    /// CK = f3.
    pub ck: Ck,
    /// IK = f4.
    pub ik: Ik,
    /// AUTN = (SQN xor AK) || AMF || MAC-A.
    pub autn: Autn,
}

impl fmt::Debug for AuthVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthVector")
            .field("rand", &hex::encode(self.rand))
            .field("xres", &"<redacted>")
            .field("ck", &"<redacted>")
            .field("ik", &"<redacted>")
            .field("autn", &self.autn)
            .finish()
    }
}

fn xor6(a: &[u8; 6], b: &[u8; 6]) -> [u8; 6] {
    let mut o = [0u8; 6];
    for (o, (x, y)) in o.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    o
}

/// Generates an authentication vector (TS 33.102 6.3.2, HSS side).
///
/// The caller owns SQN management (TS 33.102 Annex C): pass a fresh SQN_HE
/// for every vector and increment it afterwards, and after a [`resync`] use a
/// SQN greater than the recovered SQN_MS.
pub fn generate_vector(
    k: &SubscriberKey,
    opc: &Opc,
    sqn: Sqn48,
    amf: Amf,
    rand: Rand,
) -> AuthVector {
    let m = Milenage::new(k, opc);
    let sqn_bytes = sqn.to_bytes();
    let mac_a = m.f1(&rand, &sqn_bytes, &amf);
    let out = m.f2345(&rand);
    let autn = Autn::new(xor6(&sqn_bytes, &out.ak), amf, mac_a);
    AuthVector {
        rand,
        xres: out.res.clone(),
        ck: out.ck.clone(),
        ik: out.ik.clone(),
        autn,
    }
}

/// Handles a synchronisation failure on the network side (TS 33.102 6.3.5):
/// recovers SQN_MS = (SQN_MS xor AK*) xor f5*(RAND) and checks
/// MAC-S = f1*(SQN_MS || RAND || AMF = 0x0000) in constant time.
///
/// `rand` is the RAND of the challenge that failed. On success the caller
/// sets SQN_HE to the returned SQN_MS and generates new vectors from
/// `sqn_ms.next()`.
pub fn resync(k: &SubscriberKey, opc: &Opc, rand: &Rand, auts: &Auts) -> Result<Sqn48, AkaError> {
    let m = Milenage::new(k, opc);
    let ak_star = m.f5_star(rand);
    let sqn_ms = xor6(&auts.concealed_sqn(), &ak_star);
    let xmac_s = m.f1_star(rand, &sqn_ms, &RESYNC_AMF);
    if bool::from(xmac_s.ct_eq(&auts.mac_s())) {
        Ok(Sqn48::from_bytes(sqn_ms))
    } else {
        Err(AkaError::ResyncMacFailure)
    }
}

/// What the USIM answers to a (RAND, AUTN) challenge.
#[derive(Clone, PartialEq, Eq)]
pub enum AkaOutcome {
    /// AUTN verified and SQN was fresh (TS 33.102 6.3.3).
    Success {
        /// RES = f2.
        res: Res,
        /// CK = f3.
        ck: Ck,
        /// IK = f4.
        ik: Ik,
    },
    /// AUTN verified but SQN was not in the acceptable range: send AUTS.
    SyncFailure {
        /// AUTS = (SQN_MS xor AK*) || MAC-S.
        auts: Auts,
    },
}

impl fmt::Debug for AkaOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success { .. } => {
                f.write_str("Success { res: <redacted>, ck: <redacted>, ik: <redacted> }")
            }
            Self::SyncFailure { auts } => {
                f.debug_struct("SyncFailure").field("auts", auts).finish()
            }
        }
    }
}

/// A model of the USIM's AKA function (TS 33.102 6.3.3) with the simplified
/// freshness rule described in the module documentation.
#[derive(Clone)]
pub struct Usim {
    k: SubscriberKey,
    opc: Opc,
    sqn_ms: Sqn48,
    max_delta: u64,
}

impl fmt::Debug for Usim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Usim")
            .field("k", &"<redacted>")
            .field("opc", &"<redacted>")
            .field("sqn_ms", &self.sqn_ms)
            .field("max_delta", &self.max_delta)
            .finish()
    }
}

impl Usim {
    /// A USIM holding K, OPc and the highest accepted sequence number SQN_MS
    /// (use [`Sqn48::ZERO`] for a fresh card). The freshness window is
    /// [`DEFAULT_MAX_SQN_DELTA`].
    pub fn new(k: SubscriberKey, opc: Opc, sqn_ms: Sqn48) -> Self {
        Self {
            k,
            opc,
            sqn_ms,
            max_delta: DEFAULT_MAX_SQN_DELTA,
        }
    }

    /// Sets the freshness window delta: SQN is accepted if
    /// `SQN_MS < SQN <= SQN_MS + delta`.
    pub fn with_max_delta(mut self, delta: u64) -> Self {
        self.max_delta = delta;
        self
    }

    /// The highest SQN accepted so far.
    pub fn sqn_ms(&self) -> Sqn48 {
        self.sqn_ms
    }

    /// The freshness window delta.
    pub fn max_delta(&self) -> u64 {
        self.max_delta
    }

    /// Runs AKA on the USIM (TS 33.102 6.3.3):
    ///
    /// 1. AK = f5(RAND), SQN = (SQN xor AK) xor AK;
    /// 2. XMAC = f1(SQN || RAND || AMF), compared with MAC-A in constant time;
    ///    on mismatch: [`AkaError::MacFailure`], state unchanged;
    /// 3. if SQN is fresh: SQN_MS := SQN and [`AkaOutcome::Success`];
    ///    otherwise [`AkaOutcome::SyncFailure`] with
    ///    AUTS = (SQN_MS xor f5*(RAND)) || f1*(SQN_MS || RAND || 0x0000),
    ///    state unchanged.
    pub fn authenticate(&mut self, rand: &Rand, autn: &Autn) -> Result<AkaOutcome, AkaError> {
        let m = Milenage::new(&self.k, &self.opc);
        let out = m.f2345(rand);
        let sqn_bytes = xor6(&autn.sqn_xor_ak(), &out.ak);
        let xmac = m.f1(rand, &sqn_bytes, &autn.amf());
        if !bool::from(xmac.ct_eq(&autn.mac_a())) {
            return Err(AkaError::MacFailure);
        }
        let sqn = Sqn48::from_bytes(sqn_bytes);
        let fresh = sqn > self.sqn_ms && sqn.value() - self.sqn_ms.value() <= self.max_delta;
        if fresh {
            self.sqn_ms = sqn;
            Ok(AkaOutcome::Success {
                res: out.res.clone(),
                ck: out.ck.clone(),
                ik: out.ik.clone(),
            })
        } else {
            let sqn_ms = self.sqn_ms.to_bytes();
            let concealed = xor6(&sqn_ms, &m.f5_star(rand));
            let mac_s = m.f1_star(rand, &sqn_ms, &RESYNC_AMF);
            let mut auts = [0u8; 14];
            auts[0..6].copy_from_slice(&concealed);
            auts[6..14].copy_from_slice(&mac_s);
            Ok(AkaOutcome::SyncFailure { auts: Auts(auts) })
        }
    }
}

/// The first 32 octets of a Ub nonce: RAND || AUTN (TS 24.109 Table A.4-1;
/// PROFILE.md section 4). A BSF passes it as the nonce prefix to
/// [`crate::digest::DigestServer::issue_nonce_with_prefix`], which appends
/// its own server data.
pub fn aka_nonce_prefix(rand: &Rand, autn: &Autn) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[..16].copy_from_slice(rand);
    p[16..].copy_from_slice(autn.as_bytes());
    p
}

/// Extracts RAND and AUTN from a Ub nonce `base64(RAND || AUTN || server
/// data)` (TS 24.109 A.3; PROFILE.md section 4). Server data, if any, is
/// ignored.
pub fn parse_aka_nonce(nonce: &str) -> Result<(Rand, Autn), AkaError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(nonce.trim())
        .map_err(|_| AkaError::InvalidBase64("nonce"))?;
    let (rand, rest) = bytes
        .split_first_chunk::<16>()
        .ok_or(AkaError::InvalidLength {
            what: "AKA nonce",
            expected: 32,
            got: bytes.len(),
        })?;
    let (autn, _) = rest
        .split_first_chunk::<16>()
        .ok_or(AkaError::InvalidLength {
            what: "AKA nonce",
            expected: 32,
            got: bytes.len(),
        })?;
    Ok((*rand, Autn(*autn)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn set1() -> (SubscriberKey, Opc, Rand, Sqn48, Amf) {
        (
            SubscriberKey::from_bytes(h("465b5ce8b199b49faa5f0a2ee238a6bc")),
            Opc::from_bytes(h("cd63cb71954a9f4e48a5994e37a02baf")),
            h("23553cbe9637a89d218ae64dae47bf35"),
            Sqn48::from_bytes(h("ff9bb4d0b607")),
            h("b9b9"),
        )
    }

    #[test]
    fn vector_matches_digest_12_1() {
        let (k, opc, rand, sqn, amf) = set1();
        let av = generate_vector(&k, &opc, sqn, amf, rand);
        assert_eq!(av.autn.0, h("55f328b43577b9b94a9ffac354dfafb3"));
        assert_eq!(av.xres.as_bytes(), &h("a54211d5e3ba50bf"));
        let dbg = format!("{av:?}");
        assert!(!dbg.contains("a54211d5e3ba50bf"));
        assert!(!dbg.contains("b40ba9a3"));
    }

    #[test]
    fn usim_accepts_fresh_and_rejects_replay() {
        let (k, opc, rand, _, amf) = set1();
        let mut usim = Usim::new(k.clone(), opc.clone(), Sqn48::new(10).unwrap());
        let av = generate_vector(&k, &opc, Sqn48::new(11).unwrap(), amf, rand);
        match usim.authenticate(&av.rand, &av.autn).unwrap() {
            AkaOutcome::Success { res, ck, ik } => {
                assert_eq!(res, av.xres);
                assert_eq!(ck, av.ck);
                assert_eq!(ik, av.ik);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(usim.sqn_ms().value(), 11);
        // Same vector again: replay -> sync failure, AUTS carries SQN_MS = 11.
        match usim.authenticate(&av.rand, &av.autn).unwrap() {
            AkaOutcome::SyncFailure { auts } => {
                assert_eq!(resync(&k, &opc, &rand, &auts).unwrap().value(), 11);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(usim.sqn_ms().value(), 11);
    }

    #[test]
    fn usim_delta_window() {
        let (k, opc, rand, _, amf) = set1();
        let mut usim =
            Usim::new(k.clone(), opc.clone(), Sqn48::new(100).unwrap()).with_max_delta(5);
        let far = generate_vector(&k, &opc, Sqn48::new(106).unwrap(), amf, rand);
        assert!(matches!(
            usim.authenticate(&far.rand, &far.autn).unwrap(),
            AkaOutcome::SyncFailure { .. }
        ));
        let edge = generate_vector(&k, &opc, Sqn48::new(105).unwrap(), amf, rand);
        assert!(matches!(
            usim.authenticate(&edge.rand, &edge.autn).unwrap(),
            AkaOutcome::Success { .. }
        ));
    }

    #[test]
    fn usim_mac_failure_changes_nothing() {
        let (k, opc, rand, _, amf) = set1();
        let mut usim = Usim::new(k.clone(), opc.clone(), Sqn48::new(1).unwrap());
        let av = generate_vector(&k, &opc, Sqn48::new(2).unwrap(), amf, rand);
        let mut bad = av.autn;
        bad.0[15] ^= 1;
        assert_eq!(usim.authenticate(&av.rand, &bad), Err(AkaError::MacFailure));
        assert_eq!(usim.sqn_ms().value(), 1);
        // A different AMF also breaks MAC-A.
        let mut bad_amf = av.autn;
        bad_amf.0[6] ^= 0x80;
        assert_eq!(
            usim.authenticate(&av.rand, &bad_amf),
            Err(AkaError::MacFailure)
        );
    }

    #[test]
    fn resync_rejects_bad_mac_s() {
        let (k, opc, rand, _, _) = set1();
        let mut auts = Auts([0u8; 14]);
        assert_eq!(
            resync(&k, &opc, &rand, &auts),
            Err(AkaError::ResyncMacFailure)
        );
        auts.0[13] = 1;
        assert_eq!(
            resync(&k, &opc, &rand, &auts),
            Err(AkaError::ResyncMacFailure)
        );
    }

    #[test]
    fn sqn_arithmetic() {
        assert!(Sqn48::new(1 << 48).is_err());
        let mut s = Sqn48::new(0xffff_ffff_fffe).unwrap();
        s.increment().unwrap();
        assert_eq!(s, Sqn48::MAX);
        assert_eq!(s.increment(), Err(AkaError::SqnExhausted));
        assert_eq!(s, Sqn48::MAX);
        let x = Sqn48::from_bytes(h("ff9bb4d0b607"));
        assert_eq!(x.to_bytes(), h("ff9bb4d0b607"));
        assert_eq!(x.to_string(), "ff9bb4d0b607");
    }

    #[test]
    fn nonce_helpers() {
        let (k, opc, rand, sqn, amf) = set1();
        let av = generate_vector(&k, &opc, sqn, amf, rand);
        let nonce =
            base64::engine::general_purpose::STANDARD.encode(aka_nonce_prefix(&av.rand, &av.autn));
        assert_eq!(nonce, "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M=");
        assert_eq!(parse_aka_nonce(&nonce).unwrap(), (av.rand, av.autn));
        assert!(matches!(
            parse_aka_nonce("AAAA"),
            Err(AkaError::InvalidLength { .. })
        ));
        assert!(matches!(
            parse_aka_nonce("!!"),
            Err(AkaError::InvalidBase64(_))
        ));
    }

    #[test]
    fn auts_base64() {
        let a = Auts([7u8; 14]);
        assert_eq!(Auts::from_base64(&a.to_base64()).unwrap(), a);
        assert!(Auts::from_base64("AAAA").is_err());
        assert!(Auts::from_base64("%%%").is_err());
    }
}
