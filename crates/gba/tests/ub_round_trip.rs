//! Full Digest AKA (RFC 3310, TS 24.109 Annex A) bootstrapping round trips:
//! network vector -> USIM -> client Authorization -> server verification ->
//! rspauth check -> Ks / B-TID / Ks_NAF / MRK on both sides; plus the
//! resynchronisation path (AUTS) and the network authentication failure
//! (bad MAC-A).

use gba::aka::{self, AkaError, AkaOutcome, Amf, Auts, Sqn48, Usim};
use gba::digest::{
    Algorithm, AuthenticationInfo, Authorization, Challenge, DigestClient, DigestServer, Qop,
    Request, ServerConfig, VerifyError,
};
use gba::kdf::{derive_ks_naf, BTid, MbmsKeys, NafId};
use gba::keys::{Ks, Opc, SubscriberKey};

const IMPI: &str = "user1_private@home1.net";
const BSF: &str = "bsf.home1.net";
const BMSC: &str = "bmsc.home1.net";
const AMF: Amf = [0x80, 0x00];

fn subscriber() -> (SubscriberKey, Opc) {
    (
        SubscriberKey::from_hex("465b5ce8b199b49faa5f0a2ee238a6bc").unwrap(),
        Opc::from_hex("cd63cb71954a9f4e48a5994e37a02baf").unwrap(),
    )
}

fn rand_n(n: u8) -> [u8; 16] {
    let mut r = [0u8; 16];
    for (i, b) in r.iter_mut().enumerate() {
        *b = n.wrapping_mul(31).wrapping_add(i as u8);
    }
    r
}

/// The BSF side of this test: subscriber store (HSS role) + Digest server.
struct Bsf {
    k: SubscriberKey,
    opc: Opc,
    sqn_he: Sqn48,
    server: DigestServer,
    pending: Option<aka::AuthVector>,
}

impl Bsf {
    fn new() -> Self {
        let (k, opc) = subscriber();
        let mut cfg = ServerConfig::new(BSF);
        cfg.algorithms = vec![Algorithm::AkaV1Md5];
        cfg.qops = vec![Qop::AuthInt];
        cfg.opaque = Some("5ccc069c403ebaf9f0171e9517f40e41".into());
        Self {
            k,
            opc,
            sqn_he: Sqn48::new(1000).unwrap(),
            server: DigestServer::new(cfg, [0x11; 32]),
            pending: None,
        }
    }

    /// Answer to a request without (valid) credentials: 401 + challenge.
    fn challenge(&mut self, now: u64, n: u8) -> String {
        self.sqn_he.increment().unwrap();
        let av = aka::generate_vector(&self.k, &self.opc, self.sqn_he, AMF, rand_n(n));
        let prefix = aka::aka_nonce_prefix(&av.rand, &av.autn);
        let nonce = self.server.issue_nonce_with_prefix(&prefix, now, &[n; 16]);
        self.pending = Some(av);
        self.server
            .challenge(&nonce, false)
            .to_header_value()
            .unwrap()
    }

    /// Handles `GET /` with credentials. Ok(Some(info, btid, ks)) = 200,
    /// Ok(None) = resynchronised (caller re-challenges).
    fn handle(&mut self, authz: &str, now: u64) -> Result<Option<(String, BTid, Ks)>, String> {
        let auth = Authorization::parse(authz).map_err(|e| e.to_string())?;
        let av = self.pending.clone().ok_or("no pending vector")?;
        let req = Request {
            method: "GET",
            uri: "/",
            body: b"",
        };
        if let Some(auts_b64) = &auth.auts {
            // RFC 3310 3.4: response computed with an empty password.
            self.server
                .verify(&auth, &req, b"", now)
                .map_err(|e| e.to_string())?;
            let auts = Auts::from_base64(auts_b64).map_err(|e| e.to_string())?;
            let sqn_ms =
                aka::resync(&self.k, &self.opc, &av.rand, &auts).map_err(|e| e.to_string())?;
            self.sqn_he = sqn_ms;
            self.pending = None;
            return Ok(None);
        }
        let verified = self
            .server
            .verify(&auth, &req, av.xres.as_bytes(), now)
            .map_err(|e| e.to_string())?;
        // The nonce must carry this vector's RAND || AUTN.
        assert_eq!(
            verified.nonce_info().prefix,
            aka::aka_nonce_prefix(&av.rand, &av.autn)
        );
        let btid = BTid::new(&av.rand, BSF);
        let body = format!(
            "<BootstrappingInfo xmlns=\"uri:3gpp-gba\"><btid>{btid}</btid><lifetime>2030-01-01T00:00:00Z</lifetime></BootstrappingInfo>"
        );
        let info = self
            .server
            .authentication_info(&verified, body.as_bytes(), None);
        Ok(Some((
            format!("{}\n{}", info.to_header_value().unwrap(), body),
            btid,
            Ks::from_ck_ik(&av.ck, &av.ik),
        )))
    }
}

/// The UE side: USIM + Digest client.
struct Ue {
    usim: Usim,
    client: DigestClient,
    rand: Option<[u8; 16]>,
}

enum UeStep {
    Send(String),
    Stop(AkaError),
}

impl Ue {
    fn new(sqn_ms: u64) -> Self {
        let (k, opc) = subscriber();
        Self {
            usim: Usim::new(k, opc, Sqn48::new(sqn_ms).unwrap()),
            client: DigestClient::new(IMPI, b""),
            rand: None,
        }
    }

    fn initial(&self) -> String {
        Authorization::initial(IMPI, BSF, "/")
            .to_header_value()
            .unwrap()
    }

    fn on_401(&mut self, www_authenticate: &str, cnonce: &str) -> UeStep {
        let ch = Challenge::parse(www_authenticate).unwrap();
        assert_eq!(ch.algorithm, Some(Algorithm::AkaV1Md5));
        let (rand, autn) = aka::parse_aka_nonce(&ch.nonce).unwrap();
        self.client.handle_challenge(ch).unwrap();
        match self.usim.authenticate(&rand, &autn) {
            Err(e) => UeStep::Stop(e),
            Ok(AkaOutcome::Success { res, .. }) => {
                self.rand = Some(rand);
                self.client.set_password(res.as_bytes());
                let a = self.client.authorize("GET", "/", b"", cnonce).unwrap();
                UeStep::Send(a.to_header_value().unwrap())
            }
            Ok(AkaOutcome::SyncFailure { auts }) => {
                let a = self
                    .client
                    .authorize_resync("GET", "/", b"", cnonce, &auts)
                    .unwrap();
                UeStep::Send(a.to_header_value().unwrap())
            }
        }
    }

    fn on_200(&mut self, response: &str) -> String {
        let (info, body) = response.split_once('\n').unwrap();
        let info = AuthenticationInfo::parse(info).unwrap();
        self.client
            .verify_authentication_info(&info, body.as_bytes())
            .unwrap();
        body.to_owned()
    }
}

#[test]
fn bootstrapping_success_and_key_agreement() {
    let mut bsf = Bsf::new();
    let mut ue = Ue::new(900);
    let _first = ue.initial();
    let www = bsf.challenge(10_000, 1);
    let UeStep::Send(authz) = ue.on_401(&www, "0a4f113b") else {
        panic!("UE stopped");
    };
    assert!(!authz.contains("auts"));
    let (resp, btid, ks_bsf) = bsf.handle(&authz, 10_001).unwrap().expect("200 OK");
    let body = ue.on_200(&resp);
    assert!(body.contains(btid.as_str()));
    assert_eq!(ue.usim.sqn_ms(), bsf.sqn_he);

    // Both sides derive the same Ks, Ks_NAF and MBMS keys.
    let (k, opc) = subscriber();
    let rand = ue.rand.unwrap();
    let m = gba::Milenage::new(&k, &opc).f2345(&rand);
    let ks_ue = Ks::from_ck_ik(&m.ck, &m.ik);
    assert_eq!(ks_ue, ks_bsf);
    let naf = NafId::mbms(BMSC);
    let ue_keys = MbmsKeys::gba_me(&derive_ks_naf(&ks_ue, &rand, IMPI, &naf).unwrap());
    let bsf_naf = derive_ks_naf(&ks_bsf, btid.rand(), IMPI, &naf).unwrap();
    assert_eq!(ue_keys, MbmsKeys::gba_me(&bsf_naf));

    // Replaying the same Authorization is refused.
    assert_eq!(
        bsf.handle(&authz, 10_002).unwrap_err(),
        VerifyError::Replay.to_string()
    );
}

#[test]
fn wrong_res_is_refused_and_tampered_body_fails_rspauth() {
    let mut bsf = Bsf::new();
    let mut ue = Ue::new(900);
    let www = bsf.challenge(0, 2);
    let UeStep::Send(authz) = ue.on_401(&www, "cn") else {
        panic!("UE stopped");
    };
    // An attacker who changes the response digest is rejected.
    let mut forged = Authorization::parse(&authz).unwrap();
    forged.response = "00000000000000000000000000000000".into();
    assert_eq!(
        bsf.handle(&forged.to_header_value().unwrap(), 1)
            .unwrap_err(),
        VerifyError::ResponseMismatch.to_string()
    );
    let (resp, _, _) = bsf.handle(&authz, 1).unwrap().unwrap();
    let (info, body) = resp.split_once('\n').unwrap();
    let info = AuthenticationInfo::parse(info).unwrap();
    let tampered = body.replace("2030", "2099");
    assert!(ue
        .client
        .verify_authentication_info(&info, tampered.as_bytes())
        .is_err());
}

#[test]
fn resync_via_auts_then_success() {
    let mut bsf = Bsf::new();
    // The USIM has seen a much higher SQN than the HSS (e.g. HSS restore).
    let mut ue = Ue::new(5_000_000);
    let www = bsf.challenge(100, 3);
    let UeStep::Send(authz) = ue.on_401(&www, "cn-a") else {
        panic!("UE stopped");
    };
    let parsed = Authorization::parse(&authz).unwrap();
    assert!(parsed.auts.is_some(), "SQN out of range must produce auts");
    assert_eq!(ue.usim.sqn_ms().value(), 5_000_000);

    assert!(
        bsf.handle(&authz, 101).unwrap().is_none(),
        "BSF resynchronises"
    );
    assert_eq!(bsf.sqn_he.value(), 5_000_000);

    // New challenge with SQN_HE > SQN_MS: success.
    let www = bsf.challenge(102, 4);
    let UeStep::Send(authz) = ue.on_401(&www, "cn-b") else {
        panic!("UE stopped");
    };
    assert!(Authorization::parse(&authz).unwrap().auts.is_none());
    let (resp, _, _) = bsf.handle(&authz, 103).unwrap().expect("200 OK");
    ue.on_200(&resp);
    assert_eq!(ue.usim.sqn_ms().value(), 5_000_001);
}

#[test]
fn forged_auts_is_rejected() {
    let mut bsf = Bsf::new();
    let mut ue = Ue::new(5_000_000);
    let www = bsf.challenge(0, 5);
    let UeStep::Send(authz) = ue.on_401(&www, "cn") else {
        panic!("UE stopped");
    };
    let mut a = Authorization::parse(&authz).unwrap();
    let mut auts = Auts::from_base64(a.auts.as_deref().unwrap()).unwrap();
    auts.0[13] ^= 1;
    a.auts = Some(auts.to_base64());
    // The response does not cover auts, so the Digest check passes and the
    // MAC-S check must catch it.
    assert_eq!(
        bsf.handle(&a.to_header_value().unwrap(), 1).unwrap_err(),
        AkaError::ResyncMacFailure.to_string()
    );
}

#[test]
fn mac_failure_stops_the_ue() {
    let mut bsf = Bsf::new();
    let mut ue = Ue::new(900);
    let www = bsf.challenge(0, 6);
    // A false base station flips a bit of MAC-A inside the nonce.
    let mut ch = Challenge::parse(&www).unwrap();
    let (rand, mut autn) = aka::parse_aka_nonce(&ch.nonce).unwrap();
    autn.0[15] ^= 0x01;
    use base64::Engine as _;
    ch.nonce =
        base64::engine::general_purpose::STANDARD.encode(aka::aka_nonce_prefix(&rand, &autn));
    match ue.on_401(&ch.to_header_value().unwrap(), "cn") {
        UeStep::Stop(e) => assert_eq!(e, AkaError::MacFailure),
        UeStep::Send(_) => panic!("UE must not answer a bad AUTN"),
    }
    assert_eq!(ue.usim.sqn_ms().value(), 900, "MAC failure changes nothing");
}

#[test]
fn expired_nonce_is_stale() {
    let mut bsf = Bsf::new();
    let mut ue = Ue::new(900);
    let www = bsf.challenge(0, 7);
    let UeStep::Send(authz) = ue.on_401(&www, "cn") else {
        panic!("UE stopped");
    };
    assert_eq!(
        bsf.handle(&authz, 10_000).unwrap_err(),
        VerifyError::StaleNonce.to_string()
    );
}
