//! The store conformance suite (being built).
