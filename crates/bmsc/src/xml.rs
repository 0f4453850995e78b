//! The Ua request and response bodies (`PROFILE.md` section 3) live in
//! `mbms::ua`, shared with the UE so that every namespace, element name and
//! media type is defined once.

pub use mbms::ua::*;
