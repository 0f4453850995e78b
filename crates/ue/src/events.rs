//! What a running UE reports to an embedding application
//! ([`crate::RunningUe::events`]) and to its log. No event carries a key.

use std::path::PathBuf;

use serde::Serialize;

/// Why an MSK request was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestReason {
    /// Initiation of key management: no MSK pushed after registration
    /// (seed 000 6.3.2.2.2).
    Initial,
    /// Missed key update: traffic named an MSK the UE does not hold (seed 000
    /// 6.3.2.2.3).
    MissedKeyUpdate,
    /// BM-SC solicited pull (seeds 002/003 6.3.2.2.4).
    SolicitedPull,
    /// Asked for by the application.
    Manual,
    /// A retry of an earlier request.
    Retry,
    /// Traffic needs an MSK that stays inactive: its activation (4-way
    /// procedure step 3) did not arrive within `activation_timeout_ms`, so the
    /// UE requests that MSK again by its MSK ID (seed 004 6.3.2.3.3).
    Activation,
}

/// An event of the running UE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum UeEvent {
    /// GBA bootstrapping succeeded.
    Bootstrapped {
        /// The new B-TID.
        btid: String,
        /// Its key lifetime (RFC 3339).
        expires: String,
    },
    /// A registration answer for a service.
    Registered {
        /// Service ID.
        service: String,
        /// The per-item status (200 = registered).
        status: u16,
    },
    /// Deregistered from a service.
    Deregistered {
        /// Service ID.
        service: String,
    },
    /// An MSK request was answered.
    MskRequested {
        /// The keys requested (`KeyDomainID/MSKID`, Key Number 0 = current).
        keys: Vec<String>,
        /// Why.
        reason: RequestReason,
        /// The per-item statuses.
        statuses: Vec<u16>,
    },
    /// The MGV-F accepted an MSK message that carried a key.
    MskStored {
        /// The MSK (`KeyDomainID/MSKID`).
        msk: String,
        /// Stored inactive (4-way procedure step 1).
        inactive: bool,
        /// The older MSK of the key group deleted to keep at most two.
        replaced: Option<String>,
        /// An acknowledgement was sent.
        acknowledged: bool,
    },
    /// A solicited pull for a key group was accepted.
    SolicitedPull {
        /// The key group (`KeyDomainID/GGGG`).
        key_group: String,
    },
    /// A new MTK was accepted.
    MtkAccepted {
        /// The protecting MSK.
        msk: String,
        /// The MTK ID.
        mtk_id: u16,
    },
    /// Traffic named an MSK the UE does not hold: a missed key update is
    /// scheduled.
    MissedKeyUpdate {
        /// The MSK named.
        msk: String,
    },
    /// A download object was verified and decrypted.
    DownloadDecrypted {
        /// Session name.
        session: String,
        /// The plain file written.
        file: PathBuf,
    },
    /// A download object was refused (not written).
    DownloadRefused {
        /// Session name.
        session: String,
        /// The protected object.
        object: PathBuf,
        /// Why.
        reason: String,
    },
    /// An inactive MSK that traffic needs was not activated, even after
    /// [`crate::ACTIVATION_REQUESTS`] requests (seed 004 6.3.2.3.3). Unless
    /// `kept_older`, a [`UeEvent::LeftService`] follows for each service of
    /// its key group (seed 000 6.3.2.2.1).
    ActivationFailed {
        /// The inactive MSK (`KeyDomainID/MSKID`).
        msk: String,
        /// Requests sent for it.
        requests: u32,
        /// A still-valid older MSK of the key group is held: the UE stays.
        kept_older: bool,
    },
    /// The UE left a service: no usable MSK could be had and no still-valid
    /// older one exists (seeds 000/001).
    LeftService {
        /// Service ID.
        service: String,
        /// Why.
        reason: String,
    },
    /// A failure worth reporting (also kept in the status's last errors).
    Error {
        /// What went wrong.
        what: String,
    },
}
