//! TCP transport for Cassio (tokio). Not built yet: see the README.
