//! Whether the browser tests can run here: every Chromium `#[test]` starts
//! with `if !browser_ready() { return; }`, a Firefox one with
//! `if !ready(Browser::Firefox) { return; }`.
//!
//! `cargo test` has to pass on a fresh machine. So when a browser or its driver
//! is missing and this process may install it (it runs as root, `apt-get` is
//! on the `PATH`, the missing binary is at its default path rather than named
//! by `QUICMATCH_CHROMIUM`/`QUICMATCH_CHROMEDRIVER`/`QUICMATCH_FIREFOX`, and
//! it is not the call test's re-executed network-namespace child), the first
//! test of that browser installs Debian's `chromium` and `chromium-driver`, or
//! `firefox-esr`, with apt-get, once per process; the other tests wait for it.
//! geckodriver has no Debian package and is never installed here (`cargo
//! install geckodriver --locked` builds it in about 3 minutes; `.ci/run` does
//! that). If something is still missing after that, that browser's tests are
//! skipped with one line on stderr, and count as passed (Rust's test harness
//! has no run-time skip) — unless `CI` or `QUICMATCH_REQUIRE_BROWSER` asks for
//! them, in which case they fail.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::required::{loud, required_by};
use crate::webdriver::Browser;

/// Bound on `apt-get update`.
const UPDATE_LIMIT: Duration = Duration::from_secs(5 * 60);
/// Bound on `apt-get install` (Chromium or Firefox is a download of about 100 MB).
const INSTALL_LIMIT: Duration = Duration::from_secs(15 * 60);

/// What a person can run to make `browser`'s tests run.
fn how_to_install(browser: Browser) -> &'static str {
    match browser {
        Browser::Chromium => {
            "apt-get install -y chromium chromium-driver \
             (or set QUICMATCH_CHROMIUM/QUICMATCH_CHROMEDRIVER; see docs/browser.md)"
        }
        Browser::Firefox => {
            "apt-get install -y firefox-esr and cargo install geckodriver --locked \
             (or set QUICMATCH_FIREFOX/QUICMATCH_GECKODRIVER; see docs/browser.md)"
        }
    }
}

/// The Debian packages that hold `browser` and its driver.
fn packages(browser: Browser) -> &'static [&'static str] {
    match browser {
        Browser::Chromium => &["chromium", "chromium-driver"],
        // geckodriver is not packaged: see `cannot_install`.
        Browser::Firefox => &["firefox-esr"],
    }
}

/// True when Chromium and chromedriver are there (installed now if need be
/// and possible); false when the calling test should return at once, skipped.
/// The first call decides for the whole process and prints the one `SKIPPED`
/// line; when the browser tests are required, every call panics instead.
pub fn browser_ready() -> bool {
    ready(Browser::Chromium)
}

/// [`browser_ready`] for `browser` (Firefox: firefox-esr and geckodriver).
pub fn ready(browser: Browser) -> bool {
    static MISSING: [OnceLock<Option<String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let missing = MISSING[browser as usize].get_or_init(|| {
        let why = find_or_install(browser).err()?;
        if required_by("QUICMATCH_REQUIRE_BROWSER").is_none() {
            // Chromium's line is the one the docs quote; Firefox's says so.
            let which = match browser {
                Browser::Chromium => "",
                Browser::Firefox => " in Firefox",
            };
            loud(&format!(
                "SKIPPED browser tests{which} (they are reported as passed): {why}; {}",
                how_to_install(browser)
            ));
        }
        Some(why)
    });
    let Some(why) = missing else { return true };
    if let Some(var) = required_by("QUICMATCH_REQUIRE_BROWSER") {
        panic!(
            "the browser tests in {} cannot run, and {var} requires them (unset it or set \
             QUICMATCH_REQUIRE_BROWSER=0 to skip them instead): {why}; {}",
            browser.name(),
            how_to_install(browser)
        );
    }
    false
}

/// The browser's binary and its driver's, each with the variable that
/// overrides its path.
fn binaries(browser: Browser) -> [(PathBuf, &'static str); 2] {
    let [browser_var, driver_var] = browser.path_vars();
    [
        (browser.binary(), browser_var),
        (browser.driver(), driver_var),
    ]
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The binaries that are not there.
fn missing(browser: Browser) -> Vec<(PathBuf, &'static str)> {
    binaries(browser)
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
fn find_or_install(browser: Browser) -> Result<(), String> {
    let absent = missing(browser);
    if absent.is_empty() {
        return Ok(());
    }
    let what = describe(&absent);
    if let Some(why) = cannot_install(browser, &absent) {
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
    if missing(browser).is_empty() {
        return Ok(());
    }
    let log = tmp.join(match browser {
        Browser::Chromium => "browser-install.log",
        Browser::Firefox => "firefox-install.log",
    });
    let names = packages(browser).join(" and ");
    loud(&format!(
        "browser tests: {what} not found; installing Debian's {names} with apt-get, once \
         (output in {})",
        log.display()
    ));
    let outcome = install(packages(browser), &log);
    let still = missing(browser);
    match outcome {
        _ if still.is_empty() => {
            loud(&format!("browser tests: {names} installed"));
            Ok(())
        }
        Err(why) => Err(format!(
            "{what} not found and could not be installed ({why}; see {})",
            log.display()
        )),
        Ok(()) => Err(format!(
            "{} still not found after installing {names} (see {})",
            describe(&still),
            log.display()
        )),
    }
}

/// Why the `absent` binaries of `browser` cannot be installed here, if they cannot.
fn cannot_install(browser: Browser, absent: &[(PathBuf, &'static str)]) -> Option<String> {
    if std::env::var_os(crate::NETNS_ENV).is_some() {
        // The parent process installs; this child has no network anyway.
        return Some("inside the call test's network namespace".into());
    }
    if browser == Browser::Firefox && absent.iter().any(|(path, _)| *path == browser.driver()) {
        return Some("geckodriver has no Debian package".into());
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

/// `apt-get update`, then `apt-get install` of `packages`, each bounded in
/// time, with their output in `log`.
fn install(packages: &[&str], log: &Path) -> Result<(), String> {
    let log = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
    // Wait for another apt or dpkg holding the lock instead of failing at once.
    let wait = "DPkg::Lock::Timeout=120";
    // A failed update (no network, a busy lists lock) may still leave lists
    // good enough to install from, so try anyway.
    let updated = apt(&["-q", "-o", wait, "update"], UPDATE_LIMIT, &log, "");
    let mut args = vec!["-q", "-o", wait, "install", "-y", "--no-install-recommends"];
    args.extend_from_slice(packages);
    let installed = apt(
        &args,
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
