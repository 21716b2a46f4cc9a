//! QUIC transport for Cassio (quinn). Not built yet: see the README.
