//! The transport conformance suite (being built).
