//! Whether the browser tests can run here: every browser `#[test]` starts with
//! `if !browser_ready() { return; }`.
//!
//! `cargo test` has to pass on a fresh machine. So when Chromium or its driver
//! is missing and this process may install them (it runs as root, `apt-get` is
//! on the `PATH`, the missing binary is at its Debian path rather than named by
//! `QUICMATCH_CHROMIUM`/`QUICMATCH_CHROMEDRIVER`, and it is not the call test's
//! re-executed network-namespace child), the first browser test installs
//! Debian's `chromium` and `chromium-driver` with apt-get, once per process;
//! the other tests wait for it. If they are still missing after that, the
//! browser tests are skipped with one line on stderr, and count as passed
//! (Rust's test harness has no run-time skip) — unless `CI` or
//! `QUICMATCH_REQUIRE_BROWSER` asks for them, in which case they fail.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::webdriver::{chromedriver_path, chromium_path};

/// Bound on `apt-get update`.
const UPDATE_LIMIT: Duration = Duration::from_secs(5 * 60);
/// Bound on `apt-get install` (Chromium is a download of about 100 MB).
const INSTALL_LIMIT: Duration = Duration::from_secs(15 * 60);
/// What a person can run to make the browser tests run.
const HOW_TO_INSTALL: &str = "apt-get install -y chromium chromium-driver \
     (or set QUICMATCH_CHROMIUM/QUICMATCH_CHROMEDRIVER; see docs/browser.md)";

/// True when Chromium and chromedriver are there (installed now if need be
/// and possible); false when the calling test should return at once, skipped.
/// The first call decides for the whole process and prints the one `SKIPPED`
/// line; when the browser tests are required, every call panics instead.
pub fn browser_ready() -> bool {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    let missing = MISSING.get_or_init(|| {
        let why = find_or_install().err()?;
        if required_by().is_none() {
            loud(&format!(
                "SKIPPED browser tests (they are reported as passed): {why}; {HOW_TO_INSTALL}"
            ));
        }
        Some(why)
    });
    let Some(why) = missing else { return true };
    if let Some(var) = required_by() {
        panic!(
            "the browser tests cannot run, and {var} requires them (unset it or set \
             QUICMATCH_REQUIRE_BROWSER=0 to skip them instead): {why}; {HOW_TO_INSTALL}"
        );
    }
    false
}

/// The variable (`CI`, `QUICMATCH_REQUIRE_BROWSER`) that makes a missing
/// browser a failure, as `NAME=value`. `QUICMATCH_REQUIRE_BROWSER=0` (or
/// `false`) allows skipping even where `CI` is set.
fn required_by() -> Option<String> {
    let setting = |var: &str| {
        let value = std::env::var(var).ok()?;
        let on = !(value.is_empty() || value == "0" || value.eq_ignore_ascii_case("false"));
        Some((on, format!("{var}={value}")))
    };
    match setting("QUICMATCH_REQUIRE_BROWSER") {
        Some((true, var)) => Some(var),
        Some((false, _)) => None,
        None => setting("CI").and_then(|(on, var)| on.then_some(var)),
    }
}

/// Writes one line straight to the process's stderr: the test harness
/// captures `eprintln!` of a passing test, and this line must be seen.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The browser binaries, each with the variable that overrides its path.
fn binaries() -> [(PathBuf, &'static str); 2] {
    [
        (chromium_path(), "QUICMATCH_CHROMIUM"),
        (chromedriver_path(), "QUICMATCH_CHROMEDRIVER"),
    ]
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The binaries that are not there.
fn missing() -> Vec<(PathBuf, &'static str)> {
    binaries()
        .into_iter()
        .filter(|(path, _)| !is_executable(path))
        .collect()
}

fn describe(missing: &[(PathBuf, &'static str)]) -> String {
    missing
        .iter()
        .map(|(path, _)| path.display().to_string())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Ok when both binaries are there, after installing them if need be;
/// else why not, in words.
fn find_or_install() -> Result<(), String> {
    let absent = missing();
    if absent.is_empty() {
        return Ok(());
    }
    let what = describe(&absent);
    if let Some(why) = cannot_install(&absent) {
        return Err(format!(
            "{what} not found and cannot be installed here ({why})"
        ));
    }
    // One install per target directory at a time: another test process (a
    // second `cargo test`) waits here, then finds the binaries installed.
    // apt-get's own locks keep other package managers out.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let _ = std::fs::create_dir_all(tmp);
    let _lock = lock(&tmp.join("browser-install.lock"));
    if missing().is_empty() {
        return Ok(());
    }
    let log = tmp.join("browser-install.log");
    loud(&format!(
        "browser tests: {what} not found; installing Debian's chromium and chromium-driver \
         with apt-get, once (output in {})",
        log.display()
    ));
    let outcome = install(&log);
    let still = missing();
    match outcome {
        _ if still.is_empty() => {
            loud("browser tests: chromium and chromium-driver installed");
            Ok(())
        }
        Err(why) => Err(format!(
            "{what} not found and could not be installed ({why}; see {})",
            log.display()
        )),
        Ok(()) => Err(format!(
            "{} still not found after installing chromium and chromium-driver (see {})",
            describe(&still),
            log.display()
        )),
    }
}

/// Why the `absent` binaries cannot be installed here, if they cannot.
fn cannot_install(absent: &[(PathBuf, &'static str)]) -> Option<String> {
    if std::env::var_os(crate::NETNS_ENV).is_some() {
        // The parent process installs; this child has no network anyway.
        return Some("inside the call test's network namespace".into());
    }
    // A path someone chose is theirs to fill; apt-get would not put it there.
    if let Some((_, var)) = absent
        .iter()
        .find(|(_, var)| std::env::var_os(var).is_some())
    {
        return Some(format!("{var} points there, not at the Debian path"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|dir| is_executable(&dir.join("apt-get"))) {
        return Some("no apt-get".into());
    }
    None
}

/// An exclusive lock on `path`, held until the returned file is dropped;
/// `None` if the file cannot be opened (then apt-get's locks are all there is).
pub fn lock(path: &Path) -> Option<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0;
    locked.then_some(file)
}

/// `apt-get update`, then `apt-get install` of Debian's Chromium and its
/// driver, each bounded in time, with their output in `log`.
fn install(log: &Path) -> Result<(), String> {
    let log = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    // Wait for another apt or dpkg holding the lock instead of failing at once.
    let wait = "DPkg::Lock::Timeout=120";
    // A failed update (no network, a busy lists lock) may still leave lists
    // good enough to install from, so try anyway.
    let updated = apt(&["-q", "-o", wait, "update"], UPDATE_LIMIT, &log, "");
    let installed = apt(
        &[
            "-q",
            "-o",
            wait,
            "install",
            "-y",
            "--no-install-recommends",
            "chromium",
            "chromium-driver",
        ],
        INSTALL_LIMIT,
        &log,
        "; `dpkg --configure -a` may be needed",
    );
    match (updated, installed) {
        (Err(update), Err(install)) => Err(format!("{update}; then {install}")),
        (_, installed) => installed,
    }
}

/// Runs `apt-get args`, non-interactive, killed (with everything it started)
/// after `limit`; `if_killed` is added to the error then.
fn apt(args: &[&str], limit: Duration, log: &File, if_killed: &str) -> Result<(), String> {
    let command = format!("apt-get {}", args.join(" "));
    let output = || log.try_clone().map(Stdio::from);
    let mut child = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(output().map_err(|e| e.to_string())?)
        .stderr(output().map_err(|e| e.to_string())?)
        // Its own process group, so that a timeout ends dpkg too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {command}: {e}"))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("`{command}` failed, {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                let group = -i32::try_from(child.id()).expect("pid fits in i32");
                // SAFETY: sends a signal to the process group of a child this
                // function started (and has not reaped, so the id is still its).
                unsafe { libc::kill(group, libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!(
                    "`{command}` took over {limit:?} and was killed{if_killed}"
                ));
            }
            Err(e) => return Err(format!("waiting for {command}: {e}")),
        }
    }
}
