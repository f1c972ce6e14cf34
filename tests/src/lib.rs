//! Shared test harness for kapsel integration tests.
