//! http bench (below)
