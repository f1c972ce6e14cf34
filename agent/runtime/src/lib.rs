//! kapsel-runtime
