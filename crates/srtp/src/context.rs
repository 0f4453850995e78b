//! SRTP/SRTCP crypto contexts (RFC 3711 3.2): a [`Sender`] and a
//! [`Receiver`], each holding several master keys selected by MKI and one
//! stream state per SSRC (ROC / highest index, replay windows, SRTCP index).

use aes::Aes128;
use ctr::cipher::{InnerIvInit, StreamCipher};
use hmac::Mac;
use subtle::ConstantTimeEq;

use crate::error::{ConfigError, Error, PacketKind};
use crate::keys::{DirectionKeys, MasterKey, Mki, SessionKeys, MAX_MKI_LEN};
use crate::packet::{parse_rtcp, parse_rtp, RTCP_CLEAR, RTP_FIXED};
use crate::replay::{Check, ReplayWindow};

/// Most master keys one context holds (MBMS needs two: the current and the
/// next MTK; a few more allow overlapping MSKs).
pub const MAX_KEYS: usize = 16;

/// MBMS MKI length: MSK ID (4 bytes) || MTK ID (2 bytes). PROFILE.md
/// section 8 (choice, DIGEST.md 10.2).
pub const MBMS_MKI_LEN: usize = 6;

/// Default replay window (RFC 3711 3.3.2 asks for at least 64).
pub const DEFAULT_REPLAY_WINDOW: usize = 64;

/// Largest replay window accepted (the bitmap costs 1 bit per packet).
pub const MAX_REPLAY_WINDOW: usize = 32768;

/// Default for [`Config::max_streams`].
pub const DEFAULT_MAX_STREAMS: usize = 64;

/// Largest SRTP packet index (48 bits, RFC 3711 3.3.1).
const MAX_RTP_INDEX: u64 = (1 << 48) - 1;
/// Largest SRTCP index (31 bits, RFC 3711 3.4).
const MAX_RTCP_INDEX: u32 = (1 << 31) - 1;
const E_BIT: u32 = 1 << 31;

/// SRTP/SRTCP encryption transform (RFC 3711 4.1; MIKEY SP parameter type 0,
/// RFC 3830 6.10.1: 0 = NULL, 1 = AES-CM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// The NULL cipher (RFC 3711 4.1.3): payloads stay in clear.
    Null,
    /// AES in counter mode with a 128-bit session key (RFC 3711 4.1.1).
    AesCm128,
}

/// SRTP/SRTCP message authentication transform (RFC 3711 4.2; MIKEY SP
/// parameter type 2: 0 = NULL, 1 = HMAC-SHA-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Auth {
    /// No message authentication: no tag (RFC 3711 7.5 allows it).
    Null,
    /// HMAC-SHA-1 with a 160-bit session authentication key (RFC 3711
    /// 4.2.1), truncated to the suite's tag length.
    HmacSha1,
}

/// Most bytes an HMAC-SHA-1 tag can have (RFC 3711 4.2.1: the 160-bit
/// HMAC-SHA-1 output, truncated to the tag length).
pub const MAX_TAG_LEN: usize = 20;

/// SRTCP tag length with HMAC-SHA-1 when the SRTP tag is shorter: 80 bits
/// (RFC 4568 6.2.1: the _32 suites keep an 80-bit SRTCP tag; libsrtp does
/// the same).
pub const MIN_RTCP_TAG_LEN: usize = 10;

/// SRTP crypto suite: the encryption and authentication transforms and
/// the SRTP tag length. Confidentiality and integrity are chosen
/// independently (seed 000 6.3.2.2.2): every combination of [`Cipher`]
/// and [`Auth`] is a valid suite. The session keys always come from the
/// AES-CM PRF with a 128-bit master key and a 112-bit master salt.
///
/// SRTCP uses the same transforms; its tag is the SRTP tag length, but at
/// least 80 bits ([`MIN_RTCP_TAG_LEN`]) with HMAC-SHA-1, and none with NULL
/// authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Suite {
    /// Encryption transform.
    pub cipher: Cipher,
    /// Authentication transform.
    pub auth: Auth,
    /// SRTP tag length in bytes: 0 to [`MAX_TAG_LEN`] with HMAC-SHA-1 (0:
    /// SRTP packets carry no tag, SRTCP keeps its 80-bit one), 0 with NULL
    /// authentication.
    pub tag_len: u8,
}

impl Default for Suite {
    /// [`Suite::AES_CM_128_HMAC_SHA1_80`], the MBMS default (PROFILE.md
    /// section 8).
    fn default() -> Suite {
        Suite::AES_CM_128_HMAC_SHA1_80
    }
}

impl Suite {
    /// AES_CM_128_HMAC_SHA1_80 (RFC 4568 6.2.1): 80-bit tag. The MBMS
    /// default (PROFILE.md section 8).
    pub const AES_CM_128_HMAC_SHA1_80: Suite = Suite {
        cipher: Cipher::AesCm128,
        auth: Auth::HmacSha1,
        tag_len: 10,
    };
    /// AES_CM_128_HMAC_SHA1_32 (RFC 4568 6.2.1): 32-bit SRTP tag, 80-bit
    /// SRTCP tag.
    pub const AES_CM_128_HMAC_SHA1_32: Suite = Suite {
        cipher: Cipher::AesCm128,
        auth: Auth::HmacSha1,
        tag_len: 4,
    };
    /// NULL_HMAC_SHA1_80 (RFC 5764 4.1.2 SRTP_NULL_HMAC_SHA1_80, libsrtp
    /// NULL_CIPHER_HMAC_SHA1_80): integrity without confidentiality.
    pub const NULL_HMAC_SHA1_80: Suite = Suite {
        cipher: Cipher::Null,
        auth: Auth::HmacSha1,
        tag_len: 10,
    };
    /// NULL_HMAC_SHA1_32 (RFC 5764 4.1.2 SRTP_NULL_HMAC_SHA1_32): 32-bit
    /// SRTP tag, 80-bit SRTCP tag, no encryption.
    pub const NULL_HMAC_SHA1_32: Suite = Suite {
        cipher: Cipher::Null,
        auth: Auth::HmacSha1,
        tag_len: 4,
    };
    /// AES_CM_128_NULL_AUTH (libsrtp): confidentiality without integrity.
    pub const AES_CM_128_NULL_AUTH: Suite = Suite {
        cipher: Cipher::AesCm128,
        auth: Auth::Null,
        tag_len: 0,
    };
    /// NULL_CIPHER_NULL_AUTH (libsrtp null_cipher_hmac_null): neither; the
    /// packets still carry the MKI and are replay-checked.
    pub const NULL_CIPHER_NULL_AUTH: Suite = Suite {
        cipher: Cipher::Null,
        auth: Auth::Null,
        tag_len: 0,
    };

    /// The named suites, with their names.
    pub const NAMED: [(&'static str, Suite); 6] = [
        ("AES_CM_128_HMAC_SHA1_80", Suite::AES_CM_128_HMAC_SHA1_80),
        ("AES_CM_128_HMAC_SHA1_32", Suite::AES_CM_128_HMAC_SHA1_32),
        ("NULL_HMAC_SHA1_80", Suite::NULL_HMAC_SHA1_80),
        ("NULL_HMAC_SHA1_32", Suite::NULL_HMAC_SHA1_32),
        ("AES_CM_128_NULL_AUTH", Suite::AES_CM_128_NULL_AUTH),
        ("NULL_CIPHER_NULL_AUTH", Suite::NULL_CIPHER_NULL_AUTH),
    ];

    /// The suite with this name (one of [`Suite::NAMED`]).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::NAMED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
    }

    /// SRTP authentication tag length in bytes.
    pub const fn rtp_tag_len(self) -> usize {
        match self.auth {
            Auth::Null => 0,
            Auth::HmacSha1 => self.tag_len as usize,
        }
    }

    /// SRTCP authentication tag length in bytes: none with NULL
    /// authentication, else the SRTP tag length but at least 80 bits.
    pub const fn rtcp_tag_len(self) -> usize {
        match self.auth {
            Auth::Null => 0,
            Auth::HmacSha1 => {
                if (self.tag_len as usize) < MIN_RTCP_TAG_LEN {
                    MIN_RTCP_TAG_LEN
                } else {
                    self.tag_len as usize
                }
            }
        }
    }

    /// The name of a named suite ([`Suite::NAMED`]).
    pub fn name(self) -> Option<&'static str> {
        Suite::NAMED
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(n, _)| *n)
    }

    /// Checks the suite: a tag needs an authentication transform, and
    /// HMAC-SHA-1 gives at most 20 bytes.
    pub fn validate(self) -> Result<(), ConfigError> {
        match self.auth {
            Auth::Null if self.tag_len != 0 => Err(ConfigError::TagWithoutAuthentication {
                tag_len: self.tag_len as usize,
            }),
            Auth::HmacSha1 if self.tag_len as usize > MAX_TAG_LEN => Err(ConfigError::TagTooLong {
                tag_len: self.tag_len as usize,
            }),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => {
                let c = match self.cipher {
                    Cipher::Null => "NULL",
                    Cipher::AesCm128 => "AES_CM_128",
                };
                match self.auth {
                    Auth::Null => write!(f, "{c}_NULL_AUTH (tag {} bytes)", self.tag_len),
                    Auth::HmacSha1 => write!(f, "{c}_HMAC_SHA1_{}", 8 * self.tag_len as usize),
                }
            }
        }
    }
}

/// RFC 4771 integrity transform mode (the MIKEY SP "authentication
/// algorithm" values 2, 3 and 4, RFC 4771 section 5).
///
/// In every mode a packet with `SEQ mod R == 0` carries the sender's ROC in
/// its tag field. The modes differ in the tag of those packets and in what
/// the other packets carry:
///
/// | mode | SEQ mod R == 0 | other packets |
/// |---|---|---|
/// | RCCm1 | ROC (4 bytes) \|\| MAC truncated by 32 bits | no tag: not integrity protected |
/// | RCCm2 | ROC (4 bytes) \|\| MAC truncated by 32 bits | the default transform: the full tag |
/// | RCCm3 | ROC (4 bytes) only, no MAC | no tag |
///
/// The MAC is the default one, HMAC-SHA-1(auth_key, authenticated portion
/// || ROC), with the ROC carried in the packet; truncating it by 32 bits
/// keeps the tag field at the suite's tag length (80 bits: ROC + 48-bit
/// MAC). RCCm3 gives no integrity protection at all and RCCm1 none to most
/// packets: they are only for networks that protect integrity by other
/// means.
///
/// The receiver verifies a ROC-carrying packet with ROC_sender in place of
/// its local ROC and then adopts it (RFC 4771: "ROC_local is replaced by
/// ROC_sender"); this crate adopts it only forward: an index behind the
/// replay window stays refused, so a replayed old ROC-carrying packet cannot
/// pull the receiver back (a lower ROC from a live sender would mean index
/// reuse under one key anyway).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RccMode {
    /// RCCm1: integrity protection only on the ROC-carrying packets.
    Rccm1,
    /// RCCm2: every packet integrity protected (the safe default).
    Rccm2,
    /// RCCm3: ROC carried without integrity protection, other packets have
    /// no tag.
    Rccm3,
}

/// RFC 4771 ROC transport: mode and rate R (every packet whose SEQ is a
/// multiple of R carries the ROC). Signalled with MIKEY SP parameters 2
/// (mode) and 13 (R).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rcc {
    /// The mode.
    pub mode: RccMode,
    /// R, at least 1.
    pub rate: u16,
}

/// Configuration of a [`Sender`] or [`Receiver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The crypto suite.
    pub suite: Suite,
    /// MKI length in bytes, 0 for none; every key of the context has an MKI
    /// of this length. MBMS: [`MBMS_MKI_LEN`].
    pub mki_len: usize,
    /// Replay window in packets (64 to 32768; SRTP and SRTCP each have one
    /// per SSRC).
    pub replay_window: usize,
    /// RFC 4771 ROC transport, if used.
    pub rcc: Option<Rcc>,
    /// Encrypt SRTP payloads (MIKEY SP parameter 7, RFC 3830 6.10.1); no
    /// effect with the NULL cipher. Sender and receiver must agree.
    pub srtp_encryption: bool,
    /// Sender: encrypt SRTCP (E bit set; MIKEY SP parameter 8); no effect
    /// with the NULL cipher. Receivers follow the E bit of each packet.
    pub srtcp_encryption: bool,
    /// Most SSRCs tracked at once; a new SSRC beyond it is refused.
    pub max_streams: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            suite: Suite::default(),
            mki_len: 0,
            replay_window: DEFAULT_REPLAY_WINDOW,
            rcc: None,
            srtp_encryption: true,
            srtcp_encryption: true,
            max_streams: DEFAULT_MAX_STREAMS,
        }
    }
}

impl Config {
    /// The MBMS profile (PROFILE.md section 8): AES_CM_128_HMAC_SHA1_80 and
    /// a 6-byte MKI (MSK ID || MTK ID).
    pub fn mbms() -> Config {
        Config {
            mki_len: MBMS_MKI_LEN,
            ..Config::default()
        }
    }

    /// Checks the configuration. Refused are only the combinations no
    /// protocol defines: a tag longer than HMAC-SHA-1 or a tag without an
    /// authentication transform ([`Suite::validate`]), RFC 4771 without
    /// HMAC-SHA-1 or with a tag too short for the ROC, an MKI over 32 bytes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.suite.validate()?;
        if self.mki_len > MAX_MKI_LEN {
            return Err(ConfigError::MkiTooLong(self.mki_len));
        }
        if !(DEFAULT_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&self.replay_window) {
            return Err(ConfigError::ReplayWindow(self.replay_window));
        }
        if self.max_streams == 0 {
            return Err(ConfigError::ZeroStreams);
        }
        if let Some(rcc) = self.rcc {
            if rcc.rate == 0 {
                return Err(ConfigError::ZeroRate);
            }
            // RFC 4771 3: the RCC modes are integrity transforms built on
            // the default HMAC-SHA-1 one (RCCm3 included: SRTCP keeps it).
            if self.suite.auth != Auth::HmacSha1 {
                return Err(ConfigError::RccNeedsAuthentication { mode: rcc.mode });
            }
            let t = self.suite.rtp_tag_len();
            if rcc.mode != RccMode::Rccm3 && t <= 4 {
                return Err(ConfigError::RccTagTooShort {
                    mode: rcc.mode,
                    tag_len: t,
                });
            }
        }
        Ok(())
    }

    /// Most bytes SRTP adds to an RTP packet: MKI and tag. A caller's
    /// buffer for `protect_rtp` needs this much room after the packet.
    pub fn rtp_overhead(&self) -> usize {
        // RFC 4771: a ROC-carrying packet has the 4-byte ROC after the MKI
        // (RCCm3: the ROC alone, whatever the tag length).
        let trailer = match self.rcc {
            Some(_) => self.suite.rtp_tag_len().max(4),
            None => self.suite.rtp_tag_len(),
        };
        self.mki_len + trailer
    }

    /// Bytes SRTCP adds to an RTCP packet: E || index, MKI and tag.
    pub fn rtcp_overhead(&self) -> usize {
        4 + self.mki_len + self.suite.rtcp_tag_len()
    }

    /// Whether SRTP payloads are encrypted (AES-CM and SRTP encryption on).
    pub fn encrypts_rtp(&self) -> bool {
        self.suite.cipher != Cipher::Null && self.srtp_encryption
    }

    /// Whether a sender encrypts SRTCP (AES-CM and SRTCP encryption on).
    pub fn encrypts_rtcp(&self) -> bool {
        self.suite.cipher != Cipher::Null && self.srtcp_encryption
    }

    /// The SRTP trailer (after the MKI) of a packet with this SEQ.
    #[inline]
    fn trailer(&self, seq: u16) -> Trailer {
        let t = self.suite.rtp_tag_len();
        match self.rcc {
            None => Trailer::Tag(t),
            Some(Rcc { mode, rate }) => {
                // RFC 4771: the ROC travels in packets with SEQ mod R == 0.
                if seq.is_multiple_of(rate) {
                    match mode {
                        RccMode::Rccm3 => Trailer::RocOnly,
                        RccMode::Rccm1 | RccMode::Rccm2 => Trailer::RocMac(t - 4),
                    }
                } else {
                    match mode {
                        RccMode::Rccm2 => Trailer::Tag(t),
                        RccMode::Rccm1 | RccMode::Rccm3 => Trailer::Nothing,
                    }
                }
            }
        }
    }
}

/// What follows the MKI in an SRTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trailer {
    /// RFC 3711 default transform: a tag of this many bytes.
    Tag(usize),
    /// RFC 4771 RCCm1/RCCm2 ROC-carrying packet: ROC || MAC of this length.
    RocMac(usize),
    /// RFC 4771 RCCm3 ROC-carrying packet: the ROC alone.
    RocOnly,
    /// RFC 4771 RCCm1/RCCm3 other packet: no tag.
    Nothing,
}

impl Trailer {
    #[inline]
    fn len(self) -> usize {
        match self {
            Trailer::Tag(t) => t,
            Trailer::RocMac(m) => 4 + m,
            Trailer::RocOnly => 4,
            Trailer::Nothing => 0,
        }
    }
}

/// A successfully unprotected SRTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unprotected {
    /// Length of the RTP packet now at the start of the buffer.
    pub len: usize,
    /// SSRC.
    pub ssrc: u32,
    /// RTP sequence number.
    pub seq: u16,
    /// The rollover counter of this packet.
    pub roc: u32,
    /// The 48-bit packet index, ROC * 65536 + SEQ.
    pub index: u64,
    /// The MKI of the key that was used (empty without MKI).
    pub mki: Mki,
    /// False for packets that carried no MAC (NULL authentication, a
    /// zero-length tag, RFC 4771 RCCm1 packets with SEQ mod R != 0, and all
    /// RCCm3 packets).
    pub authenticated: bool,
    /// True if the ROC came from the packet (RFC 4771) rather than from
    /// index estimation.
    pub roc_from_packet: bool,
}

/// A successfully unprotected SRTCP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcpUnprotected {
    /// Length of the (compound) RTCP packet now at the start of the buffer.
    pub len: usize,
    /// SSRC of the first RTCP packet.
    pub ssrc: u32,
    /// The 31-bit SRTCP index.
    pub index: u32,
    /// The E bit: the packet was encrypted.
    pub encrypted: bool,
    /// The MKI of the key that was used.
    pub mki: Mki,
    /// False under NULL authentication (the packet carried no tag).
    pub authenticated: bool,
}

/// Per-SSRC state.
struct Stream {
    ssrc: u32,
    /// SRTP: highest index and received indices (receiver), or indices used
    /// (sender: protecting an index twice would reuse keystream).
    rtp: ReplayWindow,
    /// ROC known before any packet (set_roc, e.g. from the MTK message's
    /// SRTP-ID map).
    roc_hint: Option<u32>,
    /// Receiver: SRTCP replay window.
    rtcp: ReplayWindow,
    /// Sender: next SRTCP index.
    rtcp_next: u32,
}

impl Stream {
    fn new(ssrc: u32, window: usize, roc_hint: Option<u32>) -> Stream {
        Stream {
            ssrc,
            rtp: ReplayWindow::new(window),
            roc_hint,
            rtcp: ReplayWindow::new(window),
            rtcp_next: 0,
        }
    }
}

/// RFC 3711 3.3.1 / Appendix A: the index of a packet with sequence number
/// `seq`, given the highest index received so far (its ROC and s_l).
#[inline]
fn estimate_index(highest: u64, seq: u16) -> Option<u64> {
    let roc = (highest >> 16) as i64;
    let s_l = (highest & 0xffff) as i64;
    let s = seq as i64;
    let v = if s_l < 32768 {
        if s - s_l > 32768 {
            roc - 1
        } else {
            roc
        }
    } else if s_l - 32768 > s {
        roc + 1
    } else {
        roc
    };
    if !(0..=u32::MAX as i64).contains(&v) {
        return None;
    }
    Some(((v as u64) << 16) | seq as u64)
}

/// AES-CM (RFC 3711 4.1.1) in place: IV = (k_s * 2^16) XOR (SSRC * 2^64)
/// XOR (i * 2^16). The `ctr` crate runs the AES key schedule we expanded
/// once per session key, eight blocks at a time with AES-NI.
#[inline]
fn aes_cm(keys: &DirectionKeys, ssrc: u32, index: u64, data: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&keys.salt);
    for (a, b) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *a ^= b;
    }
    for (a, b) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *a ^= b;
    }
    let core =
        ctr::CtrCore::<&Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(&keys.aes, &iv.into());
    let mut c = ctr::cipher::StreamCipherCoreWrapper::from_core(core);
    c.apply_keystream(data);
}

/// HMAC-SHA-1 over `auth` (and `roc`, big-endian, for SRTP).
#[inline]
fn hmac(keys: &DirectionKeys, auth: &[u8], roc: Option<u32>) -> [u8; 20] {
    let mut m = keys.hmac.clone();
    m.update(auth);
    if let Some(roc) = roc {
        m.update(&roc.to_be_bytes());
    }
    m.finalize().into_bytes().into()
}

#[inline]
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// State shared by senders and receivers.
struct Core {
    cfg: Config,
    keys: Vec<SessionKeys>,
    active: Option<usize>,
    streams: Vec<Stream>,
    receiver: bool,
}

impl Core {
    fn new(cfg: Config, receiver: bool) -> Result<Core, ConfigError> {
        cfg.validate()?;
        Ok(Core {
            cfg,
            keys: Vec::with_capacity(2),
            active: None,
            streams: Vec::new(),
            receiver,
        })
    }

    fn add_key(&mut self, mk: &MasterKey) -> Result<(), ConfigError> {
        let mki = mk.mki();
        if mki.len() != self.cfg.mki_len {
            return Err(ConfigError::MkiLengthMismatch {
                expected: self.cfg.mki_len,
                got: mki.len(),
            });
        }
        if self.keys.iter().any(|k| k.mki == mki) {
            return Err(ConfigError::DuplicateMki(mki));
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(ConfigError::TooManyKeys);
        }
        self.keys.push(SessionKeys::derive(mk));
        if self.active.is_none() {
            self.active = Some(self.keys.len() - 1);
        }
        Ok(())
    }

    fn position(&self, mki: &Mki) -> Result<usize, ConfigError> {
        self.keys
            .iter()
            .position(|k| k.mki == *mki)
            .ok_or(ConfigError::NoSuchMki(*mki))
    }

    fn remove_key(&mut self, mki: &Mki) -> Result<(), ConfigError> {
        let i = self.position(mki)?;
        self.keys.remove(i);
        self.active = match self.active {
            Some(a) if a == i => None,
            Some(a) if a > i => Some(a - 1),
            other => other,
        };
        if self.active.is_none() && self.receiver && !self.keys.is_empty() {
            self.active = Some(0);
        }
        Ok(())
    }

    fn mkis(&self) -> impl Iterator<Item = Mki> + '_ {
        self.keys.iter().map(|k| k.mki)
    }

    #[inline]
    fn find_key(&self, mki: &[u8]) -> Option<usize> {
        if self.cfg.mki_len == 0 {
            return self.active;
        }
        self.keys.iter().position(|k| k.mki.as_bytes() == mki)
    }

    #[inline]
    fn stream(&self, ssrc: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.ssrc == ssrc)
    }

    fn new_stream(&mut self, ssrc: u32, roc_hint: Option<u32>) -> Result<usize, Error> {
        if self.streams.len() >= self.cfg.max_streams {
            return Err(Error::TooManyStreams {
                max: self.cfg.max_streams,
            });
        }
        self.streams
            .push(Stream::new(ssrc, self.cfg.replay_window, roc_hint));
        Ok(self.streams.len() - 1)
    }

    fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), Error> {
        match self.stream(ssrc) {
            Some(i) => {
                let s = &mut self.streams[i];
                if s.rtp.highest().map(|h| (h >> 16) as u32) != Some(roc) {
                    s.rtp = ReplayWindow::new(self.cfg.replay_window);
                    s.roc_hint = Some(roc);
                }
            }
            None => {
                self.new_stream(ssrc, Some(roc))?;
            }
        }
        Ok(())
    }

    fn roc(&self, ssrc: u32) -> Option<u32> {
        let s = &self.streams[self.stream(ssrc)?];
        match s.rtp.highest() {
            Some(h) => Some((h >> 16) as u32),
            None => s.roc_hint,
        }
    }

    /// The index of a packet whose trailer does not carry the ROC.
    #[inline]
    fn estimate(&self, si: Option<usize>, ssrc: u32, seq: u16) -> Result<u64, Error> {
        let s = si.map(|i| &self.streams[i]);
        match (s.and_then(|s| s.rtp.highest()), s.and_then(|s| s.roc_hint)) {
            (Some(h), _) => estimate_index(h, seq).ok_or(Error::IndexOutOfRange {
                kind: PacketKind::Rtp,
                ssrc,
            }),
            (None, Some(roc)) => Ok(((roc as u64) << 16) | seq as u64),
            (None, None) if self.receiver && self.cfg.rcc.is_some() => {
                Err(Error::RocUnknown { ssrc, seq })
            }
            // RFC 3711 3.3.1: the ROC starts at 0.
            (None, None) => Ok(seq as u64),
        }
    }
}

#[inline]
fn replay_error(kind: PacketKind, ssrc: u32, index: u64, c: Check, window: u64) -> Error {
    match c {
        Check::TooOld { highest } => Error::TooOld {
            kind,
            ssrc,
            index,
            highest,
            window,
        },
        _ => Error::Replayed { kind, ssrc, index },
    }
}

/// The sending side of an SRTP/SRTCP session: protects RTP and RTCP
/// packets in place, with the active master key.
///
/// ```
/// use srtp::{Config, MasterKey, Mki, Receiver, Sender};
/// let key = MasterKey::with_mki([1; 16], [2; 14], Mki::mbms(0x0001_0001, 7));
/// let mut tx = Sender::new(Config::mbms())?;
/// let mut rx = Receiver::new(Config::mbms())?;
/// tx.add_key(&key)?;
/// rx.add_key(&key)?;
///
/// let rtp = [0x80, 96, 0, 1, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe, b'h', b'i'];
/// let mut buf = [0u8; 64]; // room for the MKI and the tag
/// buf[..rtp.len()].copy_from_slice(&rtp);
/// let n = tx.protect_rtp(&mut buf, rtp.len())?;
/// assert_eq!(n, rtp.len() + 6 + 10);
/// let got = rx.unprotect_rtp(&mut buf[..n])?;
/// assert_eq!(&buf[..got.len], &rtp);
/// assert_eq!(got.mki.mbms_parts(), Some((0x0001_0001, 7)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sender {
    core: Core,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("config", &self.core.cfg)
            .field("keys", &self.core.mkis().collect::<Vec<_>>())
            .field("active", &self.active_mki())
            .field("streams", &self.core.streams.len())
            .finish()
    }
}

impl Sender {
    /// A sender with no keys.
    pub fn new(cfg: Config) -> Result<Sender, ConfigError> {
        Ok(Sender {
            core: Core::new(cfg, false)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }

    /// Installs a master key (session keys are derived now, kdr 0). The
    /// first key becomes the active one.
    pub fn add_key(&mut self, key: &MasterKey) -> Result<(), ConfigError> {
        self.core.add_key(key)
    }

    /// Switches to the key with this MKI for the following packets.
    pub fn set_active_key(&mut self, mki: &Mki) -> Result<(), ConfigError> {
        self.core.active = Some(self.core.position(mki)?);
        Ok(())
    }

    /// Removes a key (if it was the active one, no key is active until
    /// [`Sender::set_active_key`]).
    pub fn remove_key(&mut self, mki: &Mki) -> Result<(), ConfigError> {
        self.core.remove_key(mki)
    }

    /// The MKI of the active key.
    pub fn active_mki(&self) -> Option<Mki> {
        self.core.active.map(|i| self.core.keys[i].mki)
    }

    /// Sets the ROC of an SSRC (e.g. when taking over a stream).
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), Error> {
        self.core.set_roc(ssrc, roc)
    }

    /// The current ROC of an SSRC, for the MTK message's SRTP-ID map.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.core.roc(ssrc)
    }

    /// Protects the RTP packet `buf[..rtp_len]` in place: encrypts the
    /// payload, appends the MKI and the tag, and returns the SRTP length.
    /// `buf` needs [`Config::rtp_overhead`] bytes of room after the packet.
    /// No allocation, except once for the first packet of a new SSRC.
    ///
    /// The ROC is tracked per SSRC from the sequence numbers (RFC 3711
    /// 3.3.1); an index that was already protected is refused
    /// ([`Error::Replayed`]), since it would reuse keystream.
    pub fn protect_rtp(&mut self, buf: &mut [u8], rtp_len: usize) -> Result<usize, Error> {
        if rtp_len > buf.len() {
            return Err(Error::LengthExceedsBuffer {
                len: rtp_len,
                buffer: buf.len(),
            });
        }
        let hdr = parse_rtp(&buf[..rtp_len])?;
        let core = &mut self.core;
        let key = core.active.ok_or(Error::NoKey)?;
        let mki_len = core.cfg.mki_len;
        let trailer = core.cfg.trailer(hdr.seq);
        let total = rtp_len + mki_len + trailer.len();
        if buf.len() < total {
            return Err(Error::BufferTooSmall {
                needed: total,
                available: buf.len(),
            });
        }
        let si = match core.stream(hdr.ssrc) {
            Some(i) => i,
            None => core.new_stream(hdr.ssrc, None)?,
        };
        let index = core.estimate(Some(si), hdr.ssrc, hdr.seq)?;
        if index > MAX_RTP_INDEX {
            return Err(Error::IndexOutOfRange {
                kind: PacketKind::Rtp,
                ssrc: hdr.ssrc,
            });
        }
        let stream = &mut core.streams[si];
        match stream.rtp.check(index) {
            Check::Fresh => {}
            c => {
                return Err(replay_error(
                    PacketKind::Rtp,
                    hdr.ssrc,
                    index,
                    c,
                    stream.rtp.size(),
                ))
            }
        }
        let keys = &core.keys[key];
        if core.cfg.encrypts_rtp() {
            aes_cm(&keys.rtp, hdr.ssrc, index, &mut buf[hdr.len..rtp_len]);
        }
        buf[rtp_len..rtp_len + mki_len].copy_from_slice(keys.mki.as_bytes());
        let t = rtp_len + mki_len;
        let roc = (index >> 16) as u32;
        match trailer {
            Trailer::Tag(0) => {}
            Trailer::Tag(n) => {
                let mac = hmac(&keys.rtp, &buf[..rtp_len], Some(roc));
                buf[t..t + n].copy_from_slice(&mac[..n]);
            }
            Trailer::RocMac(n) => {
                // RFC 4771: TAG = ROC_sender || MAC_tr, the MAC over
                // authenticated portion || ROC, truncated by 32 bits.
                let mac = hmac(&keys.rtp, &buf[..rtp_len], Some(roc));
                buf[t..t + 4].copy_from_slice(&roc.to_be_bytes());
                buf[t + 4..t + 4 + n].copy_from_slice(&mac[..n]);
            }
            Trailer::RocOnly => buf[t..t + 4].copy_from_slice(&roc.to_be_bytes()),
            Trailer::Nothing => {}
        }
        stream.rtp.commit(index);
        Ok(total)
    }

    /// [`Sender::protect_rtp`] on a `Vec` holding exactly the RTP packet; it
    /// grows by the MKI and tag (allocating only if its capacity is short).
    pub fn protect_rtp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<(), Error> {
        let len = pkt.len();
        pkt.resize(len + self.core.cfg.rtp_overhead(), 0);
        match self.protect_rtp(pkt, len) {
            Ok(n) => {
                pkt.truncate(n);
                Ok(())
            }
            Err(e) => {
                pkt.truncate(len);
                Err(e)
            }
        }
    }

    /// Protects the (compound) RTCP packet `buf[..rtcp_len]` in place
    /// (RFC 3711 3.4): encrypts everything after the first 8 bytes (unless
    /// [`Config::srtcp_encryption`] is off), appends E || SRTCP index, the
    /// MKI and the tag over header, payload and E || index. Returns the
    /// SRTCP length; `buf` needs [`Config::rtcp_overhead`] bytes of room.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], rtcp_len: usize) -> Result<usize, Error> {
        if rtcp_len > buf.len() {
            return Err(Error::LengthExceedsBuffer {
                len: rtcp_len,
                buffer: buf.len(),
            });
        }
        let ssrc = parse_rtcp(&buf[..rtcp_len])?;
        let core = &mut self.core;
        let key = core.active.ok_or(Error::NoKey)?;
        let mki_len = core.cfg.mki_len;
        let total = rtcp_len + core.cfg.rtcp_overhead();
        if buf.len() < total {
            return Err(Error::BufferTooSmall {
                needed: total,
                available: buf.len(),
            });
        }
        let si = match core.stream(ssrc) {
            Some(i) => i,
            None => core.new_stream(ssrc, None)?,
        };
        let stream = &mut core.streams[si];
        let index = stream.rtcp_next;
        if index > MAX_RTCP_INDEX {
            return Err(Error::IndexOutOfRange {
                kind: PacketKind::Rtcp,
                ssrc,
            });
        }
        let keys = &core.keys[key];
        let encrypt = core.cfg.encrypts_rtcp();
        if encrypt {
            aes_cm(
                &keys.rtcp,
                ssrc,
                index as u64,
                &mut buf[RTCP_CLEAR..rtcp_len],
            );
        }
        let e_index = index | if encrypt { E_BIT } else { 0 };
        buf[rtcp_len..rtcp_len + 4].copy_from_slice(&e_index.to_be_bytes());
        let auth_end = rtcp_len + 4;
        buf[auth_end..auth_end + mki_len].copy_from_slice(keys.mki.as_bytes());
        let n = core.cfg.suite.rtcp_tag_len();
        if n > 0 {
            let mac = hmac(&keys.rtcp, &buf[..auth_end], None);
            buf[auth_end + mki_len..auth_end + mki_len + n].copy_from_slice(&mac[..n]);
        }
        stream.rtcp_next = index + 1;
        Ok(total)
    }

    /// [`Sender::protect_rtcp`] on a `Vec` holding exactly the RTCP packet.
    pub fn protect_rtcp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<(), Error> {
        let len = pkt.len();
        pkt.resize(len + self.core.cfg.rtcp_overhead(), 0);
        match self.protect_rtcp(pkt, len) {
            Ok(n) => {
                pkt.truncate(n);
                Ok(())
            }
            Err(e) => {
                pkt.truncate(len);
                Err(e)
            }
        }
    }
}

/// The receiving side of an SRTP/SRTCP session: verifies and decrypts
/// packets in place, picking the master key by MKI, tracking ROC, replay
/// windows and SRTCP indices per SSRC.
///
/// A new SSRC is accepted when its first packet authenticates. Its ROC
/// starts at 0 (RFC 3711), at the value given with [`Receiver::set_roc`]
/// (the MTK message's SRTP-ID map), or, with RFC 4771 configured and no
/// ROC set, is learnt from the first ROC-carrying packet; before that its
/// packets fail with [`Error::RocUnknown`].
pub struct Receiver {
    core: Core,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("config", &self.core.cfg)
            .field("keys", &self.core.mkis().collect::<Vec<_>>())
            .field("streams", &self.core.streams.len())
            .finish()
    }
}

impl Receiver {
    /// A receiver with no keys.
    pub fn new(cfg: Config) -> Result<Receiver, ConfigError> {
        Ok(Receiver {
            core: Core::new(cfg, true)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.core.cfg
    }

    /// Installs a master key. With MKI, packets select keys by MKI, so the
    /// current and the next MTK can be installed side by side; without MKI
    /// only one key can be installed.
    pub fn add_key(&mut self, key: &MasterKey) -> Result<(), ConfigError> {
        self.core.add_key(key)
    }

    /// Removes a key.
    pub fn remove_key(&mut self, mki: &Mki) -> Result<(), ConfigError> {
        self.core.remove_key(mki)
    }

    /// The MKIs of the installed keys.
    pub fn mkis(&self) -> impl Iterator<Item = Mki> + '_ {
        self.core.mkis()
    }

    /// Sets the ROC of an SSRC, e.g. from the MTK message's SRTP-ID map
    /// (late joiner). If the stream already runs with another ROC, its
    /// replay window restarts.
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), Error> {
        self.core.set_roc(ssrc, roc)
    }

    /// The ROC of an SSRC, if known.
    pub fn roc(&self, ssrc: u32) -> Option<u32> {
        self.core.roc(ssrc)
    }

    /// Forgets an SSRC.
    pub fn remove_stream(&mut self, ssrc: u32) {
        self.core.streams.retain(|s| s.ssrc != ssrc);
    }

    /// Verifies and decrypts the SRTP packet in `buf` in place. On success
    /// the RTP packet is `buf[..result.len]`. Checks, in order: header
    /// bounds, MKI, ROC/index, replay window, tag (constant time); only then
    /// decrypts and updates the state. No allocation, except once for the
    /// first packet of a new SSRC.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<Unprotected, Error> {
        let n = buf.len();
        if n < RTP_FIXED {
            return Err(Error::Truncated {
                kind: PacketKind::Rtp,
                len: n,
                needed: RTP_FIXED,
                what: "RTP fixed header",
            });
        }
        let core = &mut self.core;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let mki_len = core.cfg.mki_len;
        let trailer = core.cfg.trailer(seq);
        let needed = RTP_FIXED + mki_len + trailer.len();
        if n < needed {
            return Err(Error::Truncated {
                kind: PacketKind::Rtp,
                len: n,
                needed,
                what: "SRTP MKI and authentication tag",
            });
        }
        let auth_end = n - mki_len - trailer.len();
        let hdr = parse_rtp(&buf[..auth_end])?;
        let ssrc = hdr.ssrc;
        let t = auth_end + mki_len;
        let key = core
            .find_key(&buf[auth_end..t])
            .ok_or_else(|| Error::UnknownMki {
                kind: PacketKind::Rtp,
                mki: Mki::new(&buf[auth_end..t]).unwrap_or(Mki::EMPTY),
            })?;
        let si = core.stream(ssrc);
        if si.is_none() && core.streams.len() >= core.cfg.max_streams {
            return Err(Error::TooManyStreams {
                max: core.cfg.max_streams,
            });
        }
        let (index, roc_from_packet) = match trailer {
            Trailer::RocMac(_) | Trailer::RocOnly => {
                // RFC 4771: ROC_local is replaced by ROC_sender from the tag.
                (((be32(&buf[t..]) as u64) << 16) | seq as u64, true)
            }
            Trailer::Tag(_) | Trailer::Nothing => (core.estimate(si, ssrc, seq)?, false),
        };
        if let Some(i) = si {
            let w = &core.streams[i].rtp;
            match w.check(index) {
                Check::Fresh => {}
                c => return Err(replay_error(PacketKind::Rtp, ssrc, index, c, w.size())),
            }
        }
        let keys = &core.keys[key];
        let roc = (index >> 16) as u32;
        let authenticated = match trailer {
            // A zero-length tag (RFC 3711 7.5) or NULL authentication.
            Trailer::Tag(0) => false,
            Trailer::Tag(len) => {
                let mac = hmac(&keys.rtp, &buf[..auth_end], Some(roc));
                if !bool::from(mac[..len].ct_eq(&buf[t..t + len])) {
                    return Err(Error::AuthenticationFailed {
                        kind: PacketKind::Rtp,
                        ssrc,
                        index,
                    });
                }
                true
            }
            Trailer::RocMac(len) => {
                // RFC 4771: MAC over authenticated portion || ROC_sender,
                // compared with MAC_tr.
                let mac = hmac(&keys.rtp, &buf[..auth_end], Some(roc));
                if !bool::from(mac[..len].ct_eq(&buf[t + 4..t + 4 + len])) {
                    return Err(Error::AuthenticationFailed {
                        kind: PacketKind::Rtp,
                        ssrc,
                        index,
                    });
                }
                true
            }
            Trailer::RocOnly | Trailer::Nothing => false,
        };
        let mki = keys.mki;
        if core.cfg.encrypts_rtp() {
            aes_cm(&keys.rtp, ssrc, index, &mut buf[hdr.len..auth_end]);
        }
        let si = match si {
            Some(i) => i,
            None => core.new_stream(ssrc, None)?,
        };
        core.streams[si].rtp.commit(index);
        Ok(Unprotected {
            len: auth_end,
            ssrc,
            seq,
            roc,
            index,
            mki,
            authenticated,
            roc_from_packet,
        })
    }

    /// [`Receiver::unprotect_rtp`] on a `Vec`, truncated to the RTP packet on
    /// success (untouched on error).
    pub fn unprotect_rtp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<Unprotected, Error> {
        let r = self.unprotect_rtp(pkt)?;
        pkt.truncate(r.len);
        Ok(r)
    }

    /// Verifies and decrypts the SRTCP packet in `buf` in place (RFC 3711
    /// 3.4): the tag covers header, payload and E || index; the E bit says
    /// whether the payload is encrypted. On success the RTCP packet is
    /// `buf[..result.len]`.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<RtcpUnprotected, Error> {
        let n = buf.len();
        let ssrc = parse_rtcp(buf)?;
        let core = &mut self.core;
        let mki_len = core.cfg.mki_len;
        let tag_len = core.cfg.suite.rtcp_tag_len();
        let needed = RTCP_CLEAR + 4 + mki_len + tag_len;
        if n < needed {
            return Err(Error::Truncated {
                kind: PacketKind::Rtcp,
                len: n,
                needed,
                what: "SRTCP index, MKI and authentication tag",
            });
        }
        let tag_at = n - tag_len;
        let auth_end = tag_at - mki_len;
        let index_at = auth_end - 4;
        let key = core
            .find_key(&buf[auth_end..tag_at])
            .ok_or_else(|| Error::UnknownMki {
                kind: PacketKind::Rtcp,
                mki: Mki::new(&buf[auth_end..tag_at]).unwrap_or(Mki::EMPTY),
            })?;
        let e_index = be32(&buf[index_at..]);
        let encrypted = e_index & E_BIT != 0;
        let index = e_index & !E_BIT;
        let si = core.stream(ssrc);
        if si.is_none() && core.streams.len() >= core.cfg.max_streams {
            return Err(Error::TooManyStreams {
                max: core.cfg.max_streams,
            });
        }
        if let Some(i) = si {
            let w = &core.streams[i].rtcp;
            match w.check(index as u64) {
                Check::Fresh => {}
                c => {
                    return Err(replay_error(
                        PacketKind::Rtcp,
                        ssrc,
                        index as u64,
                        c,
                        w.size(),
                    ))
                }
            }
        }
        let keys = &core.keys[key];
        let authenticated = tag_len > 0;
        if authenticated {
            let mac = hmac(&keys.rtcp, &buf[..auth_end], None);
            if !bool::from(mac[..tag_len].ct_eq(&buf[tag_at..])) {
                return Err(Error::AuthenticationFailed {
                    kind: PacketKind::Rtcp,
                    ssrc,
                    index: index as u64,
                });
            }
        }
        let mki = keys.mki;
        // With the NULL cipher there is nothing to decrypt, E bit or not.
        if encrypted && core.cfg.suite.cipher != Cipher::Null {
            aes_cm(
                &keys.rtcp,
                ssrc,
                index as u64,
                &mut buf[RTCP_CLEAR..index_at],
            );
        }
        let si = match si {
            Some(i) => i,
            None => core.new_stream(ssrc, None)?,
        };
        core.streams[si].rtcp.commit(index as u64);
        Ok(RtcpUnprotected {
            len: index_at,
            ssrc,
            index,
            encrypted,
            mki,
            authenticated,
        })
    }

    /// [`Receiver::unprotect_rtcp`] on a `Vec`, truncated on success.
    pub fn unprotect_rtcp_vec(&mut self, pkt: &mut Vec<u8>) -> Result<RtcpUnprotected, Error> {
        let r = self.unprotect_rtcp(pkt)?;
        pkt.truncate(r.len);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_estimation_rfc3711_appendix_a() {
        // s_l small: far-ahead SEQ is from the previous ROC.
        assert_eq!(estimate_index(5 << 16 | 10, 11), Some(5 << 16 | 11));
        assert_eq!(estimate_index(5 << 16 | 10, 65000), Some(4 << 16 | 65000));
        // s_l large: small SEQ is after a wrap.
        assert_eq!(estimate_index(5 << 16 | 65500, 3), Some(6 << 16 | 3));
        assert_eq!(
            estimate_index(5 << 16 | 65500, 40000),
            Some(5 << 16 | 40000)
        );
        // ROC 0, packet from "before the start".
        assert_eq!(estimate_index(10, 60000), None);
        // ROC at its maximum cannot grow.
        assert_eq!(estimate_index((u32::MAX as u64) << 16 | 65535, 1), None);
    }

    /// RCCm3 carries the 4-byte ROC alone, so a tag shorter than the ROC
    /// must not shrink the room `protect_rtp` asks for (found by
    /// `tests/proptest.rs::mutated_packets_are_refused`).
    #[test]
    fn rtp_overhead_has_room_for_the_roc() {
        for tag_len in 1..=3u8 {
            let c = Config {
                suite: Suite {
                    cipher: Cipher::AesCm128,
                    auth: Auth::HmacSha1,
                    tag_len,
                },
                mki_len: 6,
                rcc: Some(Rcc {
                    mode: RccMode::Rccm3,
                    rate: 1,
                }),
                ..Config::default()
            };
            assert!(c.validate().is_ok(), "{tag_len}");
            assert_eq!(c.trailer(0), Trailer::RocOnly);
            assert_eq!(c.rtp_overhead(), 6 + 4, "tag {tag_len}");
        }
    }

    #[test]
    fn config_validation() {
        assert!(Config::default().validate().is_ok());
        assert!(Config::mbms().validate().is_ok());
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.mki_len = 33), ConfigError::MkiTooLong(33));
        assert_eq!(bad(|c| c.replay_window = 63), ConfigError::ReplayWindow(63));
        assert_eq!(
            bad(|c| c.replay_window = 32769),
            ConfigError::ReplayWindow(32769)
        );
        assert_eq!(bad(|c| c.max_streams = 0), ConfigError::ZeroStreams);
        assert_eq!(
            bad(|c| c.rcc = Some(Rcc {
                mode: RccMode::Rccm2,
                rate: 0
            })),
            ConfigError::ZeroRate
        );
        assert!(matches!(
            bad(|c| {
                c.suite = Suite::AES_CM_128_HMAC_SHA1_32;
                c.rcc = Some(Rcc {
                    mode: RccMode::Rccm1,
                    rate: 1,
                })
            }),
            ConfigError::RccTagTooShort { tag_len: 4, .. }
        ));
        let mut c = Config {
            suite: Suite::AES_CM_128_HMAC_SHA1_32,
            ..Config::default()
        };
        c.rcc = Some(Rcc {
            mode: RccMode::Rccm3,
            rate: 1,
        });
        assert!(c.validate().is_ok());
    }

    #[test]
    fn suites_refuse_only_what_no_protocol_defines() {
        let with = |suite: Suite, rcc: Option<Rcc>| {
            Config {
                suite,
                rcc,
                ..Config::mbms()
            }
            .validate()
        };
        for (_, s) in Suite::NAMED {
            assert_eq!(with(s, None), Ok(()), "{s}");
        }
        for t in 0..=20 {
            let s = Suite {
                tag_len: t,
                ..Suite::NULL_HMAC_SHA1_80
            };
            assert_eq!(with(s, None), Ok(()));
        }
        assert_eq!(
            with(
                Suite {
                    tag_len: 21,
                    ..Suite::AES_CM_128_HMAC_SHA1_80
                },
                None
            ),
            Err(ConfigError::TagTooLong { tag_len: 21 })
        );
        assert_eq!(
            with(
                Suite {
                    tag_len: 10,
                    ..Suite::AES_CM_128_NULL_AUTH
                },
                None
            ),
            Err(ConfigError::TagWithoutAuthentication { tag_len: 10 })
        );
        for mode in [RccMode::Rccm1, RccMode::Rccm2, RccMode::Rccm3] {
            let rcc = Some(Rcc { mode, rate: 1 });
            assert_eq!(
                with(Suite::NULL_CIPHER_NULL_AUTH, rcc),
                Err(ConfigError::RccNeedsAuthentication { mode })
            );
            assert_eq!(
                with(Suite::AES_CM_128_NULL_AUTH, rcc),
                Err(ConfigError::RccNeedsAuthentication { mode })
            );
            assert_eq!(with(Suite::NULL_HMAC_SHA1_80, rcc), Ok(()));
        }
        assert_eq!(Suite::NULL_HMAC_SHA1_32.rtcp_tag_len(), 10);
        assert_eq!(Suite::AES_CM_128_NULL_AUTH.rtcp_tag_len(), 0);
        assert_eq!(
            Suite {
                tag_len: 16,
                ..Suite::AES_CM_128_HMAC_SHA1_80
            }
            .rtcp_tag_len(),
            16
        );
        assert_eq!(
            Suite::from_name("NULL_HMAC_SHA1_80"),
            Some(Suite::NULL_HMAC_SHA1_80)
        );
        assert_eq!(Suite::from_name("F8_128_HMAC_SHA1_80"), None);
        assert_eq!(Suite::default().to_string(), "AES_CM_128_HMAC_SHA1_80");
    }

    /// Seed 000 6.3.2.2.2: confidentiality and integrity on/off
    /// independently, SRTP and SRTCP, with the MBMS MKI.
    #[test]
    fn every_cipher_and_auth_combination_round_trips_srtp_and_srtcp() {
        let key = MasterKey::with_mki([3; 16], [4; 14], Mki::mbms(0x0001_0002, 9));
        for (name, suite) in Suite::NAMED {
            let cfg = Config {
                suite,
                ..Config::mbms()
            };
            let mut tx = Sender::new(cfg.clone()).unwrap();
            let mut rx = Receiver::new(cfg.clone()).unwrap();
            tx.add_key(&key).unwrap();
            rx.add_key(&key).unwrap();
            let enc = suite.cipher == Cipher::AesCm128;
            let auth = suite.auth == Auth::HmacSha1;

            let plain = [
                0x80, 96, 0, 7, 0, 0, 0, 1, 0, 0, 0, 5, 10, 11, 12, 13, 14, 15, 16, 17,
            ];
            let mut p = plain.to_vec();
            tx.protect_rtp_vec(&mut p).unwrap();
            assert_eq!(p.len(), plain.len() + 6 + suite.rtp_tag_len(), "{name}");
            assert_eq!(p[..plain.len()] == plain[..], !enc, "{name}");
            assert_eq!(
                &p[plain.len()..plain.len() + 6],
                Mki::mbms(0x0001_0002, 9).as_bytes()
            );
            let got = rx.unprotect_rtp_vec(&mut p).unwrap();
            assert_eq!(p, plain, "{name}");
            assert_eq!(got.authenticated, auth, "{name}");
            // A changed payload byte: refused exactly when authenticated.
            let mut q = plain.to_vec();
            q[3] = 8;
            tx.protect_rtp_vec(&mut q).unwrap();
            q[14] ^= 1;
            assert_eq!(rx.unprotect_rtp_vec(&mut q).is_err(), auth, "{name}");

            let rtcp = [0x80, 200, 0, 3, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8];
            let mut c = rtcp.to_vec();
            tx.protect_rtcp_vec(&mut c).unwrap();
            assert_eq!(c.len(), rtcp.len() + 4 + 6 + suite.rtcp_tag_len(), "{name}");
            assert_eq!(c[rtcp.len()] & 0x80 != 0, enc, "E bit {name}");
            assert_eq!(c[..rtcp.len()] == rtcp[..], !enc, "{name}");
            let got = rx.unprotect_rtcp_vec(&mut c).unwrap();
            assert_eq!(c, rtcp, "{name}");
            assert_eq!((got.encrypted, got.authenticated), (enc, auth), "{name}");
        }
    }

    #[test]
    fn srtp_and_srtcp_encryption_switch_separately() {
        let key = MasterKey::with_mki([3; 16], [4; 14], Mki::mbms(1, 1));
        for (rtp, rtcp) in [(false, true), (true, false), (false, false)] {
            let cfg = Config {
                srtp_encryption: rtp,
                srtcp_encryption: rtcp,
                ..Config::mbms()
            };
            let mut tx = Sender::new(cfg.clone()).unwrap();
            let mut rx = Receiver::new(cfg).unwrap();
            tx.add_key(&key).unwrap();
            rx.add_key(&key).unwrap();
            let plain = [
                0x80, 96, 0, 7, 0, 0, 0, 1, 0, 0, 0, 5, 10, 11, 12, 13, 14, 15, 16, 17,
            ];
            let mut p = plain.to_vec();
            tx.protect_rtp_vec(&mut p).unwrap();
            assert_eq!(p[..plain.len()] == plain[..], !rtp);
            rx.unprotect_rtp_vec(&mut p).unwrap();
            assert_eq!(p, plain);
            let body = [0x80, 200, 0, 3, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8];
            let mut c = body.to_vec();
            tx.protect_rtcp_vec(&mut c).unwrap();
            assert_eq!(c[..body.len()] == body[..], !rtcp);
            assert_eq!(rx.unprotect_rtcp_vec(&mut c).unwrap().encrypted, rtcp);
            assert_eq!(c, body);
        }
    }

    #[test]
    fn trailer_layouts_per_mode() {
        let mut c = Config::default();
        assert_eq!(c.trailer(7), Trailer::Tag(10));
        for (mode, on, off) in [
            (RccMode::Rccm1, Trailer::RocMac(6), Trailer::Nothing),
            (RccMode::Rccm2, Trailer::RocMac(6), Trailer::Tag(10)),
            (RccMode::Rccm3, Trailer::RocOnly, Trailer::Nothing),
        ] {
            c.rcc = Some(Rcc { mode, rate: 4 });
            assert_eq!(c.trailer(8), on);
            assert_eq!(c.trailer(0), on);
            assert_eq!(c.trailer(9), off);
            // The ROC-carrying tag keeps the suite's tag length (RCCm1/2).
            if mode != RccMode::Rccm3 {
                assert_eq!(on.len(), 10);
            }
        }
    }

    #[test]
    fn key_management() {
        let mut tx = Sender::new(Config::mbms()).unwrap();
        assert_eq!(tx.active_mki(), None);
        let k1 = MasterKey::with_mki([1; 16], [1; 14], Mki::mbms(1, 1));
        let k2 = MasterKey::with_mki([2; 16], [2; 14], Mki::mbms(1, 2));
        tx.add_key(&k1).unwrap();
        tx.add_key(&k2).unwrap();
        assert_eq!(tx.active_mki(), Some(Mki::mbms(1, 1)));
        assert_eq!(
            tx.add_key(&k1),
            Err(ConfigError::DuplicateMki(Mki::mbms(1, 1)))
        );
        assert!(matches!(
            tx.add_key(&MasterKey::new([0; 16], [0; 14])),
            Err(ConfigError::MkiLengthMismatch {
                expected: 6,
                got: 0
            })
        ));
        tx.set_active_key(&Mki::mbms(1, 2)).unwrap();
        assert_eq!(tx.active_mki(), Some(Mki::mbms(1, 2)));
        tx.remove_key(&Mki::mbms(1, 2)).unwrap();
        assert_eq!(tx.active_mki(), None);
        let mut buf = [0u8; 64];
        buf[0] = 0x80;
        assert_eq!(tx.protect_rtp(&mut buf, 12), Err(Error::NoKey));
        assert_eq!(
            tx.set_active_key(&Mki::mbms(9, 9)),
            Err(ConfigError::NoSuchMki(Mki::mbms(9, 9)))
        );
        // k1 is left; fill up to MAX_KEYS, then one more is refused.
        for i in 3..(3 + MAX_KEYS as u16 - 1) {
            tx.add_key(&MasterKey::with_mki([0; 16], [0; 14], Mki::mbms(1, i)))
                .unwrap();
        }
        assert_eq!(
            tx.add_key(&MasterKey::with_mki([0; 16], [0; 14], Mki::mbms(2, 0))),
            Err(ConfigError::TooManyKeys)
        );
    }
}
