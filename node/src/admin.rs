//! `starling admin`: cluster administration over any node's HTTP API.
//!
//! Tables for people by default, `--json` for scripts. The CLI talks HTTP
//! only, so it works against any node the operator can reach, and it shows
//! exactly what `/admin/...` serves.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Which admin view to show.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Members of the cluster with their liveness and ring state.
    Members,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Fetches `path` from `node` as JSON.
fn fetch(node: &str, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", node.trim_end_matches('/'));
    let mut response = agent()
        .get(&url)
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

/// Runs one admin command against `node` (a base URL) and prints the result.
pub fn run(node: &str, command: &AdminCommand, json: bool) -> anyhow::Result<()> {
    match command {
        AdminCommand::Members => {
            let value = fetch(node, "/admin/members")?;
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
