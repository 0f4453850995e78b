//! A minimal binding of the system libsrtp 2 (Debian `libsrtp2-dev`), for
//! the interoperability tests and the comparison benchmark only. The
//! declarations follow /usr/include/srtp2/srtp.h of libsrtp 2.5; only
//! compiled with `--cfg has_libsrtp` (see build.rs).
#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_int, c_uint, c_ulong, c_void};
use std::sync::Once;

/// srtp_crypto_policy_t
#[repr(C)]
#[derive(Clone, Copy)]
struct CryptoPolicy {
    cipher_type: u32,
    cipher_key_len: c_int,
    auth_type: u32,
    auth_key_len: c_int,
    auth_tag_len: c_int,
    sec_serv: c_int,
}

/// srtp_ssrc_t
#[repr(C)]
#[derive(Clone, Copy)]
struct Ssrc {
    type_: c_int,
    value: c_uint,
}

const SSRC_ANY_INBOUND: c_int = 2;
const SSRC_ANY_OUTBOUND: c_int = 3;

/// srtp_master_key_t
#[repr(C)]
struct MasterKeyC {
    key: *mut u8,
    mki_id: *mut u8,
    mki_size: c_uint,
}

/// srtp_policy_t
#[repr(C)]
struct Policy {
    ssrc: Ssrc,
    rtp: CryptoPolicy,
    rtcp: CryptoPolicy,
    key: *mut u8,
    keys: *mut *mut MasterKeyC,
    num_master_keys: c_ulong,
    deprecated_ekt: *mut c_void,
    window_size: c_ulong,
    allow_repeat_tx: c_int,
    enc_xtn_hdr: *mut c_int,
    enc_xtn_hdr_count: c_int,
    next: *mut Policy,
}

type SrtpT = *mut c_void;

#[link(name = "srtp2")]
extern "C" {
    fn srtp_init() -> c_int;
    fn srtp_create(session: *mut SrtpT, policy: *const Policy) -> c_int;
    fn srtp_dealloc(session: SrtpT) -> c_int;
    fn srtp_protect(ctx: SrtpT, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect(ctx: SrtpT, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_protect_mki(
        ctx: SrtpT,
        hdr: *mut c_void,
        len: *mut c_int,
        use_mki: c_uint,
        mki_index: c_uint,
    ) -> c_int;
    fn srtp_unprotect_mki(ctx: SrtpT, hdr: *mut c_void, len: *mut c_int, use_mki: c_uint) -> c_int;
    fn srtp_protect_rtcp(ctx: SrtpT, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect_rtcp(ctx: SrtpT, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_protect_rtcp_mki(
        ctx: SrtpT,
        hdr: *mut c_void,
        len: *mut c_int,
        use_mki: c_uint,
        mki_index: c_uint,
    ) -> c_int;
    fn srtp_unprotect_rtcp_mki(
        ctx: SrtpT,
        hdr: *mut c_void,
        len: *mut c_int,
        use_mki: c_uint,
    ) -> c_int;
    // srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80 is a macro for this.
    fn srtp_crypto_policy_set_rtp_default(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_rtcp_default(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_128_null_auth(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_null_cipher_hmac_sha1_80(p: *mut CryptoPolicy);
    fn srtp_crypto_policy_set_null_cipher_hmac_null(p: *mut CryptoPolicy);
    fn srtp_set_stream_roc(session: SrtpT, ssrc: u32, roc: u32) -> c_int;
}

/// Room libsrtp may write after a packet (SRTP_MAX_TRAILER_LEN, 16 + 128).
pub const MAX_TRAILER: usize = 144;

/// libsrtp status codes we look at.
pub const ERR_AUTH_FAIL: i32 = 7;
pub const ERR_REPLAY_FAIL: i32 = 9;
pub const ERR_REPLAY_OLD: i32 = 10;
pub const ERR_BAD_MKI: i32 = 25;

static INIT: Once = Once::new();

/// Which way a libsrtp session works.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// One libsrtp session (any SSRC of one direction).
pub struct LibSrtp {
    ctx: SrtpT,
    use_mki: bool,
}

impl LibSrtp {
    /// `keys`: (master key || master salt, MKI) pairs; an empty MKI for all
    /// means no MKI. `suite`: the cipher and authentication of SRTP and
    /// SRTCP, with the SRTP and SRTCP tag lengths of the `srtp` crate
    /// (AES-CM or NULL, HMAC-SHA-1 or NULL: libsrtp's
    /// aes_cm_128_hmac_sha1_80, null_cipher_hmac_sha1_80,
    /// aes_cm_128_null_auth and null_cipher_hmac_null policies).
    pub fn new(
        dir: Direction,
        suite: srtp::Suite,
        keys: &[([u8; 30], Vec<u8>)],
        window: u64,
    ) -> LibSrtp {
        INIT.call_once(|| {
            let r = unsafe { srtp_init() };
            assert_eq!(r, 0, "srtp_init");
        });
        let zero = CryptoPolicy {
            cipher_type: 0,
            cipher_key_len: 0,
            auth_type: 0,
            auth_key_len: 0,
            auth_tag_len: 0,
            sec_serv: 0,
        };
        let mut rtp = zero;
        let mut rtcp = zero;
        use srtp::{Auth, Cipher};
        for (p, tag) in [
            (&mut rtp, suite.rtp_tag_len()),
            (&mut rtcp, suite.rtcp_tag_len()),
        ] {
            unsafe {
                match (suite.cipher, suite.auth) {
                    (Cipher::AesCm128, Auth::HmacSha1) => srtp_crypto_policy_set_rtp_default(p),
                    (Cipher::Null, Auth::HmacSha1) => {
                        srtp_crypto_policy_set_null_cipher_hmac_sha1_80(p)
                    }
                    (Cipher::AesCm128, Auth::Null) => {
                        srtp_crypto_policy_set_aes_cm_128_null_auth(p)
                    }
                    (Cipher::Null, Auth::Null) => srtp_crypto_policy_set_null_cipher_hmac_null(p),
                }
            }
            if suite.auth == Auth::HmacSha1 {
                p.auth_tag_len = tag as c_int;
            }
        }
        let use_mki = keys.iter().any(|(_, m)| !m.is_empty());
        let mut key_bytes: Vec<[u8; 30]> = keys.iter().map(|(k, _)| *k).collect();
        let mut mkis: Vec<Vec<u8>> = keys.iter().map(|(_, m)| m.clone()).collect();
        let mut mk: Vec<MasterKeyC> = key_bytes
            .iter_mut()
            .zip(mkis.iter_mut())
            .map(|(k, m)| MasterKeyC {
                key: k.as_mut_ptr(),
                mki_id: m.as_mut_ptr(),
                mki_size: m.len() as c_uint,
            })
            .collect();
        let mut mk_ptrs: Vec<*mut MasterKeyC> = mk.iter_mut().map(|m| m as *mut _).collect();
        let policy = Policy {
            ssrc: Ssrc {
                type_: match dir {
                    Direction::Outbound => SSRC_ANY_OUTBOUND,
                    Direction::Inbound => SSRC_ANY_INBOUND,
                },
                value: 0,
            },
            rtp,
            rtcp,
            key: if use_mki {
                std::ptr::null_mut()
            } else {
                key_bytes[0].as_mut_ptr()
            },
            keys: if use_mki {
                mk_ptrs.as_mut_ptr()
            } else {
                std::ptr::null_mut()
            },
            num_master_keys: if use_mki { keys.len() as c_ulong } else { 0 },
            deprecated_ekt: std::ptr::null_mut(),
            window_size: window as c_ulong,
            allow_repeat_tx: 0,
            enc_xtn_hdr: std::ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: std::ptr::null_mut(),
        };
        let mut ctx: SrtpT = std::ptr::null_mut();
        // libsrtp copies the key material into the session.
        let r = unsafe { srtp_create(&mut ctx, &policy) };
        assert_eq!(r, 0, "srtp_create");
        LibSrtp { ctx, use_mki }
    }

    /// Protects `buf[..len]` (buf needs MAX_TRAILER bytes of room); returns
    /// the SRTP length or the libsrtp status.
    pub fn protect(&mut self, buf: &mut [u8], len: usize, mki_index: u32) -> Result<usize, i32> {
        assert!(buf.len() >= len + MAX_TRAILER);
        let mut l = len as c_int;
        let r = unsafe {
            if self.use_mki {
                srtp_protect_mki(self.ctx, buf.as_mut_ptr().cast(), &mut l, 1, mki_index)
            } else {
                srtp_protect(self.ctx, buf.as_mut_ptr().cast(), &mut l)
            }
        };
        if r == 0 {
            Ok(l as usize)
        } else {
            Err(r)
        }
    }

    /// Unprotects `buf` in place; returns the RTP length.
    pub fn unprotect(&mut self, buf: &mut [u8]) -> Result<usize, i32> {
        let mut l = buf.len() as c_int;
        let r = unsafe {
            if self.use_mki {
                srtp_unprotect_mki(self.ctx, buf.as_mut_ptr().cast(), &mut l, 1)
            } else {
                srtp_unprotect(self.ctx, buf.as_mut_ptr().cast(), &mut l)
            }
        };
        if r == 0 {
            Ok(l as usize)
        } else {
            Err(r)
        }
    }

    /// Protects an RTCP packet.
    pub fn protect_rtcp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        mki_index: u32,
    ) -> Result<usize, i32> {
        assert!(buf.len() >= len + MAX_TRAILER + 4);
        let mut l = len as c_int;
        let r = unsafe {
            if self.use_mki {
                srtp_protect_rtcp_mki(self.ctx, buf.as_mut_ptr().cast(), &mut l, 1, mki_index)
            } else {
                srtp_protect_rtcp(self.ctx, buf.as_mut_ptr().cast(), &mut l)
            }
        };
        if r == 0 {
            Ok(l as usize)
        } else {
            Err(r)
        }
    }

    /// Unprotects an SRTCP packet.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, i32> {
        let mut l = buf.len() as c_int;
        let r = unsafe {
            if self.use_mki {
                srtp_unprotect_rtcp_mki(self.ctx, buf.as_mut_ptr().cast(), &mut l, 1)
            } else {
                srtp_unprotect_rtcp(self.ctx, buf.as_mut_ptr().cast(), &mut l)
            }
        };
        if r == 0 {
            Ok(l as usize)
        } else {
            Err(r)
        }
    }

    /// Sets the ROC of a stream (libsrtp >= 2.2).
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), i32> {
        match unsafe { srtp_set_stream_roc(self.ctx, ssrc, roc) } {
            0 => Ok(()),
            r => Err(r),
        }
    }
}

impl Drop for LibSrtp {
    fn drop(&mut self) {
        unsafe {
            srtp_dealloc(self.ctx);
        }
    }
}
