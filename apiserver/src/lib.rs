//! kapsel-apiserver
