//! Shared helpers of the engine tests: a deterministic RNG and a UE simulated
//! with the `messages` readers (not the MGV-F module).
#![allow(dead_code)]

use std::collections::BTreeMap;

use mbms::engine::{Action, Engine, EngineStore, Step, Timestamp, UeId};
use mbms::messages::{MskAck, MskEnvelope, MskKeyData, MtkEnvelope};
use mbms::{KeyGroupName, Msk, MskName, Mtk, MtkId, Muk, MukId};
use rand_core::{CryptoRng, RngCore};

/// SplitMix64: deterministic, for tests only (marked `CryptoRng` so the
/// engine accepts it; it is not one).
pub struct TestRng(pub u64);

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

pub const BMSC: &str = "bmsc.home1.net";

pub fn group(n: u16) -> KeyGroupName {
    KeyGroupName {
        key_domain: "001-01".parse().unwrap(),
        key_group: n,
    }
}

pub fn t(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// A UE as the MGV-F would behave, built from the `messages` readers: the
/// counter per MUK must increase, the MAC must verify, a V bit yields an
/// acknowledgement; MSKs are kept per name with their window.
pub struct SimUe {
    pub id: UeId,
    pub muk_id: MukId,
    pub muk_bytes: [u8; 32],
    pub last_counter: u32,
    pub msks: BTreeMap<MskName, MskKeyData>,
    pub mtk_counters: BTreeMap<MskName, u32>,
}

/// What the simulated UE did with an MSK message.
#[derive(Debug)]
pub struct Received {
    pub msk: MskName,
    pub counter: u32,
    pub v: bool,
    pub key: Option<MskKeyData>,
    pub ack: Option<Vec<u8>>,
}

impl SimUe {
    pub fn new(name: &str, btid: &str, muk: u8) -> Self {
        SimUe {
            id: UeId::from(name),
            muk_id: MukId::new(BMSC, btid),
            muk_bytes: [muk; 32],
            last_counter: 0,
            msks: BTreeMap::new(),
            mtk_counters: BTreeMap::new(),
        }
    }

    pub fn muk(&self) -> Muk {
        Muk::from_bytes(self.muk_bytes)
    }

    pub fn register<S: EngineStore>(&self, e: &mut Engine<S>, now: Timestamp) {
        e.register_ue(self.id.clone(), self.muk_id.clone(), self.muk(), now);
    }

    /// Process an MSK message; `None` if the MGV-F would drop it.
    pub fn receive(&mut self, bytes: &[u8]) -> Option<Received> {
        let env = MskEnvelope::parse(bytes).expect("the engine builds profile messages");
        assert_eq!(env.muk_id, self.muk_id, "message for another MUK");
        if env.counter <= self.last_counter {
            return None;
        }
        let opened = env.open(&self.muk()).ok()?;
        self.last_counter = env.counter;
        if let Some(k) = &opened.key {
            self.msks.insert(env.msk, k.clone());
        }
        let ack = env.v.then(|| {
            MskAck::for_message(&env)
                .build(&opened.keys.auth_key, &opened.initiator)
                .unwrap()
        });
        Some(Received {
            msk: env.msk,
            counter: env.counter,
            v: env.v,
            key: opened.key,
            ack,
        })
    }

    /// Process an MTK message like the MGV-F (seed 004 6.5.4).
    pub fn receive_mtk(&mut self, bytes: &[u8]) -> Result<(MtkId, Mtk), &'static str> {
        let env = MtkEnvelope::parse(bytes).map_err(|_| "malformed")?;
        let k = self.msks.get(&env.msk).ok_or("unknown MSK")?;
        if k.is_inactive() {
            return Err("inactive MSK");
        }
        if !env.mtk_id.0.gt(k.seq_s.0) || env.mtk_id.0.gt(k.seq_u.0) {
            return Err("MTK ID outside the window");
        }
        let last = self.mtk_counters.get(&env.msk).copied().unwrap_or(0);
        if env.counter <= last {
            return Err("replay");
        }
        let mtk = env.open(&k.msk).map_err(|_| "MAC")?;
        self.mtk_counters.insert(env.msk, env.counter);
        let k = self.msks.get_mut(&env.msk).unwrap();
        k.seq_s = env.mtk_id;
        Ok((env.mtk_id, mtk))
    }

    pub fn msk(&self, name: &MskName) -> Option<&Msk> {
        self.msks.get(name).map(|k| &k.msk)
    }
}

/// The SendMikey actions of a list, as (ue, msk, step, counter, bytes).
/// (UE, MSK, step, counter, bytes) of one SendMikey action.
pub type Sent = (UeId, MskName, Option<Step>, u32, Vec<u8>);

pub fn sends(actions: &[Action]) -> Vec<Sent> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendMikey {
                ue,
                msk,
                step,
                counter,
                bytes,
                ..
            } => Some((ue.clone(), *msk, *step, *counter, bytes.clone())),
            _ => None,
        })
        .collect()
}
