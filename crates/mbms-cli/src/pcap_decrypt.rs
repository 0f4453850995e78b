//! `mbms pcap decrypt`: open a capture's MIKEY and SRTP with a key log.
//!
//! Sans-IO: [`decrypt`] takes a capture read into memory and the key log's
//! text and returns the packets to write; the command reads and writes the
//! files. Every MIKEY packet gets a packet comment saying what the key log
//! opened in it (MAC verified or not, the MSK or MTK, salt, key validity);
//! every SRTP packet that a key opens is replaced by its plain RTP (so
//! Wireshark's RTP player and stream analysis work on it) with a short
//! comment; packets that cannot be opened stay as they were, with a comment
//! why. The comments carry key material: the user asked for decryption.
//!
//! Keys: the MUKs, MSKs and MTKs of the key log (`docs/keylog.md`), plus
//! every MSK and MTK the capture's own MIKEY messages reveal once opened.
//! SRTP (PROFILE.md section 8): MKI = MSK ID || MTK ID selects the MTK;
//! the SRTP policy and the ROC come from the MTK message's SP payload and
//! SRTP-ID map when the capture has it (else the profile default
//! AES_CM_128_HMAC_SHA1_80, ROC 0). One SRTP receiver per destination
//! address and SRTP policy, with the MTKs side by side as a UE holds them:
//! the BM-SC sends each packet to every UE, and a stream's ROC carries on
//! across MTK changes.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use mbms_capture::{replace_udp_payload, udp_in_frame, Capture, KeyLogEntry, Record};
use mikey::crypto::{self, InitiatorFields, PskKeys};
use mikey::{KeyIdType, KeyValidity, Message, Timestamp};
use zeroize::Zeroizing;

/// Prefix of every comment this command writes (the Lua dissector
/// `contrib/wireshark/mbms-mikey.lua` looks for it).
pub const COMMENT_PREFIX: &str = "mbms pcap decrypt:";

/// What the run did, for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Packets read (= written).
    pub packets: usize,
    /// MIKEY packets (MSK messages, pulls, acknowledgements, MTK messages).
    pub mikey: usize,
    /// MIKEY packets whose MAC verified with a key of the log.
    pub mikey_verified: usize,
    /// SRTP packets (RTP with the MKI of a known MTK or MSK).
    pub srtp: usize,
    /// SRTP packets replaced by their plain RTP.
    pub srtp_opened: usize,
}

/// An MTK and its salt, from the key log or an opened MTK message (wiped
/// when dropped).
#[derive(zeroize::ZeroizeOnDrop)]
struct MtkEntry {
    key: [u8; 16],
    salt: [u8; 14],
}

/// The SRTP parameters an MTK message announces.
#[derive(Clone)]
struct Streaming {
    config: srtp::Config,
    /// SSRC -> ROC of the SRTP-ID map.
    rocs: Vec<(u32, u32)>,
}

#[derive(Default)]
struct Keys {
    /// (IDi, IDr) -> MUK.
    muks: Vec<(String, String, Zeroizing<Vec<u8>>)>,
    /// Key Domain ID || MSK ID -> MSK.
    msks: HashMap<[u8; 7], Zeroizing<Vec<u8>>>,
    /// MKI (MSK ID || MTK ID) -> MTKs of that MKI. The MKI does not name
    /// the Key Domain: with two domains using one MKI the first key is used.
    mtks: HashMap<[u8; 6], Vec<MtkEntry>>,
    /// MKI -> the streaming parameters of its MTK message.
    streaming: HashMap<[u8; 6], Streaming>,
}

impl Keys {
    fn add_mtk(&mut self, mki: [u8; 6], key: &[u8], salt: &[u8]) {
        let (Ok(key), Ok(salt)) = (<[u8; 16]>::try_from(key), <[u8; 14]>::try_from(salt)) else {
            return;
        };
        let v = self.mtks.entry(mki).or_default();
        if !v.iter().any(|e| e.key == key && e.salt == salt) {
            v.push(MtkEntry { key, salt });
        }
    }
}

/// An unusable key log.
#[derive(Debug, thiserror::Error)]
#[error("key log line {line}: {why}")]
pub struct KeyLogError {
    line: usize,
    why: String,
}

fn read_keylog(text: &str) -> Result<Keys, KeyLogError> {
    let mut k = Keys::default();
    for (n, line) in text.lines().enumerate() {
        let entry = mbms_capture::parse_keylog_line(line)
            .map_err(|why| KeyLogError { line: n + 1, why })?;
        match entry {
            None => {}
            Some(KeyLogEntry::Muk { idi, idr, key }) => {
                k.muks.push((idi, idr, Zeroizing::new(key)))
            }
            Some(KeyLogEntry::Msk {
                key_domain,
                msk_id,
                key,
            }) => {
                k.msks
                    .insert(key_id7(&key_domain, &msk_id), Zeroizing::new(key));
            }
            Some(KeyLogEntry::Mtk {
                msk_id,
                mtk_id,
                key,
                salt,
                ..
            }) => {
                let mut mki = [0u8; 6];
                mki[..4].copy_from_slice(&msk_id);
                mki[4..].copy_from_slice(&mtk_id.to_be_bytes());
                let (key, salt) = (Zeroizing::new(key), Zeroizing::new(salt));
                k.add_mtk(mki, &key, &salt);
            }
        }
    }
    Ok(k)
}

fn key_id7(kd: &[u8; 3], msk: &[u8; 4]) -> [u8; 7] {
    let mut id = [0u8; 7];
    id[..3].copy_from_slice(kd);
    id[3..].copy_from_slice(msk);
    id
}

/// "00f110/00010002 (Key Group 1, Key Number 2)".
fn msk_name(id: &[u8]) -> String {
    match id {
        [a, b, c, g0, g1, n0, n1] => {
            let kn = u16::from_be_bytes([*n0, *n1]);
            format!(
                "{}/{} (Key Group {}, Key Number {}{})",
                hex::encode([*a, *b, *c]),
                hex::encode([*g0, *g1, *n0, *n1]),
                u16::from_be_bytes([*g0, *g1]),
                kn,
                if kn == 0 { ": solicited pull" } else { "" }
            )
        }
        _ => hex::encode(id),
    }
}

fn validity_text(v: &KeyValidity<'_>) -> String {
    match v {
        KeyValidity::Null => "KV NULL".into(),
        KeyValidity::SpiMki(s) if s.len() == 6 => format!(
            "KV SPI/MKI {} (MSK ID {} || MTK ID {})",
            hex::encode(s),
            hex::encode(&s[..4]),
            u16::from_be_bytes([s[4], s[5]])
        ),
        KeyValidity::SpiMki(s) => format!("KV SPI/MKI {}", hex::encode(s)),
        KeyValidity::Interval { from, to } if from.len() == 2 && to.len() == 2 => {
            let s = mbms::Serial16(u16::from_be_bytes([from[0], from[1]]));
            let u = mbms::Serial16(u16::from_be_bytes([to[0], to[1]]));
            // PROFILE.md 7: an MSK with SEQs > SEQu (RFC 1982) is inactive.
            format!(
                "KV SEQs {}, SEQu {}{}",
                s.0,
                u.0,
                if s.gt(u) {
                    " (inactive: SEQs > SEQu, 4-way step 1)"
                } else {
                    ""
                }
            )
        }
        KeyValidity::Interval { from, to } => {
            format!(
                "KV Interval VF {} VT {}",
                hex::encode(from),
                hex::encode(to)
            )
        }
    }
}

fn counter_of(m: &Message<'_>) -> Option<u32> {
    match m.timestamp()? {
        Timestamp::Counter(c) => Some(*c),
        _ => None,
    }
}

/// An SRTP receiver of one destination and policy, with the MKIs of its
/// keys in the order they were installed.
struct SrtpReceiver {
    config: srtp::Config,
    receiver: srtp::Receiver,
    installed: VecDeque<[u8; 6]>,
}

/// The state of one run over a capture.
#[derive(Default)]
struct Run {
    keys: Keys,
    /// (IDr, counter) -> the MSK message (for the acknowledgement MAC) and
    /// its frame number.
    msk_messages: HashMap<(Vec<u8>, u32), (Vec<u8>, usize)>,
    /// Destination -> its SRTP receivers (one per SRTP policy).
    receivers: HashMap<IpAddr, Vec<SrtpReceiver>>,
    summary: Summary,
}

/// Open what the key log opens in `cap`. Returns the records to write (in
/// order, with their comments) and the summary.
pub fn decrypt(cap: &Capture, keylog: &str) -> Result<(Vec<Record>, Summary), KeyLogError> {
    let mut run = Run {
        keys: read_keylog(keylog)?,
        ..Run::default()
    };
    let mut out = Vec::with_capacity(cap.records.len());
    for (i, r) in cap.records.iter().enumerate() {
        let mut rec = r.clone();
        let link = cap
            .interfaces
            .get(r.interface as usize)
            .map_or(u32::MAX, |i| i.link_type);
        if let Some(udp) = udp_in_frame(link, &r.data) {
            let payload = &r.data[udp.payload.clone()];
            if let Ok(m) = Message::parse(payload) {
                if m.kemac().is_some() || m.verification().is_some() {
                    run.summary.mikey += 1;
                    let c = run.mikey(payload, &m, i + 1);
                    rec.comments.push(format!("{COMMENT_PREFIX} {c}"));
                }
            } else if let Some((plain, comment)) = run.srtp(payload, udp.dst) {
                if let Some(p) = plain {
                    if let Some(f) = replace_udp_payload(&r.data, &udp, &p) {
                        rec.orig_len = f.len() as u32;
                        rec.data = f;
                        run.summary.srtp_opened += 1;
                    }
                }
                rec.comments.push(format!("{COMMENT_PREFIX} {comment}"));
            }
        }
        out.push(rec);
    }
    run.summary.packets = out.len();
    Ok((out, run.summary))
}

impl Run {
    fn mikey(&mut self, bytes: &[u8], m: &Message<'_>, frame: usize) -> String {
        let msk_key_id = m
            .key_ids()
            .find(|k| k.key_id_type == KeyIdType::MSK)
            .map(|k| k.key_id.to_vec());
        let mtk_id = m
            .key_ids()
            .find(|k| k.key_id_type == KeyIdType::MTK)
            .and_then(|k| <[u8; 2]>::try_from(&k.key_id[..]).ok());
        let ids: Vec<Vec<u8>> = m.ids().map(|i| i.data.to_vec()).collect();
        let msk_text = msk_key_id.as_deref().map(msk_name).unwrap_or_default();
        if let Some(mtk_id) = mtk_id {
            return self.mtk_message(bytes, m, msk_key_id.as_deref(), mtk_id);
        }
        if m.kemac().is_some() {
            // MSK message or solicited pull, under the MUK of IDi/IDr.
            let [idi, idr] = ids.as_slice() else {
                return "not opened: an MSK message needs IDi and IDr".into();
            };
            let name = format!(
                "IDi {} / IDr {}",
                String::from_utf8_lossy(idi),
                String::from_utf8_lossy(idr)
            );
            let Some(muk) = self
                .keys
                .muks
                .iter()
                .find(|(i, r, _)| i.as_bytes() == &idi[..] && r.as_bytes() == &idr[..])
                .map(|(_, _, k)| k.clone())
            else {
                return format!(
                    "MSK message {msk_text} not opened: the key log has no MUK of {name}"
                );
            };
            if let Some(c) = counter_of(m) {
                self.msk_messages
                    .insert((idr.clone(), c), (bytes.to_vec(), frame));
            }
            let keys = match crypto::open_check(bytes, m, &muk) {
                Ok(k) => k,
                Err(e) => {
                    return format!(
                        "MSK message {msk_text}: MAC NOT verified with the MUK of {name} ({e})"
                    )
                }
            };
            self.summary.mikey_verified += 1;
            let kd = match crypto::decrypt_kemac(m, &keys) {
                Ok(kd) => kd,
                Err(e) => {
                    return format!(
                        "MSK message {msk_text}: MAC verified with the MUK of {name}; key data not readable ({e})"
                    )
                }
            };
            let mut s = format!("MSK message {msk_text}: MAC verified with the MUK of {name}");
            if kd.is_empty() {
                s.push_str("; no key data (solicited pull: request the current MSK)");
            }
            for k in &kd {
                let key = k.key.expose();
                s.push_str(&format!(
                    "; MSK {}; {}",
                    hex::encode(key),
                    validity_text(&k.validity)
                ));
                if let Some(id) = msk_key_id
                    .as_deref()
                    .and_then(|i| <[u8; 7]>::try_from(i).ok())
                {
                    self.keys
                        .msks
                        .entry(id)
                        .or_insert_with(|| Zeroizing::new(key.to_vec()));
                }
            }
            return s;
        }
        // Acknowledgement (V payload): the MUK of its IDr and the message
        // it acknowledges (same IDr and counter).
        let Some(idr) = ids.last() else {
            return "acknowledgement not verified: no IDr".into();
        };
        let Some(muk) = self
            .keys
            .muks
            .iter()
            .find(|(_, r, _)| r.as_bytes() == &idr[..])
            .map(|(_, _, k)| k.clone())
        else {
            return format!(
                "MSK acknowledgement {msk_text} not verified: the key log has no MUK of IDr {}",
                String::from_utf8_lossy(idr)
            );
        };
        let Some((init_bytes, init_frame)) = counter_of(m)
            .and_then(|c| self.msk_messages.get(&(idr.clone(), c)))
            .cloned()
        else {
            return format!(
                "MSK acknowledgement {msk_text}: MAC not verified: the acknowledged MSK message (same IDr and counter) is not earlier in the capture"
            );
        };
        let Ok(init) = Message::parse(&init_bytes) else {
            return "acknowledgement not verified: initiator unreadable".into();
        };
        let keys = PskKeys::for_message(&muk, &init);
        match crypto::verify_verification_mac(
            bytes,
            m,
            &keys.auth_key,
            &InitiatorFields::of(&init),
        ) {
            Ok(()) => {
                self.summary.mikey_verified += 1;
                format!(
                    "MSK acknowledgement {msk_text}: MAC verified with the MUK of IDr {} and the acknowledged MSK message (frame {init_frame})",
                    String::from_utf8_lossy(idr)
                )
            }
            Err(e) => format!(
                "MSK acknowledgement {msk_text}: MAC NOT verified with the MUK of IDr {} and frame {init_frame} ({e})",
                String::from_utf8_lossy(idr)
            ),
        }
    }

    fn mtk_message(
        &mut self,
        bytes: &[u8],
        m: &Message<'_>,
        msk_key_id: Option<&[u8]>,
        mtk_id: [u8; 2],
    ) -> String {
        let Some(kid) = msk_key_id.and_then(|i| <[u8; 7]>::try_from(i).ok()) else {
            return "MTK message not opened: no MSK Key ID of 7 bytes".into();
        };
        let msk_text = msk_name(&kid);
        let mut mki = [0u8; 6];
        mki[..4].copy_from_slice(&kid[3..]);
        mki[4..].copy_from_slice(&mtk_id);
        let mtk_n = u16::from_be_bytes(mtk_id);
        // The SRTP policy and SRTP-ID map are in clear text.
        let mut stream_text = String::new();
        if let Ok(env) = mbms::messages::MtkEnvelope::parse(bytes) {
            if let Some(s) = &env.streaming {
                if let Ok(config) = mbms::traffic::srtp_config(&s.policy) {
                    let rocs: Vec<(u32, u32)> = s.streams.iter().map(|e| (e.ssrc, e.roc)).collect();
                    stream_text = format!(
                        "; SRTP {} with {}",
                        config.suite.name().unwrap_or("(custom suite)"),
                        rocs.iter()
                            .map(|(s, r)| format!("SSRC 0x{s:08x} ROC {r}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    self.keys.streaming.insert(mki, Streaming { config, rocs });
                }
            }
        }
        let Some(msk) = self.keys.msks.get(&kid).cloned() else {
            return format!(
                "MTK message MTK ID {mtk_n} under MSK {msk_text} not opened: the key log has no such MSK{stream_text}"
            );
        };
        let keys = match crypto::open_check(bytes, m, &msk) {
            Ok(k) => k,
            Err(e) => {
                return format!(
                    "MTK message MTK ID {mtk_n}: MAC NOT verified with MSK {msk_text} ({e}){stream_text}"
                )
            }
        };
        self.summary.mikey_verified += 1;
        let kd = match crypto::decrypt_kemac(m, &keys) {
            Ok(kd) => kd,
            Err(e) => {
                return format!(
                    "MTK message MTK ID {mtk_n}: MAC verified with MSK {msk_text}; key data not readable ({e})"
                )
            }
        };
        let mut s = format!("MTK message MTK ID {mtk_n}: MAC verified with MSK {msk_text}");
        for k in &kd {
            s.push_str(&format!("; MTK {}", hex::encode(k.key.expose())));
            if let Some(salt) = &k.salt {
                s.push_str(&format!("; salt {}", hex::encode(salt.expose())));
                self.keys.add_mtk(mki, k.key.expose(), salt.expose());
            }
            s.push_str(&format!("; {}", validity_text(&k.validity)));
        }
        s.push_str(&stream_text);
        s
    }

    /// An SRTP packet: `None` if it does not look like SRTP of a known MTK
    /// or MSK; else the plain RTP (if opened) and the comment.
    fn srtp(&mut self, p: &[u8], dst: SocketAddr) -> Option<(Option<Vec<u8>>, String)> {
        if p.len() < 12 || p[0] >> 6 != 2 {
            return None;
        }
        let seq = u16::from_be_bytes([p[2], p[3]]);
        // Where the MKI is depends on the policy of its MTK: try each known.
        let default = Streaming {
            config: srtp::Config::mbms(),
            rocs: Vec::new(),
        };
        let mut found = None;
        for mki in self.keys.mtks.keys() {
            let st = self.keys.streaming.get(mki).unwrap_or(&default);
            let t = trailer_len(&st.config, seq);
            if p.len() >= 12 + 6 + t && p[p.len() - t - 6..p.len() - t] == mki[..] {
                found = Some(*mki);
                break;
            }
        }
        let Some(mki) = found else {
            // The MKI at the default position names an MSK of the log or
            // capture, but no MTK of it is known: say so.
            let t = srtp::Suite::AES_CM_128_HMAC_SHA1_80.rtp_tag_len();
            if p.len() < 12 + 6 + t {
                return None;
            }
            let cand = &p[p.len() - t - 6..p.len() - t];
            let known_msk = self.keys.msks.keys().any(|k| k[3..] == cand[..4])
                || self.keys.mtks.keys().any(|k| k[..4] == cand[..4]);
            if !known_msk {
                return None;
            }
            self.summary.srtp += 1;
            return Some((
                None,
                format!(
                    "SRTP not opened: no MTK of the key log or capture for MKI {} (MSK ID {} || MTK ID {})",
                    hex::encode(cand),
                    hex::encode(&cand[..4]),
                    u16::from_be_bytes([cand[4], cand[5]])
                ),
            ));
        };
        self.summary.srtp += 1;
        let st = self.keys.streaming.get(&mki).cloned().unwrap_or(default);
        let mki_name = format!(
            "MKI {} (MSK ID {} || MTK ID {})",
            hex::encode(mki),
            hex::encode(&mki[..4]),
            u16::from_be_bytes([mki[4], mki[5]])
        );
        let Some(e) = self.keys.mtks.get(&mki).and_then(|v| v.first()) else {
            return Some((None, format!("SRTP not opened: {mki_name}: no key")));
        };
        let mk = srtp::Mki::new(&mki)?;
        // As a UE does: one receiver per destination and SRTP policy, the
        // MTKs installed side by side (selected by MKI, the oldest removed
        // beyond srtp::MAX_KEYS), the ROC of an SSRC taken from the MTK
        // message's SRTP-ID map when the receiver does not know it yet.
        let list = self.receivers.entry(dst.ip()).or_default();
        let slot = match list.iter().position(|r| r.config == st.config) {
            Some(i) => i,
            None => match srtp::Receiver::new(st.config.clone()) {
                Ok(receiver) => {
                    list.push(SrtpReceiver {
                        config: st.config.clone(),
                        receiver,
                        installed: VecDeque::new(),
                    });
                    list.len() - 1
                }
                Err(err) => {
                    return Some((None, format!("SRTP not opened: {mki_name}: {err}")));
                }
            },
        };
        let r = &mut list[slot];
        if !r.installed.contains(&mki) {
            if r.installed.len() >= srtp::MAX_KEYS {
                if let Some(old) = r.installed.pop_front() {
                    if let Some(m) = srtp::Mki::new(&old) {
                        let _ = r.receiver.remove_key(&m);
                    }
                }
            }
            if let Err(err) = r
                .receiver
                .add_key(&srtp::MasterKey::with_mki(e.key, e.salt, mk))
            {
                return Some((None, format!("SRTP not opened: {mki_name}: {err}")));
            }
            r.installed.push_back(mki);
        }
        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        if r.receiver.roc(ssrc).is_none() {
            if let Some((_, roc)) = st.rocs.iter().find(|(s, _)| *s == ssrc) {
                let _ = r.receiver.set_roc(ssrc, *roc);
            }
        }
        let mut buf = p.to_vec();
        match r.receiver.unprotect_rtp_vec(&mut buf) {
            Ok(u) => Some((
                Some(buf),
                format!(
                    "SRTP opened: {mki_name}, ROC {}, {}",
                    u.roc,
                    if u.authenticated {
                        "tag verified"
                    } else {
                        "no tag in this packet"
                    }
                ),
            )),
            Err(err) => Some((None, format!("SRTP not opened: {mki_name}: {err}"))),
        }
    }
}

/// The bytes after the MKI of an SRTP packet with this SEQ (RFC 3711 tag,
/// or RFC 4771 ROC-carrying trailers).
fn trailer_len(cfg: &srtp::Config, seq: u16) -> usize {
    let t = cfg.suite.rtp_tag_len();
    match cfg.rcc {
        None => t,
        Some(rcc) if rcc.rate != 0 && seq.is_multiple_of(rcc.rate) => match rcc.mode {
            srtp::RccMode::Rccm3 => 4,
            _ => t,
        },
        Some(rcc) => match rcc.mode {
            srtp::RccMode::Rccm2 => t,
            _ => 0,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Duration;

    /// The published test vectors (`mbms vectors`) as a capture: MSK
    /// delivery, its acknowledgement, an inactive MSK, a solicited pull, a
    /// streaming MTK message, then SRTP under that MTK (the last packet
    /// altered).
    struct Fixture {
        capture: Capture,
        rtp: Vec<Vec<u8>>,
        muk_line: String,
    }

    fn vector(doc: &serde_json::Value, name: &str) -> serde_json::Value {
        doc["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap()
            .clone()
    }

    fn fixture() -> Fixture {
        let doc = mbms::vectors::generate();
        let msg = |n: &str| hex::decode(vector(&doc, n)["message"].as_str().unwrap()).unwrap();
        let bmsc = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 2269);
        let ue = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1), 2269);
        let ue_mtk = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1), 5008);
        let ue_srtp = SocketAddrV4::new(Ipv4Addr::new(127, 0, 1, 1), 5006);
        let mut w = mbms_capture::PcapWriter::new(Vec::new()).unwrap();
        let mut t = 0;
        let mut put = |w: &mut mbms_capture::PcapWriter<Vec<u8>>, s, d, p: &[u8]| {
            t += 1;
            w.write_udp(Duration::from_millis(t), s, d, p).unwrap();
        };
        put(&mut w, bmsc, ue, &msg("msk-delivery"));
        put(&mut w, ue, bmsc, &msg("msk-acknowledgement"));
        put(&mut w, bmsc, ue, &msg("inactive-msk"));
        put(&mut w, bmsc, ue, &msg("solicited-pull"));
        put(&mut w, bmsc, ue_mtk, &msg("mtk-streaming"));
        let mtk = vector(&doc, "mtk-streaming");
        let key: [u8; 16] = hex::decode(mtk["inputs"]["mtk"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let salt: [u8; 14] = hex::decode(mtk["inputs"]["mtk_salt"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let mut tx = srtp::Sender::new(srtp::Config::mbms()).unwrap();
        tx.add_key(&srtp::MasterKey::with_mki(
            key,
            salt,
            srtp::Mki::mbms(0x0001_0001, 2),
        ))
        .unwrap();
        let mut rtp = Vec::new();
        for seq in 0..4u16 {
            let mut p = vec![0x80, 96];
            p.extend_from_slice(&(65_534u16.wrapping_add(seq)).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
            p.extend((0..20).map(|i| i as u8 ^ seq as u8));
            let mut s = p.clone();
            tx.protect_rtp_vec(&mut s).unwrap();
            if seq == 3 {
                s[14] ^= 1; // altered: its tag no longer verifies
            }
            put(&mut w, bmsc, ue_srtp, &s);
            rtp.push(p);
        }
        let msk = vector(&doc, "msk-delivery");
        let muk_line = format!(
            "MUK {} {} {}\n",
            msk["inputs"]["idi"].as_str().unwrap(),
            msk["inputs"]["idr"].as_str().unwrap(),
            msk["inputs"]["muk"].as_str().unwrap()
        );
        Fixture {
            capture: mbms_capture::read_capture(&w.finish().unwrap()).unwrap(),
            rtp,
            muk_line,
        }
    }

    fn payload(r: &Record) -> Vec<u8> {
        let u = udp_in_frame(1, &r.data).unwrap();
        r.data[u.payload].to_vec()
    }

    #[test]
    fn a_muk_opens_the_whole_key_chain_and_the_srtp() {
        let f = fixture();
        // Only the MUK: the MSK comes from the MSK message, the MTK from
        // the MTK message.
        let (out, s) = decrypt(&f.capture, &f.muk_line).unwrap();
        let c = |i: usize| out[i].comments.join("|");
        assert!(c(0).starts_with(COMMENT_PREFIX), "{}", c(0));
        assert!(c(0).contains("MSK message 00f110/00010001 (Key Group 1, Key Number 1): MAC verified with the MUK of IDi bmsc.home1.net"), "{}", c(0));
        assert!(
            c(0).contains("MSK 102132435465768798a9bacbdcedfe0f; KV SEQs 0, SEQu 1000"),
            "{}",
            c(0)
        );
        assert!(!c(0).contains("inactive"));
        assert!(
            c(1).contains("MSK acknowledgement 00f110/00010001")
                && c(1).contains("MAC verified")
                && c(1).contains("(frame 1)"),
            "{}",
            c(1)
        );
        assert!(c(2).contains("(inactive: SEQs > SEQu"), "{}", c(2));
        assert!(
            c(3).contains("Key Number 0: solicited pull") && c(3).contains("no key data"),
            "{}",
            c(3)
        );
        assert!(
            c(4).contains("MTK message MTK ID 2: MAC verified with MSK 00f110/00010001"),
            "{}",
            c(4)
        );
        assert!(c(4).contains("MTK 5061728394a5b6c7d8e9fa0b1c2d3e4f; salt 60718293a4b5c6d7e8f90a1b2c3d; KV SPI/MKI 000100010002"), "{}", c(4));
        assert!(c(4).contains("SSRC 0x12345678 ROC 0"), "{}", c(4));
        // SRTP across the SEQ wrap (ROC 0 -> 1): plain RTP, checksums redone.
        for i in 0..3 {
            assert_eq!(payload(&out[5 + i]), f.rtp[i], "packet {i}");
            assert!(
                c(5 + i).contains("SRTP opened: MKI 000100010002"),
                "{}",
                c(5 + i)
            );
            let ip = &out[5 + i].data[14..34];
            assert_eq!(ipv4_header_checksum(ip), 0);
        }
        assert!(c(7).contains("ROC 1"), "{}", c(7));
        // The altered packet stays as it was, with the reason.
        assert_eq!(out[8].data, f.capture.records[8].data);
        assert!(
            c(8).contains("SRTP not opened") && c(8).contains("authentication failed"),
            "{}",
            c(8)
        );
        assert_eq!(
            s,
            Summary {
                packets: 9,
                mikey: 5,
                mikey_verified: 5,
                srtp: 4,
                srtp_opened: 3
            }
        );
    }

    /// RFC 1071 over an IPv4 header: 0 when its checksum is right.
    fn ipv4_header_checksum(h: &[u8]) -> u16 {
        let mut sum: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn a_wrong_key_or_none_leaves_every_packet_as_it_was() {
        let f = fixture();
        let wrong = f.muk_line.replace("76e7584e", "00000000");
        for log in [wrong.as_str(), "", "# no keys\n"] {
            let (out, s) = decrypt(&f.capture, log).unwrap();
            for (a, b) in out.iter().zip(&f.capture.records) {
                assert_eq!(a.data, b.data);
            }
            assert_eq!((s.mikey, s.mikey_verified, s.srtp_opened), (5, 0, 0));
            for r in &out[..5] {
                let c = &r.comments[0];
                assert!(
                    c.contains("NOT verified")
                        || c.contains("not opened")
                        || c.contains("not verified"),
                    "{c}"
                );
            }
        }
        assert!(decrypt(&f.capture, "MSK 00 11 22\n").is_err());
    }
}
