//! Property tests of the Digest header codec (RFC 7616 3.3-3.5): parsing is
//! total (never panics) and format -> parse round-trips.

use gba::digest::{Algorithm, AuthenticationInfo, Authorization, Challenge, Qop};
use proptest::prelude::*;

fn algorithm() -> impl Strategy<Value = Option<Algorithm>> {
    prop::option::of(prop::sample::select(Algorithm::ALL.to_vec()))
}

fn qop_list() -> impl Strategy<Value = Vec<Qop>> {
    prop::sample::select(vec![
        vec![],
        vec![Qop::Auth],
        vec![Qop::AuthInt],
        vec![Qop::Auth, Qop::AuthInt],
        vec![Qop::AuthInt, Qop::Auth],
    ])
}

/// Any text without control characters (which formatting rejects).
fn text() -> impl Strategy<Value = String> {
    "[^\\x00-\\x08\\x0a-\\x1f\\x7f]{0,40}"
}

/// Strings that look like Digest headers, to reach deeper parser states than
/// uniformly random text.
fn header_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("Digest ".to_owned()),
        Just("digest".to_owned()),
        Just(", ".to_owned()),
        Just(",".to_owned()),
        Just("=".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("\r\n".to_owned()),
        Just("realm".to_owned()),
        Just("nonce".to_owned()),
        Just("qop".to_owned()),
        Just("nc".to_owned()),
        Just("stale".to_owned()),
        Just("algorithm".to_owned()),
        Just("auth-int".to_owned()),
        Just("00000001".to_owned()),
        Just("é".to_owned()),
        "[a-zA-Z0-9+/=]{0,6}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parsers_never_panic_on_any_string(s in any::<String>()) {
        let _ = Challenge::parse(&s);
        let _ = Authorization::parse(&s);
        let _ = AuthenticationInfo::parse(&s);
        let prefixed = format!("Digest {s}");
        let _ = Challenge::parse(&prefixed);
        let _ = Authorization::parse(&prefixed);
    }

    #[test]
    fn parsers_never_panic_on_header_like_strings(s in header_like()) {
        let _ = Challenge::parse(&s);
        let _ = Authorization::parse(&s);
        let _ = AuthenticationInfo::parse(&s);
    }

    #[test]
    fn challenge_round_trips(
        realm in text(),
        domain in prop::option::of(text()),
        nonce in text(),
        opaque in prop::option::of(text()),
        stale in any::<bool>(),
        algorithm in algorithm(),
        qop in qop_list(),
    ) {
        let c = Challenge { realm, domain, nonce, opaque, stale, algorithm, qop };
        let v = c.to_header_value().unwrap();
        prop_assert_eq!(Challenge::parse(&v).unwrap(), c);
    }

    #[test]
    fn authorization_round_trips(
        username in text(),
        realm in text(),
        nonce in text(),
        uri in text(),
        response in "[0-9a-f]{0,64}",
        algorithm in algorithm(),
        qop in prop::option::of(prop::sample::select(vec![Qop::Auth, Qop::AuthInt])),
        nc in any::<u32>(),
        cnonce in text(),
        opaque in prop::option::of(text()),
        auts in prop::option::of("[A-Za-z0-9+/]{0,20}={0,2}"),
    ) {
        let (cnonce, nc) = if qop.is_some() { (Some(cnonce), Some(nc)) } else { (None, None) };
        let a = Authorization { username, realm, nonce, uri, response, algorithm, cnonce, opaque, qop, nc, auts };
        let v = a.to_header_value().unwrap();
        prop_assert_eq!(Authorization::parse(&v).unwrap(), a);
    }

    #[test]
    fn authentication_info_round_trips(
        nextnonce in prop::option::of(text()),
        qop in prop::option::of(prop::sample::select(vec![Qop::Auth, Qop::AuthInt])),
        rspauth in prop::option::of("[0-9a-f]{32}"),
        cnonce in prop::option::of(text()),
        nc in prop::option::of(any::<u32>()),
    ) {
        let i = AuthenticationInfo { nextnonce, qop, rspauth, cnonce, nc };
        let v = i.to_header_value().unwrap();
        prop_assert_eq!(AuthenticationInfo::parse(&v).unwrap(), i);
    }
}
