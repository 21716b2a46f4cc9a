//! The Cassio node host and the `cassio` binary. Not built yet: see the README.
