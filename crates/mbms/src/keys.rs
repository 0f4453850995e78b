//! MBMS keys (`PROFILE.md` section 2) and the traffic keys derived from an
//! MTK (seed 004 6.5.4).

use gba::secret_bytes;

pub use gba::keys::Muk;

use crate::profile::{
    DOWNLOAD_AUTH_CONSTANT, DOWNLOAD_AUTH_KEY_LEN, DOWNLOAD_CS_ID, DOWNLOAD_ENCR_CONSTANT,
    DOWNLOAD_ENCR_KEY_LEN,
};

secret_bytes!(
    /// MBMS Service Key: 16 random bytes (`PROFILE.md` section 2).
    Msk,
    16
);

secret_bytes!(
    /// MBMS Traffic Key: 16 random bytes (`PROFILE.md` section 2); the SRTP
    /// master key of a streaming session (seed 004 6.5.4).
    MtkKey,
    16
);

secret_bytes!(
    /// The 14-byte salt delivered with an MTK; the SRTP master salt
    /// (`PROFILE.md` section 2, seed 004 6.5.4).
    MtkSalt,
    14
);

secret_bytes!(
    /// Download encryption key (AES-128), derived from the MTK (`PROFILE.md` section 2).
    DownloadEncrKey,
    16
);

secret_bytes!(
    /// Download authentication key (HMAC-SHA-1), derived from the MTK (`PROFILE.md` section 2).
    DownloadAuthKey,
    20
);

/// An MTK with its salt, as an MTK message carries it (TEK+SALT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mtk {
    /// The key.
    pub key: MtkKey,
    /// The salt.
    pub salt: MtkSalt,
}

impl Mtk {
    /// The SRTP master key and master salt (seed 004 6.5.4: master key = MTK,
    /// master salt = the KEMAC salt).
    pub fn srtp_master(&self) -> (&[u8; 16], &[u8; 14]) {
        (self.key.as_bytes(), self.salt.as_bytes())
    }

    /// The download keys (seed 004 6.5.4, `PROFILE.md` section 2): the MTK
    /// used as a TGK in RFC 3830 4.1.3 with the label `constant || 0x00 ||
    /// CSB ID || RAND` of the MTK message.
    pub fn download_keys(&self, csb_id: u32, rand: &[u8]) -> DownloadKeys {
        let derive = |constant: u32, len: usize| {
            mikey::crypto::prf(
                self.key.as_bytes(),
                &mikey::crypto::prf_label(constant, DOWNLOAD_CS_ID, csb_id, rand),
                len,
            )
        };
        let e = derive(DOWNLOAD_ENCR_CONSTANT, DOWNLOAD_ENCR_KEY_LEN);
        let a = derive(DOWNLOAD_AUTH_CONSTANT, DOWNLOAD_AUTH_KEY_LEN);
        DownloadKeys {
            // The lengths are the constants above, so these cannot fail.
            encr: DownloadEncrKey::from_slice(e.expose()).unwrap_or_else(|_| unreachable!()),
            auth: DownloadAuthKey::from_slice(a.expose()).unwrap_or_else(|_| unreachable!()),
        }
    }
}

/// The two keys of a protected download object (`PROFILE.md` sections 2 and 8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadKeys {
    /// AES-128-CBC key.
    pub encr: DownloadEncrKey,
    /// HMAC-SHA-1 key.
    pub auth: DownloadAuthKey,
}
