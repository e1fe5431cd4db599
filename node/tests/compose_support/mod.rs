//! Support for `compose_topology.rs`: reading docker/'s files the way docker
//! and Kubernetes read them, and running a compose file's topology in network
//! namespaces.
//!
//! What is modelled, and what is not:
//! - compose.yaml: YAML merge keys and anchors, variable interpolation
//!   (`${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
//!   `${VAR?error}`, `$$`), `environment` as a map or a list, short port and
//!   volume syntax. Anything else the topology needs is refused loudly, so a
//!   compose feature the reproduction does not understand cannot be ignored
//!   silently.
//! - Dockerfile: the last stage (the runtime image): `ENV`, `COPY`, `USER`,
//!   `VOLUME`, `EXPOSE`, `ENTRYPOINT`, `CMD`, `HEALTHCHECK`, plus the `RUN`
//!   lines of every stage (to check how the binary is built).
//! - Docker's network: one namespace per service with a veth to a bridge in a
//!   namespace of its own (the "docker host", which the test's HTTP client
//!   joins). Docker's embedded DNS is an `/etc/hosts` per namespace naming
//!   every service of the network (`ip netns exec` bind-mounts
//!   `/etc/netns/NS/hosts` over `/etc/hosts`) and a `resolv.conf` pointing at
//!   127.0.0.11, where nothing listens: a name that is not a service fails to
//!   resolve at once, as docker's DNS answers NXDOMAIN for it.
//!
//! Every name this creates carries a run id (`stct-PID-N-...`), so parallel
//! runs never collide; namespaces left behind by a run whose process is gone
//! are swept at the next start. Teardown runs in `Drop`, so a panicking test
//! still removes its processes, namespaces and `/etc/netns` entries.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A file of the repository, as text.
pub fn repo_file(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Polls `condition` until it holds or `deadline` passes; returns how long
/// it took.
pub fn wait_until(what: &str, deadline: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------
// YAML and schemas

/// Parses YAML (one document) into JSON values, with merge keys (`<<`)
/// applied as docker compose and kubectl apply them.
pub fn yaml_to_json(text: &str) -> anyhow::Result<Value> {
    let mut yaml: serde_norway::Value = serde_norway::from_str(text)?;
    yaml.apply_merge()?;
    Ok(serde_json::to_value(yaml)?)
}

/// Parses a multi-document YAML stream (`---` separated) into JSON values.
pub fn yaml_documents_to_json(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let mut yaml = <serde_norway::Value as serde::Deserialize>::deserialize(document)?;
        if yaml.is_null() {
            continue;
        }
        yaml.apply_merge()?;
        documents.push(serde_json::to_value(yaml)?);
    }
    Ok(documents)
}

/// Validates `instance` against the JSON schema in the repository file
/// `schema_path`; the error lists every violation with its location.
pub fn validate_against(schema_path: &str, instance: &Value) -> anyhow::Result<()> {
    let schema: Value = serde_json::from_str(&repo_file(schema_path))
        .with_context(|| format!("parsing {schema_path}"))?;
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| anyhow::anyhow!("compiling {schema_path}: {e}"))?;
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect();
    ensure!(
        errors.is_empty(),
        "{} violation(s) of {schema_path}:\n  {}",
        errors.len(),
        errors.join("\n  ")
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Compose

/// Compose variable interpolation of one string.
pub fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .with_context(|| format!("unclosed ${{ in {text:?}"))?;
            let expression = &after[..end];
            rest = &after[end + 1..];
            let name_end = expression
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expression.len());
            let (name, operator) = expression.split_at(name_end);
            ensure!(!name.is_empty(), "empty variable name in {text:?}");
            let value = vars.get(name);
            let set_nonempty = value.is_some_and(|v| !v.is_empty());
            let replacement = if let Some(default) = operator.strip_prefix(":-") {
                if set_nonempty {
                    value.unwrap().clone()
                } else {
                    default.to_owned()
                }
            } else if let Some(default) = operator.strip_prefix('-') {
                value.cloned().unwrap_or_else(|| default.to_owned())
            } else if let Some(message) = operator.strip_prefix(":?") {
                ensure!(
                    set_nonempty,
                    "required variable {name} is missing or empty: {message}"
                );
                value.unwrap().clone()
            } else if let Some(message) = operator.strip_prefix('?') {
                value
                    .cloned()
                    .with_context(|| format!("required variable {name} is missing: {message}"))?
            } else if operator.is_empty() {
                value.cloned().with_context(|| {
                    format!("variable {name} is not set (compose would use an empty string)")
                })?
            } else {
                bail!("unsupported interpolation ${{{expression}}} in {text:?}");
            };
            out.push_str(&replacement);
        } else {
            let name_end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            ensure!(name_end > 0, "a lone $ in {text:?} (write $$)");
            let name = &rest[..name_end];
            out.push_str(
                vars.get(name)
                    .with_context(|| format!("variable {name} is not set"))?,
            );
            rest = &rest[name_end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_all(value: &mut Value, vars: &BTreeMap<String, String>) -> anyhow::Result<()> {
    match value {
        Value::String(s) => *s = interpolate(s, vars)?,
        Value::Array(items) => {
            for item in items {
                interpolate_all(item, vars)?;
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                // Extension fields are templates for YAML anchors, already
                // merged where they are used.
                if !key.starts_with("x-") {
                    interpolate_all(item, vars)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn scalar_string(value: &Value) -> anyhow::Result<String> {
    Ok(match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => bail!("expected a scalar, got {other}"),
    })
}

fn string_list(value: &Value) -> anyhow::Result<Vec<String>> {
    match value {
        Value::String(s) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Value::Array(items) => items.iter().map(scalar_string).collect(),
        other => bail!("expected a string or a list, got {other}"),
    }
}

/// A published port, `[host_ip:]host_port:container_port[/protocol]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
}

impl PublishedPort {
    fn parse(text: &str) -> anyhow::Result<PublishedPort> {
        let (spec, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
        let parts: Vec<&str> = spec.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [host, container] => (None, *host, *container),
            [ip, host, container] => (Some((*ip).to_owned()), *host, *container),
            _ => bail!("port {text:?}: expected [ip:]host:container (ranges are not supported)"),
        };
        Ok(PublishedPort {
            host_ip,
            host_port: host
                .parse()
                .with_context(|| format!("host port in {text:?}"))?,
            container_port: container
                .parse()
                .with_context(|| format!("container port in {text:?}"))?,
            protocol: protocol.to_owned(),
        })
    }
}

/// One service of a compose file, after merge keys and interpolation.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub hostname: Option<String>,
    pub environment: BTreeMap<String, String>,
    pub networks: Vec<String>,
    pub ports: Vec<PublishedPort>,
    /// (named volume, path in the container).
    pub volumes: Vec<(String, String)>,
    pub healthcheck: Option<Vec<String>>,
    pub restart: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
}

/// The parts of a compose file that make up a topology.
#[derive(Debug, Clone)]
pub struct Compose {
    pub project: String,
    pub services: Vec<Service>,
    /// Network name to its driver (`bridge` when not given).
    pub networks: BTreeMap<String, String>,
    pub volumes: BTreeSet<String>,
}

impl Compose {
    /// Parses a compose file, interpolating `${...}` from `vars` only (not
    /// from this process's environment, so the test is hermetic).
    pub fn parse(text: &str, vars: &BTreeMap<String, String>) -> anyhow::Result<Compose> {
        let mut root = yaml_to_json(text)?;
        interpolate_all(&mut root, vars)?;
        let project = root["name"].as_str().unwrap_or("docker").to_owned();
        let mut networks = BTreeMap::new();
        if let Some(map) = root["networks"].as_object() {
            for (name, network) in map {
                let driver = network["driver"].as_str().unwrap_or("bridge").to_owned();
                ensure!(
                    network.get("external").is_none_or(|e| e == false),
                    "network {name}: external networks are outside the reproduction"
                );
                networks.insert(name.clone(), driver);
            }
        }
        let volumes: BTreeSet<String> = root["volumes"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let mut services = Vec::new();
        for (name, s) in root["services"]
            .as_object()
            .context("compose file without services")?
        {
            let known = [
                "image",
                "build",
                "restart",
                "stop_grace_period",
                "networks",
                "healthcheck",
                "hostname",
                "environment",
                "ports",
                "volumes",
                "entrypoint",
                "command",
            ];
            for key in s.as_object().context("service is not a map")?.keys() {
                ensure!(
                    known.contains(&key.as_str()),
                    "service {name}: key {key:?} is not modelled by the namespace reproduction; teach compose_support about it"
                );
            }
            let environment = match &s["environment"] {
                Value::Null => BTreeMap::new(),
                Value::Object(map) => map
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), scalar_string(v)?)))
                    .collect::<anyhow::Result<_>>()?,
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        let item = scalar_string(item)?;
                        let (k, v) = item
                            .split_once('=')
                            .with_context(|| format!("environment entry {item:?} without ="))?;
                        Ok((k.to_owned(), v.to_owned()))
                    })
                    .collect::<anyhow::Result<_>>()?,
                other => bail!("service {name}: environment {other}"),
            };
            let service_networks = match &s["networks"] {
                Value::Null => vec!["default".to_owned()],
                Value::Array(items) => items
                    .iter()
                    .map(scalar_string)
                    .collect::<anyhow::Result<_>>()?,
                Value::Object(map) => map.keys().cloned().collect(),
                other => bail!("service {name}: networks {other}"),
            };
            let ports = match &s["ports"] {
                Value::Null => Vec::new(),
                Value::Array(items) => items
                    .iter()
                    .map(|p| PublishedPort::parse(&scalar_string(p)?))
                    .collect::<anyhow::Result<_>>()?,
                other => bail!("service {name}: ports {other}"),
            };
            let service_volumes = match &s["volumes"] {
                Value::Null => Vec::new(),
                Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        let v = scalar_string(v)?;
                        let parts: Vec<&str> = v.split(':').collect();
                        ensure!(parts.len() >= 2, "volume {v:?}: expected name:path");
                        Ok((parts[0].to_owned(), parts[1].to_owned()))
                    })
                    .collect::<anyhow::Result<_>>()?,
                other => bail!("service {name}: volumes {other}"),
            };
            let healthcheck = match &s["healthcheck"]["test"] {
                Value::Null => None,
                test => {
                    let test = string_list(test)?;
                    match test.first().map(String::as_str) {
                        Some("CMD") => Some(test[1..].to_vec()),
                        Some("CMD-SHELL") => {
                            Some(vec!["sh".into(), "-c".into(), test[1..].join(" ")])
                        }
                        _ => bail!("service {name}: healthcheck test {test:?}"),
                    }
                }
            };
            services.push(Service {
                name: name.clone(),
                hostname: s["hostname"].as_str().map(str::to_owned),
                environment,
                networks: service_networks,
                ports,
                volumes: service_volumes,
                healthcheck,
                restart: s["restart"].as_str().map(str::to_owned),
                entrypoint: match &s["entrypoint"] {
                    Value::Null => None,
                    v => Some(string_list(v)?),
                },
                command: match &s["command"] {
                    Value::Null => None,
                    v => Some(string_list(v)?),
                },
            });
        }
        Ok(Compose {
            project,
            services,
            networks,
            volumes,
        })
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

// ---------------------------------------------------------------------------
// Dockerfile

/// One `COPY` of the runtime stage.
#[derive(Debug, Clone)]
pub struct CopyInstruction {
    /// `--from=STAGE`, or `None` for the build context.
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub destination: String,
}

/// What the last stage of a Dockerfile sets up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeStage {
    pub base: String,
    pub env: Vec<(String, String)>,
    pub copies: Vec<CopyInstruction>,
    pub user: Option<String>,
    pub volumes: Vec<String>,
    pub expose: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub healthcheck: Vec<String>,
    pub stop_signal: Option<String>,
}

/// A Dockerfile: every stage's `RUN` commands and the runtime stage.
#[derive(Debug, Clone)]
pub struct Dockerfile {
    /// Stage name (or index) to its `RUN` commands.
    pub runs: Vec<(String, String)>,
    pub runtime: RuntimeStage,
}

fn exec_form(instruction: &str, rest: &str) -> anyhow::Result<Vec<String>> {
    serde_json::from_str(rest).with_context(|| {
        format!("{instruction} {rest}: use the exec (JSON) form, so the process gets signals and the test can run it")
    })
}

fn env_pairs(rest: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for word in rest.split_whitespace() {
        let (k, v) = word
            .split_once('=')
            .with_context(|| format!("ENV {rest}: write KEY=value pairs"))?;
        ensure!(
            !v.contains(['"', '\'', '$']),
            "ENV {word}: keep values plain (no quotes or expansions)"
        );
        pairs.push((k.to_owned(), v.to_owned()));
    }
    Ok(pairs)
}

impl Dockerfile {
    pub fn parse(text: &str) -> anyhow::Result<Dockerfile> {
        // Join continuation lines, drop comments and parser directives.
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            if let Some(head) = trimmed.strip_suffix('\\') {
                current.push_str(head);
                current.push(' ');
            } else {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
        ensure!(current.is_empty(), "Dockerfile ends in a continuation");
        let mut runs = Vec::new();
        let mut stage_name = String::new();
        let mut stage = None::<RuntimeStage>;
        for line in logical {
            let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let rest = rest.trim();
            let instruction = instruction.to_ascii_uppercase();
            if instruction == "FROM" {
                let words: Vec<&str> = rest.split_whitespace().collect();
                stage_name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => (*name).to_owned(),
                    _ => format!("{}", runs.len()),
                };
                stage = Some(RuntimeStage {
                    base: words.first().copied().unwrap_or("").to_owned(),
                    ..RuntimeStage::default()
                });
                continue;
            }
            if instruction == "ARG" && stage.is_none() {
                continue;
            }
            let s = stage.as_mut().context("instruction before FROM")?;
            match instruction.as_str() {
                "RUN" => runs.push((stage_name.clone(), rest.to_owned())),
                "ENV" => s.env.extend(env_pairs(rest)?),
                "COPY" => {
                    let mut from = None;
                    let mut paths = Vec::new();
                    for word in rest.split_whitespace() {
                        if let Some(f) = word.strip_prefix("--from=") {
                            from = Some(f.to_owned());
                        } else if !word.starts_with("--") {
                            paths.push(word.to_owned());
                        }
                    }
                    let destination = paths.pop().context("COPY without destination")?;
                    s.copies.push(CopyInstruction {
                        from,
                        sources: paths,
                        destination,
                    });
                }
                "USER" => s.user = Some(rest.to_owned()),
                "VOLUME" => s.volumes.extend(exec_form("VOLUME", rest)?),
                "EXPOSE" => s.expose.extend(rest.split_whitespace().map(str::to_owned)),
                "ENTRYPOINT" => s.entrypoint = exec_form("ENTRYPOINT", rest)?,
                "CMD" => s.cmd = exec_form("CMD", rest)?,
                "STOPSIGNAL" => s.stop_signal = Some(rest.to_owned()),
                "HEALTHCHECK" => {
                    let at = rest
                        .find("CMD")
                        .with_context(|| format!("HEALTHCHECK {rest}: no CMD"))?;
                    s.healthcheck = exec_form("HEALTHCHECK CMD", rest[at + 3..].trim())?;
                }
                "WORKDIR" | "ARG" | "LABEL" | "SHELL" => {}
                other => bail!("Dockerfile instruction {other} is not modelled by the test"),
            }
        }
        Ok(Dockerfile {
            runs,
            runtime: stage.context("Dockerfile without FROM")?,
        })
    }
}

// ---------------------------------------------------------------------------
// The release binary

/// Builds (if needed) and returns the release `starling` binary, with the
/// very command the Dockerfile's builder stage runs.
pub fn release_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| crate::release_build::build(&repo_root()))
        .clone()
}

// ---------------------------------------------------------------------------
// Network namespaces

/// Path of `ip`, if this machine can make network namespaces here (root,
/// iproute2 installed, and the kernel lets us).
pub fn netns_available() -> Result<PathBuf, String> {
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("no `ip` (iproute2) on this machine")?;
    let probe = format!("stct-{}-probe", std::process::id());
    let made = Command::new(&ip)
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    if !made.success() {
        return Err("`ip netns add` failed (not root, or namespaces are not allowed here)".into());
    }
    // `ip netns exec` also needs a mount namespace (for /etc/netns).
    let entered = Command::new(&ip)
        .args(["netns", "exec", &probe, "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = Command::new(&ip).args(["netns", "del", &probe]).status();
    if !entered {
        return Err("`ip netns exec` failed (no mount namespaces here)".into());
    }
    Ok(ip)
}

fn run(ip: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(ip).args(args).output()?;
    ensure!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

/// Removes namespaces (and their `/etc/netns` entries) that earlier runs
/// left behind when their process died without tearing down (SIGKILL).
fn sweep_stale(ip: &Path) {
    let Ok(output) = Command::new(ip).args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("stct-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        kill_namespace_processes(ip, name);
        let _ = Command::new(ip).args(["netns", "del", name]).status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{name}"));
    }
}

fn kill_namespace_processes(ip: &Path, ns: &str) {
    if let Ok(output) = Command::new(ip).args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// Runs `f` on a thread that has entered the network namespace `ns`:
/// sockets it opens live there.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        f()
    })
    .join()
    .unwrap()
}

static RUN_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A user-defined bridge network with one namespace per service.
#[derive(Debug)]
pub struct Network {
    ip: PathBuf,
    run_id: String,
    /// The "docker host": holds the bridge and its gateway address; the
    /// test's HTTP client works from here.
    pub host_ns: String,
    /// Service name to (namespace, address).
    pub members: BTreeMap<String, (String, Ipv4Addr)>,
    namespaces: Vec<String>,
}

/// The subnet of the reproduction's bridge. Namespaces are private to this
/// run, so the same subnet in a parallel run does not collide.
const SUBNET: [u8; 3] = [172, 31, 77];

impl Network {
    /// Creates the network for `services`: names resolve inside each
    /// service's namespace as docker's DNS resolves them (service name,
    /// container name `PROJECT-SERVICE-1`, and the service's own hostname).
    pub fn create(ip: &Path, project: &str, services: &[&Service]) -> anyhow::Result<Network> {
        sweep_stale(ip);
        let run_id = format!(
            "stct-{}-{}",
            std::process::id(),
            RUN_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut network = Network {
            ip: ip.to_owned(),
            host_ns: format!("{run_id}-host"),
            run_id,
            members: BTreeMap::new(),
            namespaces: Vec::new(),
        };
        let host_ns = network.host_ns.clone();
        network.add_namespace(&host_ns)?;
        let [a, b, c] = SUBNET;
        run(
            ip,
            &["-n", &host_ns, "link", "add", "br0", "type", "bridge"],
        )?;
        run(
            ip,
            &[
                "-n",
                &host_ns,
                "addr",
                "add",
                &format!("{a}.{b}.{c}.1/24"),
                "dev",
                "br0",
            ],
        )?;
        run(ip, &["-n", &host_ns, "link", "set", "br0", "up"])?;
        for (i, service) in services.iter().enumerate() {
            let ns = format!("{}-{}", network.run_id, service.name);
            network.add_namespace(&ns)?;
            let address = Ipv4Addr::new(a, b, c, u8::try_from(i + 2)?);
            let port = format!("veth{i}");
            run(
                ip,
                &[
                    "-n", &host_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run(ip, &["-n", &host_ns, "link", "set", &port, "master", "br0"])?;
            run(ip, &["-n", &host_ns, "link", "set", &port, "up"])?;
            run(
                ip,
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    "eth0",
                ],
            )?;
            run(ip, &["-n", &ns, "link", "set", "eth0", "up"])?;
            network.members.insert(service.name.clone(), (ns, address));
        }
        for service in services {
            let (ns, own) = network.members[&service.name].clone();
            let mut hosts =
                String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
            if let Some(hostname) = &service.hostname {
                hosts.push_str(&format!("{own}\t{hostname}\n"));
            }
            for (name, (_, address)) in &network.members {
                hosts.push_str(&format!("{address}\t{name} {project}-{name}-1\n"));
            }
            let dir = PathBuf::from(format!("/etc/netns/{ns}"));
            std::fs::write(dir.join("hosts"), hosts)?;
            // Docker's embedded DNS server address. Nothing listens there in
            // our namespace, so unknown names fail at once, and no query
            // ever leaves the namespace.
            std::fs::write(
                dir.join("resolv.conf"),
                "nameserver 127.0.0.11\noptions ndots:0\n",
            )?;
        }
        Ok(network)
    }

    fn add_namespace(&mut self, ns: &str) -> anyhow::Result<()> {
        run(&self.ip, &["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        std::fs::create_dir_all(format!("/etc/netns/{ns}"))?;
        run(&self.ip, &["-n", ns, "link", "set", "lo", "up"])
    }

    /// The namespace of service `name`.
    pub fn ns(&self, name: &str) -> &str {
        &self.members[name].0
    }

    /// The address of service `name`.
    pub fn address(&self, name: &str) -> Ipv4Addr {
        self.members[name].1
    }

    /// A command that runs `program` inside service `name`'s namespace,
    /// with exactly `env` as its environment.
    pub fn command(&self, name: &str, env: &BTreeMap<String, String>, argv: &[String]) -> Command {
        let mut command = Command::new(&self.ip);
        command
            .args(["netns", "exec", self.ns(name)])
            .args(argv)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null());
        command
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_namespace_processes(&self.ip, ns);
            let _ = Command::new(&self.ip).args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
    }
}

// ---------------------------------------------------------------------------
// Containers

/// Where a "container"'s paths live on this machine: the image's files
/// under a shared root, each service's volumes under its own directory.
#[derive(Debug)]
pub struct Filesystem {
    pub root: PathBuf,
}

impl Filesystem {
    /// Lays out the runtime stage's `COPY` destinations as links to what the
    /// test runs: the build context's files as they are, the builder's
    /// `starling` as the release binary.
    pub fn new(root: &Path, stage: &RuntimeStage, binary: &Path) -> anyhow::Result<Filesystem> {
        for copy in &stage.copies {
            ensure!(
                copy.sources.len() == 1,
                "COPY with several sources: {copy:?}"
            );
            let source = match &copy.from {
                Some(_) => {
                    ensure!(
                        copy.sources[0].ends_with("/starling"),
                        "the runtime stage copies {} from a build stage; only the starling binary is modelled",
                        copy.sources[0]
                    );
                    binary.to_owned()
                }
                None => repo_root().join(&copy.sources[0]),
            };
            ensure!(source.exists(), "{} does not exist", source.display());
            let target = rooted(root, &copy.destination);
            std::fs::create_dir_all(target.parent().unwrap())?;
            std::os::unix::fs::symlink(&source, &target)?;
        }
        Ok(Filesystem {
            root: root.to_owned(),
        })
    }
}

/// `path` (absolute, in the container) under `root`.
pub fn rooted(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Makes `path` and its ancestors up to `/` traversable by any user.
pub fn open_up(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A "container": one service's entrypoint running in its namespace.
#[derive(Debug)]
pub struct Container {
    pub service: String,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl Container {
    pub fn spawn(mut command: Command, service: &str, log_path: &Path) -> Container {
        let log = File::create(log_path).unwrap();
        let child = command
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Container {
            service: service.to_owned(),
            log_path: log_path.to_owned(),
            child: Some(child),
        }
    }

    /// The container's output so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// The process: `ip netns exec`, `setpriv` and the entrypoint each
    /// `exec` the next, so this ends up being the `starling` node itself.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Panics with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "{} exited with {status}; its log:\n{}",
                self.service,
                self.log()
            );
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Output of a command, for messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}
