//! `examples/ue.toml` and its service description load, and fit the example
//! BM-SC (`examples/bmsc.toml`) and BSF (`examples/bsf.toml`) on loopback.

use std::path::{Path, PathBuf};

use ue::{SessionKind, UeConfig};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn example_ue_joins_news_on_the_example_bmsc() {
    let ue = UeConfig::load(&examples().join("ue.toml")).unwrap();
    let bmsc = bmsc::BmscConfig::load(&examples().join("bmsc.toml")).unwrap();
    let bsf = bsf::BsfConfig::load(&examples().join("bsf.toml")).unwrap();

    assert_eq!(ue.identity.bsf, format!("http://{}", bsf.listen));
    assert_eq!(ue.identity.bsf_fqdn.as_deref(), Some(bsf.fqdn.as_str()));
    assert!(bsf
        .subscribers
        .iter()
        .any(|s| s.impi == ue.identity.impi && s.k.trim() == ue.identity.k.trim()));
    assert_ne!(
        ue.mikey_listen, bmsc.mikey_listen,
        "one host, two MIKEY ports"
    );

    let news = &ue.service_list[0];
    assert_eq!(news.id, "urn:mbms:service:news");
    assert_eq!(
        news.key_management_uri,
        format!("http://{}/keymanagement", bmsc.listen)
    );
    assert_eq!(news.bmsc(), bmsc.fqdn);
    assert_eq!(news.key_domain_id().unwrap(), bmsc.key_domain_id().unwrap());
    let svc = bmsc.services.iter().find(|s| s.id == news.id).unwrap();
    assert_eq!(svc.key_groups, news.key_groups);
    assert!(svc.open);

    for s in &news.sessions {
        let b = bmsc
            .sessions
            .iter()
            .find(|b| b.name == s.name)
            .unwrap_or_else(|| panic!("BM-SC session {}", s.name));
        assert_eq!(Some(b.key_group), s.key_group);
        match s.kind {
            SessionKind::Streaming => {
                assert!(b.srtp_destinations.contains(&s.srtp_listen.unwrap()));
                assert!(b.mtk_destinations.contains(&s.mtk_listen.unwrap()));
                assert_ne!(b.rtp_listen, s.rtp_output);
                assert!(ue.sdp_path(s).ends_with("news-live.sdp"));
            }
            SessionKind::Download => {
                // Both run from the same directory (README).
                let out = b.out_dir.as_ref().unwrap();
                assert!(s.input_dir.as_ref().unwrap().ends_with(out));
            }
        }
    }
}
