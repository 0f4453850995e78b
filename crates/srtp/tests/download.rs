//! Protected download objects: round trips (files and streams), and every
//! kind of damage (a flipped bit in the header, the ciphertext or the tag, a
//! truncated or extended file, a wrong key) gives an error and no plaintext
//! output.

use std::io::{Cursor, Read, Write};
use std::path::Path;

use srtp::download::*;

fn keys() -> DownloadKeys {
    DownloadKeys::new(*b"0123456789abcdef", *b"authentication-key!!")
}

fn header() -> ObjectHeader {
    ObjectHeader {
        protection: Protection::BOTH,
        key_domain_id: [0x00, 0xf1, 0x10],
        msk_id: 0x0001_0001,
        mtk_id: 0x0102,
        csb_id: 0x0000_0001,
        rand: vec![0xa1; 16],
        iv: *b"IV-from-caller!!",
    }
}

fn plaintext(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
}

fn protect_to_file(dir: &Path, plain: &[u8]) -> std::path::PathBuf {
    let src = dir.join("plain.bin");
    std::fs::write(&src, plain).unwrap();
    let obj = dir.join("object.mbmspo");
    let n = protect_file(&keys(), &header(), &src, &obj).unwrap();
    assert_eq!(n, std::fs::metadata(&obj).unwrap().len());
    assert!(!dir.join("object.mbmspo.partial").exists());
    obj
}

/// Unprotecting `obj` must fail and leave no output (nor a partial file).
fn assert_refused(dir: &Path, obj: &[u8], keys: &DownloadKeys, what: &str) -> DownloadError {
    let input = dir.join("damaged.mbmspo");
    std::fs::write(&input, obj).unwrap();
    let out = dir.join("out.bin");
    let e = unprotect_file(keys, &input, &out).expect_err(what);
    assert!(!out.exists(), "{what}: output exists");
    assert!(
        !dir.join("out.bin.partial").exists(),
        "{what}: partial left"
    );
    // The seekable two-pass API writes nothing either.
    let mut sink = Vec::new();
    assert!(
        unprotect(keys, Cursor::new(obj), &mut sink).is_err(),
        "{what}"
    );
    assert!(sink.is_empty(), "{what}: plaintext written");
    assert!(verify(keys, obj).is_err(), "{what}");
    e
}

#[test]
fn file_round_trip_and_header_lookup() {
    let dir = tempfile::tempdir().unwrap();
    for n in [0usize, 1, 15, 16, 17, 100_000, 200_003] {
        let plain = plaintext(n);
        let obj = protect_to_file(dir.path(), &plain);
        // A receiver reads the header first to find the keys.
        let mut f = std::fs::File::open(&obj).unwrap();
        assert_eq!(ObjectHeader::read_from(&mut f).unwrap(), header());
        let out = dir.path().join("out.bin");
        assert_eq!(unprotect_file(&keys(), &obj, &out).unwrap(), header());
        assert_eq!(std::fs::read(&out).unwrap(), plain, "{n}");
        assert!(!dir.path().join("out.bin.partial").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "output is private");
        }
        std::fs::remove_file(&out).unwrap();
    }
}

#[test]
fn bit_flips_in_every_part_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plain = plaintext(100);
    let obj = std::fs::read(protect_to_file(dir.path(), &plain)).unwrap();
    let h = header().encoded_len(); // 54
    let ct_end = obj.len() - TAG_LEN; // 54 + 112
                                      // Header: every byte. Ciphertext: first, middle and last block, and the
                                      // padding block. Tag: every byte.
    let mut positions: Vec<usize> = (0..h).collect();
    positions.extend([h, h + 7, h + 40, ct_end - 17, ct_end - 16, ct_end - 1]);
    positions.extend(ct_end..obj.len());
    for pos in positions {
        for bit in [0u8, 7] {
            let mut bad = obj.clone();
            bad[pos] ^= 1 << bit;
            let e = assert_refused(dir.path(), &bad, &keys(), &format!("byte {pos} bit {bit}"));
            match pos {
                0..=5 => assert!(matches!(e, DownloadError::BadMagic)),
                6 => assert!(matches!(e, DownloadError::UnsupportedVersion(_))),
                7 if bit == 7 => assert!(matches!(e, DownloadError::UnknownFlags(0x83))),
                // a changed RAND length moves everything: some other error
                21 => {}
                _ => assert!(matches!(e, DownloadError::TagMismatch), "byte {pos}: {e}"),
            }
        }
    }
}

#[test]
fn truncated_and_extended_objects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let obj = std::fs::read(protect_to_file(dir.path(), &plaintext(1000))).unwrap();
    for n in [
        0,
        1,
        6,
        20,
        36,
        52,
        53,
        54,
        55,
        62,
        63,
        69,
        500,
        obj.len() - 16,
        obj.len() - 11,
        obj.len() - 10,
        obj.len() - 1,
    ] {
        let e = assert_refused(dir.path(), &obj[..n], &keys(), &format!("cut at {n}"));
        assert!(
            matches!(
                e,
                DownloadError::Truncated { .. }
                    | DownloadError::BadCiphertextLength(_)
                    | DownloadError::TagMismatch
            ),
            "{n}: {e}"
        );
    }
    let mut longer = obj.clone();
    longer.push(0);
    assert_refused(dir.path(), &longer, &keys(), "one byte added");
    let mut longer = obj.clone();
    longer.extend_from_slice(&[0; 16]);
    assert_refused(dir.path(), &longer, &keys(), "one block added");
}

#[test]
fn wrong_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let obj = std::fs::read(protect_to_file(dir.path(), &plaintext(1000))).unwrap();
    let wrong_auth = DownloadKeys::new(*b"0123456789abcdef", *b"authentication-key!?");
    let e = assert_refused(dir.path(), &obj, &wrong_auth, "wrong authentication key");
    assert!(matches!(e, DownloadError::TagMismatch));
    // Both keys come from one MTK: a wrong MTK gives two wrong keys.
    let wrong_both = DownloadKeys::new([0; 16], [0; 20]);
    assert_refused(dir.path(), &obj, &wrong_both, "wrong MTK");
}

#[test]
fn existing_output_is_kept_on_failure_and_replaced_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let obj_path = protect_to_file(dir.path(), &plaintext(64));
    let out = dir.path().join("out.bin");
    std::fs::write(&out, b"previous").unwrap();
    let mut bad = std::fs::read(&obj_path).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let bad_path = dir.path().join("bad.mbmspo");
    std::fs::write(&bad_path, &bad).unwrap();
    assert!(unprotect_file(&keys(), &bad_path, &out).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    unprotect_file(&keys(), &obj_path, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), plaintext(64));
}

/// An input that changes between the two passes of `unprotect`.
struct Changing {
    data: Vec<u8>,
    pos: usize,
    seeks: usize,
}

impl Read for Changing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl std::io::Seek for Changing {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        if let std::io::SeekFrom::Start(p) = to {
            self.pos = p as usize;
            self.seeks += 1;
            if self.seeks == 1 {
                let n = self.data.len();
                self.data[n - 40] ^= 1; // altered after verification
            }
        }
        Ok(self.pos as u64)
    }
}

#[test]
fn input_changed_between_passes_is_detected() {
    let mut obj = Vec::new();
    protect(&keys(), &header(), &plaintext(5000)[..], &mut obj).unwrap();
    let input = Changing {
        data: obj,
        pos: 0,
        seeks: 0,
    };
    let mut sink = Vec::new();
    assert!(matches!(
        unprotect(&keys(), input, &mut sink),
        Err(DownloadError::InputChanged)
    ));
}

/// Streams of any size go through in constant memory: 16 MiB generated on
/// the fly, never held.
#[test]
fn large_stream_in_constant_memory() {
    const LEN: u64 = 16 << 20;
    struct Gen(u64);
    impl Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(LEN - self.0) as usize;
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = ((self.0 + i as u64) * 31) as u8;
            }
            self.0 += n as u64;
            Ok(n)
        }
    }
    /// Keeps the length and a running checksum of what it is given.
    #[derive(Default)]
    struct Sum(u64, u64);
    impl Write for Sum {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            for &b in buf {
                self.1 = self.1.wrapping_mul(1_000_003).wrapping_add(b as u64);
            }
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let obj = dir.path().join("big.mbmspo");
    let f = std::fs::File::create(&obj).unwrap();
    protect(&keys(), &header(), Gen(0), std::io::BufWriter::new(f)).unwrap();
    let mut out = Sum::default();
    unprotect(&keys(), std::fs::File::open(&obj).unwrap(), &mut out).unwrap();
    let mut want = Sum::default();
    std::io::copy(&mut Gen(0), &mut want).unwrap();
    assert_eq!((out.0, out.1), (want.0, want.1));
    assert_eq!(out.0, LEN);
}
