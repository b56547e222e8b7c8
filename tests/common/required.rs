//! For tests that need a tool this machine may lack (a browser, `tsc`):
//! whether its absence fails the test or skips it, and the skip line.

use std::io::Write;

/// The variable that makes a missing tool a failure, as `NAME=value`:
/// `own` (e.g. `QUICMATCH_REQUIRE_TSC`) when it is set, else `CI`; either
/// counts as on unless empty, `0` or `false`, so `own=0` allows skipping
/// where `CI` is set.
pub fn required_by(own: &str) -> Option<String> {
    let setting = |var: &str| {
        let value = std::env::var(var).ok()?;
        let on = !(value.is_empty() || value == "0" || value.eq_ignore_ascii_case("false"));
        Some((on, format!("{var}={value}")))
    };
    match setting(own) {
        Some((true, var)) => Some(var),
        Some((false, _)) => None,
        None => setting("CI").and_then(|(on, var)| on.then_some(var)),
    }
}

/// Writes one line straight to the process's stderr: the test harness
/// captures `eprintln!` of a passing test, and a skip must be seen.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
