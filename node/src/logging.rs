//! Log set-up: `tracing` to standard error, text or JSON, filtered by
//! `RUST_LOG` (default: `info`, and `warn` for the storage engine's own
//! lines).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::LogFormat;

/// Installs the global subscriber; later calls are ignored.
///
/// Without `RUST_LOG` the filter is static, by target alone: an
/// `EnvFilter` looks up every span on every enter and exit, which the
/// request span of every client request pays on each poll. Colours only on
/// a terminal: a log file or collector gets plain text (and no span pays
/// for escape codes).
pub fn init(format: LogFormat) {
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match (EnvFilter::try_from_default_env(), format) {
        (Ok(filter), LogFormat::Text) => builder.with_env_filter(filter).try_init().ok(),
        (Ok(filter), LogFormat::Json) => builder.with_env_filter(filter).json().try_init().ok(),
        (Err(_), LogFormat::Text) => builder
            .with_max_level(LevelFilter::INFO)
            .finish()
            .with(default_targets())
            .try_init()
            .ok(),
        (Err(_), LogFormat::Json) => builder
            .with_max_level(LevelFilter::INFO)
            .json()
            .finish()
            .with(default_targets())
            .try_init()
            .ok(),
    };
}

/// The filter without `RUST_LOG`: `info` for ours; fjall and lsm-tree log
/// routine steps (a keyspace created, an ingestion finished) at `info`,
/// which our own lines already say in the operator's terms ("store
/// opened"), so theirs start at `warn`.
fn default_targets() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("fjall", LevelFilter::WARN)
        .with_target("lsm_tree", LevelFilter::WARN)
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::default_targets;

    #[test]
    fn the_storage_engines_routine_lines_are_left_out_by_default() {
        let targets = default_targets();
        assert!(targets.would_enable("node::server", &Level::INFO));
        assert!(targets.would_enable("storage::store", &Level::INFO));
        assert!(!targets.would_enable("node::server", &Level::DEBUG));
        assert!(!targets.would_enable("lsm_tree::tree::ingest", &Level::INFO));
        assert!(!targets.would_enable("fjall::db", &Level::INFO));
        assert!(targets.would_enable("fjall::db", &Level::WARN));
        assert!(targets.would_enable("lsm_tree::compaction", &Level::ERROR));
    }
}
