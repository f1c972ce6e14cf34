//! kapsel-agent
