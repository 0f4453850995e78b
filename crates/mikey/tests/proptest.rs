//! Property tests: every valid message round-trips through its encoding, the
//! parsers never panic and accept only what they re-emit exactly, and the
//! pre-shared-key protection and verification MACs detect every change.

use std::borrow::Cow;

use mikey::crypto::{verify_verification_mac, InitiatorFields};
use mikey::*;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Strategies

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// Owned bytes of `0..=small` bytes, or now and then of a length at or near
/// `limit`, the largest the field's length encoding allows.
fn field(small: usize, limit: usize) -> impl Strategy<Value = Cow<'static, [u8]>> {
    prop_oneof![
        8 => bytes(small),
        1 => ((limit - 2)..=limit).prop_map(|n| vec![0xa5; n]),
    ]
    .prop_map(Cow::Owned)
}

fn exact(n: usize) -> impl Strategy<Value = Cow<'static, [u8]>> {
    vec(any::<u8>(), n).prop_map(Cow::Owned)
}

fn key_validity() -> impl Strategy<Value = KeyValidity<'static>> {
    prop_oneof![
        Just(KeyValidity::Null),
        field(16, 255).prop_map(KeyValidity::SpiMki),
        (field(8, 255), field(8, 255)).prop_map(|(from, to)| KeyValidity::Interval { from, to }),
    ]
}

fn mac_alg_and_mac() -> impl Strategy<Value = (MacAlg, Cow<'static, [u8]>)> {
    prop_oneof![Just(MacAlg::Null), Just(MacAlg::HmacSha1_160)]
        .prop_flat_map(|alg| (Just(alg), exact(alg.mac_len())))
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        any::<u64>().prop_map(Timestamp::NtpUtc),
        any::<u64>().prop_map(Timestamp::Ntp),
        any::<u32>().prop_map(Timestamp::Counter),
    ]
}

fn kemac() -> impl Strategy<Value = Payload<'static>> {
    (any::<u8>(), field(64, 0xffff), mac_alg_and_mac()).prop_map(
        |(e, encr_data, (mac_alg, mac))| {
            Payload::Kemac(Kemac {
                encr_alg: EncrAlg(e),
                encr_data,
                mac_alg,
                mac,
            })
        },
    )
}

fn dh() -> impl Strategy<Value = Payload<'static>> {
    prop_oneof![
        Just(DhGroup::Oakley5),
        Just(DhGroup::Oakley1),
        Just(DhGroup::Oakley2)
    ]
    .prop_flat_map(|group| {
        (
            Just(group),
            exact(group.value_len()),
            0u8..=15,
            key_validity(),
        )
    })
    .prop_map(|(group, value, reserved, validity)| {
        Payload::Dh(Dh {
            group,
            value,
            reserved,
            validity,
        })
    })
}

fn policy_param() -> impl Strategy<Value = PolicyParam<'static>> {
    (any::<u8>(), field(8, 255)).prop_map(|(param_type, value)| PolicyParam { param_type, value })
}

fn general_extension() -> impl Strategy<Value = GeneralExtension<'static>> {
    prop_oneof![
        field(32, 0xffff).prop_map(GeneralExtension::VendorId),
        field(32, 0xffff).prop_map(GeneralExtension::SdpIds),
        (any::<u8>(), field(16, 0xffff - 3)).prop_map(|(t, key_id)| {
            GeneralExtension::KeyId(KeyIdInfo {
                key_id_type: KeyIdType(t),
                key_id,
            })
        }),
        (3u8..=255, field(32, 0xffff)).prop_map(|(t, data)| GeneralExtension::Unknown {
            ext_type: ExtType(t),
            data,
        }),
    ]
}

/// Any payload but SIGN.
fn chained_payload() -> impl Strategy<Value = Payload<'static>> {
    prop_oneof![
        kemac(),
        (0u8..=3, field(64, 0x3fff)).prop_map(|(cache, data)| Payload::Pke(Pke { cache, data })),
        dh(),
        timestamp().prop_map(Payload::Timestamp),
        (any::<u8>(), field(48, 0xffff)).prop_map(|(t, data)| Payload::Id(Id {
            id_type: IdType(t),
            data
        })),
        (any::<u8>(), field(48, 0xffff)).prop_map(|(t, data)| Payload::Cert(Cert {
            cert_type: CertType(t),
            data
        })),
        prop_oneof![Just(HashFunc::Sha1), Just(HashFunc::Md5)]
            .prop_flat_map(|f| (Just(f), exact(f.hash_len())))
            .prop_map(|(hash_func, hash)| Payload::Chash(Chash { hash_func, hash })),
        mac_alg_and_mac()
            .prop_map(|(auth_alg, mac)| Payload::Verification(Verification { auth_alg, mac })),
        (any::<u8>(), any::<u8>(), vec(policy_param(), 0..6)).prop_map(|(policy_no, p, params)| {
            Payload::SecurityPolicy(SecurityPolicy {
                policy_no,
                prot_type: ProtType(p),
                params,
            })
        }),
        field(32, 255).prop_map(|value| Payload::Rand(Rand { value })),
        (any::<u8>(), any::<u16>()).prop_map(|(c, reserved)| Payload::Error(ErrorPayload {
            code: ErrorCode(c),
            reserved
        })),
        general_extension().prop_map(Payload::GeneralExtension),
    ]
}

fn sign() -> impl Strategy<Value = Payload<'static>> {
    (0u8..=15, field(64, 0xfff))
        .prop_map(|(s_type, signature)| Payload::Sign(Sign { s_type, signature }))
}

fn cs_id_map() -> impl Strategy<Value = CsIdMap> {
    prop_oneof![
        vec(
            (any::<u8>(), any::<u32>(), any::<u32>()).prop_map(|(policy_no, ssrc, roc)| {
                SrtpIdEntry {
                    policy_no,
                    ssrc,
                    roc,
                }
            }),
            0..=4
        )
        .prop_map(CsIdMap::SrtpId),
        any::<u8>().prop_map(|cs_count| CsIdMap::Empty { cs_count }),
    ]
}

fn header() -> impl Strategy<Value = CommonHeader> {
    (
        any::<u8>(),
        any::<bool>(),
        0u8..=127,
        any::<u32>(),
        cs_id_map(),
    )
        .prop_map(|(d, v, prf, csb_id, cs_id_map)| CommonHeader {
            data_type: DataType(d),
            v,
            prf: PrfFunc(prf),
            csb_id,
            cs_id_map,
        })
}

/// Header and payloads of a valid message (SIGN, if any, last).
fn message_parts() -> impl Strategy<Value = (CommonHeader, Vec<Payload<'static>>)> {
    (
        header(),
        vec(chained_payload(), 0..8),
        proptest::option::weighted(0.2, sign()),
    )
        .prop_map(|(h, mut ps, s)| {
            ps.extend(s);
            (h, ps)
        })
}

fn message() -> impl Strategy<Value = Message<'static>> {
    message_parts().prop_map(|(h, ps)| Message::new(h, ps).expect("generated messages are valid"))
}

fn key_data() -> impl Strategy<Value = KeyData> {
    (
        prop_oneof![Just(KeyKind::Tgk), Just(KeyKind::Tek)],
        bytes(40),
        proptest::option::of(bytes(20)),
        key_validity(),
    )
        .prop_map(|(kind, key, salt, validity)| KeyData {
            kind,
            key: SecretBytes::new(key),
            salt: salt.map(SecretBytes::new),
            validity,
        })
}

/// Random bytes that at least get past the version byte and name a payload,
/// so the fuzzing reaches the payload decoders.
fn plausible_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop_oneof![0u8..=12, 20u8..=21, any::<u8>()],
        any::<u8>(),
        0u8..=2,
        bytes(500),
    )
        .prop_map(|(dt, next, vp, map, rest)| {
            let mut b = vec![1, dt, next, vp, 0, 0, 0, 1, 0, map];
            b.extend(rest);
            b
        })
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(usize),
    Truncate(usize),
    Insert(usize, u8),
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::FlipBit),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
    ]
}

fn mutate(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match *m {
        Mutation::FlipBit(i) if !b.is_empty() => {
            let i = i % (8 * b.len());
            b[i / 8] ^= 0x80 >> (i % 8);
        }
        Mutation::Truncate(i) => b.truncate(i % (b.len() + 1)),
        Mutation::Insert(i, x) => b.insert(i % (b.len() + 1), x),
        Mutation::Delete(i) if !b.is_empty() => {
            b.remove(i % b.len());
        }
        _ => {}
    }
    b
}

fn flip_bit(b: &[u8], i: usize) -> Vec<u8> {
    let mut b = b.to_vec();
    let i = i % (8 * b.len());
    b[i / 8] ^= 0x80 >> (i % 8);
    b
}

/// The never-panic property of `Message::parse`, plus exact re-emission and
/// a stable second parse for every input it accepts.
fn check_parse(b: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(m) = Message::parse(b) {
        let out = m.to_bytes();
        prop_assert_eq!(&out[..], b);
        prop_assert_eq!(m.encoded_len(), b.len());
        let again = Message::parse(&out);
        prop_assert_eq!(again.as_ref(), Ok(&m));
    }
    Ok(())
}

/// The same for `KeyData::parse_list` and `KeyData::emit_list`.
fn check_key_data(b: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(list) = KeyData::parse_list(b, 0) {
        let mut out = Vec::new();
        KeyData::emit_list(&list, &mut out).expect("parsed key data is valid");
        prop_assert_eq!(&out[..], b);
    }
    Ok(())
}

fn key_data_bytes(list: &[KeyData]) -> Vec<u8> {
    let mut out = Vec::new();
    KeyData::emit_list(list, &mut out).expect("generated key data is valid");
    out
}

/// A PSK-protected message as the MBMS BM-SC would send it, with arbitrary
/// fields.
#[derive(Clone, Debug)]
struct PskCase {
    psk: Vec<u8>,
    csb_id: u32,
    rand: Vec<u8>,
    ts: Timestamp,
    v: bool,
    encr_alg: EncrAlg,
    keys: Vec<KeyData>,
}

impl PskCase {
    fn protect(&self) -> Protected {
        MessageBuilder::new(DataType::PSK_INIT)
            .csb_id(self.csb_id)
            .verification_requested(self.v)
            .timestamp(self.ts)
            .rand(self.rand.clone())
            .id(IdType::URI, "bmsc.home1.net")
            .id(IdType::NAI, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net")
            .key_id(KeyIdType::MSK, [0, 0xf1, 0x10, 0, 0, 0, 1])
            .protect(&self.psk, self.encr_alg, &self.keys)
            .expect("protect")
    }
}

fn psk_case() -> impl Strategy<Value = PskCase> {
    (
        vec(any::<u8>(), 1..=80),
        any::<u32>(),
        vec(any::<u8>(), 0..=32),
        prop_oneof![
            3 => any::<u32>().prop_map(Timestamp::Counter),
            1 => timestamp(),
        ],
        any::<bool>(),
        prop_oneof![Just(EncrAlg::AES_CM_128), Just(EncrAlg::NULL)],
        vec(key_data(), 0..=3),
    )
        .prop_map(|(psk, csb_id, rand, ts, v, encr_alg, keys)| PskCase {
            psk,
            csb_id,
            rand,
            ts,
            v,
            encr_alg,
            keys,
        })
}

fn initiator_fields() -> impl Strategy<Value = InitiatorFields> {
    (
        bytes(40),
        bytes(60),
        prop_oneof![vec(any::<u8>(), 4), vec(any::<u8>(), 8)],
    )
        .prop_map(|(idi, idr, t)| InitiatorFields { idi, idr, t })
}

fn is_mac_mismatch<T>(r: &Result<T, OpenError>) -> bool {
    matches!(r, Err(OpenError::Crypto(CryptoError::MacMismatch)))
}

// ---------------------------------------------------------------------------
// Codec properties

proptest! {
    #[test]
    fn built_messages_round_trip((h, ps) in message_parts()) {
        let m = Message::new(h.clone(), ps.clone()).expect("Message::new accepts a valid message");
        let b = m.to_bytes();
        prop_assert_eq!(m.encoded_len(), b.len());
        let parsed = Message::parse(&b).expect("parse of an encoding");
        prop_assert_eq!(&parsed, &m);
        prop_assert_eq!(parsed.clone().into_owned(), m.clone());
        prop_assert_eq!(parsed.header(), &h);
        prop_assert_eq!(parsed.payloads(), &ps[..]);
        prop_assert_eq!(parsed.to_bytes(), b);
        // `emit` appends.
        let mut out = vec![0xee];
        m.emit(&mut out);
        prop_assert_eq!(&out[1..], &m.to_bytes()[..]);
    }

    #[test]
    fn key_data_lists_round_trip(list in vec(key_data(), 0..=4)) {
        let b = key_data_bytes(&list);
        prop_assert_eq!(KeyData::parse_list(&b, 0).expect("parse_list of an encoding"), list);
    }

    #[test]
    fn parse_never_panics_on_random_bytes(b in bytes(511)) {
        check_parse(&b)?;
        check_key_data(&b)?;
    }

    #[test]
    fn parse_never_panics_on_plausible_bytes(b in plausible_bytes()) {
        check_parse(&b)?;
    }

    #[test]
    fn parse_never_panics_on_mutated_messages(m in message(), muts in vec(mutation(), 1..=3)) {
        let b = muts.iter().fold(m.to_bytes(), mutate);
        check_parse(&b)?;
    }

    #[test]
    fn parse_list_never_panics_on_mutated_key_data(list in vec(key_data(), 0..=3), muts in vec(mutation(), 1..=3)) {
        let b = muts.iter().fold(key_data_bytes(&list), mutate);
        check_key_data(&b)?;
    }
}

// ---------------------------------------------------------------------------
// Crypto properties

proptest! {
    #[test]
    fn protect_then_open_returns_the_keys(case in psk_case()) {
        let p = case.protect();
        prop_assert_eq!(Message::parse(p.bytes()).expect("parse").to_bytes(), p.bytes());
        let opened = open_psk(p.bytes(), &case.psk).expect("open_psk with the right key");
        prop_assert_eq!(&opened.key_data, &case.keys);
        prop_assert_eq!(&opened.message, p.message());
        let kemac = opened.message.kemac().expect("KEMAC");
        prop_assert_eq!(kemac.encr_alg, case.encr_alg);
        prop_assert_eq!(kemac.mac_alg, MacAlg::HmacSha1_160);
        let plain = key_data_bytes(&case.keys);
        prop_assert_eq!(kemac.encr_data.len(), plain.len());
        if case.encr_alg == EncrAlg::NULL {
            prop_assert_eq!(&kemac.encr_data[..], &plain[..]);
        }
    }

    /// A PSK of the same length with one bit changed. (Keys of different
    /// lengths are not always different keys: HMAC pads short keys with
    /// zeros, so in the MIKEY-1 PRF `k` and `k || 0x00` are the same key
    /// when the last 256-bit piece stays shorter than 64 bytes.)
    #[test]
    fn open_with_another_psk_is_a_mac_mismatch(case in psk_case(), bit in any::<usize>()) {
        let p = case.protect();
        let other = flip_bit(&case.psk, bit);
        prop_assert!(is_mac_mismatch(&open_psk(p.bytes(), &other)));
    }

    #[test]
    fn open_with_an_unrelated_psk_is_a_mac_mismatch(case in psk_case(), other in vec(any::<u8>(), 1..=80)) {
        // Same-key-after-HMAC-padding pairs (see above) are the only
        // legitimate exception.
        let same = |a: &[u8], b: &[u8]| {
            let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
            long.starts_with(short)
                && long[short.len()..].iter().all(|&x| x == 0)
                && long.len().div_ceil(32) == short.len().div_ceil(32)
        };
        prop_assume!(!same(&case.psk, &other));
        let p = case.protect();
        prop_assert!(is_mac_mismatch(&open_psk(p.bytes(), &other)));
    }

    #[test]
    fn any_flipped_bit_makes_open_fail(case in psk_case(), bit in any::<usize>()) {
        let p = case.protect();
        let b = flip_bit(p.bytes(), bit);
        match open_psk(&b, &case.psk) {
            Ok(_) => prop_assert!(false, "a message with bit {} flipped opened", bit % (8 * b.len())),
            Err(OpenError::Parse(_)) | Err(OpenError::Crypto(_)) => {}
        }
    }

    #[test]
    fn verification_mac_covers_key_and_initiator_fields(
        auth_key in vec(any::<u8>(), 20),
        init in initiator_fields(),
        csb_id in any::<u32>(),
        counter in any::<u32>(),
        which in 0usize..4,
        bit in any::<usize>(),
    ) {
        let p = MessageBuilder::new(DataType::PSK_RESP)
            .csb_id(csb_id)
            .timestamp(Timestamp::Counter(counter))
            .id(IdType::NAI, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net")
            .key_id(KeyIdType::MSK, [0, 0xf1, 0x10, 0, 0, 0, 1])
            .sign_verification(&auth_key, &init)
            .expect("sign_verification");
        let m = Message::parse(p.bytes()).expect("parse");
        prop_assert_eq!(&m, p.message());
        prop_assert_eq!(verify_verification_mac(p.bytes(), &m, &auth_key, &init), Ok(()));

        // Change one input: flip a bit of the key or of a non-empty field,
        // or append a byte to a field.
        let mut key = auth_key.clone();
        let mut changed = init.clone();
        let field = match which {
            0 => &mut key,
            1 => &mut changed.idi,
            2 => &mut changed.idr,
            _ => &mut changed.t,
        };
        if field.is_empty() || bit % 5 == 0 {
            // Non-zero: HMAC pads keys with zeros, so `key || 0x00` would be
            // the same key.
            field.push(bit as u8 | 1);
        } else {
            *field = flip_bit(field, bit);
        }
        prop_assert_eq!(
            verify_verification_mac(p.bytes(), &m, &key, &changed),
            Err(CryptoError::MacMismatch)
        );

        // And any flipped bit of the message.
        let b = flip_bit(p.bytes(), bit);
        if let Ok(m2) = Message::parse(&b) {
            prop_assert!(verify_verification_mac(&b, &m2, &auth_key, &init).is_err());
        }
    }
}

/// Every single-bit flip of one protected MSK message, exhaustively.
#[test]
fn every_flipped_bit_of_an_msk_message_makes_open_fail() {
    let case = PskCase {
        psk: vec![0x42; 32],
        csb_id: 0,
        rand: (0..16).collect(),
        ts: Timestamp::Counter(7),
        v: true,
        encr_alg: EncrAlg::AES_CM_128,
        keys: vec![KeyData {
            kind: KeyKind::Tgk,
            key: SecretBytes::new(vec![0x11; 16]),
            salt: None,
            validity: KeyValidity::Interval {
                from: vec![0, 1].into(),
                to: vec![0, 100].into(),
            },
        }],
    };
    let p = case.protect();
    assert!(open_psk(p.bytes(), &case.psk).is_ok());
    for i in 0..8 * p.bytes().len() {
        let b = flip_bit(p.bytes(), i);
        assert!(open_psk(&b, &case.psk).is_err(), "bit {i}");
    }
}

// ---------------------------------------------------------------------------
// The typed SRTP policy (RFC 3830 6.10.1 + RFC 4771)

fn srtp_policy() -> impl Strategy<Value = SrtpPolicy> {
    let o8 = || proptest::option::of(any::<u8>());
    let ob = || proptest::option::of(any::<bool>());
    (
        (
            proptest::option::of(any::<u8>().prop_map(SrtpEncrAlg)),
            o8(),
            proptest::option::of(any::<u8>().prop_map(SrtpAuthAlg)),
            o8(),
            o8(),
            o8(),
            proptest::option::of(any::<u32>()),
        ),
        (ob(), ob(), o8(), ob(), o8(), o8(), o8()),
        // Types past the RFC 3830 / RFC 4771 ones stay in `other`.
        vec((14u8..=255, vec(any::<u8>(), 0..8)), 0..3),
    )
        .prop_map(
            |((ea, ekl, aa, akl, skl, prf, kdr), (se, sce, fec, sa, tag, pre, rate), other)| {
                SrtpPolicy {
                    encr_alg: ea,
                    encr_key_len: ekl,
                    auth_alg: aa,
                    auth_key_len: akl,
                    salt_key_len: skl,
                    prf,
                    key_derivation_rate: kdr,
                    srtp_encryption: se,
                    srtcp_encryption: sce,
                    fec_order: fec,
                    srtp_authentication: sa,
                    auth_tag_len: tag,
                    srtp_prefix_len: pre,
                    roc_transmission_rate: rate,
                    other,
                }
            },
        )
}

proptest! {
    /// parse(emit(p)) == p for every SRTP policy, inside a whole MIKEY
    /// message, and the bytes re-emit exactly.
    #[test]
    fn srtp_policy_codec_round_trips(p in srtp_policy(), policy_no in any::<u8>()) {
        let m = MessageBuilder::new(DataType::PSK_INIT)
            .security_policy(p.to_payload(policy_no))
            .build()
            .expect("build");
        let b = m.to_bytes();
        let parsed = Message::parse(&b).expect("parse");
        prop_assert_eq!(parsed.to_bytes(), b.clone());
        let sp = parsed.security_policies().next().expect("SP");
        prop_assert_eq!(sp.policy_no, policy_no);
        prop_assert_eq!(SrtpPolicy::from_payload(sp).expect("typed"), p);
    }
}
