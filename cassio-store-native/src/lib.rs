//! Cassio's native storage engine (commit log, memtable, SSTables). Not built yet: see the README.
