//! `testvectors/external/rfc1982.json`: 16-bit serial number arithmetic.

use std::cmp::Ordering;

use mbms::{MtkId, Serial16};
use serde_json::Value;

#[test]
fn rfc1982_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testvectors/external/rfc1982.json"
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 7);
    for c in cases {
        let a = Serial16(c[0].as_u64().unwrap() as u16);
        let b = Serial16(c[1].as_u64().unwrap() as u16);
        let expected = match c[2].as_str().unwrap() {
            "gt" => Some(Ordering::Greater),
            "lt" => Some(Ordering::Less),
            "eq" => Some(Ordering::Equal),
            "undefined" => None,
            other => panic!("unknown relation {other}"),
        };
        assert_eq!(a.partial_cmp(&b), expected, "{a} vs {b}");
        assert_eq!(MtkId(a).partial_cmp(&MtkId(b)), expected);
        // The relation is antisymmetric.
        assert_eq!(b.partial_cmp(&a), expected.map(Ordering::reverse));
    }
}
