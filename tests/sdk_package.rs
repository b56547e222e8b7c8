//! The browser module as an npm package (`web/`): its version is the
//! protocol's, its TypeScript types (`web/quicmatch.d.ts`) declare exactly
//! what `web/quicmatch.js` exports and pass `tsc` with the type tests
//! (`web/types-test.ts`), and `npm pack` ships exactly the intended files.
//!
//! `tsc` is Debian's `node-typescript` (TypeScript 4.8), or the one named by
//! `QUICMATCH_TSC`. Without it the `tsc` tests are skipped with a line on
//! stderr (they still show as `ok`), unless `CI` is set (to anything but
//! empty, `0` or `false`) or `QUICMATCH_REQUIRE_TSC=1`: then they fail.
//! `QUICMATCH_REQUIRE_TSC=0` allows skipping where `CI` is set. The `npm
//! pack` check runs where `npm` is, and is skipped (with a line) elsewhere.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/required.rs"]
mod required;
use required::{loud, required_by};

/// The repository's root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An executable called `name` on the `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The `tsc` to run, or `None` (after saying so, or failing where it is
/// required).
fn tsc() -> Option<PathBuf> {
    let found = match std::env::var_os("QUICMATCH_TSC") {
        Some(path) => Some(PathBuf::from(path)).filter(|p| p.is_file()),
        None => on_path("tsc"),
    };
    if found.is_none() {
        let why = "tsc not found (install it with `apt-get install -y node-typescript`, \
                   or name it with QUICMATCH_TSC)";
        if let Some(var) = required_by("QUICMATCH_REQUIRE_TSC") {
            panic!("{why}; it is required because {var}");
        }
        loud(&format!(
            "SKIPPED TypeScript checks (reported as passed): {why}"
        ));
    }
    found
}

/// What a finished command said.
struct Output {
    success: bool,
    text: String,
}

/// Runs `command` to its end, or kills it after `limit`.
fn run(mut command: Command, limit: Duration) -> Output {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    // Drained on their own threads, so a chatty command cannot block on a
    // full pipe while this one waits for it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = format!(
        "{}{}",
        stdout.join().expect("stdout"),
        stderr.join().expect("stderr")
    );
    Output {
        success: status.success(),
        text,
    }
}

const TSC_LIMIT: Duration = Duration::from_secs(180);

/// The type tests: every use in `web/types-test.ts` type-checks, and every
/// line marked `// @ts-expect-error` (a misspelt event name, an assignment
/// to `state`, a wrong option type, ...) is an error, as `tsc` itself
/// checks. The import there goes through the package's name, so this also
/// checks `exports` in `web/package.json`.
#[test]
fn the_types_pass_tsc_with_the_type_tests() {
    let Some(tsc) = tsc() else { return };
    let mut command = Command::new(tsc);
    command.arg("-p").arg(root().join("web/tsconfig.json"));
    let out = run(command, TSC_LIMIT);
    assert!(
        out.success,
        "tsc -p web/tsconfig.json failed:\n{}",
        out.text
    );
}

/// The same mistakes without `@ts-expect-error` fail `tsc`, each with the
/// error expected, so the type tests above cannot pass by checking nothing.
#[test]
fn tsc_rejects_a_misspelt_event_and_a_write_to_state() {
    let Some(tsc) = tsc() else { return };
    let dir = root().join(format!(
        "target/tmp/sdk-package-probe-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let module = root().join("web/quicmatch.js");
    let probe = format!(
        "import {{ QuicmatchSession }} from {module:?};\n\
         const s = new QuicmatchSession();\n\
         s.addEventListener('matched', (e) => e.detail.partner.name);\n\
         s.addEventListener('matchd', () => {{}});\n\
         s.state = 'idle';\n\
         new QuicmatchSession({{ keepAliveMs: '20s' }});\n",
        module = module.to_str().unwrap()
    );
    std::fs::write(dir.join("probe.mts"), probe).unwrap();
    let config = serde_json::json!({
        "extends": root().join("web/tsconfig.json"),
        "files": [dir.join("probe.mts")],
    });
    std::fs::write(dir.join("tsconfig.json"), config.to_string()).unwrap();
    let mut command = Command::new(tsc);
    command.arg("-p").arg(dir.join("tsconfig.json"));
    let out = run(command, TSC_LIMIT);
    assert!(!out.success, "tsc accepted the probe:\n{}", out.text);
    let errors: Vec<&str> = out
        .text
        .lines()
        .filter(|l| l.contains("error TS"))
        .collect();
    // Line 4: no overload takes 'matchd'; 5: `state` is read-only; 6: a
    // string for a number. Line 3 is fine.
    for (line, code) in [(4, "TS2769"), (5, "TS2540"), (6, "TS2322")] {
        assert!(
            errors
                .iter()
                .any(|e| e.contains(&format!("probe.mts({line},")) && e.contains(code)),
            "no {code} on line {line}:\n{}",
            out.text
        );
    }
    assert_eq!(errors.len(), 3, "{}", out.text);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The names a file exports as values: `export <kind> NAME` lines, after
/// `prefix` (`""` for the module, `"declare "` for its types).
fn exported_values(source: &str, prefix: &str) -> BTreeSet<String> {
    let kinds = ["const ", "class ", "function ", "async function "];
    source
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|rest| rest.strip_prefix(prefix))
        .filter_map(|rest| kinds.iter().find_map(|kind| rest.strip_prefix(kind)))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '$')
                .collect()
        })
        .collect()
}

/// Every value `web/quicmatch.js` exports is declared in the types, and the
/// types declare no value the module lacks. Where `node` is, the module's
/// exports as Node sees them (which would include any other form of
/// `export`) must be the same names.
#[test]
fn the_types_declare_exactly_the_module_exports() {
    let js = read("web/quicmatch.js");
    let types = read("web/quicmatch.d.ts");
    // Only the forms the parser reads: an `export { … }` or `export default`
    // would go unseen.
    for line in js.lines() {
        assert!(
            !(line.starts_with("export {")
                || line.starts_with("export default")
                || line.starts_with("export let")
                || line.starts_with("export var")
                || line.starts_with("export *")),
            "web/quicmatch.js: an export this test cannot read: {line}"
        );
    }
    let exported = exported_values(&js, "");
    let declared = exported_values(&types, "declare ");
    for name in [
        "QuicmatchSession",
        "QuicmatchError",
        "PROTOCOL_VERSION",
        "encodeFrame",
    ] {
        assert!(
            exported.contains(name),
            "quicmatch.js does not export {name}"
        );
    }
    let undeclared: Vec<_> = exported.difference(&declared).collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    assert!(
        undeclared.is_empty() && missing.is_empty(),
        "exported by quicmatch.js but not declared in quicmatch.d.ts: {undeclared:?}; \
         declared but not exported: {missing:?}"
    );

    let Some(node) = on_path("node") else {
        loud("SKIPPED the runtime export check (reported as passed): node not found");
        return;
    };
    let url = format!("file://{}", root().join("web/quicmatch.js").display());
    let script = format!(
        "const m = await import({url:?}); console.log(JSON.stringify(Object.keys(m).sort()));"
    );
    let mut command = Command::new(node);
    command.args(["--input-type=module", "-e", &script]);
    let out = run(command, Duration::from_secs(60));
    assert!(
        out.success,
        "node could not import quicmatch.js:\n{}",
        out.text
    );
    let names: BTreeSet<String> = serde_json::from_str(out.text.trim()).expect("a JSON list");
    assert_eq!(names, exported, "the module's exports at run time");
}

/// The first `'…'` string after `marker` in `source`.
fn quoted_after<'a>(source: &'a str, marker: &str) -> &'a str {
    let rest = &source[source
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not found"))..];
    let start = rest.find('\'').expect("a quote") + 1;
    let end = start + rest[start..].find('\'').expect("a closing quote");
    &rest[start..end]
}

/// The package's major.minor is the protocol version, wherever it is
/// written: the module's `PROTOCOL_VERSION` and its types, the title of
/// docs/protocol.md; its major is the one in the WebSocket subprotocol
/// (module and server) and in the module's versioned path.
#[test]
fn the_package_version_is_the_protocol_version() {
    let package: Value = serde_json::from_str(&read("web/package.json")).expect("package.json");
    let version = package["version"].as_str().expect("a version");
    let parts: Vec<&str> = version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u32>().is_ok()),
        "not MAJOR.MINOR.PATCH: {version}"
    );
    let (major, minor) = (parts[0], parts[1]);
    let protocol = format!("{major}.{minor}");

    let js = read("web/quicmatch.js");
    assert_eq!(
        quoted_after(&js, "export const PROTOCOL_VERSION"),
        protocol,
        "PROTOCOL_VERSION in web/quicmatch.js"
    );
    assert_eq!(
        quoted_after(
            &read("web/quicmatch.d.ts"),
            "export declare const PROTOCOL_VERSION"
        ),
        protocol,
        "PROTOCOL_VERSION in web/quicmatch.d.ts"
    );
    let title = read("docs/protocol.md");
    let title = title.lines().next().unwrap_or_default();
    assert!(
        title.contains(&format!("version {major} ")) && title.contains(&format!("({protocol} ")),
        "docs/protocol.md's title names another version: {title}"
    );
    let subprotocol = format!("quicmatch.v{major}");
    assert_eq!(quicmatch::websocket::SUBPROTOCOL, subprotocol);
    assert_eq!(
        quoted_after(&js, "export const WEBSOCKET_SUBPROTOCOL"),
        subprotocol
    );
    assert_eq!(
        quicmatch::web_assets::MODULE_V1_PATH,
        format!("/quicmatch.v{major}.js")
    );
    assert_eq!(
        quicmatch::web_assets::TYPES_V1_PATH,
        format!("/quicmatch.v{major}.d.ts")
    );
}

/// `web/package.json` is a package of one ES module: its entry points exist,
/// it has no side effects, and it carries the crate's license.
#[test]
fn the_package_manifest_points_at_the_module_and_its_types() {
    let text = read("web/package.json");
    let package: Value = serde_json::from_str(&text).expect("package.json");
    assert_eq!(package["name"], "quicmatch");
    assert_eq!(package["type"], "module");
    assert_eq!(package["sideEffects"], false);
    assert_eq!(package["license"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(package["main"], "./quicmatch.js");
    assert_eq!(package["types"], "./quicmatch.d.ts");
    let entry = &package["exports"]["."];
    let conditions: BTreeSet<&str> = entry
        .as_object()
        .expect("conditions")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(conditions, BTreeSet::from(["types", "default"]), "{entry}");
    // `types` must come first: resolvers take the first condition that
    // matches (serde_json's map has no order, so the text is read).
    let exports = &text[text.find("\"exports\"").expect("exports")..];
    let at = |key: &str| exports.find(&format!("\"{key}\"")).expect(key);
    assert!(at("types") < at("default"), "\"types\" after \"default\"");
    assert_eq!(entry["types"], "./quicmatch.d.ts");
    assert_eq!(entry["default"], "./quicmatch.js");
    assert_eq!(
        package["files"],
        serde_json::json!(["quicmatch.js", "quicmatch.d.ts", "README.md"])
    );
    for file in ["quicmatch.js", "quicmatch.d.ts", "README.md"] {
        assert!(root().join("web").join(file).is_file(), "web/{file}");
    }
    assert!(
        package.get("dependencies").is_none(),
        "the module is dependency-free"
    );
}

/// `npm pack` in `web/` would ship exactly the module, its types, the
/// README and package.json: not the web app, the type tests or tsconfig.
#[test]
fn npm_pack_ships_only_the_module_and_its_types() {
    let Some(npm) = on_path("npm") else {
        loud("SKIPPED the npm pack check (reported as passed): npm not found");
        return;
    };
    let mut command = Command::new(npm);
    command
        .args(["pack", "--dry-run", "--json", "--ignore-scripts"])
        .current_dir(root().join("web"));
    let out = run(command, Duration::from_secs(120));
    assert!(out.success, "npm pack --dry-run failed:\n{}", out.text);
    // `--json` prints the JSON on stdout, which comes first in `text`.
    let json = &out.text[out.text.find('[').expect("JSON")..];
    let packed: Vec<Value> = serde_json::Deserializer::from_str(json)
        .into_iter::<Vec<Value>>()
        .next()
        .expect("a JSON list")
        .expect("npm pack's JSON");
    let files: BTreeSet<&str> = packed[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("a path"))
        .collect();
    assert_eq!(
        files,
        BTreeSet::from([
            "README.md",
            "package.json",
            "quicmatch.d.ts",
            "quicmatch.js"
        ])
    );
}
