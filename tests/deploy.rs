//! The deployment files against the code they deploy: the `Dockerfile` and
//! `.dockerignore`, `deploy/compose.yaml`, the systemd unit
//! `deploy/quicmatch.service` with `deploy/quicmatch.env.example`, and the
//! command lines and settings quoted in `docs/deploy.md` (docs/deploy.md
//! explains how they are used).
//!
//! Every setting these files give the server must be one of its environment
//! variables (`quicmatch::config::Config`) or flags, with a value it accepts,
//! and the binary, build inputs and ports they name must be the ones the code
//! has: renaming a flag, changing a default port or adding a file the build
//! embeds then fails here rather than on an operator's host. Nothing here
//! needs Docker or systemd: the files are read as text, the compose file with
//! a YAML parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use clap::{ArgAction, CommandFactory, FromArgMatches};
use quicmatch::config::Config;
use quicmatch::protocol::SIGNAL_PATH;
use serde_yaml_ng::Value;

/// Environment variables the server reads besides those of its flags: the
/// log filter (src/main.rs).
const EXTRA_ENV: &[&str] = &["RUST_LOG"];

/// The longest a drain on SIGTERM takes besides `DRAIN_SECS`
/// (`Server::shutdown` in src/server.rs): at most 1 s leaving discovery, 3 s
/// for the sessions, 1 s closing the endpoints and 1 s leaving the pool.
const WORST_DRAIN_SECS: u64 = 6;

/// Docker's and Compose's stop timeout unless told otherwise, in seconds.
const DOCKER_STOP_SECS: u64 = 10;

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, as text.
fn read(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The server's flags, by their environment variable.
fn flags_by_env() -> BTreeMap<String, clap::Arg> {
    Config::command()
        .get_arguments()
        .filter_map(|arg| Some((arg.get_env()?.to_str()?.to_owned(), arg.clone())))
        .collect()
}

/// Whether the server reads the environment variable `name`.
fn is_server_env(name: &str) -> bool {
    EXTRA_ENV.contains(&name) || flags_by_env().contains_key(name)
}

/// Parses settings as the server does at start: `env` as its environment
/// (variables that are no flag's are skipped; callers check names with
/// [`is_server_env`]) and `args` as its command line, which wins over the
/// environment. The environment of the test process itself is left out, so a
/// `PORT` set where the tests run cannot change the outcome.
fn parse(env: &[(String, String)], args: &[String]) -> Result<Config, String> {
    let flags = flags_by_env();
    let given: BTreeSet<&str> = args
        .iter()
        .filter_map(|arg| arg.strip_prefix("--"))
        .map(|arg| arg.split('=').next().unwrap_or(arg))
        .collect();
    let mut argv = vec!["quicmatch".to_owned()];
    for (name, value) in env {
        let Some(arg) = flags.get(name) else {
            continue;
        };
        let long = arg
            .get_long()
            .ok_or_else(|| format!("{name}: its flag has no long name"))?;
        if given.contains(long) {
            continue;
        }
        match arg.get_action() {
            // clap reads a switch's variable with its bool parser, which
            // takes `true` or `false` and nothing else.
            ArgAction::SetTrue => match value.as_str() {
                "true" => argv.push(format!("--{long}")),
                "false" => {}
                other => return Err(format!("{name}={other}: a switch takes true or false")),
            },
            ArgAction::Set | ArgAction::Append => argv.push(format!("--{long}={value}")),
            action => return Err(format!("{name}: this test does not handle {action:?}")),
        }
    }
    argv.extend(args.iter().cloned());
    let matches = Config::command()
        .mut_args(|arg| arg.env(None::<&'static str>))
        .try_get_matches_from(&argv)
        .map_err(|e| format!("{argv:?}: {e}"))?;
    Config::from_arg_matches(&matches).map_err(|e| format!("{argv:?}: {e}"))
}

/// The seconds `/health` says "draining" before sessions are closed, as
/// `env` sets them (`DRAIN_SECS`, 0 when unset).
fn drain_secs(env: &[(String, String)]) -> u64 {
    env.iter()
        .filter(|(name, _)| name == "DRAIN_SECS")
        .map(|(_, value)| value.parse().expect("DRAIN_SECS in seconds"))
        .max()
        .unwrap_or(0)
}

/// A duration as systemd or Compose write it (`15`, `15s`, `1m30s`), in
/// whole seconds.
fn duration_secs(text: &str) -> u64 {
    let (mut total, mut number) = (0, String::new());
    for c in text.trim().chars() {
        let unit = match c {
            '0'..='9' => {
                number.push(c);
                continue;
            }
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => panic!("{text}: only s, m and h are read here"),
        };
        total += number.parse::<u64>().expect("a number before the unit") * unit;
        number.clear();
    }
    total + number.parse::<u64>().unwrap_or(0)
}

/// The TCP port of the HTTP sidecar under `config`.
fn http_port(config: &Config) -> u16 {
    config.http_port.unwrap_or(config.port)
}

/// Splits a command line into words, honouring single and double quotes (no
/// escapes), as systemd and the shell do for the simple lines checked here.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unclosed quote in {line:?}");
    words.extend(word);
    words
}

/// `NAME=value` split in two, if `text` is one with an upper-case name.
fn assignment(text: &str) -> Option<(String, String)> {
    let (name, value) = text.split_once('=')?;
    let valid = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    valid.then(|| (name.to_owned(), value.to_owned()))
}

// ---- Cargo.toml

/// The tables of Cargo.toml as (header, key, value) lines, e.g.
/// `("[[bin]]", "name", "quicmatch-load")`; values lose their quotes.
fn cargo_entries() -> Vec<(String, String, String)> {
    let mut table = String::new();
    let mut entries = Vec::new();
    for line in read("Cargo.toml").lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            table = line.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').to_owned();
            entries.push((table.clone(), key.trim().to_owned(), value));
        }
    }
    entries
}

/// The binary `cargo run` starts, the server: Cargo.toml's `default-run`,
/// checked to be one of the package's binaries and the name of `Config`'s
/// command.
fn server_bin() -> String {
    let entries = cargo_entries();
    let value = |table: &str, key: &str| {
        entries
            .iter()
            .filter(|(t, k, _)| t == table && k == key)
            .map(|(_, _, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let mut bins: BTreeSet<String> = value("[[bin]]", "name").into_iter().collect();
    if repo().join("src/main.rs").is_file() {
        bins.extend(value("[package]", "name"));
    }
    let default_run = value("[package]", "default-run")
        .pop()
        .expect("Cargo.toml names the server as default-run");
    assert!(
        bins.contains(&default_run),
        "default-run {default_run} is not one of the binaries {bins:?}"
    );
    assert_eq!(
        Config::command().get_name(),
        default_run,
        "the server's command is named after its binary"
    );
    default_run
}

/// Every file `cargo build --bin <server>` reads besides Cargo.toml and
/// Cargo.lock: the sources under src/, what they embed with `include_str!`
/// or `include_bytes!`, and the targets Cargo.toml declares (cargo needs
/// their files to read the manifest).
fn build_inputs() -> BTreeSet<String> {
    let mut inputs: BTreeSet<String> = ["Cargo.toml", "Cargo.lock"].map(String::from).into();
    let mut dirs = vec![repo().join("src")];
    while let Some(dir) = dirs.pop() {
        let listing =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in listing {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            inputs.insert(relative(&path));
            if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                for embedded in embedded_paths(&text) {
                    let parent = path.parent().expect("a file's directory");
                    inputs.insert(relative(&parent.join(embedded)));
                }
            }
        }
    }
    for (table, key, value) in cargo_entries() {
        let target = match (table.as_str(), key.as_str()) {
            (_, "path") if table.starts_with("[[") => value,
            ("[[bench]]", "name") => format!("benches/{value}.rs"),
            _ => continue,
        };
        inputs.insert(target);
    }
    for input in &inputs {
        assert!(repo().join(input).is_file(), "{input} does not exist");
    }
    inputs
}

/// The string literals of `include_str!("…")` and `include_bytes!("…")`.
fn embedded_paths(source: &str) -> Vec<&str> {
    let mut paths = Vec::new();
    for macro_name in ["include_str!(\"", "include_bytes!(\""] {
        for (at, _) in source.match_indices(macro_name) {
            let rest = &source[at + macro_name.len()..];
            if let Some(end) = rest.find('"') {
                paths.push(&rest[..end]);
            }
        }
    }
    paths
}

/// `path` relative to the repository, with `/` and without `..`.
fn relative(path: &Path) -> String {
    let path = path.strip_prefix(repo()).expect("a path in the repository");
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    parts.join("/")
}

// ---- Dockerfile

/// A stage of a Dockerfile: its base image, its name, and its instructions
/// as (keyword in upper case, arguments).
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    /// The arguments of every `keyword` instruction of the stage.
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, args)| args.as_str())
            .collect()
    }
}

/// The Dockerfile's stages: comments and blank lines dropped, continuation
/// lines joined.
fn dockerfile_stages() -> Vec<Stage> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in lines {
        let (keyword, args) = line
            .split_once(char::is_whitespace)
            .unwrap_or((line.as_str(), ""));
        let (keyword, args) = (keyword.to_ascii_uppercase(), args.trim().to_owned());
        if keyword == "FROM" {
            let words: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                image: words.first().expect("FROM names an image").to_string(),
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{keyword} before the first FROM"))
                .instructions
                .push((keyword, args));
        }
    }
    stages
}

/// Where the Dockerfile's runtime stage puts the server, checked to be the
/// binary the build stage builds.
fn dockerfile_server_path(stages: &[Stage], bin: &str) -> String {
    let build = stages.first().expect("a build stage");
    let runtime = stages.last().expect("a runtime stage");
    let from = format!(
        "--from={}",
        build.name.as_deref().expect("the build stage is named")
    );
    let copy = runtime
        .all("COPY")
        .into_iter()
        .find(|args| args.split_whitespace().any(|w| w == from))
        .unwrap_or_else(|| panic!("the runtime stage copies the server with COPY {from}"));
    let words: Vec<&str> = copy
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    let [source, destination] = words.as_slice() else {
        panic!("COPY {copy}: one source, one destination");
    };
    assert!(
        source.ends_with(&format!("/{bin}")),
        "COPY {copy}: the build stage builds {bin}"
    );
    let destination = match destination.strip_suffix('/') {
        Some(dir) => format!("{dir}/{bin}"),
        None => destination.to_string(),
    };
    assert_eq!(
        Path::new(&destination).file_name().and_then(|n| n.to_str()),
        Some(bin),
        "COPY {copy}: the server keeps its name"
    );
    destination
}

/// The Dockerfile builds the server with cargo in the official Rust image,
/// on the Debian release it then runs on (same glibc), installs that binary
/// as the entry point of a runtime stage, runs it as a non-root user, exposes
/// the server's default UDP and TCP ports, and sets only environment
/// variables the server reads, to values it accepts.
#[test]
fn dockerfile_builds_the_server_and_runs_it_unprivileged() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let (build, runtime) = (&stages[0], &stages[stages.len() - 1]);
    let bin = server_bin();

    assert!(
        build.image.starts_with("rust:"),
        "build stage: {}",
        build.image
    );
    let cargo = build
        .all("RUN")
        .into_iter()
        .find_map(|run| run.find("cargo build").map(|at| &run[at..]))
        .expect("the build stage runs cargo build");
    let words: Vec<&str> = cargo
        .split_whitespace()
        .take_while(|w| !["&&", ";", "||"].contains(w))
        .collect();
    for flag in ["--release", "--locked"] {
        assert!(words.contains(&flag), "{cargo}: without {flag}");
    }
    let built = words
        .windows(2)
        .find(|w| w[0] == "--bin")
        .map(|w| w[1])
        .or_else(|| words.iter().find_map(|w| w.strip_prefix("--bin=")))
        .unwrap_or_else(|| panic!("{cargo}: without --bin"));
    assert_eq!(built, bin, "the image builds the server");

    let release = build.image.rsplit('-').next().unwrap_or_default();
    assert!(
        runtime.image.starts_with("debian:") && runtime.image.contains(release),
        "runtime stage {} is not the Debian of {}",
        runtime.image,
        build.image
    );
    let installed = dockerfile_server_path(&stages, &bin);
    let entrypoint = runtime.all("ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint.last().expect("an ENTRYPOINT"))
        .expect("ENTRYPOINT in exec form, so that the server gets the signals");
    assert_eq!(
        entrypoint.first(),
        Some(&installed),
        "the entry point is the server"
    );

    let user = runtime.all("USER");
    let user = user.last().expect("the runtime stage sets a USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(!["root", "0", ""].contains(&name), "USER {user} is root");

    let env: Vec<(String, String)> = runtime
        .all("ENV")
        .iter()
        .flat_map(|args| split_words(args))
        .map(|word| assignment(&word).unwrap_or_else(|| panic!("ENV {word}: write NAME=value")))
        .collect();
    for (name, _) in &env {
        assert!(
            is_server_env(name),
            "ENV {name}: the server reads no such variable"
        );
    }
    let config = parse(&env, &[]).unwrap_or_else(|e| panic!("the image's ENV: {e}"));
    let exposed: BTreeSet<String> = runtime
        .all("EXPOSE")
        .iter()
        .flat_map(|args| args.split_whitespace())
        .map(|port| {
            if port.contains('/') {
                port.to_owned()
            } else {
                format!("{port}/tcp")
            }
        })
        .collect();
    for port in [
        format!("{}/udp", config.port),
        format!("{}/tcp", http_port(&config)),
    ] {
        assert!(exposed.contains(&port), "EXPOSE lacks {port}: {exposed:?}");
    }
    if let Some(signal) = runtime.all("STOPSIGNAL").last() {
        assert!(
            ["SIGTERM", "SIGINT"].contains(signal),
            "STOPSIGNAL {signal}: the server drains on SIGTERM or SIGINT only"
        );
    }
}

// ---- .dockerignore

/// Whether .dockerignore's `patterns` leave `path` (relative, with `/`) out
/// of the build context, as Docker decides: the last pattern that matches the
/// path or one of its directories wins, `!` takes a path back in, `*` and `?`
/// match within a name, `**` any number of directories.
fn dockerignored(patterns: &[&str], path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut ignored = false;
    for pattern in patterns {
        assert!(
            !pattern.contains(['[', '\\']),
            "{pattern}: this test does not read character classes or escapes"
        );
        let (keep, pattern) = match pattern.strip_prefix('!') {
            Some(pattern) => (true, pattern),
            None => (false, *pattern),
        };
        let pattern: Vec<&str> = pattern
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .collect();
        if (1..=parts.len()).any(|n| glob(&pattern, &parts[..n])) {
            ignored = !keep;
        }
    }
    ignored
}

/// Whether the path components `path` match the pattern components `pattern`.
fn glob(pattern: &[&str], path: &[&str]) -> bool {
    match (pattern.split_first(), path.split_first()) {
        (None, None) => true,
        (Some((&"**", rest)), _) => {
            glob(rest, path) || (!path.is_empty() && glob(pattern, &path[1..]))
        }
        (Some((part, rest)), Some((name, tail))) => {
            wildcard(part.as_bytes(), name.as_bytes()) && glob(rest, tail)
        }
        _ => false,
    }
}

/// Whether `name` matches `pattern`, with `*` and `?`.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| wildcard(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && wildcard(rest, &name[1..]),
    }
}

/// .dockerignore keeps in the build context every file the server's build
/// reads (its sources, the web app it embeds, the targets Cargo.toml
/// declares), and leaves out build output, history and private keys, which
/// must never end up in an image layer.
#[test]
fn dockerignore_keeps_the_build_inputs_and_leaves_out_keys() {
    let text = read(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    // The matcher itself, on Docker's documented examples.
    assert!(dockerignored(&["*/temp*"], "somedir/temporary.txt"));
    assert!(dockerignored(&["**/*.go"], "a/b/c.go"));
    assert!(!dockerignored(&["*.md", "!README.md"], "README.md"));
    assert!(dockerignored(&["target"], "target/release/quicmatch"));

    let inputs = build_inputs();
    assert!(
        inputs.iter().any(|input| input.starts_with("web/")),
        "the web app is embedded: {inputs:?}"
    );
    for input in &inputs {
        assert!(
            !dockerignored(&patterns, input),
            "{input} is needed by the build but .dockerignore leaves it out"
        );
    }
    for secret in [
        "certs/key.pem",
        "certs/cert.pem",
        "key.pem",
        "target/release/quicmatch",
        ".git/config",
    ] {
        assert!(
            dockerignored(&patterns, secret),
            "{secret} would be sent to the build"
        );
    }
}

// ---- deploy/compose.yaml

/// deploy/compose.yaml with its `<<` merge keys applied.
fn compose() -> Value {
    let mut compose: Value =
        serde_yaml_ng::from_str(&read("deploy/compose.yaml")).expect("deploy/compose.yaml is YAML");
    compose
        .apply_merge()
        .expect("merge keys of deploy/compose.yaml");
    compose
}

/// A YAML scalar as the string Compose passes on.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A service's `environment`, in either form; a name without a value (taken
/// from the host) has `None`.
fn service_env(service: &Value) -> Vec<(String, Option<String>)> {
    match &service["environment"] {
        Value::Null => Vec::new(),
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| (scalar(k).expect("a variable's name"), scalar(v)))
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .map(|item| {
                let item = scalar(item).expect("NAME=value");
                match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (item, None),
                }
            })
            .collect(),
        other => panic!("environment: {other:?}"),
    }
}

/// A published port: on the host (`None`: Docker picks one), in the
/// container, and the protocol.
#[derive(Debug)]
struct Published {
    host: Option<u16>,
    container: u16,
    protocol: String,
}

/// A service's `ports`, short (`"[ip:]host:container[/udp]"`) or long form.
fn service_ports(service: &Value) -> Vec<Published> {
    let port = |value: &str| -> u16 {
        value
            .parse()
            .unwrap_or_else(|_| panic!("port {value}: this test reads single ports, not ranges"))
    };
    let Some(ports) = service["ports"].as_sequence() else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|entry| match entry {
            Value::Mapping(_) => Published {
                host: scalar(&entry["published"]).map(|p| port(&p)),
                container: port(&scalar(&entry["target"]).expect("target")),
                protocol: entry["protocol"].as_str().unwrap_or("tcp").to_owned(),
            },
            _ => {
                let text = scalar(entry).expect("a port mapping");
                let (spec, protocol) = text.split_once('/').unwrap_or((text.as_str(), "tcp"));
                let mut parts = spec.rsplitn(3, ':');
                let container = port(parts.next().expect("a container port"));
                Published {
                    host: parts.next().filter(|p| !p.is_empty()).map(port),
                    container,
                    protocol: protocol.to_owned(),
                }
            }
        })
        .collect()
}

/// The port of an `https://host[:port]/path` URL and its path.
fn url_port_and_path(url: &str) -> (u16, &str) {
    let rest = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("{url}: WebTransport URLs are https"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let port = match authority.rsplit_once(':') {
        Some((_, port)) if !port.ends_with(']') => port.parse().expect("a port"),
        _ => 443,
    };
    (port, path)
}

/// The quicmatch services of deploy/compose.yaml (those built from the
/// Dockerfile, the only way they get the server) build the repository's
/// Dockerfile; set only variables the server reads, to values it accepts;
/// publish the UDP port they listen on and the TCP port of their sidecar;
/// announce a PUBLIC_URL that leads to that UDP port; and, as the file's
/// purpose, are at least two nodes of one pool on a Redis of the file.
#[test]
fn compose_nodes_build_the_dockerfile_and_publish_what_they_listen_on() {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    let nodes: Vec<(String, &Value)> = services
        .iter()
        .filter(|(_, service)| service.get("build").is_some())
        .map(|(name, service)| (scalar(name).expect("a service name"), service))
        .collect();
    assert!(
        nodes.len() >= 2,
        "two nodes of one pool, built from the Dockerfile"
    );
    let dockerfile = repo()
        .join("Dockerfile")
        .canonicalize()
        .expect("the Dockerfile");

    let mut redis_urls = BTreeSet::new();
    let mut public_urls = BTreeSet::new();
    for (name, node) in &nodes {
        let (context, file) = match &node["build"] {
            Value::String(context) => (context.as_str(), "Dockerfile"),
            build => (
                build["context"].as_str().expect("build.context"),
                build["dockerfile"].as_str().unwrap_or("Dockerfile"),
            ),
        };
        let built = repo().join("deploy").join(context).join(file);
        assert_eq!(
            built.canonicalize().ok().as_ref(),
            Some(&dockerfile),
            "{name}: builds {}",
            built.display()
        );

        let env = service_env(node);
        for (variable, _) in &env {
            assert!(
                is_server_env(variable),
                "{name}: {variable} is no setting of the server"
            );
        }
        let env: Vec<(String, String)> =
            env.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
        let config = parse(&env, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let grace =
            scalar(&node["stop_grace_period"]).map_or(DOCKER_STOP_SECS, |d| duration_secs(&d));
        assert!(
            grace > WORST_DRAIN_SECS + drain_secs(&env),
            "{name}: a stop grace period of {grace} s cuts the drain short"
        );

        let ports = service_ports(node);
        let udp = ports
            .iter()
            .find(|p| p.protocol == "udp" && p.container == config.port)
            .unwrap_or_else(|| {
                panic!(
                    "{name}: UDP {} (WebTransport) is not published: {ports:?}",
                    config.port
                )
            });
        assert!(
            ports
                .iter()
                .any(|p| p.protocol == "tcp" && p.container == http_port(&config)),
            "{name}: TCP {} (the HTTP sidecar) is not published: {ports:?}",
            http_port(&config)
        );
        let public_udp = udp.host.unwrap_or_else(|| {
            panic!("{name}: UDP must be published on a fixed port, where browsers are sent")
        });
        match &config.public_url {
            Some(url) => {
                assert!(
                    !config.redis_urls.is_empty(),
                    "{name}: PUBLIC_URL is used only with REDIS_URL"
                );
                let (port, path) = url_port_and_path(url);
                assert_eq!(path, SIGNAL_PATH, "{name}: {url}");
                assert_eq!(
                    port, public_udp,
                    "{name}: {url} is not where UDP {} is published",
                    config.port
                );
                public_urls.insert(url.clone());
            }
            None => assert_eq!(
                public_udp, config.port,
                "{name}: without PUBLIC_URL, /api/webtransport names the port the node listens on"
            ),
        }
        redis_urls.extend(config.redis_urls.iter().cloned());

        if let Some(health) = node.get("healthcheck") {
            let test = match &health["test"] {
                Value::Sequence(words) => words
                    .iter()
                    .filter_map(scalar)
                    .collect::<Vec<_>>()
                    .join(" "),
                other => scalar(other).expect("healthcheck.test"),
            };
            assert!(
                !test.contains("curl") && !test.contains("wget"),
                "{name}: the image has neither curl nor wget: {test}"
            );
            assert!(
                test.contains("/health"),
                "{name}: the health check asks /health: {test}"
            );
        }
    }
    assert_eq!(
        redis_urls.len(),
        1,
        "the nodes share one pool: {redis_urls:?}"
    );
    assert_eq!(
        public_urls.len(),
        nodes.len(),
        "each node announces its own PUBLIC_URL"
    );
    let redis = redis_urls.first().expect("a Redis URL");
    let host = redis
        .split_once("://")
        .map(|(_, rest)| rest.rsplit('@').next().unwrap_or(rest))
        .and_then(|rest| rest.split([':', '/']).next())
        .expect("a Redis host");
    assert!(
        services.contains_key(host),
        "{redis}: no service {host} in deploy/compose.yaml"
    );
}

// ---- deploy/quicmatch.env.example

/// The assignments of the settings example: (name, value, commented out).
fn env_example() -> Vec<(String, String, bool)> {
    read("deploy/quicmatch.env.example")
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let (text, commented) = match line.strip_prefix('#') {
                Some(text) => (text, true),
                None => (line, false),
            };
            let parsed = assignment(text.trim_start());
            assert!(
                commented || line.is_empty() || parsed.is_some(),
                "{line:?}: neither a comment nor NAME=value"
            );
            parsed.map(|(name, value)| (name, value, commented))
        })
        .collect()
}

/// deploy/quicmatch.env.example names every setting of the server once and
/// nothing else, its values need no quotes (systemd would strip them,
/// `docker run --env-file` would not), its active lines are accepted, and
/// so are all its example values uncommented at once.
#[test]
fn env_example_names_every_setting_with_accepted_values() {
    let example = env_example();
    let mut named = BTreeSet::new();
    for (name, value, _) in &example {
        assert!(is_server_env(name), "{name} is no setting of the server");
        assert!(named.insert(name.clone()), "{name} is given twice");
        assert!(
            !value.starts_with(['"', '\'']) && !value.contains(char::is_whitespace),
            "{name}={value}: no quotes or spaces"
        );
    }
    let missing: Vec<String> = flags_by_env()
        .into_keys()
        .filter(|name| !named.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "settings missing from the example: {missing:?}"
    );

    let active: Vec<(String, String)> = example
        .iter()
        .filter(|(_, _, commented)| !commented)
        .map(|(name, value, _)| (name.clone(), value.clone()))
        .collect();
    parse(&active, &[]).unwrap_or_else(|e| panic!("the active lines: {e}"));
    let all: Vec<(String, String)> = example
        .into_iter()
        .map(|(name, value, _)| (name, value))
        .collect();
    parse(&all, &[]).unwrap_or_else(|e| panic!("every line uncommented: {e}"));
}

// ---- deploy/quicmatch.service

/// A systemd unit's settings as (section, key, value), comments and blank
/// lines dropped, continuation lines joined.
fn unit_entries() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut entries = Vec::new();
    let mut pending = String::new();
    for line in read("deploy/quicmatch.service").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            pending.push_str(part);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if line.starts_with('[') {
            section = line;
        } else {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{line:?}: not Key=value"));
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    entries
}

/// The values of `key` in the unit's [Service] section, in order.
fn service_values<'a>(entries: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(section, k, _)| section == "[Service]" && k == key)
        .map(|(_, _, value)| value.as_str())
        .collect()
}

/// What a list setting such as `CapabilityBoundingSet=` ends up as: an empty
/// assignment clears what came before.
fn unit_list<'a>(entries: &'a [(String, String, String)], key: &str) -> Vec<&'a str> {
    let mut list = Vec::new();
    for value in service_values(entries, key) {
        if value.is_empty() {
            list.clear();
        }
        list.extend(value.split_whitespace());
    }
    list
}

/// The unit starts the binary the Dockerfile installs, at the same path,
/// with a command line and `Environment=` settings the server accepts; reads
/// its settings from an optional file; grants `CAP_NET_BIND_SERVICE` exactly
/// when the configured ports need it; allows the sockets the server opens;
/// stops it with a signal it drains on, leaving time for the drain; and keeps
/// its sandbox.
#[test]
fn systemd_unit_starts_the_server_with_settings_it_accepts() {
    let entries = unit_entries();
    let bin = server_bin();
    let installed = dockerfile_server_path(&dockerfile_stages(), &bin);

    let exec = service_values(&entries, "ExecStart");
    let [exec] = exec.as_slice() else {
        panic!("one ExecStart: {exec:?}");
    };
    let mut argv = split_words(exec.trim_start_matches(['-', '@', ':', '+', '!', '|']));
    assert!(!argv.is_empty(), "ExecStart is empty");
    let program = argv.remove(0);
    assert_eq!(
        program, installed,
        "the unit runs the server where the image has it"
    );
    let env: Vec<(String, String)> = service_values(&entries, "Environment")
        .iter()
        .flat_map(|line| split_words(line))
        .map(|word| {
            assignment(&word).unwrap_or_else(|| panic!("Environment={word}: write NAME=value"))
        })
        .collect();
    for (name, _) in &env {
        assert!(
            is_server_env(name),
            "Environment={name}: no setting of the server"
        );
    }
    let config = parse(&env, &argv).unwrap_or_else(|e| panic!("ExecStart and Environment: {e}"));

    let file = service_values(&entries, "EnvironmentFile");
    let file = file.first().expect("settings come from an EnvironmentFile");
    let path = file.strip_prefix('-').unwrap_or_else(|| {
        panic!("EnvironmentFile={file}: optional (`-`), the defaults run without it")
    });
    assert!(
        read("docs/deploy.md").contains(path),
        "docs/deploy.md does not say where the settings go ({path})"
    );

    let low_port = config.port < 1024 || http_port(&config) < 1024;
    let bounding = unit_list(&entries, "CapabilityBoundingSet");
    let ambient = unit_list(&entries, "AmbientCapabilities");
    let needed: Vec<&str> = if low_port {
        vec!["CAP_NET_BIND_SERVICE"]
    } else {
        Vec::new()
    };
    assert!(
        !service_values(&entries, "CapabilityBoundingSet").is_empty(),
        "CapabilityBoundingSet is set"
    );
    assert_eq!(
        bounding,
        needed,
        "CapabilityBoundingSet for ports {} and {}",
        config.port,
        http_port(&config)
    );
    assert_eq!(
        ambient,
        needed,
        "AmbientCapabilities for ports {} and {}",
        config.port,
        http_port(&config)
    );

    let families = unit_list(&entries, "RestrictAddressFamilies");
    for family in ["AF_INET", "AF_INET6"] {
        assert!(
            families.contains(&family),
            "RestrictAddressFamilies lacks {family}"
        );
    }
    for signal in service_values(&entries, "KillSignal") {
        assert!(
            ["SIGTERM", "SIGINT"].contains(&signal),
            "KillSignal={signal}: the server drains on SIGTERM"
        );
    }
    // Long enough for the drain, also with the example's DRAIN_SECS.
    let stop = service_values(&entries, "TimeoutStopSec");
    let stop = duration_secs(stop.last().expect("TimeoutStopSec"));
    let example: Vec<(String, String)> =
        env_example().into_iter().map(|(n, v, _)| (n, v)).collect();
    let drain = drain_secs(&env).max(drain_secs(&example));
    assert!(
        stop > WORST_DRAIN_SECS + drain,
        "TimeoutStopSec={stop} cuts short a drain of {WORST_DRAIN_SECS} s + DRAIN_SECS={drain}"
    );

    let sandbox = [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
        ("Restart", "on-failure"),
    ];
    for (key, value) in sandbox {
        assert_eq!(service_values(&entries, key).last(), Some(&value), "{key}");
    }
    let user = service_values(&entries, "User");
    let dynamic = service_values(&entries, "DynamicUser");
    assert!(
        dynamic.last() == Some(&"yes") || user.last().is_some_and(|u| !["root", "0"].contains(u)),
        "the server runs as an unprivileged user"
    );
}

// ---- docs/deploy.md

/// docs/deploy.md quotes only real settings: every inline `--flag` is a flag
/// of the server, every inline `NAME=value` names one of its variables, and
/// every command line in a code block that runs the server is accepted.
#[test]
fn deploy_guide_quotes_real_flags_and_settings() {
    let bin = server_bin();
    let longs: BTreeSet<String> = Config::command()
        .get_arguments()
        .filter_map(|arg| arg.get_long().map(str::to_owned))
        .collect();
    let guide = read("docs/deploy.md");
    // Prose and code blocks apart; a code block's continued lines joined.
    let (mut prose, mut commands) = (String::new(), Vec::new());
    let (mut in_block, mut command) = (false, String::new());
    for line in guide.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            prose.push_str(line);
            prose.push(' ');
        } else if let Some(part) = line.trim().strip_suffix('\\') {
            command.push_str(part);
            command.push(' ');
        } else {
            commands.push(std::mem::take(&mut command) + line.trim());
        }
    }
    let mut spans = 0;
    // Inline code is every other piece between backticks.
    for span in prose.split('`').skip(1).step_by(2) {
        if let Some(flag) = span.strip_prefix("--") {
            let flag = flag.split([' ', '=']).next().unwrap_or(flag);
            assert!(
                longs.contains(flag),
                "docs/deploy.md: `{span}`: the server has no --{flag}"
            );
            spans += 1;
        } else if let Some((name, _)) = assignment(span) {
            assert!(
                is_server_env(&name),
                "docs/deploy.md: `{span}`: the server reads no {name}"
            );
            spans += 1;
        }
    }
    assert!(spans > 0, "the guide quotes flags");
    let runs: Vec<Vec<String>> = commands
        .iter()
        .filter(|line| {
            line.split_whitespace().next().is_some_and(|program| {
                Path::new(program).file_name().and_then(|n| n.to_str()) == Some(bin.as_str())
            })
        })
        .map(|line| split_words(line.trim_end_matches('&')))
        .collect();
    assert!(
        !runs.is_empty(),
        "the guide shows a command line of the server"
    );
    for words in runs {
        parse(&[], &words[1..]).unwrap_or_else(|e| panic!("docs/deploy.md: {e}"));
    }
}
