//! Test harnesses shared by the crates' integration tests.
//!
//! A suite that needs a service this machine may lack (PostgreSQL, moto) calls [`unavailable`]:
//! it prints why it skips, or fails when `MOLECULE_TEST_REQUIRE_ALL=1` (set by CI).

pub mod moto;
pub mod postgres;

/// Reports a missing service: panics under `MOLECULE_TEST_REQUIRE_ALL=1`, else prints the reason
/// so the skip is visible in the test output.
pub fn unavailable(what: &str, why: &str) {
    if std::env::var("MOLECULE_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("{what} is required (MOLECULE_TEST_REQUIRE_ALL=1) but unavailable: {why}");
    }
    eprintln!("SKIPPED: {what} unavailable: {why}");
}

/// A free TCP port on loopback (bound and released; good enough for a child that binds at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}
