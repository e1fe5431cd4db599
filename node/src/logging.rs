//! Log set-up: `tracing` to standard error, text or JSON, filtered by
//! `RUST_LOG` (default `info`).

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; later calls are ignored.
///
/// Without `RUST_LOG` the filter is a fixed level: an `EnvFilter` looks up
/// every span on every enter and exit, which the request span of every
/// client request pays on each poll. Colours only on a terminal: a log
/// file or collector gets plain text (and no span pays for escape codes).
pub fn init(format: LogFormat) {
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match (EnvFilter::try_from_default_env(), format) {
        (Ok(filter), LogFormat::Text) => builder.with_env_filter(filter).try_init(),
        (Ok(filter), LogFormat::Json) => builder.with_env_filter(filter).json().try_init(),
        (Err(_), LogFormat::Text) => builder.with_max_level(LevelFilter::INFO).try_init(),
        (Err(_), LogFormat::Json) => builder.with_max_level(LevelFilter::INFO).json().try_init(),
    };
}
