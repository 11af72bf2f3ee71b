//! The harness runtime (being written).
