//! Issue 14 point 11: every Ua body the writers produce is well-formed XML
//! 1.0 (it parses with roxmltree), a value XML cannot carry is refused
//! with a typed error (never written as `&#x1;`), and every accepted value
//! reads back as it was written.

use mbms::ua::{
    check_text, escape, msk_response, parse_msk_request, parse_services, register_request,
    register_response, response_statuses, KeyItem, RequestType, XmlError,
};
use proptest::prelude::*;

fn parses(doc: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(doc).unwrap_or_else(|e| panic!("{e}: {doc:?}"))
}

#[test]
fn control_characters_are_refused_and_never_written() {
    assert_eq!(
        check_text("serviceId", "urn:a\u{1}b"),
        Err(XmlError::InvalidChar {
            what: "serviceId",
            ch: '\u{1}'
        })
    );
    assert!(check_text("serviceId", "\u{FFFE}").is_err());
    assert!(check_text("serviceId", "\u{1B}[31m").is_err());
    assert!(check_text("serviceId", "tab\tlf\ncr\r ok \u{10FFFF}").is_ok());
    // Never `&#x1;` (not well-formed XML 1.0).
    assert!(!escape("\u{1}").contains("&#x1;"));
    for doc in [
        register_request(&["urn:a\u{1}b", "\u{0}", "\u{FFFF}"]),
        register_response(&[("urn:a\u{1F}".into(), 200)]),
    ] {
        parses(&doc);
    }
    // A request cannot carry one either: roxmltree refuses the reference.
    let bad = format!(
        "<mbmsRegister xmlns=\"{}\"><serviceId>a&#x1;</serviceId></mbmsRegister>",
        mbms::ua::NS_REGISTER
    );
    assert!(matches!(
        parse_services(&bad, RequestType::Register),
        Err(XmlError::Malformed(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any value: the documents parse; an accepted value reads back exactly.
    #[test]
    fn written_documents_parse_and_accepted_values_round_trip(
        a in any::<String>(),
        b in "[\\t\\n\\r -~<>&'\"\u{80}-\u{10FFFF}]{0,12}",
        c in "[\u{0}-\u{1F}a<&\u{FFFE}\u{FFFF}]{0,8}",
        status in 100u16..1000,
    ) {
        for v in [&a, &b, &c] {
            let accepted = check_text("serviceId", v).is_ok();

            let req = register_request(&[v.as_str()]);
            let doc = parses(&req);
            let text = doc
                .root_element()
                .children()
                .find(|n| n.is_element())
                .and_then(|n| n.text())
                .unwrap_or("")
                .to_owned();
            if accepted {
                prop_assert_eq!(&text, v);
                prop_assert_eq!(
                    parse_services(&req, RequestType::Register).unwrap(),
                    vec![v.trim().to_owned()]
                );
            }

            let resp = register_response(&[(v.clone(), status)]);
            parses(&resp);
            let st = response_statuses(&resp).unwrap();
            prop_assert_eq!(st.len(), 1);
            prop_assert_eq!(st[0].1, status);
            if accepted {
                prop_assert_eq!(&st[0].0, v);
            }

            let item = KeyItem {
                key_domain_text: v.clone(),
                msk_id_text: v.clone(),
                name: None,
            };
            let m = msk_response(&[(item, status)]);
            let doc = parses(&m);
            if accepted {
                let k = doc.root_element().children().find(|n| n.is_element()).unwrap();
                prop_assert_eq!(k.attribute("keyDomainId"), Some(v.as_str()));
                prop_assert_eq!(k.attribute("mskId"), Some(v.as_str()));
            }
        }
    }

    /// What the BM-SC echoes comes from a parsed request: it always
    /// passes `check_text` and reads back unchanged.
    #[test]
    fn parsed_values_are_always_writable(v in "[\\t\\n\\r -~\u{80}-\u{10FFFF}]{0,12}") {
        let req = format!(
            "<mbmsMskRequest xmlns=\"{}\"><key keyDomainId=\"{}\" mskId=\"1\"/></mbmsMskRequest>",
            mbms::ua::NS_MSK_REQUEST,
            escape(&v)
        );
        let items = parse_msk_request(&req).unwrap();
        prop_assert!(check_text("keyDomainId", &items[0].key_domain_text).is_ok());
        prop_assert_eq!(&items[0].key_domain_text, v.trim());
        let resp = msk_response(&[(items[0].clone(), 200)]);
        let doc = parses(&resp);
        let k = doc.root_element().children().find(|n| n.is_element()).unwrap();
        prop_assert_eq!(k.attribute("keyDomainId"), Some(v.trim()));
    }
}
