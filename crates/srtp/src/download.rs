//! Protected download objects (PROFILE.md section 8, choice, versioned):
//! files delivered over FLUTE/HTTP, encrypted with AES-128-CBC and/or
//! authenticated with HMAC-SHA-1-80 under the download keys that the MBMS
//! layer derives from the MTK (PROFILE.md section 2: encryption key, 16
//! bytes, constant 0x15798CEF; authentication key, 20 bytes, constant
//! 0x1B5C7973; RFC 3830 4.1.3 with the MTK as TGK).
//!
//! Confidentiality and integrity are announced independently (seed 000
//! 6.3.2.2.2), so the header says which of them the object has
//! ([`Protection`]): both (the default), encryption only, authentication
//! only, or neither.
//!
//! # Byte layout (version 2, written by this crate)
//!
//! All integers are big-endian. `L` is the RAND length, `C` the body
//! length.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 6 | magic `"MBMSPO"` (`4d 42 4d 53 50 4f`) |
//! | 6 | 1 | version, `0x02` |
//! | 7 | 1 | protection flags: `0x01` encryption, `0x02` authentication, other bits 0 |
//! | 8 | 3 | Key Domain ID (MCC \|\| MNC, PROFILE.md section 1) |
//! | 11 | 4 | MSK ID (Key Group part \|\| Key Number part) |
//! | 15 | 2 | MTK ID |
//! | 17 | 4 | CSB ID of the MTK message |
//! | 21 | 1 | `L`, length of the RAND (0 to 255) |
//! | 22 | L | RAND of the MTK message |
//! | 22+L | 16 | IV of the CBC encryption (zeros when not encrypted) |
//! | 38+L | C | encryption on: AES-128-CBC(encryption key, IV, plaintext \|\| PKCS#7 padding), `C = 16 * (floor(P / 16) + 1)` for a `P`-byte plaintext; off: the plaintext, `C = P` |
//! | 38+L+C | 10 | authentication on: the first 10 bytes of HMAC-SHA-1(authentication key, bytes 0 to 38+L+C-1); off: absent |
//!
//! Version 1 (read, never written) is version 2 without the flags byte
//! and with both protections.
//!
//! The header (bytes 0 to 38+L-1) names the keys: a receiver reads it with
//! [`ObjectHeader::read_from`], finds the MTK (Key Domain ID, MSK ID, MTK
//! ID), derives the download keys with the CSB ID and RAND, and unprotects.
//! The MIKEY MTK message travels beside the object as `<name>.mikey`. The
//! flags are covered by the tag when there is one; a receiver that expects
//! a protection (the service announcement) refuses an object without it
//! ([`unprotect_file_with`], [`ObjectHeader::require`]), so a header
//! altered to drop the tag or the encryption is refused.
//!
//! # No plaintext before the tag verified
//!
//! Encrypt-then-MAC: the tag covers the header and the body, and output is
//! only handed over after the whole tag verified:
//!
//! * [`unprotect_file`] decrypts in one pass into `<output>.partial`
//!   (created with mode 0600), verifies the tag at the end, checks the
//!   padding, and only then renames it to `<output>`; on any error the
//!   partial file is removed, so no output exists.
//! * [`unprotect`] takes a seekable input: a first pass verifies the tag
//!   and writes nothing, a second pass decrypts into the writer and verifies
//!   again (an input changed in between gives [`DownloadError::InputChanged`];
//!   for inputs other processes may modify, prefer [`unprotect_file`]).
//! * [`verify`] checks the tag only.
//!
//! Memory use is constant (64 KiB buffers) whatever the object size.
//! Padding is checked only after the tag verified, so a padding error is
//! not an oracle. Without authentication there is no tag: nothing detects
//! an altered object, and with encryption on the padding check is then the
//! only check (CBC without integrity is malleable; see
//! `docs/download-object.md`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use aes::Aes128;
use cbc::cipher::inout::InOutBuf;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::Mac;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::HmacSha1;

/// The magic bytes at the start of every protected object.
pub const MAGIC: &[u8; 6] = b"MBMSPO";
/// The format version this crate writes (it reads 1 and 2).
pub const VERSION: u8 = 2;
/// The first format version: no flags byte, encryption and authentication.
pub const VERSION_1: u8 = 1;
/// Tag length: HMAC-SHA-1 truncated to 80 bits.
pub const TAG_LEN: usize = 10;
/// Length of the fixed part of the header, up to and including the RAND
/// length byte (version 2).
pub const FIXED_HEADER_LEN: usize = 22;
/// Protection flag: the body is AES-128-CBC encrypted.
pub const FLAG_ENCRYPTION: u8 = 0x01;
/// Protection flag: an HMAC-SHA-1-80 tag follows the body.
pub const FLAG_AUTHENTICATION: u8 = 0x02;
/// Streaming buffer size.
const CHUNK: usize = 64 * 1024;
const BLOCK: usize = 16;

/// A protected object could not be produced or opened.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The input does not start with "MBMSPO".
    #[error("not a protected download object: bad magic")]
    BadMagic,
    /// The version byte is neither 1 nor 2.
    #[error(
        "unsupported protected download object version {0} (this implementation reads versions 1 and 2)"
    )]
    UnsupportedVersion(u8),
    /// The protection flags byte has bits this version does not define.
    #[error("unknown protection flags {0:#04x} (defined: 0x01 encryption, 0x02 authentication)")]
    UnknownFlags(u8),
    /// The object lacks a protection the receiver requires (the service
    /// announced it).
    #[error("object protection is {got}, but {required} is required")]
    ProtectionMissing {
        /// What the header says.
        got: Protection,
        /// What the receiver requires.
        required: Protection,
    },
    /// The input ended early.
    #[error("protected download object truncated in the {what}")]
    Truncated {
        /// The part that was cut.
        what: &'static str,
    },
    /// The ciphertext of an encrypted object is not a positive multiple of
    /// 16 bytes (the object was truncated or extended).
    #[error(
        "ciphertext length {0} is not a positive multiple of 16 (truncated or extended object)"
    )]
    BadCiphertextLength(u64),
    /// The tag did not verify: wrong keys, or the object was altered.
    #[error("authentication tag mismatch: wrong download keys or altered object")]
    TagMismatch,
    /// The tag verified but the padding is not PKCS#7 (a sender bug).
    #[error("bad PKCS#7 padding")]
    BadPadding,
    /// The RAND is longer than its 1-byte length field allows.
    #[error("RAND of {0} bytes does not fit the 1-byte length field")]
    RandTooLong(usize),
    /// The input changed between the verification pass and the decryption
    /// pass of [`unprotect`].
    #[error("input changed between the verification and the decryption pass")]
    InputChanged,
}

/// The two download keys (PROFILE.md section 2), zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DownloadKeys {
    encryption: [u8; 16],
    authentication: [u8; 20],
}

impl DownloadKeys {
    /// From the 16-byte encryption key and the 20-byte authentication key.
    pub fn new(encryption: [u8; 16], authentication: [u8; 20]) -> DownloadKeys {
        DownloadKeys {
            encryption,
            authentication,
        }
    }

    fn mac(&self) -> HmacSha1 {
        <HmacSha1 as Mac>::new_from_slice(&self.authentication).expect("any key length")
    }
}

impl std::fmt::Debug for DownloadKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadKeys { .. }")
    }
}

/// Which protections a download object has (seed 000 6.3.2.2.2:
/// confidentiality and integrity on/off, independently).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Protection {
    /// Confidentiality: the body is AES-128-CBC encrypted.
    pub encryption: bool,
    /// Integrity: an HMAC-SHA-1-80 tag covers header and body.
    pub authentication: bool,
}

impl Default for Protection {
    /// Both (the profile default, PROFILE.md section 8).
    fn default() -> Protection {
        Protection::BOTH
    }
}

impl Protection {
    /// Encryption and authentication.
    pub const BOTH: Protection = Protection {
        encryption: true,
        authentication: true,
    };
    /// Neither (the object is only framed: header and plaintext).
    pub const NONE: Protection = Protection {
        encryption: false,
        authentication: false,
    };

    /// The flags byte of a version 2 header.
    pub const fn flags(self) -> u8 {
        (if self.encryption { FLAG_ENCRYPTION } else { 0 })
            | (if self.authentication {
                FLAG_AUTHENTICATION
            } else {
                0
            })
    }

    /// From the flags byte; unknown bits are an error.
    pub fn from_flags(b: u8) -> Result<Protection, DownloadError> {
        if b & !(FLAG_ENCRYPTION | FLAG_AUTHENTICATION) != 0 {
            return Err(DownloadError::UnknownFlags(b));
        }
        Ok(Protection {
            encryption: b & FLAG_ENCRYPTION != 0,
            authentication: b & FLAG_AUTHENTICATION != 0,
        })
    }

    /// Whether this has every protection `required` has.
    pub const fn covers(self, required: Protection) -> bool {
        (self.encryption || !required.encryption)
            && (self.authentication || !required.authentication)
    }

    fn tag_len(self) -> usize {
        if self.authentication {
            TAG_LEN
        } else {
            0
        }
    }
}

impl std::fmt::Display for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.encryption, self.authentication) {
            (true, true) => "encryption + authentication",
            (true, false) => "encryption only",
            (false, true) => "authentication only",
            (false, false) => "no protection",
        })
    }
}

/// The header of a protected object: which protections it has, which keys
/// protect it, and the IV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHeader {
    /// The protections of the body (the flags byte).
    pub protection: Protection,
    /// Key Domain ID (3 bytes, MCC || MNC).
    pub key_domain_id: [u8; 3],
    /// MSK ID (Key Group part || Key Number part).
    pub msk_id: u32,
    /// MTK ID.
    pub mtk_id: u16,
    /// CSB ID of the MTK message (input of the download key derivation).
    pub csb_id: u32,
    /// RAND of the MTK message (input of the download key derivation).
    pub rand: Vec<u8>,
    /// The CBC IV. The caller supplies it (16 fresh random bytes per
    /// object): this crate has no randomness of its own. Carried as is
    /// (zeros by convention) when the object is not encrypted.
    pub iv: [u8; 16],
}

impl ObjectHeader {
    /// Encoded length: 38 + RAND length.
    pub fn encoded_len(&self) -> usize {
        FIXED_HEADER_LEN + self.rand.len() + BLOCK
    }

    /// The encoded header.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DownloadError> {
        let l = u8::try_from(self.rand.len())
            .map_err(|_| DownloadError::RandTooLong(self.rand.len()))?;
        let mut b = Vec::with_capacity(self.encoded_len());
        b.extend_from_slice(MAGIC);
        b.push(VERSION);
        b.push(self.protection.flags());
        b.extend_from_slice(&self.key_domain_id);
        b.extend_from_slice(&self.msk_id.to_be_bytes());
        b.extend_from_slice(&self.mtk_id.to_be_bytes());
        b.extend_from_slice(&self.csb_id.to_be_bytes());
        b.push(l);
        b.extend_from_slice(&self.rand);
        b.extend_from_slice(&self.iv);
        Ok(b)
    }

    /// Reads the header from the start of a protected object (without any
    /// key: it says which keys are needed). Leaves `r` at the ciphertext.
    pub fn read_from<R: Read>(r: &mut R) -> Result<ObjectHeader, DownloadError> {
        Self::read_raw(r).map(|(h, _)| h)
    }

    /// [`ObjectHeader::read_from`], also returning the header bytes as read
    /// (what the tag covers: a version 1 header has no flags byte).
    fn read_raw<R: Read>(r: &mut R) -> Result<(ObjectHeader, Vec<u8>), DownloadError> {
        let mut rec = Recorder {
            inner: r,
            seen: Vec::with_capacity(64),
        };
        let h = Self::read_parts(&mut rec)?;
        Ok((h, rec.seen))
    }

    fn read_parts<R: Read>(r: &mut R) -> Result<ObjectHeader, DownloadError> {
        let mut start = [0u8; 7];
        read_exact(r, &mut start, "header")?;
        if &start[..6] != MAGIC {
            return Err(DownloadError::BadMagic);
        }
        let protection = match start[6] {
            VERSION_1 => Protection::BOTH,
            VERSION => {
                let mut f = [0u8; 1];
                read_exact(r, &mut f, "header")?;
                Protection::from_flags(f[0])?
            }
            v => return Err(DownloadError::UnsupportedVersion(v)),
        };
        // Key Domain ID, MSK ID, MTK ID, CSB ID, RAND length.
        let mut fixed = [0u8; 14];
        read_exact(r, &mut fixed, "header")?;
        let mut rand = vec![0u8; fixed[13] as usize];
        read_exact(r, &mut rand, "header RAND")?;
        let mut iv = [0u8; 16];
        read_exact(r, &mut iv, "header IV")?;
        Ok(ObjectHeader {
            protection,
            key_domain_id: [fixed[0], fixed[1], fixed[2]],
            msk_id: u32::from_be_bytes([fixed[3], fixed[4], fixed[5], fixed[6]]),
            mtk_id: u16::from_be_bytes([fixed[7], fixed[8]]),
            csb_id: u32::from_be_bytes([fixed[9], fixed[10], fixed[11], fixed[12]]),
            rand,
            iv,
        })
    }

    /// Refuses an object that lacks a protection in `required`.
    pub fn require(&self, required: Protection) -> Result<(), DownloadError> {
        if self.protection.covers(required) {
            Ok(())
        } else {
            Err(DownloadError::ProtectionMissing {
                got: self.protection,
                required,
            })
        }
    }

    /// Parses a header from the start of `b`; returns it and its length.
    pub fn parse(b: &[u8]) -> Result<(ObjectHeader, usize), DownloadError> {
        let mut r = b;
        let h = ObjectHeader::read_from(&mut r)?;
        Ok((h, b.len() - r.len()))
    }
}

/// A reader that keeps a copy of what it read (the header, for the tag).
struct Recorder<'a, R> {
    inner: &'a mut R,
    seen: Vec<u8>,
}

impl<R: Read> Read for Recorder<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<(), DownloadError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DownloadError::Truncated { what },
        _ => DownloadError::Io(e),
    })
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Protects `input` into `output` (streaming, constant memory): writes the
/// header, the body (CBC ciphertext, or the plaintext without encryption)
/// and the tag (with authentication). Returns the bytes written.
pub fn protect<R: Read, W: Write>(
    keys: &DownloadKeys,
    header: &ObjectHeader,
    mut input: R,
    mut output: W,
) -> Result<u64, DownloadError> {
    let p = header.protection;
    let hdr = header.to_bytes()?;
    let mut mac = p.authentication.then(|| keys.mac());
    if let Some(m) = mac.as_mut() {
        m.update(&hdr);
    }
    output.write_all(&hdr)?;
    let mut written = hdr.len() as u64;
    let mut enc = cbc::Encryptor::<Aes128>::new((&keys.encryption).into(), (&header.iv).into());
    let mut buf = vec![0u8; CHUNK + BLOCK];
    let mut filled = 0;
    loop {
        let n = read_full(&mut input, &mut buf[filled..CHUNK])?;
        filled += n;
        let eof = filled < CHUNK;
        let full = if eof && p.encryption {
            // PKCS#7: 1 to 16 bytes of value `pad`.
            let pad = BLOCK - filled % BLOCK;
            buf[filled..filled + pad].fill(pad as u8);
            filled + pad
        } else {
            filled
        };
        if p.encryption {
            let (blocks, _) = InOutBuf::from(&mut buf[..full]).into_chunks();
            enc.encrypt_blocks_inout_mut(blocks);
        }
        if let Some(m) = mac.as_mut() {
            m.update(&buf[..full]);
        }
        output.write_all(&buf[..full])?;
        written += full as u64;
        filled = 0;
        if eof {
            break;
        }
    }
    buf.zeroize();
    if let Some(m) = mac {
        let tag = m.finalize().into_bytes();
        output.write_all(&tag[..TAG_LEN])?;
        written += TAG_LEN as u64;
    }
    output.flush()?;
    Ok(written)
}

/// Runs over the body and tag after the header. With `out`, decrypts (if
/// encrypted) and writes plaintext as it goes (the caller discards it on
/// error); the tag (if any) is verified at the end, before the padding is
/// looked at.
fn body<R: Read>(
    keys: &DownloadKeys,
    header: &ObjectHeader,
    mut mac: Option<HmacSha1>,
    input: &mut R,
    mut out: Option<&mut dyn Write>,
) -> Result<(), DownloadError> {
    let p = header.protection;
    let tag_len = p.tag_len();
    // Keep the tag (and the last block, which holds the padding) back until
    // the end is known.
    let hold = tag_len + if p.encryption { BLOCK } else { 0 };
    let unit = if p.encryption { BLOCK } else { 1 };
    let mut dec = cbc::Decryptor::<Aes128>::new((&keys.encryption).into(), (&header.iv).into());
    let mut buf = vec![0u8; CHUNK + hold];
    let mut filled = 0;
    let mut body_len: u64 = 0;
    loop {
        let n = read_full(input, &mut buf[filled..])?;
        filled += n;
        let eof = filled < buf.len();
        if eof {
            break;
        }
        let avail = filled - hold;
        let process = avail - avail % unit;
        if let Some(m) = mac.as_mut() {
            m.update(&buf[..process]);
        }
        if let Some(w) = out.as_deref_mut() {
            if p.encryption {
                let (blocks, _) = InOutBuf::from(&mut buf[..process]).into_chunks();
                dec.decrypt_blocks_inout_mut(blocks);
            }
            w.write_all(&buf[..process])?;
        }
        body_len += process as u64;
        buf.copy_within(process..filled, 0);
        filled -= process;
    }
    if filled < tag_len {
        return Err(DownloadError::Truncated {
            what: "authentication tag",
        });
    }
    let last = filled - tag_len;
    let total = body_len + last as u64;
    if p.encryption && (total == 0 || !last.is_multiple_of(BLOCK)) {
        return Err(DownloadError::BadCiphertextLength(total));
    }
    if let Some(mut m) = mac {
        m.update(&buf[..last]);
        let tag = m.finalize().into_bytes();
        if !bool::from(tag[..TAG_LEN].ct_eq(&buf[last..filled])) {
            return Err(DownloadError::TagMismatch);
        }
    }
    if let Some(w) = out {
        let mut end = last;
        if p.encryption {
            let (blocks, _) = InOutBuf::from(&mut buf[..last]).into_chunks();
            dec.decrypt_blocks_inout_mut(blocks);
            let pad = buf[last - 1] as usize;
            if pad == 0 || pad > BLOCK || buf[last - pad..last].iter().any(|&b| b as usize != pad) {
                return Err(DownloadError::BadPadding);
            }
            end = last - pad;
        }
        w.write_all(&buf[..end])?;
        w.flush()?;
    }
    buf.zeroize();
    Ok(())
}

fn start<R: Read>(
    keys: &DownloadKeys,
    required: Protection,
    input: &mut R,
) -> Result<(ObjectHeader, Option<HmacSha1>), DownloadError> {
    let (header, raw) = ObjectHeader::read_raw(input)?;
    header.require(required)?;
    let mac = header.protection.authentication.then(|| {
        let mut mac = keys.mac();
        // The tag covers the header as received (a version 1 header has no
        // flags byte).
        mac.update(&raw);
        mac
    });
    Ok((header, mac))
}

/// Verifies the tag of a protected object without decrypting it.
/// Without authentication it checks the framing only.
pub fn verify<R: Read>(keys: &DownloadKeys, mut input: R) -> Result<ObjectHeader, DownloadError> {
    let (header, mac) = start(keys, Protection::NONE, &mut input)?;
    body(keys, &header, mac, &mut input, None)?;
    Ok(header)
}

/// Unprotects a seekable input into `output` in two passes: the first
/// verifies the tag and writes nothing; the second decrypts, writes and
/// verifies again. The input is read from its current position.
pub fn unprotect<R: Read + Seek, W: Write>(
    keys: &DownloadKeys,
    input: R,
    output: W,
) -> Result<ObjectHeader, DownloadError> {
    unprotect_with(keys, Protection::NONE, input, output)
}

/// [`unprotect`], refusing an object that lacks a protection in `required`
/// ([`DownloadError::ProtectionMissing`]) before any output.
pub fn unprotect_with<R: Read + Seek, W: Write>(
    keys: &DownloadKeys,
    required: Protection,
    mut input: R,
    mut output: W,
) -> Result<ObjectHeader, DownloadError> {
    let start_pos = input.stream_position()?;
    let (header, mac) = start(keys, required, &mut input)?;
    body(keys, &header, mac, &mut input, None)?;
    input.seek(SeekFrom::Start(start_pos))?;
    let (again, mac) = start(keys, required, &mut input)?;
    if again != header {
        return Err(DownloadError::InputChanged);
    }
    match body(keys, &header, mac, &mut input, Some(&mut output)) {
        Err(DownloadError::TagMismatch) | Err(DownloadError::BadCiphertextLength(_)) => {
            Err(DownloadError::InputChanged)
        }
        Err(DownloadError::Truncated { .. }) => Err(DownloadError::InputChanged),
        other => other.map(|()| header),
    }
}

fn partial_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

fn create_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// Writes through `<output>.partial` and renames it to `output` if `f`
/// succeeds; removes it otherwise.
fn via_partial<T>(
    output: &Path,
    f: impl FnOnce(&mut File) -> Result<T, DownloadError>,
) -> Result<T, DownloadError> {
    let partial = partial_path(output);
    let mut file = create_private(&partial)?;
    let result = f(&mut file).and_then(|t| {
        file.sync_all()?;
        Ok(t)
    });
    drop(file);
    match result {
        Ok(t) => match fs::rename(&partial, output) {
            Ok(()) => Ok(t),
            Err(e) => {
                let _ = fs::remove_file(&partial);
                Err(e.into())
            }
        },
        Err(e) => {
            let _ = fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Protects the file `input` into `output` (through `<output>.partial`,
/// renamed when complete). Returns the protected object's length.
pub fn protect_file(
    keys: &DownloadKeys,
    header: &ObjectHeader,
    input: &Path,
    output: &Path,
) -> Result<u64, DownloadError> {
    let inp = File::open(input)?;
    via_partial(output, |out| protect(keys, header, inp, out))
}

/// Unprotects the file `input` into `output` in one pass: plaintext goes to
/// `<output>.partial`, which is renamed to `output` only after the tag and
/// the padding verified, and removed otherwise. Returns the header.
pub fn unprotect_file(
    keys: &DownloadKeys,
    input: &Path,
    output: &Path,
) -> Result<ObjectHeader, DownloadError> {
    unprotect_file_with(keys, Protection::NONE, input, output)
}

/// [`unprotect_file`], refusing an object that lacks a protection in
/// `required` ([`DownloadError::ProtectionMissing`]); no output then.
pub fn unprotect_file_with(
    keys: &DownloadKeys,
    required: Protection,
    input: &Path,
    output: &Path,
) -> Result<ObjectHeader, DownloadError> {
    let mut inp = File::open(input)?;
    via_partial(output, |out| {
        let (header, mac) = start(keys, required, &mut inp)?;
        body(keys, &header, mac, &mut inp, Some(out))?;
        Ok(header)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn keys() -> DownloadKeys {
        DownloadKeys::new([7; 16], [9; 20])
    }

    fn header() -> ObjectHeader {
        ObjectHeader {
            protection: Protection::BOTH,
            key_domain_id: [0x00, 0xf1, 0x10],
            msk_id: 0x0001_0002,
            mtk_id: 3,
            csb_id: 4,
            rand: (0..16).collect(),
            iv: [0x55; 16],
        }
    }

    fn protected(plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = protect(&keys(), &header(), plain, &mut out).unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    #[test]
    fn layout_and_lengths() {
        let h = header();
        let b = h.to_bytes().unwrap();
        assert_eq!(b.len(), 38 + 16);
        assert_eq!(&b[..8], b"MBMSPO\x02\x03");
        assert_eq!(&b[8..11], &[0x00, 0xf1, 0x10]);
        assert_eq!(&b[11..15], &[0, 1, 0, 2]);
        assert_eq!(&b[15..17], &[0, 3]);
        assert_eq!(&b[17..21], &[0, 0, 0, 4]);
        assert_eq!(b[21], 16);
        assert_eq!(ObjectHeader::parse(&b).unwrap(), (h, b.len()));
        for p in [
            0usize,
            1,
            15,
            16,
            17,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            3 * CHUNK + 5,
        ] {
            let o = protected(&vec![0xa5; p]);
            assert_eq!(o.len(), 54 + 16 * (p / 16 + 1) + 10, "{p}");
            for (e, a, len) in [
                (true, false, 54 + 16 * (p / 16 + 1)),
                (false, true, 54 + p + 10),
                (false, false, 54 + p),
            ] {
                let mut h = header();
                h.protection = Protection {
                    encryption: e,
                    authentication: a,
                };
                let mut o = Vec::new();
                assert_eq!(
                    protect(&keys(), &h, &vec![0xa5; p][..], &mut o).unwrap() as usize,
                    len
                );
                assert_eq!(o.len(), len, "{p} {e} {a}");
            }
        }
    }

    #[test]
    fn every_protection_round_trips_and_plaintext_shows_only_without_encryption() {
        for flags in 0..4u8 {
            let p = Protection::from_flags(flags).unwrap();
            assert_eq!(p.flags(), flags);
            let mut h = header();
            h.protection = p;
            for n in [0usize, 1, 16, CHUNK + 3] {
                let plain: Vec<u8> = (0..n).map(|i| (i * 7 + 1) as u8).collect();
                let mut o = Vec::new();
                protect(&keys(), &h, &plain[..], &mut o).unwrap();
                let body = &o[h.encoded_len()..o.len() - p.tag_len()];
                assert_eq!(body == &plain[..], !p.encryption, "{p} {n}");
                let mut back = Vec::new();
                assert_eq!(unprotect(&keys(), Cursor::new(&o), &mut back).unwrap(), h);
                assert_eq!(back, plain, "{p} {n}");
                // Required protections: refused before any output.
                for req in 0..4u8 {
                    let req = Protection::from_flags(req).unwrap();
                    let mut back = Vec::new();
                    let r = unprotect_with(&keys(), req, Cursor::new(&o), &mut back);
                    if p.covers(req) {
                        assert_eq!(back, plain);
                    } else {
                        assert!(matches!(r, Err(DownloadError::ProtectionMissing { .. })));
                        assert!(back.is_empty());
                    }
                }
            }
        }
        assert!(matches!(
            Protection::from_flags(4),
            Err(DownloadError::UnknownFlags(4))
        ));
    }

    #[test]
    fn version_1_objects_are_still_read() {
        // A version 1 object: no flags byte, encryption and authentication,
        // the tag over the version 1 header.
        let v2 = protected(b"version one");
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"MBMSPO\x01");
        let body_start = header().encoded_len();
        v1.extend_from_slice(&v2[8..body_start]);
        v1.extend_from_slice(&v2[body_start..v2.len() - TAG_LEN]);
        let mut mac = keys().mac();
        mac.update(&v1);
        v1.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        let mut back = Vec::new();
        assert_eq!(
            unprotect(&keys(), Cursor::new(&v1), &mut back).unwrap(),
            header()
        );
        assert_eq!(back, b"version one");
        assert_eq!(ObjectHeader::parse(&v1).unwrap().1, body_start - 1);
    }

    #[test]
    fn dropping_the_tag_in_the_header_is_refused_where_integrity_is_required() {
        let mut o = protected(b"pay me");
        // An attacker clears the authentication flag and cuts the tag.
        o[7] = FLAG_ENCRYPTION;
        o.truncate(o.len() - TAG_LEN);
        let mut back = Vec::new();
        let r = unprotect_with(&keys(), Protection::BOTH, Cursor::new(&o), &mut back);
        assert!(matches!(
            r,
            Err(DownloadError::ProtectionMissing {
                got: Protection {
                    encryption: true,
                    authentication: false
                },
                ..
            })
        ));
        assert!(back.is_empty());
    }

    #[test]
    fn round_trips_across_chunk_boundaries() {
        for p in [
            0usize,
            1,
            16,
            100,
            CHUNK - 17,
            CHUNK,
            CHUNK + 26,
            2 * CHUNK + 3,
        ] {
            let plain: Vec<u8> = (0..p).map(|i| (i * 31 + 7) as u8).collect();
            let o = protected(&plain);
            let mut back = Vec::new();
            let h = unprotect(&keys(), Cursor::new(&o), &mut back).unwrap();
            assert_eq!(h, header());
            assert_eq!(back, plain, "{p}");
            assert_eq!(verify(&keys(), &o[..]).unwrap(), header());
        }
    }

    #[test]
    fn rand_too_long() {
        let mut h = header();
        h.rand = vec![0; 256];
        assert!(matches!(h.to_bytes(), Err(DownloadError::RandTooLong(256))));
    }

    #[test]
    fn header_errors() {
        let mut o = protected(b"x");
        o[0] = b'X';
        assert!(matches!(
            ObjectHeader::parse(&o),
            Err(DownloadError::BadMagic)
        ));
        o[0] = b'M';
        o[6] = 3;
        assert!(matches!(
            ObjectHeader::parse(&o),
            Err(DownloadError::UnsupportedVersion(3))
        ));
        o[6] = 2;
        o[7] = 0x83;
        assert!(matches!(
            ObjectHeader::parse(&o),
            Err(DownloadError::UnknownFlags(0x83))
        ));
        o[7] = 3;
        for n in 0..54 {
            assert!(
                matches!(
                    ObjectHeader::parse(&o[..n]),
                    Err(DownloadError::Truncated { .. })
                ),
                "{n}"
            );
        }
    }
}
