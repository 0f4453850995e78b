//! The Ua request and response bodies of the UE (`PROFILE.md` section 3):
//! every namespace, element name and media type the UE uses, in this one
//! module.
//!
//! Registration and deregistration are sent as plain XML, the MSK request
//! Base64-encoded (seed 002 G.2.3). Responses are read with `roxmltree`
//! with DTDs refused and a node limit; a response body may be plain XML or
//! the Base64 of it.

use base64::Engine as _;

use mbms::{KeyDomainId, MskId, MskName};

pub use mbms::ua::{
    RequestType, CT_DEREGISTER, CT_MSK, CT_MSK_RESPONSE, CT_REGISTER, CT_REGISTER_RESPONSE,
    NS_DEREGISTER, NS_MSK_REQUEST, NS_MSK_RESPONSE, NS_REGISTER, NS_REGISTER_RESPONSE,
};

/// Most XML nodes accepted in a response.
const MAX_NODES: u32 = 4096;

/// A request could not be written or a response body could not be read
/// (shared with the BM-SC).
pub use mbms::ua::XmlError;

/// `<mbmsRegister>` listing `services` (plain XML body); a service ID that
/// XML cannot carry is refused ([`XmlError::InvalidChar`]).
pub fn register_body(services: &[&str]) -> Result<Vec<u8>, XmlError> {
    check_services(services)?;
    Ok(mbms::ua::register_request(services).into_bytes())
}

/// `<mbmsDeregister>` listing `services` (plain XML body); a service ID
/// that XML cannot carry is refused.
pub fn deregister_body(services: &[&str]) -> Result<Vec<u8>, XmlError> {
    check_services(services)?;
    Ok(mbms::ua::deregister_request(services).into_bytes())
}

fn check_services(services: &[&str]) -> Result<(), XmlError> {
    services
        .iter()
        .try_for_each(|s| mbms::ua::check_text("serviceId", s))
}

/// The XML of an MSK request (Key Number 0 = the current MSK of the group).
pub fn msk_request_xml(keys: &[MskName]) -> String {
    mbms::ua::msk_request(keys)
}

/// The MSK request body: the Base64 of [`msk_request_xml`] (seed 002 G.2.3).
pub fn msk_request_body(keys: &[MskName]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(msk_request_xml(keys))
        .into_bytes()
}

fn decode_body(body: &[u8]) -> Result<std::borrow::Cow<'_, str>, XmlError> {
    mbms::ua::decode_body(body).map_err(|_| XmlError::Encoding)
}

fn parse_doc<'a>(
    text: &'a str,
    name: &'static str,
    ns: &'static str,
) -> Result<roxmltree::Document<'a>, XmlError> {
    mbms::ua::parse_document(text, name, ns, MAX_NODES)
}

fn status_of(n: &roxmltree::Node<'_, '_>, what: &'static str) -> Result<u16, XmlError> {
    n.attribute("status")
        .map(str::trim)
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse().ok())
        .ok_or(XmlError::BadStatus(what))
}

/// `<mbmsRegisterResponse>`: `(service ID, status)` per `<serviceStatus>`,
/// in order.
pub fn parse_register_response(body: &[u8]) -> Result<Vec<(String, u16)>, XmlError> {
    let text = decode_body(body)?;
    let doc = parse_doc(&text, "mbmsRegisterResponse", NS_REGISTER_RESPONSE)?;
    doc.root_element()
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "serviceStatus")
        .map(|n| {
            let id = n.attribute("serviceId").unwrap_or("").trim().to_owned();
            Ok((id, status_of(&n, "serviceStatus")?))
        })
        .collect()
}

/// One `<key>` of an MSK response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyStatus {
    /// The MSK named, when the attributes parse.
    pub name: Option<MskName>,
    /// The per-item status (`PROFILE.md` section 3: 200, 400, 403, 404,
    /// 480, 500).
    pub status: u16,
}

/// `<mbmsMskResponse>`: the status of every `<key>`, in order.
///
/// The BM-SC's own layout ([`mbms::ua::msk_response`]: plain XML, one
/// `<key>` per line, attributes of hex digits and `-`) is read directly
/// (`parse_msk_response_layout`); any other body goes through the XML
/// parser. Both give the same answer for a body of that layout.
pub fn parse_msk_response(body: &[u8]) -> Result<Vec<KeyStatus>, XmlError> {
    match parse_msk_response_layout(body) {
        Some(keys) => Ok(keys),
        None => parse_msk_response_xml(body),
    }
}

/// Most `<key>`s read by [`parse_msk_response_layout`]; a longer answer
/// goes through the XML parser (and its node limit).
const LAYOUT_MAX_KEYS: usize = 64;

/// The MSK response exactly as the BM-SC writes it
/// ([`mbms::ua::msk_response`]), read without an XML parser: `None` for
/// anything else (another layout, entities, whitespace in a value, a
/// status that is not three digits, Base64), which the caller hands to
/// the XML parser. An attribute value here is its own text (no entity,
/// no whitespace to normalise), so its meaning is the XML parser's.
fn parse_msk_response_layout(body: &[u8]) -> Option<Vec<KeyStatus>> {
    /// An attribute value followed by `"`: ASCII letters, digits and `-`.
    fn value(rest: &[u8]) -> Option<(&str, &[u8])> {
        let end = rest.iter().position(|&b| b == b'"')?;
        let (v, tail) = rest.split_at(end);
        if v.is_empty() || !v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
            return None;
        }
        Some((std::str::from_utf8(v).ok()?, &tail[1..]))
    }
    let rest = body
        .strip_prefix(
            &b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mbmsMskResponse xmlns=\""[..],
        )?
        .strip_prefix(NS_MSK_RESPONSE.as_bytes())?;
    let mut rest = rest.strip_prefix(&b"\">\n"[..])?;
    let mut keys = Vec::new();
    while rest != b"</mbmsMskResponse>\n" {
        if keys.len() == LAYOUT_MAX_KEYS {
            return None;
        }
        let (kd, r) = value(rest.strip_prefix(&b"  <key keyDomainId=\""[..])?)?;
        let (id, r) = value(r.strip_prefix(&b" mskId=\""[..])?)?;
        let r = r.strip_prefix(&b" status=\""[..])?;
        let (status, r) = r.split_first_chunk::<3>()?;
        if !status.iter().all(u8::is_ascii_digit) {
            return None;
        }
        rest = r.strip_prefix(&b"\"/>\n"[..])?;
        let status = status
            .iter()
            .fold(0u16, |n, d| 10 * n + u16::from(d - b'0'));
        keys.push(KeyStatus {
            name: msk_name(kd, id),
            status,
        });
    }
    Some(keys)
}

/// The MSK named by `keyDomainId` and `mskId`, when both parse.
fn msk_name(kd: &str, id: &str) -> Option<MskName> {
    match (kd.parse::<KeyDomainId>(), id.parse::<MskId>()) {
        (Ok(key_domain), Ok(msk_id)) => Some(MskName { key_domain, msk_id }),
        _ => None,
    }
}

/// [`parse_msk_response`] through the XML parser (any layout, Base64 or
/// plain).
fn parse_msk_response_xml(body: &[u8]) -> Result<Vec<KeyStatus>, XmlError> {
    let text = decode_body(body)?;
    let doc = parse_doc(&text, "mbmsMskResponse", NS_MSK_RESPONSE)?;
    doc.root_element()
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "key")
        .map(|n| {
            let kd = n.attribute("keyDomainId").unwrap_or("").trim();
            let id = n.attribute("mskId").unwrap_or("").trim();
            Ok(KeyStatus {
                name: msk_name(kd, id),
                status: status_of(&n, "key")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(g: u16, n: u16) -> MskName {
        MskName {
            key_domain: "001-01".parse().unwrap(),
            msk_id: MskId::new(g, n),
        }
    }

    #[test]
    fn request_bodies_follow_the_profile() {
        let r =
            String::from_utf8(register_body(&["urn:mbms:service:news", "a&b"]).unwrap()).unwrap();
        assert!(r.contains("<mbmsRegister xmlns=\"urn:3GPP:metadata:2005:MBMS:register\">"));
        assert!(r.contains("<serviceId>urn:mbms:service:news</serviceId>"));
        assert!(r.contains("<serviceId>a&amp;b</serviceId>"));
        let d = String::from_utf8(deregister_body(&["x"]).unwrap()).unwrap();
        assert!(d.contains("<mbmsDeregister xmlns=\"urn:3GPP:metadata:2005:MBMS:deregister\">"));
        let m = msk_request_body(&[name(1, 0)]);
        let xml = base64::engine::general_purpose::STANDARD
            .decode(&m)
            .unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<mbmsMskRequest xmlns=\"urn:3GPP:metadata:2005:MBMS:mskRequest\">"));
        assert!(xml.contains("<key keyDomainId=\"00F110\" mskId=\"00010000\"/>"));
    }

    /// Issue 14 point 11: a service ID that XML 1.0 cannot carry is refused
    /// with a typed error, not written as `&#x1;`.
    #[test]
    fn unwritable_service_ids_are_refused() {
        for body in [
            register_body(&["ok", "a\u{1}b"]),
            deregister_body(&["\u{FFFF}"]),
        ] {
            assert!(matches!(
                body,
                Err(XmlError::InvalidChar {
                    what: "serviceId",
                    ..
                })
            ));
        }
        let r = register_body(&["tab\there"]).unwrap();
        assert_eq!(
            mbms::ua::parse_services(std::str::from_utf8(&r).unwrap(), RequestType::Register)
                .unwrap(),
            ["tab\there"]
        );
    }

    #[test]
    fn responses() {
        let r = format!(
            "<?xml version=\"1.0\"?><mbmsRegisterResponse xmlns=\"{NS_REGISTER_RESPONSE}\"><serviceStatus serviceId=\"urn:a\" status=\"200\"/><serviceStatus serviceId=\"urn:b\" status=\"403\"/></mbmsRegisterResponse>"
        );
        assert_eq!(
            parse_register_response(r.as_bytes()).unwrap(),
            [("urn:a".to_string(), 200), ("urn:b".to_string(), 403)]
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode(&r);
        assert_eq!(parse_register_response(b64.as_bytes()).unwrap().len(), 2);
        let m = format!(
            "<mbmsMskResponse xmlns=\"{NS_MSK_RESPONSE}\"><key keyDomainId=\"00F110\" mskId=\"00010000\" status=\"200\"/><key keyDomainId=\"zz\" mskId=\"1\" status=\"400\"/></mbmsMskResponse>"
        );
        let st = parse_msk_response(m.as_bytes()).unwrap();
        assert_eq!(
            st,
            [
                KeyStatus {
                    name: Some(name(1, 0)),
                    status: 200
                },
                KeyStatus {
                    name: None,
                    status: 400
                }
            ]
        );
        assert!(matches!(
            parse_msk_response(r.as_bytes()),
            Err(XmlError::WrongRoot { .. })
        ));
        let bad = format!("<mbmsMskResponse xmlns=\"{NS_MSK_RESPONSE}\"><key/></mbmsMskResponse>");
        assert_eq!(
            parse_msk_response(bad.as_bytes()),
            Err(XmlError::BadStatus("key"))
        );
        let dtd = format!(
            "<!DOCTYPE r [<!ENTITY a \"a\">]><mbmsMskResponse xmlns=\"{NS_MSK_RESPONSE}\"/>"
        );
        assert!(matches!(
            parse_msk_response(dtd.as_bytes()),
            Err(XmlError::Malformed(_))
        ));
        assert_eq!(parse_msk_response(b"  "), Err(XmlError::Encoding));
    }

    /// The layout reader agrees with the XML parser on every response the
    /// BM-SC writes (odd attribute texts included) and on damaged ones,
    /// and never panics; for the BM-SC's usual answers it is the one used.
    #[test]
    fn layout_reader_agrees_with_the_xml_parser() {
        use mbms::ua::{msk_response, KeyItem};
        use rand::{Rng as _, SeedableRng as _};
        let texts = [
            "00F110", "001-01", "00010000", "0001FFFF", "zz", "1", "a&b", " 00F110", "\"", "",
            "0001000", "-", "00f110",
        ];
        let statuses = [200u16, 400, 403, 404, 480, 500, 0, 7, 65535];
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let mut layout_used = 0;
        for round in 0..3000 {
            let items: Vec<(KeyItem, u16)> = (0..rng.gen_range(0..5))
                .map(|_| {
                    let kd = texts[rng.gen_range(0..texts.len())];
                    let id = texts[rng.gen_range(0..texts.len())];
                    let item = KeyItem {
                        key_domain_text: kd.to_owned(),
                        msk_id_text: id.to_owned(),
                        name: None,
                    };
                    (item, statuses[rng.gen_range(0..statuses.len())])
                })
                .collect();
            let mut body = msk_response(&items).into_bytes();
            // Every other round damaged: bytes changed, cut or added.
            if round % 2 == 1 {
                for _ in 0..rng.gen_range(1..4) {
                    let i = rng.gen_range(0..=body.len());
                    match rng.gen_range(0..3) {
                        0 if i < body.len() => body[i] = rng.gen(),
                        1 => body.truncate(i),
                        _ => body.insert(i, b"<>\"/ 0&"[rng.gen_range(0..7)]),
                    }
                }
            }
            let general = parse_msk_response_xml(&body);
            if let Some(fast) = parse_msk_response_layout(&body) {
                layout_used += 1;
                assert_eq!(Ok(fast), general, "{:?}", String::from_utf8_lossy(&body));
            }
            assert_eq!(parse_msk_response(&body), general);
        }
        assert!(layout_used > 300, "{layout_used}");
        let usual = msk_response(&[(
            KeyItem {
                key_domain_text: "00F110".into(),
                msk_id_text: "00010000".into(),
                name: None,
            },
            200,
        )]);
        assert_eq!(
            parse_msk_response_layout(usual.as_bytes()),
            Some(vec![KeyStatus {
                name: Some(name(1, 0)),
                status: 200
            }])
        );
    }
}
