//! The in-memory reference hint log passes the general hint log cases.

conformance::hint_log_tests!(conformance::hint_log::MemHintLogHarness);
