//! kapsel-controller
