//! kapsel-proto
