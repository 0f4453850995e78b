//! One key group: MSK generation and rotation, MTK ID windows, MTK messages.

use rand_core::{CryptoRng, RngCore};

use crate::ids::{KeyGroupName, MskId, MskName, MtkId};
use crate::keys::{DownloadKeys, Msk, Mtk, MtkKey, MtkSalt};
use crate::messages::{self, MtkMessage, Streaming};
use crate::profile::{MKI_LEN, MSK_LEN, MTK_LEN, MTK_SALT_LEN, RAND_LEN};

use super::store::{KeyGroupSnapshot, MskSnapshot, StoreError};
use super::EngineError;

/// Default number of MTK IDs per MSK (see [`KeyGroupConfig::window_len`]).
pub const DEFAULT_WINDOW_LEN: u16 = 4096;

/// The largest window length: RFC 1982 orders two 16-bit serial numbers only
/// when they are less than 2^15 apart, so SEQs < SEQu needs `len <= 2^15 - 1`.
pub const MAX_WINDOW_LEN: u16 = (1 << 15) - 1;

/// The policy of one key group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroupConfig {
    /// MTK IDs per MSK. Each MSK gets the window `(SEQs, SEQu]` with
    /// `SEQu = SEQs + window_len`, i.e. `window_len` usable MTK IDs (the
    /// MGV-F accepts SEQp only if SEQs < SEQp <= SEQu, seed 004 6.5.4).
    /// Consecutive MSKs get consecutive windows. 1..=[`MAX_WINDOW_LEN`].
    pub window_len: u16,
    /// Charging by delivered MSK: deliver with the MSK acknowledgement
    /// reliability (4-way) procedure (seed 004 6.3.2.3.3).
    pub charging: bool,
    /// The V bit of plain pushes (seed 000 6.3.2.3.1: "if requested by the
    /// BM-SC, the UE sends a MIKEY acknowledgement"). Ignored when `charging`
    /// (the 4-way procedure always asks for acknowledgements).
    pub ack_requested: bool,
}

impl Default for KeyGroupConfig {
    fn default() -> Self {
        KeyGroupConfig {
            window_len: DEFAULT_WINDOW_LEN,
            charging: false,
            ack_requested: true,
        }
    }
}

impl KeyGroupConfig {
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.window_len == 0 || self.window_len > MAX_WINDOW_LEN {
            return Err("key group: window_len must be in 1..=32767");
        }
        Ok(())
    }
}

/// What the engine tells about one MSK (no key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MskInfo {
    /// Key Domain ID and MSK ID.
    pub name: MskName,
    /// Key validity VF: MTK IDs issued under this MSK are greater.
    pub seq_s: MtkId,
    /// Key validity VT: MTK IDs issued under this MSK are not greater.
    pub seq_u: MtkId,
    /// The last MTK ID issued (equal to `seq_s` before the first).
    pub last_mtk_id: MtkId,
    /// The counter of the last MTK message (0 before the first).
    pub mtk_counter: u32,
}

impl MskInfo {
    pub(crate) fn of(s: &MskSnapshot) -> Self {
        MskInfo {
            name: s.name,
            seq_s: s.seq_s,
            seq_u: s.seq_u,
            last_mtk_id: s.last_mtk_id,
            mtk_counter: s.mtk_counter,
        }
    }

    /// True when `id` lies in this MSK's window: SEQs < id <= SEQu (RFC 1982).
    pub fn window_contains(&self, id: MtkId) -> bool {
        id.0.gt(self.seq_s.0) && !id.0.gt(self.seq_u.0) && self.seq_s.0.lt(self.seq_u.0)
    }

    /// MTK IDs still available under this MSK.
    pub fn remaining(&self) -> u16 {
        self.seq_u.value().wrapping_sub(self.last_mtk_id.value())
    }
}

/// What the engine tells about a key group (no keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroupInfo {
    /// The key group.
    pub name: KeyGroupName,
    /// The MSK that protects the MTKs issued now.
    pub current: MskInfo,
    /// The MSK that becomes current at the next rotation (already pushed to
    /// the UEs of the key group).
    pub next: MskInfo,
}

/// A new MTK and its MTK message (`PROFILE.md` section 6), with the traffic
/// keys it gives (`PROFILE.md` section 2).
#[derive(Debug)]
pub struct MtkOutput {
    /// The MTK message, identical for every UE (send it on the session's
    /// bearer, repeat it as often as needed: repetitions are the same bytes).
    pub bytes: Vec<u8>,
    /// The protecting MSK.
    pub msk: MskName,
    /// The MTK ID (SEQp).
    pub mtk_id: MtkId,
    /// The MTK-message counter of the protecting MSK (T payload).
    pub counter: u32,
    /// The RAND of the message (part of the download key labels).
    pub rand: [u8; RAND_LEN],
    /// The MTK and its salt.
    pub mtk: Mtk,
}

impl MtkOutput {
    /// SRTP master key and master salt (seed 004 6.5.4: the MTK and the salt
    /// of the KEMAC key data).
    pub fn srtp_master(&self) -> (&[u8; MTK_LEN], &[u8; MTK_SALT_LEN]) {
        self.mtk.srtp_master()
    }

    /// The SRTP MKI of packets protected with this MTK: MSK ID || MTK ID
    /// (`PROFILE.md` section 8).
    pub fn mki(&self) -> [u8; MKI_LEN] {
        messages::mki(self.msk.msk_id, self.mtk_id)
    }

    /// The CSB ID of the MTK message (`PROFILE.md` section 6: 0).
    pub fn csb_id(&self) -> u32 {
        messages::MTK_CSB_ID
    }

    /// The download encryption and authentication keys (`PROFILE.md`
    /// section 2: RFC 3830 4.1.3 with the MTK as TGK, CSB ID and RAND of the
    /// MTK message).
    pub fn download_keys(&self) -> DownloadKeys {
        self.mtk.download_keys(self.csb_id(), &self.rand)
    }
}

fn random<const N: usize>(rng: &mut (impl RngCore + CryptoRng)) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    b
}

fn next_key_number(n: u16) -> u16 {
    match n.wrapping_add(1) {
        0 => 1,
        m => m,
    }
}

fn new_msk(
    group: KeyGroupName,
    key_number: u16,
    after: MtkId,
    cfg: &KeyGroupConfig,
    rng: &mut (impl RngCore + CryptoRng),
) -> MskSnapshot {
    let mut key = random::<MSK_LEN>(rng);
    let msk = Msk::from_bytes(key);
    zeroize::Zeroize::zeroize(&mut key);
    MskSnapshot {
        name: MskName {
            key_domain: group.key_domain,
            msk_id: MskId::new(group.key_group, key_number),
        },
        key: msk,
        seq_s: after,
        seq_u: MtkId::new(after.value().wrapping_add(cfg.window_len)),
        mtk_counter: 0,
        last_mtk_id: after,
    }
}

/// The first state of a key group: MSK 1 with the window (0, L] and MSK 2
/// with (L, 2L].
pub(crate) fn create(
    name: KeyGroupName,
    cfg: &KeyGroupConfig,
    rng: &mut (impl RngCore + CryptoRng),
) -> KeyGroupSnapshot {
    let current = new_msk(name, 1, MtkId::new(0), cfg, rng);
    let next = new_msk(name, 2, current.seq_u, cfg, rng);
    KeyGroupSnapshot {
        name,
        current,
        next,
        next_key_number: 3,
    }
}

/// The state after a rotation: the next MSK becomes current, a new next MSK
/// gets the window that follows it.
pub(crate) fn rotated(
    s: &KeyGroupSnapshot,
    cfg: &KeyGroupConfig,
    rng: &mut (impl RngCore + CryptoRng),
) -> KeyGroupSnapshot {
    let current = s.next.clone();
    let next = new_msk(s.name, s.next_key_number, current.seq_u, cfg, rng);
    KeyGroupSnapshot {
        name: s.name,
        current,
        next,
        next_key_number: next_key_number(s.next_key_number),
    }
}

/// The state after issuing one more MTK under the current MSK, and the MTK
/// message. Errors leave nothing changed (the caller commits the returned
/// snapshot only after saving it).
pub(crate) fn issue_mtk(
    s: &KeyGroupSnapshot,
    streaming: Option<Streaming>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(KeyGroupSnapshot, MtkOutput), EngineError> {
    let cur = &s.current;
    if cur.last_mtk_id == cur.seq_u {
        return Err(EngineError::WindowExhausted {
            msk: cur.name,
            seq_u: cur.seq_u,
        });
    }
    let counter = cur
        .mtk_counter
        .checked_add(1)
        .ok_or(EngineError::MtkCounterExhausted { msk: cur.name })?;
    let mtk_id = MtkId(cur.last_mtk_id.0.next());
    let mut key = random::<MTK_LEN>(rng);
    let mut salt = random::<MTK_SALT_LEN>(rng);
    let mtk = Mtk {
        key: MtkKey::from_bytes(key),
        salt: MtkSalt::from_bytes(salt),
    };
    zeroize::Zeroize::zeroize(&mut key);
    zeroize::Zeroize::zeroize(&mut salt);
    let rand = random::<RAND_LEN>(rng);
    let bytes = MtkMessage {
        counter,
        rand,
        msk: cur.name,
        mtk_id,
        mtk: mtk.clone(),
        streaming,
    }
    .build(&cur.key)
    .map_err(EngineError::Message)?;
    let mut after = s.clone();
    after.current.mtk_counter = counter;
    after.current.last_mtk_id = mtk_id;
    let out = MtkOutput {
        bytes,
        msk: cur.name,
        mtk_id,
        counter,
        rand,
        mtk,
    };
    Ok((after, out))
}

/// Check a snapshot read from the store before trusting it.
pub(crate) fn check_snapshot(s: &KeyGroupSnapshot, name: &KeyGroupName) -> Result<(), StoreError> {
    let bad = |why: String| {
        Err(StoreError::new(format!(
            "key group {name}: corrupt snapshot: {why}"
        )))
    };
    if s.name != *name {
        return bad(format!("it names key group {}", s.name));
    }
    if s.next_key_number == 0 {
        return bad("next Key Number 0".into());
    }
    for m in [&s.current, &s.next] {
        if m.name.key_group() != *name || m.name.msk_id.key_number == 0 {
            return bad(format!("MSK {} does not belong to the key group", m.name));
        }
        let info = MskInfo::of(m);
        if !m.seq_s.0.lt(m.seq_u.0) {
            return bad(format!(
                "MSK {}: window ({}, {}] is not ordered",
                m.name, m.seq_s, m.seq_u
            ));
        }
        if m.last_mtk_id != m.seq_s && !info.window_contains(m.last_mtk_id) {
            return bad(format!(
                "MSK {}: last MTK ID {} outside its window",
                m.name, m.last_mtk_id
            ));
        }
    }
    if s.current.name == s.next.name {
        return bad("current and next MSK are the same".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(u8);
    impl RngCore for Counting {
        fn next_u32(&mut self) -> u32 {
            self.next_u64() as u32
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for b in dest {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl CryptoRng for Counting {}

    fn group() -> KeyGroupName {
        KeyGroupName {
            key_domain: "001-01".parse().unwrap(),
            key_group: 7,
        }
    }

    #[test]
    fn windows_are_consecutive_and_wrap() {
        let cfg = KeyGroupConfig {
            window_len: 30000,
            ..Default::default()
        };
        let mut rng = Counting(0);
        let mut s = create(group(), &cfg, &mut rng);
        check_snapshot(&s, &group()).unwrap();
        assert_eq!(
            (s.current.seq_s, s.current.seq_u),
            (MtkId::new(0), MtkId::new(30000))
        );
        assert_eq!(
            (s.next.seq_s, s.next.seq_u),
            (MtkId::new(30000), MtkId::new(60000))
        );
        for _ in 0..5 {
            let r = rotated(&s, &cfg, &mut rng);
            assert_eq!(r.current.name, s.next.name);
            assert_eq!(r.next.seq_s, r.current.seq_u);
            check_snapshot(&r, &group()).unwrap();
            s = r;
        }
        assert_eq!(s.current.name.msk_id.key_number, 6);
        assert_eq!(next_key_number(65535), 1);
    }

    #[test]
    fn mtk_ids_fill_the_window_then_stop() {
        let cfg = KeyGroupConfig {
            window_len: 3,
            ..Default::default()
        };
        let mut rng = Counting(0);
        let mut s = create(group(), &cfg, &mut rng);
        for want in 1..=3u16 {
            let (after, out) = issue_mtk(&s, None, &mut rng).unwrap();
            assert_eq!(out.mtk_id, MtkId::new(want));
            assert_eq!(out.counter, u32::from(want));
            assert!(MskInfo::of(&after.current).window_contains(out.mtk_id));
            s = after;
        }
        assert!(matches!(
            issue_mtk(&s, None, &mut rng),
            Err(EngineError::WindowExhausted { .. })
        ));
    }
}
