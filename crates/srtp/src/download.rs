//! Protected download objects (PROFILE.md section 8, choice, versioned):
//! files delivered over FLUTE/HTTP, encrypted with AES-128-CBC and
//! authenticated with HMAC-SHA-1-80 under the download keys that the MBMS
//! layer derives from the MTK (PROFILE.md section 2: encryption key, 16
//! bytes, constant 0x15798CEF; authentication key, 20 bytes, constant
//! 0x1B5C7973; RFC 3830 4.1.3 with the MTK as TGK).
//!
//! # Byte layout (version 1)
//!
//! All integers are big-endian. `L` is the RAND length, `C` the ciphertext
//! length.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 6 | magic `"MBMSPO"` (`4d 42 4d 53 50 4f`) |
//! | 6 | 1 | version, `0x01` |
//! | 7 | 3 | Key Domain ID (MCC \|\| MNC, PROFILE.md section 1) |
//! | 10 | 4 | MSK ID (Key Group part \|\| Key Number part) |
//! | 14 | 2 | MTK ID |
//! | 16 | 4 | CSB ID of the MTK message |
//! | 20 | 1 | `L`, length of the RAND (0 to 255) |
//! | 21 | L | RAND of the MTK message |
//! | 21+L | 16 | IV of the CBC encryption |
//! | 37+L | C | AES-128-CBC(encryption key, IV, plaintext \|\| PKCS#7 padding); `C = 16 * (floor(P / 16) + 1)` for a `P`-byte plaintext, so `C >= 16` |
//! | 37+L+C | 10 | tag: the first 10 bytes of HMAC-SHA-1(authentication key, bytes 0 to 37+L+C-1) |
//!
//! The header (bytes 0 to 37+L-1) names the keys: a receiver reads it with
//! [`ObjectHeader::read_from`], finds the MTK (Key Domain ID, MSK ID, MTK
//! ID), derives the download keys with the CSB ID and RAND, and unprotects.
//! The MIKEY MTK message travels beside the object as `<name>.mikey`.
//!
//! # No plaintext before the tag verified
//!
//! Encrypt-then-MAC: the tag covers the header and the ciphertext, and
//! decryption output is only handed over after the whole tag verified:
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
//! not an oracle.

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
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Tag length: HMAC-SHA-1 truncated to 80 bits.
pub const TAG_LEN: usize = 10;
/// Length of the fixed part of the header, up to and including the RAND
/// length byte.
pub const FIXED_HEADER_LEN: usize = 21;
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
    /// The version byte is not 1.
    #[error(
        "unsupported protected download object version {0} (this implementation reads version 1)"
    )]
    UnsupportedVersion(u8),
    /// The input ended early.
    #[error("protected download object truncated in the {what}")]
    Truncated {
        /// The part that was cut.
        what: &'static str,
    },
    /// The ciphertext is not a positive multiple of 16 bytes (the object
    /// was truncated or extended).
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

/// The header of a protected object: which keys protect it, and the IV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectHeader {
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
    /// object): this crate has no randomness of its own.
    pub iv: [u8; 16],
}

impl ObjectHeader {
    /// Encoded length: 37 + RAND length.
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
        let mut fixed = [0u8; FIXED_HEADER_LEN];
        read_exact(r, &mut fixed, "header")?;
        if &fixed[..6] != MAGIC {
            return Err(DownloadError::BadMagic);
        }
        if fixed[6] != VERSION {
            return Err(DownloadError::UnsupportedVersion(fixed[6]));
        }
        let mut rand = vec![0u8; fixed[20] as usize];
        read_exact(r, &mut rand, "header RAND")?;
        let mut iv = [0u8; 16];
        read_exact(r, &mut iv, "header IV")?;
        Ok(ObjectHeader {
            key_domain_id: [fixed[7], fixed[8], fixed[9]],
            msk_id: u32::from_be_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]),
            mtk_id: u16::from_be_bytes([fixed[14], fixed[15]]),
            csb_id: u32::from_be_bytes([fixed[16], fixed[17], fixed[18], fixed[19]]),
            rand,
            iv,
        })
    }

    /// Parses a header from the start of `b`; returns it and its length.
    pub fn parse(b: &[u8]) -> Result<(ObjectHeader, usize), DownloadError> {
        let mut r = b;
        let h = ObjectHeader::read_from(&mut r)?;
        Ok((h, b.len() - r.len()))
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
/// header, the CBC ciphertext and the tag. Returns the bytes written.
pub fn protect<R: Read, W: Write>(
    keys: &DownloadKeys,
    header: &ObjectHeader,
    mut input: R,
    mut output: W,
) -> Result<u64, DownloadError> {
    let hdr = header.to_bytes()?;
    let mut mac = keys.mac();
    mac.update(&hdr);
    output.write_all(&hdr)?;
    let mut written = hdr.len() as u64;
    let mut enc = cbc::Encryptor::<Aes128>::new((&keys.encryption).into(), (&header.iv).into());
    let mut buf = vec![0u8; CHUNK + BLOCK];
    let mut filled = 0;
    loop {
        let n = read_full(&mut input, &mut buf[filled..CHUNK])?;
        filled += n;
        let eof = filled < CHUNK;
        let full = if eof {
            // PKCS#7: 1 to 16 bytes of value `pad`.
            let pad = BLOCK - filled % BLOCK;
            buf[filled..filled + pad].fill(pad as u8);
            filled + pad
        } else {
            filled
        };
        let (blocks, _) = InOutBuf::from(&mut buf[..full]).into_chunks();
        enc.encrypt_blocks_inout_mut(blocks);
        mac.update(&buf[..full]);
        output.write_all(&buf[..full])?;
        written += full as u64;
        filled = 0;
        if eof {
            break;
        }
    }
    buf.zeroize();
    let tag = mac.finalize().into_bytes();
    output.write_all(&tag[..TAG_LEN])?;
    output.flush()?;
    Ok(written + TAG_LEN as u64)
}

/// Runs over the ciphertext and tag after the header. With `out`, decrypts
/// and writes plaintext as it goes (the caller discards it on error); the
/// tag is verified at the end, before the padding is looked at.
fn body<R: Read>(
    keys: &DownloadKeys,
    header: &ObjectHeader,
    mut mac: HmacSha1,
    input: &mut R,
    mut out: Option<&mut dyn Write>,
) -> Result<(), DownloadError> {
    const HOLD: usize = TAG_LEN + BLOCK;
    let mut dec = cbc::Decryptor::<Aes128>::new((&keys.encryption).into(), (&header.iv).into());
    let mut buf = vec![0u8; CHUNK + HOLD];
    let mut filled = 0;
    let mut ciphertext_len: u64 = 0;
    loop {
        let n = read_full(input, &mut buf[filled..])?;
        filled += n;
        let eof = filled < buf.len();
        if eof {
            break;
        }
        // Keep the last block and the tag back until the end is known.
        let avail = filled - HOLD;
        let process = avail - avail % BLOCK;
        mac.update(&buf[..process]);
        if let Some(w) = out.as_deref_mut() {
            let (blocks, _) = InOutBuf::from(&mut buf[..process]).into_chunks();
            dec.decrypt_blocks_inout_mut(blocks);
            w.write_all(&buf[..process])?;
        }
        ciphertext_len += process as u64;
        buf.copy_within(process..filled, 0);
        filled -= process;
    }
    if filled < TAG_LEN {
        return Err(DownloadError::Truncated {
            what: "authentication tag",
        });
    }
    let last = filled - TAG_LEN;
    let total = ciphertext_len + last as u64;
    if total == 0 || !last.is_multiple_of(BLOCK) {
        return Err(DownloadError::BadCiphertextLength(total));
    }
    mac.update(&buf[..last]);
    let tag = mac.finalize().into_bytes();
    if !bool::from(tag[..TAG_LEN].ct_eq(&buf[last..filled])) {
        return Err(DownloadError::TagMismatch);
    }
    if let Some(w) = out {
        let (blocks, _) = InOutBuf::from(&mut buf[..last]).into_chunks();
        dec.decrypt_blocks_inout_mut(blocks);
        let pad = buf[last - 1] as usize;
        if pad == 0 || pad > BLOCK || buf[last - pad..last].iter().any(|&b| b as usize != pad) {
            return Err(DownloadError::BadPadding);
        }
        w.write_all(&buf[..last - pad])?;
        w.flush()?;
    }
    buf.zeroize();
    Ok(())
}

fn start<R: Read>(
    keys: &DownloadKeys,
    input: &mut R,
) -> Result<(ObjectHeader, HmacSha1), DownloadError> {
    let header = ObjectHeader::read_from(input)?;
    let mut mac = keys.mac();
    mac.update(&header.to_bytes()?);
    Ok((header, mac))
}

/// Verifies the tag of a protected object without decrypting it.
pub fn verify<R: Read>(keys: &DownloadKeys, mut input: R) -> Result<ObjectHeader, DownloadError> {
    let (header, mac) = start(keys, &mut input)?;
    body(keys, &header, mac, &mut input, None)?;
    Ok(header)
}

/// Unprotects a seekable input into `output` in two passes: the first
/// verifies the tag and writes nothing; the second decrypts, writes and
/// verifies again. The input is read from its current position.
pub fn unprotect<R: Read + Seek, W: Write>(
    keys: &DownloadKeys,
    mut input: R,
    mut output: W,
) -> Result<ObjectHeader, DownloadError> {
    let start_pos = input.stream_position()?;
    let header = verify(keys, &mut input)?;
    input.seek(SeekFrom::Start(start_pos))?;
    let (again, mac) = start(keys, &mut input)?;
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
    let mut inp = File::open(input)?;
    via_partial(output, |out| {
        let (header, mac) = start(keys, &mut inp)?;
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
        assert_eq!(b.len(), 37 + 16);
        assert_eq!(&b[..7], b"MBMSPO\x01");
        assert_eq!(&b[7..10], &[0x00, 0xf1, 0x10]);
        assert_eq!(&b[10..14], &[0, 1, 0, 2]);
        assert_eq!(&b[14..16], &[0, 3]);
        assert_eq!(&b[16..20], &[0, 0, 0, 4]);
        assert_eq!(b[20], 16);
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
            assert_eq!(o.len(), 53 + 16 * (p / 16 + 1) + 10, "{p}");
        }
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
        o[6] = 2;
        assert!(matches!(
            ObjectHeader::parse(&o),
            Err(DownloadError::UnsupportedVersion(2))
        ));
        o[6] = 1;
        for n in 0..53 {
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
