//! placeholder
/// UE shards.
pub const UE_SHARDS: u32 = 256;
