//! The release `starling` that the real-process tests run, built with the
//! very command the Dockerfile's builder stage and `scripts/test` run, so
//! that all of them share one artifact. Included by the compose tests
//! (`node/tests/compose_support`) and by the partition tests
//! (`jepsen/tests/netns.rs`, through `#[path]`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

/// `cargo` arguments that build the release binary: the Dockerfile and
/// `scripts/test` must build with the same ones.
pub const RELEASE_BUILD_ARGS: &[&str] = &[
    "build",
    "--release",
    "--locked",
    "-p",
    "node",
    "--bin",
    "starling",
];

/// Builds the release binary in the workspace at `root` if it is not up to
/// date (a no-op after `scripts/test` built it) and returns its path.
pub fn build(root: &Path) -> PathBuf {
    let started = Instant::now();
    let output = cargo_as_outside_tests()
        .args(RELEASE_BUILD_ARGS)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the release binary failed"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let executable = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "starling")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo named no starling executable");
    eprintln!(
        "release binary {} ready in {:?}",
        executable.display(),
        started.elapsed()
    );
    executable
}

/// `cargo`, without the variables cargo set for this test process. Build
/// scripts that declare one with `rerun-if-env-changed` (ring does, for
/// `CARGO_MANIFEST_DIR` and `CARGO_PKG_*`) would otherwise see it changed
/// since `scripts/test` built the release binary, and cargo would rebuild
/// ring and everything above it under the test's deadline.
fn cargo_as_outside_tests() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        let set_by_cargo = matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "OUT_DIR"
        ) || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_");
        if set_by_cargo {
            command.env_remove(name);
        }
    }
    command
}
