//! The Ua request and response bodies (`PROFILE.md` section 3): every
//! namespace, element name and media type in this one module.
//!
//! Requests are parsed with `roxmltree` with DTDs refused and a node limit;
//! a body is either plain XML (first non-blank byte `<`) or the Base64 of
//! it (seed 002 G.2.3 sends the MSK request Base64-encoded).

use std::fmt::Write as _;

use base64::Engine as _;

use crate::ids::{KeyDomainId, MskId, MskName};

/// Namespace of `<mbmsRegister>` (`PROFILE.md` section 3).
pub const NS_REGISTER: &str = "urn:3GPP:metadata:2005:MBMS:register";
/// Namespace of `<mbmsDeregister>`.
pub const NS_DEREGISTER: &str = "urn:3GPP:metadata:2005:MBMS:deregister";
/// Namespace of `<mbmsRegisterResponse>`.
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

/// Most items (services or keys) in one request.
pub const MAX_ITEMS: usize = 256;

/// Most XML nodes in one request body.
const MAX_NODES: u32 = 4 * MAX_ITEMS as u32 + 64;

/// The three Ua procedures (`requesttype` URI parameter, seed 002 G.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// `register`: MBMS User Service Registration.
    Register,
    /// `deregister`: MBMS User Service Deregistration.
    Deregister,
    /// `msk-request`: the basic MSK request (seed 002 6.3.2.2.1).
    MskRequest,
}

impl RequestType {
    /// From the `requesttype` value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "register" => Some(Self::Register),
            "deregister" => Some(Self::Deregister),
            "msk-request" => Some(Self::MskRequest),
            _ => None,
        }
    }

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

    fn root(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Register => ("mbmsRegister", NS_REGISTER, "serviceId"),
            Self::Deregister => ("mbmsDeregister", NS_DEREGISTER, "serviceId"),
            Self::MskRequest => ("mbmsMskRequest", NS_MSK_REQUEST, "key"),
        }
    }
}

/// Why a body was refused as a whole (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Neither XML nor Base64 of UTF-8 XML.
    #[error("body is neither XML nor Base64-encoded XML")]
    Encoding,
    /// Not well-formed, or a DTD, or too many nodes.
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
    /// No items.
    #[error("the request lists no {0}")]
    Empty(&'static str),
    /// More than [`MAX_ITEMS`] items.
    #[error("the request lists more than {MAX_ITEMS} items")]
    TooMany,
    /// An item of a response without a usable `status` (UE side).
    #[error("<{0}> without a 3-digit status attribute")]
    BadStatus(&'static str),
    /// A value to write holds a character that XML 1.0 cannot carry, not
    /// even as a character reference (XML 1.0 section 2.2, production
    /// `Char`: C0 controls other than tab, LF and CR; U+FFFE, U+FFFF).
    #[error("{what} holds the character U+{:04X}, which XML 1.0 cannot carry", u32::from(*ch))]
    InvalidChar {
        /// What the value is (`serviceId`, ...).
        what: &'static str,
        /// The first such character.
        ch: char,
    },
}

/// Whether XML 1.0 can carry `c` (section 2.2, production `Char`: `#x9 |
/// #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]`; a
/// Rust `char` is never a surrogate).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Refuses a value that XML 1.0 cannot carry ([`is_xml_char`]), naming it
/// `what`: the check for values that go into a Ua body, where they come
/// from (configuration, API callers).
pub fn check_text(what: &'static str, value: &str) -> Result<(), XmlError> {
    match value.chars().find(|c| !is_xml_char(*c)) {
        None => Ok(()),
        Some(ch) => Err(XmlError::InvalidChar { what, ch }),
    }
}

/// The XML text of a body: plain (borrowed, no copy), or Base64 of it
/// (decoded once; a UTF-8 byte order mark before the XML is dropped).
pub fn decode_body(body: &[u8]) -> Result<std::borrow::Cow<'_, str>, XmlError> {
    const BOM: &str = "\u{feff}";
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'<') => std::str::from_utf8(body)
            .map(std::borrow::Cow::Borrowed)
            .map_err(|_| XmlError::Encoding),
        Some(_) => {
            let b64 = &base64::engine::general_purpose::STANDARD;
            let decoded = if body.iter().any(u8::is_ascii_whitespace) {
                let compact: Vec<u8> = body
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                b64.decode(&compact)
            } else {
                b64.decode(body)
            }
            .map_err(|_| XmlError::Encoding)?;
            let mut text = String::from_utf8(decoded).map_err(|_| XmlError::Encoding)?;
            let bom = text.len() - text.trim_start_matches(BOM).len();
            text.drain(..bom);
            Ok(std::borrow::Cow::Owned(text))
        }
        None => Err(XmlError::Encoding),
    }
}

/// Parses a Ua body with DTDs refused and at most `nodes_limit` nodes, and
/// checks its root element `<name>` in namespace `ns`.
pub fn parse_document<'a>(
    text: &'a str,
    name: &'static str,
    ns: &'static str,
    nodes_limit: u32,
) -> Result<roxmltree::Document<'a>, XmlError> {
    let opt = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit,
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

fn parse<'a>(text: &'a str, rt: RequestType) -> Result<roxmltree::Document<'a>, XmlError> {
    let (name, ns, _) = rt.root();
    parse_document(text, name, ns, MAX_NODES)
}

fn items<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    rt: RequestType,
) -> Result<Vec<roxmltree::Node<'a, 'i>>, XmlError> {
    let (_, ns, item) = rt.root();
    let v: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .filter(|n| n.tag_name().name() == item && n.tag_name().namespace() == Some(ns))
        .collect();
    if v.is_empty() {
        return Err(XmlError::Empty(item));
    }
    if v.len() > MAX_ITEMS {
        return Err(XmlError::TooMany);
    }
    Ok(v)
}

/// The service IDs of a registration or deregistration, in order (an
/// empty string for an empty `<serviceId>`).
pub fn parse_services(text: &str, rt: RequestType) -> Result<Vec<String>, XmlError> {
    let doc = parse(text, rt)?;
    Ok(items(&doc, rt)?
        .iter()
        .map(|n| n.text().unwrap_or("").trim().to_owned())
        .collect())
}

/// One `<key>` of an MSK request, as given and as understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyItem {
    /// `keyDomainId` as given (echoed in the response).
    pub key_domain_text: String,
    /// `mskId` as given.
    pub msk_id_text: String,
    /// The MSK named, when both attributes parse.
    pub name: Option<MskName>,
}

/// The keys of an MSK request, in order.
pub fn parse_msk_request(text: &str) -> Result<Vec<KeyItem>, XmlError> {
    let doc = parse(text, RequestType::MskRequest)?;
    Ok(items(&doc, RequestType::MskRequest)?
        .iter()
        .map(|n| {
            let kd = n.attribute("keyDomainId").unwrap_or("").trim().to_owned();
            let id = n.attribute("mskId").unwrap_or("").trim().to_owned();
            let name = parse_key(&kd, &id);
            KeyItem {
                key_domain_text: kd,
                msk_id_text: id,
                name,
            }
        })
        .collect())
}

fn parse_key(kd: &str, id: &str) -> Option<MskName> {
    // Hex only on the wire (`PROFILE.md` section 3), exactly 6 and 8 digits.
    if kd.len() != 6 || id.len() != 8 {
        return None;
    }
    Some(MskName {
        key_domain: kd.parse::<KeyDomainId>().ok()?,
        msk_id: id.parse::<MskId>().ok()?,
    })
}

/// Escapes text for XML character data or an attribute value. Tab, LF and
/// CR are written as character references so that they read back as they
/// were (XML 1.0 sections 2.11 and 3.3.3 would normalise them). A character
/// that XML 1.0 cannot carry at all ([`is_xml_char`]) is never written: it
/// becomes U+FFFD, so that the output is always well-formed. Values from
/// outside are refused before with [`check_text`]; values read from a
/// parsed request cannot hold such characters.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => {
                let _ = write!(o, "&#x{:X};", u32::from(c));
            }
            c if !is_xml_char(c) => o.push(char::REPLACEMENT_CHARACTER),
            c => o.push(c),
        }
    }
    o
}

/// `<mbmsRegisterResponse>`: one status per service, in request order.
pub fn register_response(items: &[(String, u16)]) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mbmsRegisterResponse xmlns=\"{NS_REGISTER_RESPONSE}\">\n"
    );
    for (id, status) in items {
        let _ = writeln!(
            s,
            "  <serviceStatus serviceId=\"{}\" status=\"{status}\"/>",
            escape(id)
        );
    }
    s.push_str("</mbmsRegisterResponse>\n");
    s
}

/// `<mbmsMskResponse>`: one status per key, in request order.
pub fn msk_response(items: &[(KeyItem, u16)]) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<mbmsMskResponse xmlns=\"{NS_MSK_RESPONSE}\">\n"
    );
    for (k, status) in items {
        let _ = writeln!(
            s,
            "  <key keyDomainId=\"{}\" mskId=\"{}\" status=\"{status}\"/>",
            escape(&k.key_domain_text),
            escape(&k.msk_id_text)
        );
    }
    s.push_str("</mbmsMskResponse>\n");
    s
}

/// `<mbmsRegister>` with these services (for UEs and tests).
pub fn register_request(services: &[&str]) -> String {
    service_list("mbmsRegister", NS_REGISTER, services)
}

/// `<mbmsDeregister>` with these services.
pub fn deregister_request(services: &[&str]) -> String {
    service_list("mbmsDeregister", NS_DEREGISTER, services)
}

fn service_list(root: &str, ns: &str, services: &[&str]) -> String {
    let mut s = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{root} xmlns=\"{ns}\">\n");
    for id in services {
        let _ = writeln!(s, "  <serviceId>{}</serviceId>", escape(id));
    }
    let _ = writeln!(s, "</{root}>");
    s
}

/// `<mbmsMskRequest>` for these MSKs (Key Number 0 = the current MSK).
pub fn msk_request(keys: &[MskName]) -> String {
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

/// Reads the per-item statuses of a response (for UEs and tests): the
/// `status` attribute of every element that has one, in order.
pub fn response_statuses(text: &str) -> Result<Vec<(String, u16)>, XmlError> {
    let doc = roxmltree::Document::parse(text).map_err(|e| XmlError::Malformed(e.to_string()))?;
    Ok(doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .filter_map(|n| {
            let status = n.attribute("status")?.parse().ok()?;
            let id = n
                .attribute("serviceId")
                .map(str::to_owned)
                .or_else(|| {
                    Some(format!(
                        "{}/{}",
                        n.attribute("keyDomainId")?,
                        n.attribute("mskId")?
                    ))
                })
                .unwrap_or_default();
            Some((id, status))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_base64_bodies() {
        let x = register_request(&["urn:a", "urn:b&c"]);
        assert_eq!(decode_body(x.as_bytes()).unwrap(), x);
        let b = base64::engine::general_purpose::STANDARD.encode(&x);
        let wrapped = format!("{}\n{}\n", &b[..20], &b[20..]);
        assert_eq!(decode_body(wrapped.as_bytes()).unwrap(), x);
        assert_eq!(
            parse_services(&x, RequestType::Register).unwrap(),
            ["urn:a", "urn:b&c"]
        );
        assert!(decode_body(b"  ").is_err());
        assert!(decode_body(b"!!!notbase64").is_err());
        // A plain body is borrowed; a byte order mark before Base64'd XML
        // goes.
        assert!(matches!(
            decode_body(x.as_bytes()).unwrap(),
            std::borrow::Cow::Borrowed(_)
        ));
        let with_bom = base64::engine::general_purpose::STANDARD.encode(format!("\u{feff}{x}"));
        assert_eq!(decode_body(with_bom.as_bytes()).unwrap(), x);
        assert!(decode_body(&[0xff, b'<']).is_err(), "not UTF-8 nor Base64");
        assert!(decode_body("<a>\u{0}".as_bytes()).is_ok());
        assert!(decode_body(&[b'<', 0xff]).is_err(), "plain but not UTF-8");
    }

    #[test]
    fn refusals() {
        let x = register_request(&["urn:a"]);
        assert!(matches!(
            parse_services(&x, RequestType::Deregister),
            Err(XmlError::WrongRoot { .. })
        ));
        let no_ns = "<mbmsRegister><serviceId>a</serviceId></mbmsRegister>";
        assert!(parse_services(no_ns, RequestType::Register).is_err());
        let dtd = format!(
            "<!DOCTYPE r [<!ENTITY a \"aaaa\">]><mbmsRegister xmlns=\"{NS_REGISTER}\"><serviceId>&a;</serviceId></mbmsRegister>"
        );
        assert!(matches!(
            parse_services(&dtd, RequestType::Register),
            Err(XmlError::Malformed(_))
        ));
        let empty = format!("<mbmsRegister xmlns=\"{NS_REGISTER}\"/>");
        assert_eq!(
            parse_services(&empty, RequestType::Register),
            Err(XmlError::Empty("serviceId"))
        );
        let many: Vec<String> = (0..=MAX_ITEMS).map(|i| format!("urn:{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(parse_services(&register_request(&refs), RequestType::Register).is_err());
        assert!(parse_services("<mbmsRegister", RequestType::Register).is_err());
    }

    #[test]
    fn msk_requests_and_responses() {
        let kd: KeyDomainId = "001-01".parse().unwrap();
        let k = MskName {
            key_domain: kd,
            msk_id: MskId::new(1, 0),
        };
        let x = msk_request(&[k]);
        assert!(x.contains("keyDomainId=\"00F110\" mskId=\"00010000\""));
        let bad = format!(
            "<mbmsMskRequest xmlns=\"{NS_MSK_REQUEST}\"><key keyDomainId=\"00F110\" mskId=\"00010000\"/><key keyDomainId=\"zz&quot;\" mskId=\"1\"/><key/></mbmsMskRequest>"
        );
        let items = parse_msk_request(&bad).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].name, Some(k));
        assert_eq!(items[1].name, None);
        let resp = msk_response(&[(items[0].clone(), 200), (items[1].clone(), 400)]);
        assert!(resp.contains("keyDomainId=\"zz&quot;\""));
        let st = response_statuses(&resp).unwrap();
        assert_eq!(st[0], ("00F110/00010000".into(), 200));
        assert_eq!(st[1].1, 400);
        let r = register_response(&[("urn:<x>".into(), 403)]);
        assert_eq!(response_statuses(&r).unwrap(), [("urn:<x>".into(), 403)]);
    }
}
