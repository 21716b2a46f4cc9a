//! RocksDB and sled storage backends for Cassio. Not built yet: see the README.
