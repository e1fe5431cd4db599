//! Artifacts of a run for people: figures, plots and the timeline.
//!
//! The plots are hand-written SVG (a few hundred lines instead of a
//! plotting library's build on a two-core machine): latency of every client
//! operation over time, and throughput per second by outcome, both with the
//! nemesis's fault windows shaded and labelled. The timeline is one HTML
//! file with a column per client and one for the nemesis; every operation
//! is a bar from its invocation to its completion, with the details on
//! hover.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::history::{F, Op, OpType, Process, pairs};

/// A fault window, from the nemesis's start to its stop.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Start, ns since the test started.
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
    /// Short label.
    pub label: String,
}

/// The fault windows of a history: each nemesis `start` up to the end of
/// the `stop` that follows it (or the end of the history).
pub fn windows(ops: &[Op]) -> Vec<Window> {
    let end = ops.last().map_or(0, |o| o.time_ns);
    let mut out: Vec<Window> = Vec::new();
    let mut open: Option<(u64, String)> = None;
    for op in ops.iter().filter(|o| !o.is_client()) {
        match (op.f, op.kind) {
            (F::Start, OpType::Invoke) => {
                let label = op.fault.clone().unwrap_or_default();
                let label = label.split(':').next().unwrap_or("").to_owned();
                open = Some((op.time_ns, label));
            }
            (F::Stop, kind) if kind != OpType::Invoke => {
                if let Some((start_ns, label)) = open.take() {
                    out.push(Window {
                        start_ns,
                        end_ns: op.time_ns,
                        label,
                    });
                }
            }
            _ => {}
        }
    }
    if let Some((start_ns, label)) = open {
        out.push(Window {
            start_ns,
            end_ns: end,
            label,
        });
    }
    out
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// Figures of a run's client operations (the final reads excluded).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Stats {
    /// Operations completed or abandoned.
    pub ops: usize,
    /// Of which ok.
    pub ok: usize,
    /// Of which indeterminate.
    pub info: usize,
    /// Of which failed.
    pub fail: usize,
    /// Seconds from the first invocation to the last completion.
    pub duration_s: f64,
    /// Operations per second over that time.
    pub ops_per_s: f64,
    /// Acknowledged operations per second.
    pub ok_per_s: f64,
    /// Share of operations that ended indeterminate.
    pub info_share: f64,
    /// Latency of the acknowledged operations.
    pub ok_latency: Latency,
    /// Operations per kind and outcome.
    pub by_f: BTreeMap<String, BTreeMap<String, usize>>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The figures of a history.
pub fn stats(ops: &[Op]) -> Stats {
    let Ok(pairs) = pairs(ops) else {
        return Stats::default();
    };
    let mut s = Stats::default();
    let mut latencies = Vec::new();
    let (mut first, mut last) = (u64::MAX, 0u64);
    for p in pairs.iter().filter(|p| p.invoke.f != F::FinalRead) {
        s.ops += 1;
        let outcome = p.outcome();
        match outcome {
            OpType::Ok => s.ok += 1,
            OpType::Fail => s.fail += 1,
            _ => s.info += 1,
        }
        let f = serde_json::to_value(p.invoke.f)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let o = serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        *s.by_f.entry(f).or_default().entry(o).or_default() += 1;
        first = first.min(p.invoke.time_ns);
        if let Some(done) = p.completed_ns() {
            last = last.max(done);
            if outcome == OpType::Ok {
                latencies.push((done - p.invoke.time_ns) as f64 / 1e6);
            }
        }
    }
    if s.ops > 0 && last > first {
        s.duration_s = round3((last - first) as f64 / 1e9);
        s.ops_per_s = round3(s.ops as f64 / s.duration_s);
        s.ok_per_s = round3(s.ok as f64 / s.duration_s);
        s.info_share = round3(s.info as f64 / s.ops as f64);
    }
    latencies.sort_by(f64::total_cmp);
    s.ok_latency = Latency {
        p50_ms: round3(percentile(&latencies, 0.50)),
        p95_ms: round3(percentile(&latencies, 0.95)),
        p99_ms: round3(percentile(&latencies, 0.99)),
        max_ms: round3(latencies.last().copied().unwrap_or(0.0)),
    };
    s
}

fn outcome_color(kind: OpType) -> &'static str {
    match kind {
        OpType::Ok => "#2a9d4b",
        OpType::Info => "#e89f00",
        OpType::Fail => "#d62728",
        OpType::Invoke => "#888888",
    }
}

fn window_color(label: &str) -> &'static str {
    if label.starts_with("kill") {
        "#d62728"
    } else if label.starts_with("pause") {
        "#9467bd"
    } else if label.starts_with("loss") {
        "#8c564b"
    } else {
        "#1f77b4"
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 960.0;
const H: f64 = 420.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;

struct Frame {
    t_max_s: f64,
}

impl Frame {
    fn x(&self, t_s: f64) -> f64 {
        LEFT + (W - LEFT - RIGHT) * (t_s / self.t_max_s).clamp(0.0, 1.0)
    }

    fn svg_open(&self, title: &str, windows: &[Window]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#,
            escape(title)
        );
        for w in windows {
            let x0 = self.x(w.start_ns as f64 / 1e9);
            let x1 = self.x(w.end_ns as f64 / 1e9).max(x0 + 1.0);
            let _ = writeln!(
                s,
                r#"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.14"><title>{}</title></rect>"#,
                x1 - x0,
                H - TOP - BOTTOM,
                window_color(&w.label),
                escape(&w.label)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" fill="{}" font-size="9">{}</text>"#,
                x0 + 2.0,
                TOP + 10.0,
                window_color(&w.label),
                escape(&w.label)
            );
        }
        // The time axis.
        let step = nice_step(self.t_max_s, 10.0);
        let mut t = 0.0;
        while t <= self.t_max_s + 1e-9 {
            let x = self.x(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}</text>"##,
                H - BOTTOM,
                H - BOTTOM + 4.0,
                H - BOTTOM + 16.0
            );
            t += step;
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since start</text>"#,
            LEFT + (W - LEFT - RIGHT) / 2.0,
            H - 8.0
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        s
    }
}

fn nice_step(range: f64, ticks: f64) -> f64 {
    let raw = (range / ticks).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn legend(s: &mut String) {
    let mut x = W - RIGHT - 180.0;
    for (name, kind) in [
        ("ok", OpType::Ok),
        ("info", OpType::Info),
        ("fail", OpType::Fail),
    ] {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="12" width="10" height="10" fill="{}"/><text x="{}" y="21">{name}</text>"#,
            outcome_color(kind),
            x + 14.0
        );
        x += 56.0;
    }
}

/// The latency plot: every client operation at its invocation time, its
/// latency on a log scale, coloured by outcome.
pub fn latency_svg(ops: &[Op], windows: &[Window], title: &str) -> String {
    let pairs = pairs(ops).unwrap_or_default();
    let end_ns = ops.last().map_or(1, |o| o.time_ns.max(1));
    let frame = Frame {
        t_max_s: end_ns as f64 / 1e9,
    };
    let mut s = frame.svg_open(title, windows);
    legend(&mut s);
    let points: Vec<(f64, f64, OpType)> = pairs
        .iter()
        .filter_map(|p| {
            let done = p.completed_ns()?;
            let ms = ((done - p.invoke.time_ns) as f64 / 1e6).max(0.01);
            Some((p.invoke.time_ns as f64 / 1e9, ms, p.outcome()))
        })
        .collect();
    let max_ms = points.iter().map(|p| p.1).fold(1.0, f64::max);
    let (lo, hi) = (0.1f64.log10(), (max_ms * 1.5).log10().max(1.0));
    let y = |ms: f64| {
        let v = (ms.max(0.1).log10() - lo) / (hi - lo);
        H - BOTTOM - (H - TOP - BOTTOM) * v.clamp(0.0, 1.0)
    };
    let mut decade = 0.1f64;
    while decade.log10() <= hi + 1e-9 {
        let yy = y(decade);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            yy + 4.0,
            if decade < 1.0 {
                format!("{decade}")
            } else {
                format!("{decade:.0}")
            }
        );
        decade *= 10.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">latency (ms, log)</text>"#,
        TOP + (H - TOP - BOTTOM) / 2.0,
        TOP + (H - TOP - BOTTOM) / 2.0
    );
    for (t, ms, kind) in points {
        let _ = writeln!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{}" fill-opacity="0.6"/>"#,
            frame.x(t),
            y(ms),
            outcome_color(kind)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The throughput plot: completions per second, one line per outcome.
pub fn throughput_svg(ops: &[Op], windows: &[Window], title: &str) -> String {
    let end_ns = ops.last().map_or(1, |o| o.time_ns.max(1));
    let seconds = (end_ns / 1_000_000_000 + 1) as usize;
    let frame = Frame {
        t_max_s: seconds as f64,
    };
    let mut s = frame.svg_open(title, windows);
    legend(&mut s);
    let mut counts: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for op in ops
        .iter()
        .filter(|o| o.is_client() && o.kind != OpType::Invoke)
    {
        let series = match op.kind {
            OpType::Ok => 0,
            OpType::Info => 1,
            _ => 2,
        };
        let bucket = (op.time_ns / 1_000_000_000) as usize;
        let v = counts.entry(series).or_insert_with(|| vec![0; seconds]);
        if bucket < v.len() {
            v[bucket] += 1;
        }
    }
    let max = counts
        .values()
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y = |c: f64| H - BOTTOM - (H - TOP - BOTTOM) * (c / (max * 1.1));
    let step = nice_step(max * 1.1, 6.0);
    let mut c = 0.0;
    while c <= max * 1.1 {
        let yy = y(c);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{c}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            yy + 4.0
        );
        c += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">operations per second</text>"#,
        TOP + (H - TOP - BOTTOM) / 2.0,
        TOP + (H - TOP - BOTTOM) / 2.0
    );
    for (series, values) in &counts {
        let kind = [OpType::Ok, OpType::Info, OpType::Fail][*series as usize];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| format!("{:.1},{:.1}", frame.x(i as f64 + 0.5), y(v as f64)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            outcome_color(kind),
            points.join(" ")
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Bars of the timeline at most: beyond this the file gets unwieldy; the
/// history has everything.
const TIMELINE_OPS_MAX: usize = 30_000;

/// The HTML timeline.
pub fn timeline_html(ops: &[Op], windows: &[Window], title: &str, concurrency: usize) -> String {
    let pairs = pairs(ops).unwrap_or_default();
    let end_ns = ops.last().map_or(1, |o| o.time_ns.max(1));
    let px_per_s = 40.0;
    let height = (end_ns as f64 / 1e9 * px_per_s).ceil() + 40.0;
    let col_w = 70.0;
    let column = |p: &Process| -> usize {
        match p {
            Process::Client(n) => 1 + (*n as usize % concurrency.max(1)),
            Process::Named(name) if name == "final" => concurrency + 1,
            Process::Named(_) => 0,
        }
    };
    let columns = concurrency + 2;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>{}</title><style>
body {{ font-family: sans-serif; font-size: 12px; margin: 12px; }}
.tl {{ position: relative; width: {}px; height: {height}px; border-top: 1px solid #444; }}
.op {{ position: absolute; width: {}px; border-radius: 2px; opacity: 0.85; }}
.win {{ position: absolute; left: 0; width: 100%; opacity: 0.12; }}
.head {{ position: sticky; top: 0; background: white; display: flex; z-index: 2; }}
.head div {{ width: {col_w}px; font-weight: bold; }}
.tick {{ position: absolute; left: -44px; font-size: 10px; color: #666; }}
</style></head><body><h2>{}</h2>
<p>One column per client (processes that went indeterminate continue in the same column under a new number), the nemesis on the left, final reads on the right. A bar runs from invocation to completion: <span style="color:#2a9d4b">ok</span>, <span style="color:#e89f00">info</span>, <span style="color:#d62728">fail</span>. Shaded bands are faults. Hover for details.</p>"#,
        escape(title),
        columns as f64 * col_w,
        col_w - 6.0,
        escape(title)
    );
    let _ = write!(s, r#"<div class="head" style="margin-left:44px">"#);
    let _ = write!(s, "<div>nemesis</div>");
    for c in 0..concurrency {
        let _ = write!(s, "<div>client {c}</div>");
    }
    let _ = writeln!(s, "<div>final</div></div>");
    let _ = writeln!(s, r#"<div style="margin-left:44px"><div class="tl">"#);
    let y = |ns: u64| ns as f64 / 1e9 * px_per_s;
    for w in windows {
        let _ = writeln!(
            s,
            r#"<div class="win" style="top:{:.1}px;height:{:.1}px;background:{}" title="{}"></div>"#,
            y(w.start_ns),
            (y(w.end_ns) - y(w.start_ns)).max(1.0),
            window_color(&w.label),
            escape(&w.label)
        );
    }
    let mut t = 0u64;
    while t * 1_000_000_000 <= end_ns {
        let _ = writeln!(
            s,
            r#"<div class="tick" style="top:{:.1}px">{t} s</div>"#,
            y(t * 1_000_000_000)
        );
        t += 5;
    }
    for op in ops
        .iter()
        .filter(|o| !o.is_client() && o.kind != OpType::Invoke)
    {
        let _ = writeln!(
            s,
            r##"<div class="op" style="left:0px;top:{:.1}px;height:3px;background:#444" title="{}"></div>"##,
            y(op.time_ns),
            escape(&format!(
                "{:?} {} {}",
                op.f,
                op.fault.clone().unwrap_or_default(),
                op.error.clone().unwrap_or_default()
            ))
        );
    }
    for p in pairs.iter().take(TIMELINE_OPS_MAX) {
        let top = y(p.invoke.time_ns);
        let bottom = y(p.completed_ns().unwrap_or(end_ns));
        let detail = serde_json::json!({
            "process": p.invoke.process,
            "f": p.invoke.f,
            "key": p.invoke.key,
            "value": p.invoke.value,
            "node": p.invoke.node,
            "type": p.outcome(),
            "status": p.completion.and_then(|c| c.status),
            "error": p.completion.and_then(|c| c.error.clone()),
            "values": p.completion.and_then(|c| c.values.as_ref().map(|v| v.len())),
            "latency_ms": p.completed_ns().map(|d| (d - p.invoke.time_ns) as f64 / 1e6),
        });
        let _ = writeln!(
            s,
            r#"<div class="op" style="left:{:.0}px;top:{top:.1}px;height:{:.1}px;background:{}" title="{}"></div>"#,
            column(&p.invoke.process) as f64 * col_w,
            (bottom - top).max(1.0),
            outcome_color(p.outcome()),
            escape(&detail.to_string())
        );
    }
    if pairs.len() > TIMELINE_OPS_MAX {
        let _ = writeln!(
            s,
            "<p>Only the first {TIMELINE_OPS_MAX} of {} operations are drawn; history.jsonl has them all.</p>",
            pairs.len()
        );
    }
    s.push_str("</div></div></body></html>\n");
    s
}

/// `YYYYMMDDTHHMMSSZ` for a time (UTC), for directory names.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Points `link` at `target` (relative), replacing what was there.
pub fn relink(link: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = link.with_extension("tmp-link");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::checker::test_history::H;
    use std::time::Duration;

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_764_578_160); // 2025-12-01 08:36:00
        assert_eq!(utc_stamp(t), "20251201T083600Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(utc_stamp(leap), "20000229T000000Z");
    }

    #[test]
    fn stats_and_plots_come_from_the_history() {
        let mut h = H::new();
        h.op(0, F::Add, "a", 1, OpType::Ok);
        h.push(Op::invoke(Process::nemesis(), F::Start).fault("kill n1"));
        h.op(1, F::Add, "a", 2, OpType::Info);
        h.push(Op::invoke(Process::nemesis(), F::Stop).fault("kill n1"));
        let stop = Op::invoke(Process::nemesis(), F::Stop).complete(OpType::Info);
        h.push(stop);
        h.op(2, F::Add, "a", 3, OpType::Fail);
        h.read(99, F::FinalRead, "a", &[1, 2]);
        let s = stats(&h.ops);
        assert_eq!((s.ops, s.ok, s.info, s.fail), (3, 1, 1, 1));
        assert!((s.info_share - 0.333).abs() < 1e-9, "{s:?}");
        let w = windows(&h.ops);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].label, "kill n1");
        let svg = latency_svg(&h.ops, &w, "t");
        assert!(svg.starts_with("<svg") && svg.contains("kill n1") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<circle").count(), 4);
        let svg = throughput_svg(&h.ops, &w, "t");
        assert!(svg.contains("<polyline"));
        let html = timeline_html(&h.ops, &w, "t", 3);
        assert!(html.contains("client 2") && html.contains("kill n1"));
    }
}
