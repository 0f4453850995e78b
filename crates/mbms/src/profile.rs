//! Every number of the project's MBMS profile, in one place.
//!
//! Each constant cites the section of `PROFILE.md` (the project's binding
//! wire-level choices) or the seed clause it comes from, so that a later
//! correction touches one line.

use mikey::{EncrAlg, ExtType, IdType, KeyIdType};

/// RFC 4563 General Extension type carrying Key ID information
/// (`PROFILE.md` section 6, choice: EXT Type = 2).
pub const EXT_TYPE_KEY_ID: ExtType = ExtType::KEY_ID;

/// Key ID Type of an MSK Key ID = Key Domain ID || MSK ID (`PROFILE.md` section 6, choice: 1).
pub const KEY_ID_TYPE_MSK: KeyIdType = KeyIdType::MSK;

/// Key ID Type of an MTK Key ID = MTK ID (`PROFILE.md` section 6, choice: 2).
pub const KEY_ID_TYPE_MTK: KeyIdType = KeyIdType::MTK;

/// Length of an MSK Key ID: Key Domain ID (3) || MSK ID (4) (`PROFILE.md` section 6).
pub const MSK_KEY_ID_LEN: usize = 7;

/// Length of an MTK Key ID (`PROFILE.md` section 6).
pub const MTK_KEY_ID_LEN: usize = 2;

/// Key Domain ID length: MCC || MNC (`PROFILE.md` section 1).
pub const KEY_DOMAIN_ID_LEN: usize = 3;

/// MSK ID length: Key Group part || Key Number part (`PROFILE.md` section 1, seed 002).
pub const MSK_ID_LEN: usize = 4;

/// Key Number part meaning "the current MSK" in requests and solicited pull
/// (`PROFILE.md` section 1, seeds 002/003 6.3.2.2.4).
pub const CURRENT_MSK_KEY_NUMBER: u16 = 0;

/// MSK length (`PROFILE.md` section 2: 16 random bytes).
pub const MSK_LEN: usize = 16;

/// MTK length (`PROFILE.md` section 2: 16 random bytes).
pub const MTK_LEN: usize = 16;

/// MTK salt length, the SRTP master salt (`PROFILE.md` section 2: 14 bytes).
pub const MTK_SALT_LEN: usize = 14;

/// MUK / MRK length (`PROFILE.md` section 2: 32 bytes).
pub const MUK_LEN: usize = 32;

/// RAND length in every MIKEY message that carries one (`PROFILE.md` section 6).
pub const RAND_LEN: usize = 16;

/// CSB ID of MSK messages: all zeros (seed 004, 6.4.2).
pub const MSK_CSB_ID: u32 = 0;

/// KEMAC encryption of MSK and MTK messages (`PROFILE.md` section 6).
pub const KEMAC_ENCR: EncrAlg = EncrAlg::AES_CM_128;

/// IDi type: the BM-SC FQDN as a URI (`PROFILE.md` section 6).
pub const IDI_TYPE: IdType = IdType::URI;

/// IDr type: the B-TID as an NAI (`PROFILE.md` section 6).
pub const IDR_TYPE: IdType = IdType::NAI;

/// Length of the key validity VF / VT fields of an MSK: 2 bytes each
/// (`PROFILE.md` section 6).
pub const SEQ_LEN: usize = 2;

/// The key validity of an inactive MSK in step 1 of the 4-way procedure:
/// VF > VT by RFC 1982 (`PROFILE.md` section 6, e.g. VF = 1, VT = 0).
pub const INACTIVE_WINDOW: (u16, u16) = (1, 0);

/// MKI of streaming SRTP = MSK ID || MTK ID, 6 bytes (`PROFILE.md` section 8);
/// also the SPI of the MTK key data sub-payload (`PROFILE.md` section 6).
pub const MKI_LEN: usize = MSK_ID_LEN + 2;

/// Download keys: the MTK is used as a TGK in RFC 3830 4.1.3 with the
/// encryption constant 0x15798CEF (16 bytes) (`PROFILE.md` section 2, seed 004 6.5.4).
pub const DOWNLOAD_ENCR_CONSTANT: u32 = mikey::tgk_constant::ENCR;
/// Download encryption key length (`PROFILE.md` section 2).
pub const DOWNLOAD_ENCR_KEY_LEN: usize = 16;
/// Download keys: authentication constant 0x1B5C7973 (20 bytes) (`PROFILE.md` section 2).
pub const DOWNLOAD_AUTH_CONSTANT: u32 = mikey::tgk_constant::AUTH;
/// Download authentication key length (`PROFILE.md` section 2).
pub const DOWNLOAD_AUTH_KEY_LEN: usize = 20;
/// The `cs_id` octet of the download key labels (`PROFILE.md` section 2: `cs_id 0x00`).
pub const DOWNLOAD_CS_ID: u8 = 0x00;

/// At most this many MSKs per (Key Domain ID, Key Group) in the UE (seed 000
/// 6.3.2.1, `PROFILE.md` section 7).
pub const MAX_MSKS_PER_KEY_GROUP: usize = 2;

/// A byte-identical copy of the last MSK message accepted under a MUK is
/// acknowledged again (when it carries the V bit) at most once per this
/// interval per MSK; excess copies get no acknowledgement (`PROFILE.md`
/// section 7, revised: "at most once per second per MSK"; seed 004 6.4.2).
pub const MSK_REACK_INTERVAL: core::time::Duration = core::time::Duration::from_secs(1);

/// Whether a MUK the UE keeps only because its BM-SC last used it (older
/// than the current MUK and the one before) verifies only a solicited pull.
/// `PROFILE.md` section 7 lets an MSK message name "its current MUK or
/// the one before" and lets the solicited pull fall back to "the last MUK
/// successfully used by the BM-SC"; it does not say whether any other
/// message may name that older MUK. The choice here: no, only the pull
/// (`false` would let every MSK message name it).
pub const OLDER_LAST_USED_MUK_FOR_PULL_ONLY: bool = true;

/// UDP port of the UE's MIKEY listener and of the BM-SC (`PROFILE.md` section 6).
pub const MIKEY_UDP_PORT: u16 = mikey::MIKEY_PORT;
