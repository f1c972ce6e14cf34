//! kapsel-scheduler
