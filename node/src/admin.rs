//! `starling admin`: cluster administration over any node's HTTP API.
//!
//! Tables for people by default, `--json` for scripts. The CLI talks HTTP
//! only, so it works against any node the operator can reach, and it shows
//! exactly what `/admin/...` serves. For a node with authentication on it
//! sends HTTP Basic credentials ([`Credentials`]); for `https://` nodes it
//! verifies the certificate against the public roots or a CA file.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Which admin view to show.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Members of the cluster with their liveness and ring state.
    Members,
    /// One line of health: members by state, ring, hints, storage.
    Status,
    /// Ring ownership: partitions per member.
    Ring,
    /// Hints waiting for unreachable members.
    Hints,
    /// Anti-entropy: trees held, last exchanges, repairs, transfers,
    /// tombstones.
    Aae,
    /// Make the node `--node` points at leave the cluster: it hands its
    /// partitions to the others, then stops.
    Leave,
    /// Take a node that is gone for good out of the ring (its id, an id
    /// suffix as `members` shows it, or its HTTP address); the others
    /// re-replicate its data.
    Remove {
        /// The node to remove.
        node: String,
        /// Remove it even though it is alive (it then owns nothing and
        /// hands nothing over; prefer `leave`).
        #[arg(long)]
        force: bool,
    },
    /// Bucket properties.
    Bucket {
        #[command(subcommand)]
        command: BucketCommand,
    },
}

/// `starling admin bucket ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum BucketCommand {
    /// Show a bucket's properties.
    Get {
        /// Bucket name.
        bucket: String,
    },
    /// Set properties, e.g. `n_val=3 allow_mult=false w=quorum`.
    Set {
        /// Bucket name.
        bucket: String,
        /// `name=value` pairs; numbers and booleans are sent as such.
        #[arg(required = true)]
        props: Vec<String>,
    },
}

/// How the CLI reaches a node: credentials and the TLS trust anchor.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// User name for HTTP Basic authentication, if the node requires it.
    pub user: Option<String>,
    /// The user's password.
    pub password: Option<String>,
    /// PEM file of the CA that signed the node's certificate (default: the
    /// public web roots).
    pub ca_cert: Option<std::path::PathBuf>,
}

/// A connection to one node.
struct Client {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
}

impl Client {
    fn new(node: &str, credentials: &Credentials) -> anyhow::Result<Client> {
        use base64::Engine as _;
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)));
        if let Some(path) = &credentials.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the CA file {}", path.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(err) => Some(Err(err)),
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing {}", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", path.display());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let authorization = match (&credentials.user, &credentials.password) {
            (Some(user), Some(password)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            (Some(_), None) => {
                bail!("--user needs a password: set STARLING_PASSWORD or --password-file")
            }
            (None, Some(_)) => bail!("a password was given without --user"),
            (None, None) => None,
        };
        if authorization.is_some() && node.starts_with("http://") {
            eprintln!(
                "warning: sending credentials over plain HTTP to {node}; use https:// unless a \
                 TLS-terminating proxy is in between"
            );
        }
        Ok(Client {
            base: node.trim_end_matches('/').to_owned(),
            agent: config.build().into(),
            authorization,
        })
    }

    fn get(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        request
    }

    fn post(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let mut request = self.agent.post(format!("{}{path}", self.base));
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        request
    }

    fn put(&self, path: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let mut request = self.agent.put(format!("{}{path}", self.base));
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        request
    }
}

/// Fetches `path` from the node as JSON.
fn fetch(client: &Client, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", client.base);
    let mut response = client
        .get(path)
        .call()
        .with_context(|| format!("requesting {url}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .context("reading the answer")?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))
}

/// POSTs to `path` on the node and returns the JSON answer.
fn post(client: &Client, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", client.base);
    let mut response = client
        .post(path)
        .send_empty()
        .with_context(|| format!("requesting {url}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .context("reading the answer")?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))
}

fn bucket_path(bucket: &str) -> String {
    let encoded = percent_encoding::utf8_percent_encode(bucket, percent_encoding::NON_ALPHANUMERIC);
    format!("/buckets/{encoded}/props")
}

/// Parses `name=value` into a JSON field: integers and booleans as such,
/// anything else as a string.
fn prop_value(text: &str) -> anyhow::Result<(String, Value)> {
    let (name, value) = text
        .split_once('=')
        .with_context(|| format!("{text:?} is not name=value"))?;
    let value = if let Ok(n) = value.parse::<u64>() {
        Value::from(n)
    } else if let Ok(b) = value.parse::<bool>() {
        Value::from(b)
    } else {
        Value::from(value)
    };
    Ok((name.to_owned(), value))
}

fn print_json_or(value: &Value, json: bool, table: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        table(value);
    }
    Ok(())
}

/// Runs one admin command against `node` (a base URL) and prints the result.
pub fn run(
    node: &str,
    credentials: &Credentials,
    command: &AdminCommand,
    json: bool,
) -> anyhow::Result<()> {
    let client = Client::new(node, credentials)?;
    match command {
        AdminCommand::Status => {
            let stats = fetch(&client, "/stats")?;
            print_json_or(&stats, json, |s| {
                println!(
                    "node {}: members alive {} suspect {} dead {} left {}; ring {} partitions on {} members; \
                     hints pending {}; disk {} bytes",
                    s["nodename"].as_str().unwrap_or("?"),
                    s["members_alive"],
                    s["members_suspect"],
                    s["members_dead"],
                    s["members_left"],
                    s["ring_num_partitions"],
                    s["ring_members"].as_array().map_or(0, Vec::len),
                    s["hints_pending"],
                    s["storage"]["disk_space_bytes"],
                );
                if let Some(note) = s["replication_note"].as_str() {
                    println!("note: {note}");
                }
                let storage = &s["storage"];
                if storage["poisoned"].as_bool() == Some(true) {
                    println!(
                        "storage refuses writes until the node restarts: {} (see the log)",
                        storage["poison_cause"].as_str().unwrap_or("?")
                    );
                } else if storage["disk_full"].as_bool() == Some(true) {
                    println!(
                        "storage refuses writes: disk full, {} bytes available, reserve {} bytes",
                        storage["disk_available_bytes"], storage["disk_reserve_bytes"]
                    );
                }
            })
        }
        AdminCommand::Ring => {
            let ring = fetch(&client, "/admin/ring")?;
            print_json_or(&ring, json, |r| {
                let mut rows = vec![["NODE", "ZONE", "PARTITIONS", "HEALTHY"].map(String::from)];
                for m in r["members"].as_array().into_iter().flatten() {
                    rows.push([
                        m["node"].as_str().unwrap_or("").to_owned(),
                        m["zone"]
                            .as_str()
                            .filter(|z| !z.is_empty())
                            .unwrap_or("-")
                            .to_owned(),
                        m["partitions"].to_string(),
                        m["healthy"].to_string(),
                    ]);
                }
                print_table(&rows);
                println!("{} partitions", r["partition_count"]);
                if let Some(note) = r["note"].as_str() {
                    println!("note: {note}");
                }
            })
        }
        AdminCommand::Hints => {
            let hints = fetch(&client, "/admin/hints")?;
            print_json_or(&hints, json, |h| {
                let mut rows = vec![["OWNER", "HINTS"].map(String::from)];
                for o in h["owners"].as_array().into_iter().flatten() {
                    rows.push([
                        o["owner"].as_str().unwrap_or("").to_owned(),
                        o["hints"].to_string(),
                    ]);
                }
                print_table(&rows);
                println!(
                    "pending {}, delivered {}, failed deliveries {}",
                    h["pending"], h["delivered_total"], h["failed_total"]
                );
            })
        }
        AdminCommand::Aae => {
            let aae = fetch(&client, "/admin/aae")?;
            print_json_or(&aae, json, |a| {
                let mut rows = vec![
                    [
                        "PARTITION",
                        "N",
                        "KEYS",
                        "BYTES",
                        "ROLE",
                        "LAST",
                        "DIFFERING",
                        "REPAIRED",
                        "OK",
                    ]
                    .map(String::from),
                ];
                for t in a["trees"].as_array().into_iter().flatten() {
                    let last = &t["last_exchange"];
                    let ago = last["at_unix_ms"].as_u64().map_or("-".to_owned(), |at| {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64);
                        format!(
                            "{} {}s ago",
                            last["kind"].as_str().unwrap_or(""),
                            now.saturating_sub(at) / 1000
                        )
                    });
                    let or_dash = |v: &Value| {
                        if v.is_null() {
                            "-".to_owned()
                        } else {
                            v.to_string()
                        }
                    };
                    rows.push([
                        t["partition"].to_string(),
                        t["n_val"].to_string(),
                        t["keys"].to_string(),
                        t["size_bytes"].to_string(),
                        t["role"].as_str().unwrap_or("").to_owned(),
                        ago,
                        or_dash(&last["keys_differing"]),
                        or_dash(&last["keys_repaired"]),
                        or_dash(&last["ok"]),
                    ]);
                }
                print_table(&rows);
                println!(
                    "ring state {}; trees {}; keys {}; exchanges {} (failed {}); keys differing {}, repaired {}, \
                     handed off {}; bytes sent {}, received {}; transfers pending {}; tombstones {} (reaped {})",
                    a["ring_state"].as_str().unwrap_or("?"),
                    if a["ready"] == Value::Bool(true) {
                        a["trees"].as_array().map_or(0, Vec::len).to_string()
                    } else {
                        "building".to_owned()
                    },
                    a["keys"],
                    a["exchanges_total"],
                    a["failures_total"],
                    a["keys_differing_total"],
                    a["keys_repaired_total"],
                    a["keys_handed_off_total"],
                    a["bytes_sent_total"],
                    a["bytes_received_total"],
                    a["transfers_pending"],
                    a["tombstones"],
                    a["reaped_total"],
                );
            })
        }
        AdminCommand::Leave => {
            let answer = post(&client, "/admin/leave")?;
            print_json_or(&answer, json, |a| {
                println!("{}", a["note"].as_str().unwrap_or("leaving"));
            })
        }
        AdminCommand::Remove {
            node: target,
            force,
        } => {
            let encoded =
                percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC);
            let path = format!(
                "/admin/remove?node={encoded}{}",
                if *force { "&force=true" } else { "" }
            );
            let answer = post(&client, &path)?;
            print_json_or(&answer, json, |a| {
                println!(
                    "removed {}: {}",
                    a["removed"].as_str().unwrap_or("?"),
                    a["note"].as_str().unwrap_or("")
                );
            })
        }
        AdminCommand::Bucket {
            command: BucketCommand::Get { bucket },
        } => {
            let props = fetch(&client, &bucket_path(bucket))?;
            print_json_or(&props, json, |p| {
                if let Some(map) = p["props"].as_object() {
                    for (name, value) in map {
                        println!("{name} = {value}");
                    }
                }
            })
        }
        AdminCommand::Bucket {
            command: BucketCommand::Set { bucket, props },
        } => {
            let mut map = serde_json::Map::new();
            for prop in props {
                let (name, value) = prop_value(prop)?;
                map.insert(name, value);
            }
            let url = format!("{}{}", client.base, bucket_path(bucket));
            let body = serde_json::json!({ "props": map }).to_string();
            let mut response = client
                .put(&bucket_path(bucket))
                .header("Content-Type", "application/json")
                .send(body)
                .with_context(|| format!("requesting {url}"))?;
            let status = response.status();
            if !status.is_success() {
                let text = response.body_mut().read_to_string().unwrap_or_default();
                bail!("{url} answered {status}: {}", text.trim());
            }
            println!("properties of {bucket} set");
            Ok(())
        }
        AdminCommand::Members => {
            let value = fetch(&client, "/admin/members")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            let members = value["members"]
                .as_array()
                .context("no members in the answer")?;
            let mut rows = vec![
                ["ID", "CLUSTER ADDR", "HTTP", "ZONE", "STATE", "INC", "RING"].map(String::from),
            ];
            for m in members {
                let text = |k: &str| m[k].as_str().unwrap_or("").to_owned();
                let mut id = text("id");
                id = id[id.len().saturating_sub(12)..].to_owned();
                if m["local"].as_bool() == Some(true) {
                    id.push('*');
                }
                rows.push([
                    id,
                    text("addr"),
                    text("http_addr"),
                    if text("zone").is_empty() {
                        "-".into()
                    } else {
                        text("zone")
                    },
                    text("state"),
                    m["incarnation"].to_string(),
                    text("ring_state"),
                ]);
            }
            print_table(&rows);
            Ok(())
        }
    }
}

fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}
