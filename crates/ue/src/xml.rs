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

fn decode_body(body: &[u8]) -> Result<String, XmlError> {
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
pub fn parse_msk_response(body: &[u8]) -> Result<Vec<KeyStatus>, XmlError> {
    let text = decode_body(body)?;
    let doc = parse_doc(&text, "mbmsMskResponse", NS_MSK_RESPONSE)?;
    doc.root_element()
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "key")
        .map(|n| {
            let kd = n.attribute("keyDomainId").unwrap_or("").trim();
            let id = n.attribute("mskId").unwrap_or("").trim();
            let name = match (kd.parse::<KeyDomainId>(), id.parse::<MskId>()) {
                (Ok(key_domain), Ok(msk_id)) => Some(MskName { key_domain, msk_id }),
                _ => None,
            };
            Ok(KeyStatus {
                name,
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
}
