//! `mbms mikey decode`: print a MIKEY message as a payload tree (text or
//! JSON), and with a pre-shared key verify its MAC and show its key data.
//!
//! The JSON schema is documented in `docs/mikey-decode-json.md`; its
//! `schema` member changes whenever a member is renamed or removed.

use base64::Engine as _;
use mikey::crypto::{self, InitiatorFields, PskKeys};
use mikey::{
    CsIdMap, GeneralExtension, KeyData, KeyIdType, KeyValidity, Message, ParseError, Payload,
    SrtpPolicy, Timestamp,
};
use serde_json::{json, Map, Value};

/// The JSON schema identifier.
pub const JSON_SCHEMA: &str = "mbms-mikey-decode/1";

/// Why decoding did not succeed, with the process exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// The input could not be read or decoded to bytes (exit 2).
    Input(String),
    /// The bytes are not a well-formed MIKEY message (exit 2).
    Malformed(ParseError),
    /// The message parsed but did not verify or open with the key (exit 1).
    /// The decoded tree is still printed.
    Verification {
        /// The rendered output (tree plus verification status).
        output: String,
        /// What failed.
        reason: String,
    },
}

impl Failure {
    /// The exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Input(_) | Failure::Malformed(_) => 2,
            Failure::Verification { .. } => 1,
        }
    }
}

/// Options of `mbms mikey decode`.
#[derive(Debug, Default)]
pub struct Options {
    /// The pre-shared key (MUK for MSK messages, MSK for MTK messages).
    pub psk: Option<Vec<u8>>,
    /// For a verification message: the message it acknowledges.
    pub initiator: Option<Vec<u8>>,
    /// Print JSON instead of text.
    pub json: bool,
}

/// Turn a command-line input into bytes: `HEX` (spaces, colons and a `0x`
/// prefix allowed), `base64:...`, `@FILE` or `-` (standard input). A file
/// holding hex or `base64:` text is decoded; any other file is raw bytes.
pub fn read_input(arg: &str) -> Result<Vec<u8>, Failure> {
    if let Some(path) = arg.strip_prefix('@') {
        let raw =
            std::fs::read(path).map_err(|e| Failure::Input(format!("cannot read {path}: {e}")))?;
        return Ok(decode_text_or_raw(raw));
    }
    if arg == "-" {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut raw)
            .map_err(|e| Failure::Input(format!("cannot read standard input: {e}")))?;
        return Ok(decode_text_or_raw(raw));
    }
    decode_text(arg)
}

fn decode_text_or_raw(raw: Vec<u8>) -> Vec<u8> {
    match std::str::from_utf8(&raw) {
        Ok(s) => decode_text(s).unwrap_or(raw),
        Err(_) => raw,
    }
}

/// Decode `base64:...` or hex text.
pub fn decode_text(s: &str) -> Result<Vec<u8>, Failure> {
    let s = s.trim();
    if let Some(b) = s.strip_prefix("base64:") {
        let clean: String = b.chars().filter(|c| !c.is_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|e| Failure::Input(format!("invalid base64: {e}")));
    }
    let s = s.strip_prefix("0x").unwrap_or(s);
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if clean.is_empty() {
        return Err(Failure::Input("empty input".into()));
    }
    hex::decode(&clean).map_err(|e| Failure::Input(format!("invalid hex: {e}")))
}

/// Pick the pre-shared key of a message from a key log (`docs/keylog.md`):
/// the MSK named by the MSK Key ID for an MTK message (it carries an MTK Key
/// ID), the MUK named by IDi and IDr for an MSK message, and the MUK whose IDr
/// matches for an acknowledgement. `Ok(None)` when the log has no such key.
pub fn key_from_keylog(bytes: &[u8], keylog: &str) -> Result<Option<Vec<u8>>, Failure> {
    let msg = Message::parse(bytes).map_err(Failure::Malformed)?;
    let mut entries = Vec::new();
    for (n, line) in keylog.lines().enumerate() {
        match mbms_capture::parse_keylog_line(line) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(e) => return Err(Failure::Input(format!("key log line {}: {e}", n + 1))),
        }
    }
    let msk_key_id = msg
        .key_ids()
        .find(|k| k.key_id_type == KeyIdType::MSK)
        .map(|k| k.key_id.to_vec());
    let is_mtk = msg.key_ids().any(|k| k.key_id_type == KeyIdType::MTK);
    let ids: Vec<Vec<u8>> = msg.ids().map(|i| i.data.to_vec()).collect();
    use mbms_capture::KeyLogEntry as E;
    let found = entries.into_iter().find_map(|e| match e {
        E::Msk {
            key_domain,
            msk_id,
            key,
        } if is_mtk => {
            let mut id = key_domain.to_vec();
            id.extend_from_slice(&msk_id);
            (msk_key_id.as_deref() == Some(&id[..])).then_some(key)
        }
        E::Muk { idi, idr, key } if !is_mtk => match ids.as_slice() {
            [i, r] => (i[..] == *idi.as_bytes() && r[..] == *idr.as_bytes()).then_some(key),
            [r] => (r[..] == *idr.as_bytes()).then_some(key),
            _ => None,
        },
        _ => None,
    });
    Ok(found)
}

/// What the pre-shared key revealed.
enum Verified {
    NotAsked,
    Kemac(Vec<KeyData>),
    Verification,
    NeedsInitiator,
    Failed(String),
}

/// Decode `bytes` and render them. On success returns the rendered output.
pub fn decode(bytes: &[u8], opts: &Options) -> Result<String, Failure> {
    let msg = Message::parse(bytes).map_err(Failure::Malformed)?;
    let verified = match &opts.psk {
        None => Verified::NotAsked,
        Some(psk) => verify(bytes, &msg, psk, opts.initiator.as_deref())?,
    };
    let output = if opts.json {
        let mut s =
            serde_json::to_string_pretty(&to_json(bytes, &msg, &verified)).unwrap_or_default();
        s.push('\n');
        s
    } else {
        to_text(bytes, &msg, &verified)
    };
    match verified {
        Verified::Failed(reason) => Err(Failure::Verification { output, reason }),
        _ => Ok(output),
    }
}

fn verify(
    bytes: &[u8],
    msg: &Message<'_>,
    psk: &[u8],
    initiator: Option<&[u8]>,
) -> Result<Verified, Failure> {
    if msg.kemac().is_some() {
        return Ok(match crypto::open_check(bytes, msg, psk) {
            Ok(keys) => match crypto::decrypt_kemac(msg, &keys) {
                Ok(kd) => Verified::Kemac(kd),
                Err(e) => Verified::Failed(e.to_string()),
            },
            Err(e) => Verified::Failed(e.to_string()),
        });
    }
    if msg.verification().is_some() {
        let Some(init_bytes) = initiator else {
            return Ok(Verified::NeedsInitiator);
        };
        let init =
            Message::parse(init_bytes).map_err(|e| Failure::Input(format!("--initiator: {e}")))?;
        let keys = PskKeys::for_message(psk, &init);
        return Ok(
            match crypto::verify_verification_mac(
                bytes,
                msg,
                &keys.auth_key,
                &InitiatorFields::of(&init),
            ) {
                Ok(()) => Verified::Verification,
                Err(e) => Verified::Failed(e.to_string()),
            },
        );
    }
    Ok(Verified::Failed(
        "the message has neither a KEMAC nor a V payload to verify".into(),
    ))
}

// ---------------------------------------------------------------------------
// MBMS-aware annotations (TS 33.246 via PROFILE.md sections 1 and 6)

/// Decode a 3-byte Key Domain ID (MCC || MNC in PLMN-identity nibble order)
/// to "MCC-MNC" text, if its nibbles are digits.
fn key_domain_text(kd: &[u8]) -> Option<String> {
    if kd.len() != 3 {
        return None;
    }
    let d = |n: u8| {
        if n <= 9 {
            Some(char::from(b'0' + n))
        } else {
            None
        }
    };
    let mcc = [d(kd[0] & 0x0f)?, d(kd[0] >> 4)?, d(kd[1] & 0x0f)?];
    let mnc3 = kd[1] >> 4;
    let mut mnc = vec![d(kd[2] & 0x0f)?, d(kd[2] >> 4)?];
    if mnc3 != 0x0f {
        mnc.push(d(mnc3)?);
    }
    Some(format!(
        "{}-{}",
        mcc.iter().collect::<String>(),
        mnc.iter().collect::<String>()
    ))
}

fn key_id_json(key_id_type: KeyIdType, id: &[u8]) -> Value {
    let mut m = Map::new();
    if key_id_type == KeyIdType::MSK && id.len() == 7 {
        m.insert("key_domain_id".into(), json!(hex::encode(&id[..3])));
        if let Some(t) = key_domain_text(&id[..3]) {
            m.insert("key_domain".into(), json!(t));
        }
        m.insert("msk_id".into(), json!(hex::encode(&id[3..])));
        m.insert(
            "key_group".into(),
            json!(u16::from_be_bytes([id[3], id[4]])),
        );
        m.insert(
            "key_number".into(),
            json!(u16::from_be_bytes([id[5], id[6]])),
        );
    } else if key_id_type == KeyIdType::MTK && id.len() == 2 {
        m.insert("mtk_id".into(), json!(u16::from_be_bytes([id[0], id[1]])));
    }
    Value::Object(m)
}

fn key_id_text(key_id_type: KeyIdType, id: &[u8]) -> String {
    if key_id_type == KeyIdType::MSK && id.len() == 7 {
        let kd = key_domain_text(&id[..3])
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        let kn = u16::from_be_bytes([id[5], id[6]]);
        format!(
            "Key Domain ID {}{kd}, MSK ID {} (Key Group {}, Key Number {}{})",
            hex::encode(&id[..3]),
            hex::encode(&id[3..]),
            u16::from_be_bytes([id[3], id[4]]),
            kn,
            if kn == 0 {
                ": current MSK / solicited pull"
            } else {
                ""
            }
        )
    } else if key_id_type == KeyIdType::MTK && id.len() == 2 {
        format!("MTK ID {}", u16::from_be_bytes([id[0], id[1]]))
    } else {
        hex::encode(id)
    }
}

fn named(code: u8, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("{n} ({code})"),
        None => format!("unassigned ({code})"),
    }
}

fn printable(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data)
        .ok()
        .filter(|s| !s.is_empty() && s.chars().all(|c| !c.is_control()))
}

fn validity_json(v: &KeyValidity<'_>) -> Value {
    match v {
        KeyValidity::Null => json!({"kv_type": 0, "kv_type_name": "NULL"}),
        KeyValidity::SpiMki(s) => {
            let mut m = json!({"kv_type": 1, "kv_type_name": "SPI/MKI", "spi": hex::encode(s)});
            if s.len() == 6 {
                m["msk_id"] = json!(hex::encode(&s[..4]));
                m["mtk_id"] = json!(u16::from_be_bytes([s[4], s[5]]));
            }
            m
        }
        KeyValidity::Interval { from, to } => {
            let mut m = json!({"kv_type": 2, "kv_type_name": "Interval", "vf": hex::encode(from), "vt": hex::encode(to)});
            if from.len() == 2 && to.len() == 2 {
                m["seq_s"] = json!(u16::from_be_bytes([from[0], from[1]]));
                m["seq_u"] = json!(u16::from_be_bytes([to[0], to[1]]));
            }
            m
        }
    }
}

fn validity_text(v: &KeyValidity<'_>) -> String {
    match v {
        KeyValidity::Null => "NULL".into(),
        KeyValidity::SpiMki(s) if s.len() == 6 => format!(
            "SPI/MKI {} (MSK ID {} || MTK ID {})",
            hex::encode(s),
            hex::encode(&s[..4]),
            u16::from_be_bytes([s[4], s[5]])
        ),
        KeyValidity::SpiMki(s) => format!("SPI/MKI {}", hex::encode(s)),
        KeyValidity::Interval { from, to } if from.len() == 2 && to.len() == 2 => format!(
            "Interval VF {} VT {} (SEQs {}, SEQu {})",
            hex::encode(from),
            hex::encode(to),
            u16::from_be_bytes([from[0], from[1]]),
            u16::from_be_bytes([to[0], to[1]])
        ),
        KeyValidity::Interval { from, to } => {
            format!("Interval VF {} VT {}", hex::encode(from), hex::encode(to))
        }
    }
}

fn key_data_json(kd: &KeyData) -> Value {
    json!({
        "type": kd.type_code(),
        "type_name": kd.type_name(),
        "key": hex::encode(kd.key.expose()),
        "salt": kd.salt.as_ref().map(|s| hex::encode(s.expose())),
        "validity": validity_json(&kd.validity),
    })
}

// ---------------------------------------------------------------------------
// JSON

fn ts_json(t: &Timestamp) -> Value {
    let value = match t {
        Timestamp::NtpUtc(v) | Timestamp::Ntp(v) => json!(v),
        Timestamp::Counter(c) => json!(c),
    };
    json!({"ts_type": t.ts_type(), "ts_type_name": t.type_name(), "value": value})
}

fn payload_json(p: &Payload<'_>, id_index: &mut usize) -> Value {
    let body = match p {
        Payload::Kemac(k) => json!({
            "encr_alg": k.encr_alg.0, "encr_alg_name": k.encr_alg.name(),
            "encr_data_len": k.encr_data.len(), "encr_data": hex::encode(&k.encr_data),
            "mac_alg": k.mac_alg.code(), "mac_alg_name": k.mac_alg.name(), "mac": hex::encode(&k.mac),
        }),
        Payload::Pke(x) => json!({"cache": x.cache, "data": hex::encode(&x.data)}),
        Payload::Dh(d) => json!({
            "group": d.group.code(), "value": hex::encode(&d.value), "validity": validity_json(&d.validity),
        }),
        Payload::Sign(s) => json!({"s_type": s.s_type, "signature": hex::encode(&s.signature)}),
        Payload::Timestamp(t) => ts_json(t),
        Payload::Id(i) => {
            let role = match *id_index {
                0 => "IDi",
                1 => "IDr",
                _ => "ID",
            };
            *id_index += 1;
            json!({
                "role": role, "id_type": i.id_type.0, "id_type_name": i.id_type.name(),
                "data": hex::encode(&i.data), "text": printable(&i.data),
            })
        }
        Payload::Cert(c) => json!({"cert_type": c.cert_type.0, "data": hex::encode(&c.data)}),
        Payload::Chash(c) => json!({"hash_func": c.hash_func.code(), "hash": hex::encode(&c.hash)}),
        Payload::Verification(v) => json!({
            "auth_alg": v.auth_alg.code(), "auth_alg_name": v.auth_alg.name(), "mac": hex::encode(&v.mac),
        }),
        Payload::SecurityPolicy(sp) => {
            let params: Vec<Value> = sp
                .params
                .iter()
                .map(|x| {
                    let mut v = json!({"type": x.param_type, "value": hex::encode(&x.value)});
                    if sp.prot_type == mikey::ProtType::SRTP {
                        v["name"] = json!(mikey::SrtpParamType(x.param_type).name());
                    }
                    v
                })
                .collect();
            json!({
                "policy_no": sp.policy_no, "prot_type": sp.prot_type.0, "prot_type_name": sp.prot_type.name(),
                "params": params,
            })
        }
        Payload::Rand(r) => json!({"len": r.value.len(), "value": hex::encode(&r.value)}),
        Payload::Error(e) => json!({"error_no": e.code.0, "error_name": e.code.name()}),
        Payload::GeneralExtension(e) => {
            let mut v = json!({"ext_type": e.ext_type().0, "ext_type_name": e.ext_type().name()});
            match e {
                GeneralExtension::KeyId(k) => {
                    v["key_id_type"] = json!(k.key_id_type.0);
                    v["key_id_type_name"] = json!(k.key_id_type.name());
                    v["key_id"] = json!(hex::encode(&k.key_id));
                    v["mbms"] = key_id_json(k.key_id_type, &k.key_id);
                }
                GeneralExtension::VendorId(d) | GeneralExtension::SdpIds(d) => {
                    v["data"] = json!(hex::encode(d))
                }
                GeneralExtension::Unknown { data, .. } => v["data"] = json!(hex::encode(data)),
            }
            v
        }
    };
    let mut obj = json!({"type": p.payload_type().0, "name": p.payload_type().name()});
    if let (Value::Object(o), Value::Object(b)) = (&mut obj, body) {
        o.extend(b);
    }
    obj
}

fn to_json(bytes: &[u8], msg: &Message<'_>, verified: &Verified) -> Value {
    let h = msg.header();
    let map = match &h.cs_id_map {
        CsIdMap::SrtpId(v) => json!(v
            .iter()
            .map(|e| json!({"policy_no": e.policy_no, "ssrc": e.ssrc, "roc": e.roc}))
            .collect::<Vec<_>>()),
        CsIdMap::Empty { .. } => json!([]),
    };
    let mut id_index = 0;
    let payloads: Vec<Value> = msg
        .payloads()
        .iter()
        .zip(msg.payload_offsets())
        .map(|(p, off)| {
            let mut v = payload_json(p, &mut id_index);
            v["offset"] = json!(off);
            v["length"] = json!(p.encoded_len());
            v
        })
        .collect();
    let verification = match verified {
        Verified::NotAsked => Value::Null,
        Verified::Kemac(kd) => json!({
            "status": "ok", "payload": "KEMAC", "reason": null,
            "key_data": kd.iter().map(key_data_json).collect::<Vec<_>>(),
        }),
        Verified::Verification => {
            json!({"status": "ok", "payload": "V", "reason": null, "key_data": null})
        }
        Verified::NeedsInitiator => {
            json!({"status": "needs_initiator", "payload": "V", "reason": null, "key_data": null})
        }
        Verified::Failed(reason) => {
            json!({"status": "failed", "payload": null, "reason": reason, "key_data": null})
        }
    };
    json!({
        "schema": JSON_SCHEMA,
        "length": bytes.len(),
        "header": {
            "version": 1,
            "data_type": h.data_type.0, "data_type_name": h.data_type.name(),
            "v": h.v,
            "prf_func": h.prf.0, "prf_func_name": h.prf.name(),
            "csb_id": h.csb_id,
            "cs_count": h.cs_id_map.cs_count(),
            "cs_id_map_type": h.cs_id_map.map_type(),
            "cs_id_map_type_name": if matches!(h.cs_id_map, CsIdMap::SrtpId(_)) { "SRTP-ID" } else { "Empty map" },
            "srtp_id_map": map,
        },
        "payloads": payloads,
        "verification": verification,
    })
}

// ---------------------------------------------------------------------------
// Text

fn to_text(bytes: &[u8], msg: &Message<'_>, verified: &Verified) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let h = msg.header();
    let _ = writeln!(o, "MIKEY message, {} bytes", bytes.len());
    let _ = writeln!(o, "  Common Header [offset 0, {} bytes]", h.encoded_len());
    let _ = writeln!(o, "    Version: 1");
    let _ = writeln!(
        o,
        "    Data Type: {}",
        named(h.data_type.0, h.data_type.name())
    );
    let _ = writeln!(
        o,
        "    V: {}",
        if h.v {
            "1 (verification message requested)"
        } else {
            "0"
        }
    );
    let _ = writeln!(o, "    PRF Func: {}", named(h.prf.0, h.prf.name()));
    let _ = writeln!(o, "    CSB ID: 0x{:08x}", h.csb_id);
    let _ = writeln!(o, "    #CS: {}", h.cs_id_map.cs_count());
    match &h.cs_id_map {
        CsIdMap::SrtpId(v) => {
            let _ = writeln!(o, "    CS ID map type: SRTP-ID (0)");
            for (i, e) in v.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "      CS #{}: Policy_no {}, SSRC 0x{:08x}, ROC {}",
                    i + 1,
                    e.policy_no,
                    e.ssrc,
                    e.roc
                );
            }
        }
        CsIdMap::Empty { .. } => {
            let _ = writeln!(o, "    CS ID map type: Empty map (1, RFC 4563)");
        }
    }
    let mut id_index = 0;
    for (p, off) in msg.payloads().iter().zip(msg.payload_offsets()) {
        let t = p.payload_type();
        let _ = writeln!(
            o,
            "  {} [offset {off}, {} bytes]",
            t.name().unwrap_or("?"),
            p.encoded_len()
        );
        match p {
            Payload::Kemac(k) => {
                let _ = writeln!(
                    o,
                    "    Encr Alg: {}",
                    named(k.encr_alg.0, k.encr_alg.name())
                );
                let _ = writeln!(o, "    Encr Data Len: {}", k.encr_data.len());
                if !k.encr_data.is_empty() {
                    let _ = writeln!(o, "    Encr Data: {}", hex::encode(&k.encr_data));
                }
                let _ = writeln!(
                    o,
                    "    MAC Alg: {}",
                    named(k.mac_alg.code(), Some(k.mac_alg.name()))
                );
                let _ = writeln!(o, "    MAC: {}", hex::encode(&k.mac));
            }
            Payload::Pke(x) => {
                let _ = writeln!(o, "    C: {}", x.cache);
                let _ = writeln!(o, "    Data: {}", hex::encode(&x.data));
            }
            Payload::Dh(d) => {
                let _ = writeln!(o, "    DH-Group: {}", d.group.code());
                let _ = writeln!(o, "    DH-Value: {}", hex::encode(&d.value));
                let _ = writeln!(o, "    KV: {}", validity_text(&d.validity));
            }
            Payload::Sign(s) => {
                let _ = writeln!(o, "    S type: {}", s.s_type);
                let _ = writeln!(o, "    Signature: {}", hex::encode(&s.signature));
            }
            Payload::Timestamp(ts) => {
                let _ = writeln!(o, "    TS Type: {} ({})", ts.type_name(), ts.ts_type());
                match ts {
                    Timestamp::Counter(c) => {
                        let _ = writeln!(o, "    TS Value: {c} (0x{c:08x})");
                    }
                    Timestamp::NtpUtc(v) | Timestamp::Ntp(v) => {
                        let _ = writeln!(o, "    TS Value: 0x{v:016x}");
                    }
                }
            }
            Payload::Id(i) => {
                let role = match id_index {
                    0 => "IDi",
                    1 => "IDr",
                    _ => "ID",
                };
                id_index += 1;
                let _ = writeln!(o, "    Role: {role}");
                let _ = writeln!(o, "    ID Type: {}", named(i.id_type.0, i.id_type.name()));
                match printable(&i.data) {
                    Some(s) => {
                        let _ = writeln!(o, "    ID Data: {s}");
                    }
                    None => {
                        let _ = writeln!(o, "    ID Data: {}", hex::encode(&i.data));
                    }
                }
            }
            Payload::Cert(c) => {
                let _ = writeln!(
                    o,
                    "    Cert Type: {}",
                    named(c.cert_type.0, c.cert_type.name())
                );
                let _ = writeln!(o, "    Cert Data: {}", hex::encode(&c.data));
            }
            Payload::Chash(c) => {
                let _ = writeln!(o, "    Hash Func: {}", c.hash_func.code());
                let _ = writeln!(o, "    Hash: {}", hex::encode(&c.hash));
            }
            Payload::Verification(v) => {
                let _ = writeln!(
                    o,
                    "    Auth Alg: {}",
                    named(v.auth_alg.code(), Some(v.auth_alg.name()))
                );
                let _ = writeln!(o, "    MAC: {}", hex::encode(&v.mac));
            }
            Payload::SecurityPolicy(sp) => {
                let _ = writeln!(o, "    Policy No: {}", sp.policy_no);
                let _ = writeln!(
                    o,
                    "    Prot Type: {}",
                    named(sp.prot_type.0, sp.prot_type.name())
                );
                for x in &sp.params {
                    let name = if sp.prot_type == mikey::ProtType::SRTP {
                        mikey::SrtpParamType(x.param_type).name()
                    } else {
                        None
                    };
                    let _ = writeln!(
                        o,
                        "    Param {}: {}",
                        named(x.param_type, name),
                        hex::encode(&x.value)
                    );
                }
                if let Ok(pol) = SrtpPolicy::from_payload(sp) {
                    let e = pol.effective();
                    let _ = writeln!(
                        o,
                        "    SRTP: {} key {} B, {} key {} B, salt {} B, tag {} B, KDR {}, ROC rate {}",
                        named(e.encr_alg.0, e.encr_alg.name()),
                        e.encr_key_len,
                        named(e.auth_alg.0, e.auth_alg.name()),
                        e.auth_key_len,
                        e.salt_key_len,
                        e.auth_tag_len,
                        e.key_derivation_rate,
                        e.roc_transmission_rate
                    );
                }
            }
            Payload::Rand(r) => {
                let _ = writeln!(o, "    RAND Len: {}", r.value.len());
                let _ = writeln!(o, "    RAND: {}", hex::encode(&r.value));
            }
            Payload::Error(e) => {
                let _ = writeln!(o, "    Error No: {}", named(e.code.0, e.code.name()));
            }
            Payload::GeneralExtension(e) => {
                let _ = writeln!(
                    o,
                    "    Type: {}",
                    named(e.ext_type().0, e.ext_type().name())
                );
                match e {
                    GeneralExtension::KeyId(k) => {
                        let _ = writeln!(
                            o,
                            "    Key ID Type: {}",
                            named(k.key_id_type.0, k.key_id_type.name())
                        );
                        let _ = writeln!(o, "    Key ID: {}", hex::encode(&k.key_id));
                        let _ = writeln!(o, "      {}", key_id_text(k.key_id_type, &k.key_id));
                    }
                    GeneralExtension::VendorId(d) | GeneralExtension::SdpIds(d) => {
                        let _ = writeln!(o, "    Data: {}", hex::encode(d));
                    }
                    GeneralExtension::Unknown { data, .. } => {
                        let _ = writeln!(o, "    Data: {}", hex::encode(data));
                    }
                }
            }
        }
    }
    match verified {
        Verified::NotAsked => {}
        Verified::Kemac(kd) => {
            let _ = writeln!(o, "  Verified with the pre-shared key: MAC OK");
            if kd.is_empty() {
                let _ = writeln!(o, "    No key data (Encr data len 0)");
            }
            for (i, k) in kd.iter().enumerate() {
                let _ = writeln!(o, "    Key data #{}: {}", i + 1, k.type_name());
                let _ = writeln!(o, "      Key: {}", hex::encode(k.key.expose()));
                if let Some(s) = &k.salt {
                    let _ = writeln!(o, "      Salt: {}", hex::encode(s.expose()));
                }
                let _ = writeln!(o, "      KV: {}", validity_text(&k.validity));
            }
        }
        Verified::Verification => {
            let _ = writeln!(
                o,
                "  Verified with the pre-shared key and the initiator message: MAC OK"
            );
        }
        Verified::NeedsInitiator => {
            let _ = writeln!(
                o,
                "  The V payload's MAC also covers the acknowledged message: pass it with --initiator to verify"
            );
        }
        Verified::Failed(reason) => {
            let _ = writeln!(o, "  Verification with the pre-shared key FAILED: {reason}");
        }
    }
    o
}
