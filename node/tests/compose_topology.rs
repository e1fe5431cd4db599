//! docker/ checked without a docker engine.
//!
//! - `docker/compose.yaml` and `docker/kubernetes.yaml` validate against the
//!   published schemas (compose-spec; Kubernetes' OpenAPI as JSON schema),
//!   vendored under `docker/schemas/` by `docker/schemas/vendor.py`.
//! - The compose topology is consistent: every seed names a service on the
//!   same network at the port that service listens on, every node has its
//!   own volume at the image's `VOLUME`, its own published HTTP port, a
//!   restart policy and the image's health check. The Kubernetes manifest's
//!   seeds name pods of its StatefulSet through its headless Service.
//! - The compose file's topology runs in network namespaces: one per
//!   service, on a bridge, with names resolving as docker's DNS resolves
//!   them, each running the Dockerfile's entrypoint with the Dockerfile's and
//!   the compose file's environment, as the image's user, with the release
//!   binary the Dockerfile builds. The five nodes form one cluster and
//!   replicate a write; with a wrong seed name they stay apart.
//!
//! The namespace tests need root and `ip` (iproute2); without them they
//! print SKIP and pass. Every wait polls a condition against a deadline.

#![allow(clippy::unwrap_used)]

mod compose_support;
mod release_build;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use compose_support::{
    Compose, Container, Dockerfile, Filesystem, Network, RuntimeStage, Service, describe, in_netns,
    netns_available, open_up, release_binary, repo_file, rooted, validate_against, wait_until,
    yaml_documents_to_json, yaml_to_json,
};
use release_build::RELEASE_BUILD_ARGS;
use serde_json::Value;

const COMPOSE: &str = "docker/compose.yaml";
const DOCKERFILE: &str = "docker/Dockerfile";
const MANIFEST: &str = "docker/kubernetes.yaml";
const COMPOSE_SCHEMA: &str = "docker/schemas/compose-spec.json";
const KUBERNETES_SCHEMAS: &str = "docker/schemas/kubernetes/v1.30.0";

/// The cluster secret the tests hand to compose's interpolation, as an
/// operator's `docker/.env` would.
const TEST_SECRET: &str = "compose-topology-test-secret-0123456789";

/// The namespace reproductions run one at a time: each is five nodes on a
/// machine of two cores.
static NAMESPACE_RUNS: Mutex<()> = Mutex::new(());

fn compose_vars() -> BTreeMap<String, String> {
    BTreeMap::from([("STARLING_CLUSTER_SECRET".to_owned(), TEST_SECRET.to_owned())])
}

fn dockerfile() -> Dockerfile {
    Dockerfile::parse(&repo_file(DOCKERFILE)).unwrap()
}

fn host_port(address: &str) -> anyhow::Result<(&str, u16)> {
    let (host, port) = address
        .rsplit_once(':')
        .with_context(|| format!("{address:?} is not host:port"))?;
    Ok((
        host,
        port.parse()
            .with_context(|| format!("port of {address:?}"))?,
    ))
}

/// A service's environment as the container sees it: the image's `ENV`,
/// then the compose file's `environment` on top.
fn container_env(stage: &RuntimeStage, service: &Service) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = stage.env.iter().cloned().collect();
    env.extend(service.environment.clone());
    env
}

/// Checks that the compose topology can work as docker would run it;
/// returns every problem found.
fn check_compose_topology(compose: &Compose, stage: &RuntimeStage) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let user_networks: Vec<&String> = compose.networks.keys().collect();
    if user_networks.len() != 1 || compose.networks.values().any(|d| d != "bridge") {
        problems.push(format!(
            "expected one user-defined bridge network, found {:?}",
            compose.networks
        ));
    }
    let healthcheck = &stage.healthcheck;
    let mut published = BTreeSet::new();
    let mut volume_owners = BTreeMap::new();
    let mut secrets = BTreeSet::new();
    let mut cluster_ports = BTreeMap::new();
    for service in &compose.services {
        let env = container_env(stage, service);
        let listen = |key: &str| env.get(key).map(|a| host_port(a).map(|(_, p)| p));
        if let Some(Ok(port)) = listen("STARLING_CLUSTER_LISTEN") {
            cluster_ports.insert(service.name.clone(), port);
        } else {
            problems.push(format!(
                "{}: no STARLING_CLUSTER_LISTEN with a port",
                service.name
            ));
        }
    }
    for service in &compose.services {
        let name = &service.name;
        let env = container_env(stage, service);
        if service.networks.len() != 1 || !compose.networks.contains_key(&service.networks[0]) {
            problems.push(format!("{name}: not on exactly the user-defined network"));
        }
        if !matches!(
            service.restart.as_deref(),
            Some("always" | "unless-stopped" | "on-failure")
        ) {
            problems.push(format!("{name}: no restart policy"));
        }
        match &service.healthcheck {
            Some(test) if test == healthcheck => {}
            other => problems.push(format!(
                "{name}: health check {other:?} is not the image's {healthcheck:?}"
            )),
        }
        for path in &stage.volumes {
            match service.volumes.iter().find(|(_, target)| target == path) {
                Some((volume, _)) if compose.volumes.contains(volume) => {
                    if let Some(other) = volume_owners.insert(volume.clone(), name.clone()) {
                        problems.push(format!("{name}: volume {volume} is also {other}'s"));
                    }
                }
                _ => problems.push(format!(
                    "{name}: no named volume at the image's VOLUME {path}"
                )),
            }
        }
        match env.get("STARLING_HTTP_LISTEN").map(|a| host_port(a)) {
            Some(Ok((_, http_port))) => {
                let ports: Vec<_> = service
                    .ports
                    .iter()
                    .filter(|p| p.container_port == http_port && p.protocol == "tcp")
                    .collect();
                if ports.is_empty() {
                    problems.push(format!("{name}: HTTP port {http_port} is not published"));
                }
                for port in ports {
                    if !published.insert((port.host_ip.clone(), port.host_port)) {
                        problems.push(format!(
                            "{name}: host port {} published twice",
                            port.host_port
                        ));
                    }
                }
            }
            _ => problems.push(format!("{name}: no STARLING_HTTP_LISTEN with a port")),
        }
        match env.get("STARLING_CLUSTER_ADVERTISE").map(|a| host_port(a)) {
            Some(Ok((host, port))) => {
                let own = host == name || service.hostname.as_deref() == Some(host);
                if !own || Some(&port) != cluster_ports.get(name) {
                    problems.push(format!(
                        "{name}: advertises {host}:{port}, not its own name and cluster port"
                    ));
                }
            }
            _ => problems.push(format!("{name}: no STARLING_CLUSTER_ADVERTISE (host:port)")),
        }
        match env.get("STARLING_CLUSTER_SECRET") {
            Some(secret) if secret.len() >= 16 => {
                secrets.insert(secret.clone());
            }
            _ => problems.push(format!("{name}: no cluster secret of 16 bytes or more")),
        }
        let seeds: Vec<&str> = env
            .get("STARLING_JOIN")
            .map(|j| {
                j.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if seeds.is_empty() {
            problems.push(format!("{name}: no seeds (STARLING_JOIN)"));
        }
        for seed in seeds {
            match host_port(seed) {
                Ok((host, port)) => match compose.service(host) {
                    Some(target) if target.networks == service.networks => {
                        if cluster_ports.get(host) != Some(&port) {
                            problems.push(format!(
                                "{name}: seed {seed} is not the port {host} listens on for the cluster"
                            ));
                        }
                    }
                    Some(_) => problems.push(format!("{name}: seed {seed} is on another network")),
                    None => problems.push(format!(
                        "{name}: seed {seed} names no service: docker's DNS would not resolve {host:?}"
                    )),
                },
                Err(e) => problems.push(format!("{name}: seed {seed}: {e}")),
            }
        }
    }
    if secrets.len() > 1 {
        problems.push("the services do not share one cluster secret".to_owned());
    }
    ensure!(
        problems.is_empty(),
        "compose topology problems:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

#[test]
fn compose_file_follows_the_compose_spec_schema() {
    let compose = yaml_to_json(&repo_file(COMPOSE)).unwrap();
    validate_against(COMPOSE_SCHEMA, &compose).unwrap();

    // The validator really bites: a misspelt key and a bad restart policy
    // are both refused.
    let mut bad = compose.clone();
    bad["services"]["starling-1"]["healthchek"] =
        bad["services"]["starling-1"]["healthcheck"].clone();
    bad["services"]["starling-2"]["restart"] = Value::from(42);
    let err = validate_against(COMPOSE_SCHEMA, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("healthchek") && err.contains("/services/starling-2/restart"),
        "{err}"
    );
}

#[test]
fn kubernetes_manifest_follows_the_kubernetes_schemas() {
    let documents = yaml_documents_to_json(&repo_file(MANIFEST)).unwrap();
    let mut kinds = Vec::new();
    for document in &documents {
        let schema = kubernetes_schema(document);
        validate_against(&schema, document)
            .with_context(|| format!("{} {}", document["kind"], document["metadata"]["name"]))
            .unwrap();
        kinds.push(document["kind"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(
        kinds,
        ["PodDisruptionBudget", "Service", "Service", "StatefulSet"]
    );

    // The schemas are strict: a misspelt field in a pod template is refused.
    let mut bad = documents
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .unwrap()
        .clone();
    bad["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = Value::from("typo");
    let err = validate_against(&kubernetes_schema(&bad), &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("readinessprobe"), "{err}");
}

/// The vendored schema for a manifest document's `apiVersion` and `kind`.
fn kubernetes_schema(document: &Value) -> String {
    let kind = document["kind"].as_str().unwrap().to_ascii_lowercase();
    let api = document["apiVersion"].as_str().unwrap();
    let suffix = match api.split_once('/') {
        Some((group, version)) => format!("{}-{version}", group.split('.').next().unwrap()),
        None => api.to_owned(),
    };
    let path = format!("{KUBERNETES_SCHEMAS}/{kind}-{suffix}.json");
    assert!(
        compose_support::repo_root().join(&path).exists(),
        "no vendored schema {path}: add the kind to docker/schemas/vendor.py"
    );
    path
}

#[test]
fn kubernetes_seeds_name_pods_of_the_statefulset_through_its_headless_service() {
    let documents = yaml_documents_to_json(&repo_file(MANIFEST)).unwrap();
    let sts = documents
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .unwrap();
    let service_name = sts["spec"]["serviceName"].as_str().unwrap();
    let headless = documents
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == service_name)
        .expect("the StatefulSet's serviceName is a Service of the manifest");
    assert_eq!(
        headless["spec"]["clusterIP"], "None",
        "the governing Service must be headless"
    );
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"], true,
        "seeds must resolve before their pods are ready, or no pod ever becomes part of a cluster"
    );
    let labels = sts["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    for (k, v) in headless["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            labels.get(k),
            Some(v),
            "the headless Service selects the pods"
        );
    }

    let stage = dockerfile().runtime;
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env: BTreeMap<&str, &str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
        .collect();
    let port_of = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap()
    };
    let image_env: BTreeMap<&str, &str> = stage
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let listen_port = |key: &str| host_port(image_env[key]).unwrap().1 as u64;
    assert_eq!(port_of("http"), listen_port("STARLING_HTTP_LISTEN"));
    assert_eq!(port_of("cluster"), listen_port("STARLING_CLUSTER_LISTEN"));

    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    let pods: Vec<String> = (0..replicas)
        .map(|i| {
            format!(
                "{}-{i}.{service_name}",
                sts["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let seeds: Vec<&str> = env["STARLING_JOIN"].split(',').collect();
    assert!(!seeds.is_empty());
    for seed in seeds {
        let (host, port) = host_port(seed).unwrap();
        assert!(
            pods.iter().any(|p| p == host),
            "seed {seed} names no pod of {pods:?}"
        );
        assert_eq!(u64::from(port), port_of("cluster"), "seed {seed}");
    }

    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/ping");
    assert_eq!(probe["port"], "http");
    let secret = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "STARLING_CLUSTER_SECRET")
        .unwrap();
    assert!(
        secret["valueFrom"]["secretKeyRef"].is_object(),
        "the cluster secret comes from a Secret, not the manifest"
    );

    // The claim template is mounted where the image keeps its data, and the
    // pod runs as the image's user.
    let claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .unwrap();
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim)
        .unwrap();
    assert_eq!(stage.volumes, [mount["mountPath"].as_str().unwrap()]);
    let (uid, gid) = image_user(&stage);
    assert_eq!(pod["securityContext"]["runAsUser"], uid);
    assert_eq!(pod["securityContext"]["fsGroup"], gid);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}

/// The runtime stage's numeric `USER uid:gid`.
fn image_user(stage: &RuntimeStage) -> (u32, u32) {
    let user = stage.user.as_deref().expect("the image sets USER");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    (
        uid.parse()
            .expect("USER is numeric, so Kubernetes can verify runAsNonRoot"),
        gid.parse().expect("numeric group"),
    )
}

#[test]
fn dockerfile_builds_the_tested_binary_into_a_non_root_image() {
    let file = dockerfile();
    let build = format!("cargo {}", RELEASE_BUILD_ARGS.join(" "));
    assert!(
        file.runs.iter().any(|(_, run)| run.contains(&build)),
        "a build stage runs `{build}`, the command the namespace test builds with"
    );
    // The test command builds it first, outside any test's deadline; the
    // tests' own build is then a no-op only if the command is the same.
    let test_command = repo_file("scripts/test");
    assert!(
        test_command.contains(&build),
        "scripts/test runs `{build}` before the tests"
    );
    assert!(
        file.runs
            .iter()
            .any(|(_, run)| run.contains("cargo chef cook")),
        "dependencies are built in their own cached layer"
    );
    let stage = &file.runtime;
    assert!(
        stage.base.contains("-slim"),
        "small runtime base, got {}",
        stage.base
    );
    let (uid, _) = image_user(stage);
    assert_ne!(uid, 0, "the image runs as a non-root user");
    assert_eq!(stage.volumes, ["/data"]);
    let env: BTreeMap<_, _> = stage.env.iter().cloned().collect();
    assert_eq!(
        env.get("STARLING_DATA_DIR").map(String::as_str),
        Some("/data")
    );
    assert!(!stage.healthcheck.is_empty() && !stage.entrypoint.is_empty());
    assert!(
        stage.expose.contains(&"8098/tcp".to_owned())
            && stage.expose.contains(&"7946/udp".to_owned())
    );
    assert!(
        stage
            .copies
            .iter()
            .any(|c| c.from.is_some() && c.destination == "/usr/local/bin/starling"),
        "the binary is copied from the build stage"
    );
}

#[test]
fn compose_topology_is_consistent() {
    let compose = Compose::parse(&repo_file(COMPOSE), &compose_vars()).unwrap();
    assert_eq!(compose.services.len(), 5, "five nodes");
    check_compose_topology(&compose, &dockerfile().runtime).unwrap();

    // Without the secret, compose refuses to start (`${VAR:?message}`).
    let err = Compose::parse(&repo_file(COMPOSE), &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("STARLING_CLUSTER_SECRET"), "{err}");
}

/// The compose file with `from` replaced by `to` in its `STARLING_JOIN`
/// line, as a careless edit of a seed name would leave it.
fn with_seed_renamed(text: &str, from: &str, to: &str) -> String {
    let mut changed = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("STARLING_JOIN:") && line.contains(from) {
                changed += 1;
                line.replace(from, to)
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(
        changed, 1,
        "expected one STARLING_JOIN line containing {from}"
    );
    lines.join("\n") + "\n"
}

#[test]
fn a_misspelt_seed_name_is_caught_by_the_topology_check() {
    let stage = dockerfile().runtime;
    let text = with_seed_renamed(&repo_file(COMPOSE), "starling-2:", "starling-two:");
    let compose = Compose::parse(&text, &compose_vars()).unwrap();
    let err = check_compose_topology(&compose, &stage)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("seed starling-two:7946 names no service"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// The namespace reproduction

/// A compose project "up" in network namespaces.
struct Reproduction {
    // Dropped in this order: processes, then namespaces, then files.
    containers: Vec<Container>,
    network: Network,
    envs: BTreeMap<String, BTreeMap<String, String>>,
    user: (u32, u32),
    healthcheck: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Reproduction {
    /// Starts every service of `compose` at once, as `docker compose up`
    /// does. `extra_env` is added to every container (the tests use it only
    /// for log verbosity).
    fn up(
        ip: &Path,
        compose: &Compose,
        file: &Dockerfile,
        extra_env: &[(&str, &str)],
    ) -> Reproduction {
        let stage = &file.runtime;
        let binary = release_binary();
        let dir = tempfile::tempdir().unwrap();
        // The node runs as the image's unprivileged user: it must be able to
        // reach the image files.
        open_up(dir.path(), 0o755);
        let image_root = dir.path().join("image");
        Filesystem::new(&image_root, stage, &binary).unwrap();
        let user = image_user(stage);
        let services: Vec<&Service> = compose.services.iter().collect();
        let network = Network::create(ip, &compose.project, &services).unwrap();

        // Docker's default PATH, with the image's /usr/local directories.
        let path = ["/usr/local/sbin", "/usr/local/bin"]
            .iter()
            .map(|p| rooted(&image_root, p).display().to_string())
            .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(String::from))
            .collect::<Vec<_>>()
            .join(":");
        let mut envs = BTreeMap::new();
        let mut containers = Vec::new();
        for service in &services {
            let service_root = dir.path().join(&service.name);
            // Volumes: created and owned by the image's user, as the image's
            // `chown` makes them (docker copies it into a new named volume).
            for volume in &stage.volumes {
                let at = rooted(&service_root, volume);
                std::fs::create_dir_all(&at).unwrap();
                std::os::unix::fs::chown(&at, Some(user.0), Some(user.1)).unwrap();
            }
            let remap = |value: &str| -> String {
                for volume in &stage.volumes {
                    if value == volume || value.starts_with(&format!("{volume}/")) {
                        return rooted(&service_root, value).display().to_string();
                    }
                }
                value.to_owned()
            };
            let mut env: BTreeMap<String, String> = container_env(stage, service)
                .into_iter()
                .map(|(k, v)| (k, remap(&v)))
                .collect();
            env.insert("PATH".into(), path.clone());
            env.insert(
                "HOSTNAME".into(),
                service
                    .hostname
                    .clone()
                    .unwrap_or_else(|| service.name.clone()),
            );
            env.insert(
                "HOME".into(),
                remap(stage.volumes.first().map_or("/", String::as_str)),
            );
            for (k, v) in extra_env {
                env.insert((*k).to_owned(), (*v).to_owned());
            }
            let entrypoint = service
                .entrypoint
                .clone()
                .unwrap_or_else(|| stage.entrypoint.clone());
            let command = service.command.clone().unwrap_or_else(|| stage.cmd.clone());
            let argv: Vec<String> = as_user(user)
                .into_iter()
                .chain(entrypoint)
                .chain(command)
                .collect();
            let log = dir.path().join(format!("{}.log", service.name));
            containers.push(Container::spawn(
                network.command(&service.name, &env, &argv),
                &service.name,
                &log,
            ));
            envs.insert(service.name.clone(), env);
        }
        Reproduction {
            containers,
            network,
            envs,
            user,
            healthcheck: stage.healthcheck.clone(),
            _dir: dir,
        }
    }

    fn services(&self) -> Vec<String> {
        self.envs.keys().cloned().collect()
    }

    fn container(&mut self, service: &str) -> &mut Container {
        self.containers
            .iter_mut()
            .find(|c| c.service == service)
            .unwrap()
    }

    /// Panics (with the log) if any container has exited.
    fn assert_running(&mut self) {
        for container in &mut self.containers {
            container.assert_running();
        }
    }

    /// `docker compose exec SERVICE ARGV...`, as the image's user.
    fn exec(&self, service: &str, argv: &[String]) -> Output {
        let argv: Vec<String> = ["timeout".to_owned(), "10".to_owned()]
            .into_iter()
            .chain(as_user(self.user))
            .chain(argv.iter().cloned())
            .collect();
        self.network
            .command(service, &self.envs[service], &argv)
            .output()
            .unwrap()
    }

    /// Runs the image's health check in `service`'s container.
    fn healthy(&self, service: &str) -> bool {
        self.exec(service, &self.healthcheck).status.success()
    }

    /// An HTTP request to `service`'s HTTP port from the docker host.
    fn http(&self, service: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let port = self.envs[service]["STARLING_HTTP_LISTEN"]
            .rsplit_once(':')
            .unwrap()
            .1
            .to_owned();
        let url = format!("http://{}:{port}{path}", self.network.address(service));
        let method = method.to_owned();
        let body = body.map(str::to_owned);
        in_netns(&self.network.host_ns.clone(), move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let result = match (method.as_str(), body) {
                ("PUT", Some(body)) => agent
                    .put(&url)
                    .header("Content-Type", "text/plain")
                    .send(body.as_str()),
                _ => agent.get(&url).call(),
            };
            match result {
                Ok(mut r) => (
                    r.status().as_u16(),
                    r.body_mut().read_to_string().unwrap_or_default(),
                ),
                Err(e) => (0, e.to_string()),
            }
        })
    }

    /// The members `service` reports, as (http address, state).
    /// `(http address, liveness/ring state)` of every member `service` sees,
    /// e.g. `alive/member`.
    fn members(&self, service: &str) -> Vec<(String, String)> {
        let (status, body) = self.http(service, "GET", "/admin/members", None);
        if status != 200 {
            return Vec::new();
        }
        let value: Value = serde_json::from_str(&body).unwrap_or_default();
        value["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (
                            m["http_addr"].as_str().unwrap_or("").to_owned(),
                            format!(
                                "{}/{}",
                                m["state"].as_str().unwrap_or(""),
                                m["ring_state"].as_str().unwrap_or("")
                            ),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `service` holds its own replica of `bucket`/`key` with `value`.
    fn holds(&self, service: &str, bucket: &str, key: &str, value: &str) -> bool {
        let (status, body) = self.http(
            service,
            "GET",
            &format!("/admin/local?bucket={bucket}&key={key}"),
            None,
        );
        status == 200
            && serde_json::from_str::<Value>(&body).is_ok_and(|v| {
                v["siblings"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["value"] == value))
            })
    }

    /// Resolves `name` inside `service`'s namespace (as the container would).
    fn resolves(&self, service: &str, name: &str) -> bool {
        self.exec(service, &["getent".into(), "hosts".into(), name.into()])
            .status
            .success()
    }
}

/// `setpriv` arguments that run the rest of a command as `user`.
fn as_user((uid, gid): (u32, u32)) -> Vec<String> {
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
    ]
}

/// `ip`, or `None` after printing SKIP when namespaces cannot be made here.
fn namespaces_or_skip(test: &str) -> Option<PathBuf> {
    match netns_available() {
        Ok(ip) => Some(ip),
        Err(why) => {
            println!("SKIP {test}: {why}");
            None
        }
    }
}

#[test]
fn compose_topology_forms_a_cluster_and_replicates_in_network_namespaces() {
    let Some(ip) = namespaces_or_skip("compose_topology_forms_a_cluster...") else {
        return;
    };
    let _one_at_a_time = NAMESPACE_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let file = dockerfile();
    let compose = Compose::parse(&repo_file(COMPOSE), &compose_vars()).unwrap();
    check_compose_topology(&compose, &file.runtime).unwrap();

    let started = Instant::now();
    let mut cluster = Reproduction::up(&ip, &compose, &file, &[]);
    let services = cluster.services();
    eprintln!(
        "{} containers started in namespaces in {:?}",
        services.len(),
        started.elapsed()
    );

    // Every seed resolves in every container, as docker's DNS resolves it.
    for service in &services {
        for seed in cluster.envs[service]["STARLING_JOIN"].split(',') {
            let host = seed.trim().rsplit_once(':').unwrap().0.to_owned();
            assert!(
                cluster.resolves(service, &host),
                "{service} cannot resolve seed {host}"
            );
        }
    }

    // The image's health check passes on every node.
    let took = wait_until(
        "every container's health check to pass",
        Duration::from_secs(30),
        || {
            cluster.assert_running();
            services.iter().all(|s| cluster.healthy(s))
        },
    );
    eprintln!("all health checks pass {took:?} after start");

    // Each container is the node itself (the entrypoint exec'd it, so it
    // gets SIGTERM), running as the image's unprivileged user.
    for container in &cluster.containers {
        let pid = container.pid();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert_eq!(
            exe,
            release_binary(),
            "{} runs {}",
            container.service,
            exe.display()
        );
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let uids: Vec<u32> = uid_line
            .split_whitespace()
            .skip(1)
            .map(|u| u.parse().unwrap())
            .collect();
        assert!(
            uids.iter().all(|u| *u == cluster.user.0),
            "{}: {uid_line}",
            container.service
        );
    }

    // Every node sees all five alive and owning partitions, under the names
    // the compose file advertises.
    let advertised: BTreeSet<String> = services
        .iter()
        .map(|s| cluster.envs[s]["STARLING_HTTP_ADVERTISE"].clone())
        .collect();
    let took = wait_until(
        "every node to see all five alive and in the ring",
        Duration::from_secs(30),
        || {
            cluster.assert_running();
            services.iter().all(|s| {
                let alive: BTreeSet<String> = cluster
                    .members(s)
                    .into_iter()
                    .filter(|(_, state)| state == "alive/member")
                    .map(|(http, _)| http)
                    .collect();
                alive == advertised
            })
        },
    );
    eprintln!(
        "five nodes formed one cluster {took:?} after the health checks ({:?} after start)",
        started.elapsed()
    );

    // `docker compose exec starling-5 starling admin members`, through the
    // image's entrypoint.
    let last = services.last().unwrap().clone();
    let output = cluster.exec(
        &last,
        &[
            "starling-entrypoint".into(),
            "admin".into(),
            "members".into(),
        ],
    );
    assert!(output.status.success(), "{}", describe(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(table.matches(" alive ").count(), 5, "{table}");

    // A write through the first node is read back through the fourth and
    // held by exactly three nodes (n_val = 3).
    let (status, body) = cluster.http(
        &services[0],
        "PUT",
        "/buckets/compose/keys/k",
        Some("hello"),
    );
    assert!(matches!(status, 200 | 204), "PUT answered {status}: {body}");
    let (status, body) = cluster.http(&services[3], "GET", "/buckets/compose/keys/k", None);
    assert_eq!((status, body.as_str()), (200, "hello"));
    let took = wait_until(
        "three nodes to hold the key",
        Duration::from_secs(10),
        || {
            let holders = services
                .iter()
                .filter(|s| cluster.holds(s, "compose", "k", "hello"))
                .count();
            assert!(holders <= 3, "{holders} nodes hold a key with n_val 3");
            holders == 3
        },
    );
    eprintln!("the write reached its three replicas within {took:?}");

    // Nothing the nodes wrote went elsewhere than their volumes.
    for service in &services {
        let data = &cluster.envs[service]["STARLING_DATA_DIR"];
        let entries = std::fs::read_dir(data).unwrap().count();
        assert!(entries > 0, "{service} wrote nothing to its volume {data}");
    }
}

#[test]
fn a_wrong_seed_name_in_the_compose_file_keeps_the_nodes_apart() {
    let Some(ip) = namespaces_or_skip("a_wrong_seed_name...") else {
        return;
    };
    let _one_at_a_time = NAMESPACE_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let file = dockerfile();
    // Every seed misspelt: the nodes have no way to find each other.
    let text = repo_file(COMPOSE);
    let text_wrong = with_seed_renamed(&text, "starling-", "starlng-");
    assert_ne!(text, text_wrong);
    let compose = Compose::parse(&text_wrong, &compose_vars()).unwrap();
    assert!(check_compose_topology(&compose, &file.runtime).is_err());
    let seeds: Vec<String> = compose.services[0].environment["STARLING_JOIN"]
        .split(',')
        .map(|s| s.trim().rsplit_once(':').unwrap().0.to_owned())
        .collect();

    // The node's driver logs each failed resolution at debug level; that is
    // the evidence that it kept trying.
    let mut cluster = Reproduction::up(
        &ip,
        &compose,
        &file,
        &[("RUST_LOG", "info,node::cluster=debug")],
    );
    let services = cluster.services();
    for service in &services {
        for seed in &seeds {
            assert!(
                !cluster.resolves(service, seed),
                "{seed} resolves in {service}"
            );
        }
        assert!(
            cluster.resolves(service, &services[0]),
            "service names still resolve"
        );
    }
    wait_until(
        "every container's health check to pass",
        Duration::from_secs(30),
        || {
            cluster.assert_running();
            services.iter().all(|s| cluster.healthy(s))
        },
    );

    // Until every node has failed to resolve its seeds in three rounds of
    // its reconnect loop (and said so in its log), no node may see another.
    let first_wrong = format!("seed {}:", seeds[0]);
    let took = wait_until(
        "every node to fail three rounds of seed resolution",
        Duration::from_secs(30),
        || {
            cluster.assert_running();
            for service in &services {
                let members = cluster.members(service);
                assert_eq!(
                    members.len(),
                    1,
                    "{service} found peers through a wrong seed: {members:?}"
                );
            }
            services.iter().all(|s| {
                let log = cluster.container(s).log();
                log.contains(&first_wrong)
                    && log.contains("does not resolve")
                    && log.matches("could not resolve seed").count() >= 3 * seeds.len()
            })
        },
    );
    eprintln!("nodes stayed alone through three failed seed rounds ({took:?})");
    for service in &services {
        let members = cluster.members(service);
        assert_eq!(members.len(), 1, "{service}: {members:?}");
        assert!(members[0].1.starts_with("alive/"), "{service}: {members:?}");
    }
}

#[test]
fn the_entrypoint_refuses_to_start_with_the_placeholder_secret_of_env_example() {
    // docker compose reads docker/.env; an operator who copies the example
    // without editing it gets the placeholder, which must not run a cluster.
    let vars: BTreeMap<String, String> = repo_file("docker/.env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let compose = Compose::parse(&repo_file(COMPOSE), &vars).unwrap();
    let stage = dockerfile().runtime;
    let service = &compose.services[0];
    let mut env = container_env(&stage, service);
    env.insert("PATH".into(), "/usr/bin:/bin".into());
    let entrypoint = compose_support::repo_root().join("docker/entrypoint.sh");
    let output = std::process::Command::new(entrypoint)
        .args(&stage.cmd)
        .env_clear()
        .envs(&env)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("placeholder"),
        "{}",
        describe(&output)
    );
}
