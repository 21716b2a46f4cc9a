//! The deterministic cluster simulator (being built).
