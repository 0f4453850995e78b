//! The Ua request and response bodies of the UE (`PROFILE.md` section 3):
//! every namespace, element name and media type the UE uses, in this one
//! module.
//!
//! Registration and deregistration are sent as plain XML, the MSK request
//! Base64-encoded (seed 002 G.2.3). Responses are read with `roxmltree`
//! with DTDs refused and a node limit; a response body may be plain XML or
//! the Base64 of it.

use std::fmt::Write as _;

use base64::Engine as _;

use mbms::{KeyDomainId, MskId, MskName};

/// Namespace of `<mbmsRegister>` (`PROFILE.md` section 3).
pub const NS_REGISTER: &str = "urn:3GPP:metadata:2005:MBMS:register";
/// Namespace of `<mbmsDeregister>`.
pub const NS_DEREGISTER: &str = "urn:3GPP:metadata:2005:MBMS:deregister";
/// Namespace of `<mbmsRegisterResponse>` (answer to both).
pub const NS_REGISTER_RESPONSE: &str = "urn:3GPP:metadata:2005:MBMS:registerResponse";
/// Namespace of `<mbmsMskRequest>`.
pub const NS_MSK_REQUEST: &str = "urn:3GPP:metadata:2005:MBMS:mskRequest";
/// Namespace of `<mbmsMskResponse>` (TS 26.346 11.8).
pub const NS_MSK_RESPONSE: &str = "urn:3GPP:metadata:2005:MBMS:mskResponse";

/// Media type of a registration.
pub const CT_REGISTER: &str = "application/mbms-register+xml";
/// Media type of a deregistration.
pub const CT_DEREGISTER: &str = "application/mbms-deregister+xml";
/// Media type of an MSK request.
pub const CT_MSK: &str = "application/mbms-msk+xml";
/// Media type of the (de)registration response.
pub const CT_REGISTER_RESPONSE: &str = "application/mbms-register-response+xml";
/// Media type of the MSK request response.
pub const CT_MSK_RESPONSE: &str = "application/mbms-msk-response+xml";

/// Most XML nodes accepted in a response.
const MAX_NODES: u32 = 4096;

/// The three Ua procedures (URI parameter `requesttype`, seed 002 G.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// MBMS User Service Registration.
    Register,
    /// MBMS User Service Deregistration.
    Deregister,
    /// The basic MSK request (seed 002 6.3.2.2.1).
    MskRequest,
}

impl RequestType {
    /// The `requesttype` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Deregister => "deregister",
            Self::MskRequest => "msk-request",
        }
    }

    /// The request media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Register => CT_REGISTER,
            Self::Deregister => CT_DEREGISTER,
            Self::MskRequest => CT_MSK,
        }
    }

    /// The response media type.
    pub fn response_content_type(self) -> &'static str {
        match self {
            Self::Register | Self::Deregister => CT_REGISTER_RESPONSE,
            Self::MskRequest => CT_MSK_RESPONSE,
        }
    }
}

/// A response body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Neither XML nor Base64 of UTF-8 XML.
    #[error("body is neither XML nor Base64-encoded XML")]
    Encoding,
    /// Not well-formed (or a DTD, or too many nodes).
    #[error("malformed XML: {0}")]
    Malformed(String),
    /// Another root element or namespace.
    #[error("expected root element <{name}> in namespace {ns}")]
    WrongRoot {
        /// Expected element.
        name: &'static str,
        /// Expected namespace.
        ns: &'static str,
    },
    /// An item without a usable `status`.
    #[error("<{0}> without a 3-digit status attribute")]
    BadStatus(&'static str),
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "&#x{:X};", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

fn service_list(root: &str, ns: &str, services: &[&str]) -> String {
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{ns}\">\n");
    for id in services {
        let _ = writeln!(s, "  <serviceId>{}</serviceId>", escape(id));
    }
    let _ = writeln!(s, "</{root}>");
    s
}

/// `<mbmsRegister>` listing `services` (plain XML body).
pub fn register_body(services: &[&str]) -> Vec<u8> {
    service_list("mbmsRegister", NS_REGISTER, services).into_bytes()
}

/// `<mbmsDeregister>` listing `services` (plain XML body).
pub fn deregister_body(services: &[&str]) -> Vec<u8> {
    service_list("mbmsDeregister", NS_DEREGISTER, services).into_bytes()
}

/// The XML of an MSK request (Key Number 0 = the current MSK of the group).
pub fn msk_request_xml(keys: &[MskName]) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mbmsMskRequest xmlns=\"{NS_MSK_REQUEST}\">\n"
    );
    for k in keys {
        let _ = writeln!(
            s,
            "  <key keyDomainId=\"{}\" mskId=\"{}\"/>",
            k.key_domain, k.msk_id
        );
    }
    s.push_str("</mbmsMskRequest>\n");
    s
}

/// The MSK request body: the Base64 of [`msk_request_xml`] (seed 002 G.2.3).
pub fn msk_request_body(keys: &[MskName]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(msk_request_xml(keys))
        .into_bytes()
}

fn decode_body(body: &[u8]) -> Result<String, XmlError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let raw = match first {
        Some(b'<') => body.to_vec(),
        Some(_) => {
            let compact: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(&compact)
                .map_err(|_| XmlError::Encoding)?
        }
        None => return Err(XmlError::Encoding),
    };
    let text = String::from_utf8(raw).map_err(|_| XmlError::Encoding)?;
    Ok(text.trim_start_matches('\u{feff}').to_owned())
}

fn parse_doc<'a>(
    text: &'a str,
    name: &'static str,
    ns: &'static str,
) -> Result<roxmltree::Document<'a>, XmlError> {
    let opt = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opt)
        .map_err(|e| XmlError::Malformed(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().name() != name || root.tag_name().namespace() != Some(ns) {
        return Err(XmlError::WrongRoot { name, ns });
    }
    Ok(doc)
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
        let r = String::from_utf8(register_body(&["urn:mbms:service:news", "a&b"])).unwrap();
        assert!(r.contains("<mbmsRegister xmlns=\"urn:3GPP:metadata:2005:MBMS:register\">"));
        assert!(r.contains("<serviceId>urn:mbms:service:news</serviceId>"));
        assert!(r.contains("<serviceId>a&amp;b</serviceId>"));
        let d = String::from_utf8(deregister_body(&["x"])).unwrap();
        assert!(d.contains("<mbmsDeregister xmlns=\"urn:3GPP:metadata:2005:MBMS:deregister\">"));
        let m = msk_request_body(&[name(1, 0)]);
        let xml = base64::engine::general_purpose::STANDARD
            .decode(&m)
            .unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<mbmsMskRequest xmlns=\"urn:3GPP:metadata:2005:MBMS:mskRequest\">"));
        assert!(xml.contains("<key keyDomainId=\"00F110\" mskId=\"00010000\"/>"));
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
