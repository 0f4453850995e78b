//! The Milenage algorithm set, 3GPP TS 35.206 (specification) / TS 35.208
//! (test data).
//!
//! Milenage provides the authentication functions f1, f1*, f2, f3, f4, f5
//! and f5* of TS 33.102 6.3 on top of a 128-bit block cipher, here AES-128
//! (TS 35.206 clause 3, the "kernel function" E_K):
//!
//! ```text
//! OPc   = E_K(OP) xor OP                                    (TS 35.206 4.1)
//! TEMP  = E_K(RAND xor OPc)
//! IN1   = SQN || AMF || SQN || AMF
//! OUT1  = E_K(TEMP xor rot(IN1 xor OPc, r1) xor c1) xor OPc
//! OUTk  = E_K(rot(TEMP xor OPc, rk) xor ck) xor OPc        k = 2..5
//! f1 = OUT1[0..63]   f1* = OUT1[64..127]
//! f2 = OUT2[64..127] f5  = OUT2[0..47]
//! f3 = OUT3          f4  = OUT4         f5* = OUT5[0..47]
//! r1..r5 = 64, 0, 32, 64, 96;  c1..c5 = 0, 1, 2, 4, 8 (in the last octet)
//! ```
//!
//! All rotations are by multiples of 8 bits, so they are octet rotations.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::{Ck, Ik, Op, Opc, Res, SubscriberKey};

/// Rotation amounts r1..r5 in octets (TS 35.206 4.1: 64, 0, 32, 64, 96 bits).
const R: [usize; 5] = [8, 0, 4, 8, 12];
/// Last octet of the constants c1..c5 (TS 35.206 4.1); all other octets are 0.
const C: [u8; 5] = [0, 1, 2, 4, 8];

/// A Milenage instance: the AES-128 key schedule for K plus OPc.
///
/// Both are key material; the struct zeroizes them on drop and its `Debug`
/// output is redacted.
#[derive(Clone)]
pub struct Milenage {
    cipher: Aes128,
    opc: Opc,
}

// Both fields wipe themselves on drop: `Opc` is `ZeroizeOnDrop` and `Aes128`
// zeroizes its key schedule (the `aes` crate's "zeroize" feature).
impl ZeroizeOnDrop for Milenage {}

impl core::fmt::Debug for Milenage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Milenage(<redacted>)")
    }
}

/// The outputs of f2, f3, f4 and f5 for one RAND (TS 35.206 4.1).
/// `Debug` redacts all four.
#[derive(Clone, PartialEq, Eq)]
pub struct F2345 {
    /// RES = f2.
    pub res: Res,
    /// CK = f3.
    pub ck: Ck,
    /// IK = f4.
    pub ik: Ik,
    /// AK = f5 (48 bits). Not a long-term secret but it conceals SQN.
    pub ak: [u8; 6],
}

impl core::fmt::Debug for F2345 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("F2345 { res: <redacted>, ck: <redacted>, ik: <redacted>, ak: <redacted> }")
    }
}

fn encrypt(cipher: &Aes128, block: &[u8; 16]) -> [u8; 16] {
    let mut b = aes::Block::from(*block);
    cipher.encrypt_block(&mut b);
    b.into()
}

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Rotate a 128-bit block left by `octets` octets.
fn rot(block: &[u8; 16], octets: usize) -> [u8; 16] {
    let mut out = *block;
    out.rotate_left(octets % 16);
    out
}

/// OPc = E_K(OP) xor OP (TS 35.206 clause 4.1).
pub fn opc_from_op(k: &SubscriberKey, op: &Op) -> Opc {
    let cipher = Aes128::new(&(*k.as_bytes()).into());
    let mut e = Zeroizing::new(encrypt(&cipher, op.as_bytes()));
    let opc = xor16(&e, op.as_bytes());
    e.zeroize();
    Opc::from_bytes(opc)
}

impl Milenage {
    /// Milenage keyed with K and OPc.
    pub fn new(k: &SubscriberKey, opc: &Opc) -> Self {
        Self {
            cipher: Aes128::new(&(*k.as_bytes()).into()),
            opc: opc.clone(),
        }
    }

    /// Milenage keyed with K and OP (computes OPc first).
    pub fn with_op(k: &SubscriberKey, op: &Op) -> Self {
        Self::new(k, &opc_from_op(k, op))
    }

    /// The OPc this instance uses.
    pub fn opc(&self) -> &Opc {
        &self.opc
    }

    fn temp(&self, rand: &[u8; 16]) -> Zeroizing<[u8; 16]> {
        Zeroizing::new(encrypt(&self.cipher, &xor16(rand, self.opc.as_bytes())))
    }

    /// OUT1 (TS 35.206 4.1).
    fn out1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> Zeroizing<[u8; 16]> {
        let temp = self.temp(rand);
        let mut in1 = [0u8; 16];
        in1[0..6].copy_from_slice(sqn);
        in1[6..8].copy_from_slice(amf);
        in1[8..14].copy_from_slice(sqn);
        in1[14..16].copy_from_slice(amf);
        let mut x = rot(&xor16(&in1, self.opc.as_bytes()), R[0]);
        x = xor16(&x, &temp);
        x[15] ^= C[0];
        let out = encrypt(&self.cipher, &x);
        x.zeroize();
        Zeroizing::new(xor16(&out, self.opc.as_bytes()))
    }

    /// OUTk for k = 2..=5 (`idx` = k - 1).
    fn out_k(&self, temp: &[u8; 16], idx: usize) -> Zeroizing<[u8; 16]> {
        let r = R.get(idx).copied().unwrap_or(0);
        let c = C.get(idx).copied().unwrap_or(0);
        let mut x = rot(&xor16(temp, self.opc.as_bytes()), r);
        x[15] ^= c;
        let out = encrypt(&self.cipher, &x);
        x.zeroize();
        Zeroizing::new(xor16(&out, self.opc.as_bytes()))
    }

    /// f1: the network authentication code MAC-A (64 bits).
    pub fn f1(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        let out = self.out1(rand, sqn, amf);
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&out[0..8]);
        mac
    }

    /// f1*: the resynchronisation authentication code MAC-S (64 bits).
    pub fn f1_star(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 8] {
        let out = self.out1(rand, sqn, amf);
        let mut mac = [0u8; 8];
        mac.copy_from_slice(&out[8..16]);
        mac
    }

    /// f2, f3, f4 and f5 together (they share TEMP).
    pub fn f2345(&self, rand: &[u8; 16]) -> F2345 {
        let temp = self.temp(rand);
        let out2 = self.out_k(&temp, 1);
        let out3 = self.out_k(&temp, 2);
        let out4 = self.out_k(&temp, 3);
        let mut res = [0u8; 8];
        res.copy_from_slice(&out2[8..16]);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out2[0..6]);
        F2345 {
            res: Res::from_bytes(res),
            ck: Ck::from_bytes(*out3),
            ik: Ik::from_bytes(*out4),
            ak,
        }
    }

    /// f2: RES (64 bits).
    pub fn f2(&self, rand: &[u8; 16]) -> Res {
        self.f2345(rand).res.clone()
    }

    /// f3: CK (128 bits).
    pub fn f3(&self, rand: &[u8; 16]) -> Ck {
        let temp = self.temp(rand);
        Ck::from_bytes(*self.out_k(&temp, 2))
    }

    /// f4: IK (128 bits).
    pub fn f4(&self, rand: &[u8; 16]) -> Ik {
        let temp = self.temp(rand);
        Ik::from_bytes(*self.out_k(&temp, 3))
    }

    /// f5: the anonymity key AK (48 bits).
    pub fn f5(&self, rand: &[u8; 16]) -> [u8; 6] {
        let temp = self.temp(rand);
        let out = self.out_k(&temp, 1);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out[0..6]);
        ak
    }

    /// f5*: the resynchronisation anonymity key AK* (48 bits).
    pub fn f5_star(&self, rand: &[u8; 16]) -> [u8; 6] {
        let temp = self.temp(rand);
        let out = self.out_k(&temp, 4);
        let mut ak = [0u8; 6];
        ak.copy_from_slice(&out[0..6]);
        ak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// TS 35.208 test set 1 (DIGEST.md 12.1).
    #[test]
    fn test_set_1() {
        let k = SubscriberKey::from_bytes(h("465b5ce8b199b49faa5f0a2ee238a6bc"));
        let op = Op::from_bytes(h("cdc202d5123e20f62b6d676ac72cb318"));
        let rand = h("23553cbe9637a89d218ae64dae47bf35");
        let sqn = h("ff9bb4d0b607");
        let amf = h("b9b9");
        let m = Milenage::with_op(&k, &op);
        assert_eq!(m.opc().as_bytes(), &h("cd63cb71954a9f4e48a5994e37a02baf"));
        assert_eq!(m.f1(&rand, &sqn, &amf), h("4a9ffac354dfafb3"));
        assert_eq!(m.f1_star(&rand, &sqn, &amf), h("01cfaf9ec4e871e9"));
        let o = m.f2345(&rand);
        assert_eq!(o.res.as_bytes(), &h("a54211d5e3ba50bf"));
        assert_eq!(o.ck.as_bytes(), &h("b40ba9a3c58b2a05bbf0d987b21bf8cb"));
        assert_eq!(o.ik.as_bytes(), &h("f769bcd751044604127672711c6d3441"));
        assert_eq!(o.ak, h("aa689c648370"));
        assert_eq!(m.f5(&rand), o.ak);
        assert_eq!(m.f2(&rand), o.res);
        assert_eq!(m.f3(&rand), o.ck);
        assert_eq!(m.f4(&rand), o.ik);
        assert_eq!(m.f5_star(&rand), h("451e8beca43b"));
    }

    /// AES kernel check from DIGEST.md 12.1.
    #[test]
    fn aes_kernel() {
        let cipher = Aes128::new(&h::<16>("465b5ce8b199b49faa5f0a2ee238a6bc").into());
        assert_eq!(
            encrypt(&cipher, &h("ee36f7cf037d37d3692f7f0399e7949a")),
            h::<16>("9e2980c59739da67b136355e3cede6a2")
        );
    }

    #[test]
    fn debug_redacted() {
        let m = Milenage::new(
            &SubscriberKey::from_bytes([7; 16]),
            &Opc::from_bytes([9; 16]),
        );
        assert_eq!(format!("{m:?}"), "Milenage(<redacted>)");
        let o = m.f2345(&[0; 16]);
        assert!(format!("{o:?}").ends_with("ak: <redacted> }"));
    }
}
