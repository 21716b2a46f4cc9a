//! The in-memory reference store passes the general store cases.

conformance::store_tests!(conformance::store::MemStoreHarness);
