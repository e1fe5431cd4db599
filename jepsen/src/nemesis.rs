//! The nemesis: which faults happen when, decided up front from a seed.
//!
//! A schedule is a list of steps, each a fault that starts at a time and
//! lasts a while, separated by quiet gaps; faults never overlap, and every
//! fault ends (is healed) before the next starts. The same seed, node count,
//! time limit and specification give the same schedule, so a failing run
//! can be repeated fault for fault (the clients' timing still varies).
//!
//! Faults:
//! - partitions, as grudges (node → the nodes whose packets it drops):
//!   `halves` (two random halves), `isolate` (one node from the rest),
//!   `ring` (majorities ring: every node sees a majority, no two the same
//!   one; needs 4 nodes, with 3 it falls back to `isolate`), `bridge` (two
//!   halves that only one node in the middle can talk to), `one-way` (one
//!   half cannot hear the other, which still hears it);
//! - `loss`: a random share of node-to-node packets dropped;
//! - `kill`: SIGKILL of a minority, restarted on the same data directory
//!   when the fault ends;
//! - `pause`: SIGSTOP of a minority, SIGCONT when it ends.
//!
//! Boundary: this module only decides. Applying a fault (nftables,
//! signals, restarts) is the runner's job.

use anyhow::bail;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

/// A partition's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Shape {
    /// Two random halves.
    Halves,
    /// One node against the rest.
    Isolate,
    /// Every node sees a different majority.
    Ring,
    /// Two halves joined by one node that sees both.
    Bridge,
    /// One half cannot hear the other; the other hears it.
    OneWay,
}

/// A kind of fault the specification allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// A partition of one of the allowed shapes.
    Partition,
    /// Random packet loss.
    Loss,
    /// SIGKILL and restart.
    Kill,
    /// SIGSTOP and SIGCONT.
    Pause,
}

/// What `--nemesis` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Spec {
    /// The categories, in a fixed order.
    pub categories: Vec<Category>,
    /// The partition shapes allowed.
    pub shapes: Vec<Shape>,
}

impl Spec {
    /// Parses `none`, `mixed`, or a comma-separated list of `partition`
    /// (every shape), `halves`, `isolate`, `ring`, `bridge`, `one-way`,
    /// `loss`, `kill`, `pause`.
    pub fn parse(text: &str) -> anyhow::Result<Spec> {
        let all_shapes = [
            Shape::Halves,
            Shape::Isolate,
            Shape::Ring,
            Shape::Bridge,
            Shape::OneWay,
        ];
        let mut categories = Vec::new();
        let mut shapes = Vec::new();
        let add = |c: Category, categories: &mut Vec<Category>| {
            if !categories.contains(&c) {
                categories.push(c);
            }
        };
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "none" => {}
                "mixed" | "all" => {
                    for c in [
                        Category::Partition,
                        Category::Kill,
                        Category::Pause,
                        Category::Loss,
                    ] {
                        add(c, &mut categories);
                    }
                    shapes.extend(all_shapes);
                }
                "partition" => {
                    add(Category::Partition, &mut categories);
                    shapes.extend(all_shapes);
                }
                "halves" | "isolate" | "ring" | "bridge" | "one-way" => {
                    add(Category::Partition, &mut categories);
                    shapes.push(match word {
                        "halves" => Shape::Halves,
                        "isolate" => Shape::Isolate,
                        "ring" => Shape::Ring,
                        "bridge" => Shape::Bridge,
                        _ => Shape::OneWay,
                    });
                }
                "loss" => add(Category::Loss, &mut categories),
                "kill" => add(Category::Kill, &mut categories),
                "pause" => add(Category::Pause, &mut categories),
                other => bail!(
                    "unknown nemesis {other:?}: use none, mixed, partition, halves, isolate, ring, bridge, one-way, loss, kill, pause"
                ),
            }
        }
        let mut unique: Vec<Shape> = Vec::new();
        for shape in shapes {
            if !unique.contains(&shape) {
                unique.push(shape);
            }
        }
        Ok(Spec {
            categories,
            shapes: unique,
        })
    }

    /// Whether no fault is allowed.
    pub fn is_none(&self) -> bool {
        self.categories.is_empty()
    }
}

/// One fault, with the nodes it concerns (0-based indices).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// Node `i` drops every packet from the nodes in `grudge[i]`.
    Partition {
        /// The shape it was made from.
        shape: Shape,
        /// Per node, whom it does not hear.
        grudge: Vec<Vec<usize>>,
    },
    /// Every node drops `percent`% of the packets from other nodes.
    Loss {
        /// Share dropped.
        percent: u8,
    },
    /// SIGKILL; restart at the end.
    Kill {
        /// Whom.
        nodes: Vec<usize>,
    },
    /// SIGSTOP; SIGCONT at the end.
    Pause {
        /// Whom.
        nodes: Vec<usize>,
    },
}

impl Fault {
    /// The fault in words, with node names `n1`...
    pub fn describe(&self) -> String {
        let names = |ns: &[usize]| {
            ns.iter()
                .map(|i| format!("n{}", i + 1))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Fault::Partition { shape, grudge } => {
                let cut: Vec<String> = grudge
                    .iter()
                    .enumerate()
                    .filter(|(_, g)| !g.is_empty())
                    .map(|(i, g)| format!("n{} drops {}", i + 1, names(g)))
                    .collect();
                format!(
                    "partition {}: {}",
                    serde_json::to_value(shape)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    cut.join("; ")
                )
            }
            Fault::Loss { percent } => format!("loss {percent}% between nodes"),
            Fault::Kill { nodes } => format!("kill {}", names(nodes)),
            Fault::Pause { nodes } => format!("pause {}", names(nodes)),
        }
    }

    /// A short label for plots.
    pub fn label(&self) -> String {
        match self {
            Fault::Partition { shape, .. } => serde_json::to_value(shape)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            Fault::Loss { percent } => format!("loss {percent}%"),
            Fault::Kill { nodes } => format!(
                "kill {}",
                nodes
                    .iter()
                    .map(|i| format!("n{}", i + 1))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Fault::Pause { nodes } => format!(
                "pause {}",
                nodes
                    .iter()
                    .map(|i| format!("n{}", i + 1))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// One step of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// Milliseconds after the start of the test.
    pub start_ms: u64,
    /// How long the fault lasts.
    pub duration_ms: u64,
    /// The fault.
    pub fault: Fault,
}

/// Timing of a schedule.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Quiet time before the first fault.
    pub warmup_ms: u64,
    /// Range of a fault's duration.
    pub fault_ms: (u64, u64),
    /// Range of the quiet gap after a fault.
    pub gap_ms: (u64, u64),
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            warmup_ms: 5_000,
            fault_ms: (6_000, 14_000),
            gap_ms: (3_000, 7_000),
        }
    }
}

/// The schedule for `nodes` nodes over `time_limit_ms`. Every category of
/// the specification comes up in turn (in a shuffled order, reshuffled
/// every round), so even a short run covers each of them once if it has
/// room; the last fault ends by the time limit.
pub fn schedule(
    spec: &Spec,
    nodes: usize,
    time_limit_ms: u64,
    timing: Timing,
    rng: &mut StdRng,
) -> Vec<Step> {
    let mut steps = Vec::new();
    if spec.is_none() || nodes == 0 {
        return steps;
    }
    let mut t = timing.warmup_ms;
    let mut round: Vec<Category> = Vec::new();
    // Bounded: every step advances time by at least the shortest fault.
    while t + timing.fault_ms.0 <= time_limit_ms {
        if round.is_empty() {
            round = spec.categories.clone();
            round.shuffle(rng);
            round.reverse(); // popped from the back
        }
        let Some(category) = round.pop() else { break };
        let duration = rng
            .random_range(timing.fault_ms.0..=timing.fault_ms.1)
            .min(time_limit_ms - t);
        let fault = match category {
            Category::Partition => {
                let shape = spec.shapes[rng.random_range(0..spec.shapes.len())];
                partition(shape, nodes, rng)
            }
            Category::Loss => Fault::Loss {
                percent: rng.random_range(10..=40),
            },
            Category::Kill => Fault::Kill {
                nodes: minority(nodes, rng),
            },
            Category::Pause => Fault::Pause {
                nodes: minority(nodes, rng),
            },
        };
        steps.push(Step {
            start_ms: t,
            duration_ms: duration,
            fault,
        });
        t += duration + rng.random_range(timing.gap_ms.0..=timing.gap_ms.1);
    }
    steps
}

/// One node, or with five or more nodes sometimes two: always a minority.
fn minority(nodes: usize, rng: &mut StdRng) -> Vec<usize> {
    let most = if nodes >= 5 { 2 } else { 1 };
    let count = rng.random_range(1..=most);
    let mut all: Vec<usize> = (0..nodes).collect();
    all.shuffle(rng);
    all.truncate(count);
    all.sort_unstable();
    all
}

/// The grudge of a partition of `shape` over `nodes` nodes.
pub fn partition(shape: Shape, nodes: usize, rng: &mut StdRng) -> Fault {
    let mut order: Vec<usize> = (0..nodes).collect();
    order.shuffle(rng);
    let mut grudge = vec![Vec::new(); nodes];
    let cut_both = |grudge: &mut Vec<Vec<usize>>, a: &[usize], b: &[usize]| {
        for &x in a {
            grudge[x].extend_from_slice(b);
        }
        for &y in b {
            grudge[y].extend_from_slice(a);
        }
    };
    let shape = match shape {
        Shape::Ring if nodes < 4 => Shape::Isolate,
        Shape::Bridge if nodes < 3 => Shape::Halves,
        other => other,
    };
    if nodes >= 2 {
        match shape {
            Shape::Halves => {
                let (a, b) = order.split_at(nodes / 2);
                cut_both(&mut grudge, a, b);
            }
            Shape::Isolate => {
                let (a, b) = order.split_at(1);
                cut_both(&mut grudge, a, b);
            }
            Shape::Bridge => {
                let left = (nodes - 1) / 2;
                let a = &order[..left];
                let b = &order[left + 1..];
                cut_both(&mut grudge, a, b);
            }
            Shape::OneWay => {
                let (deaf, loud) = order.split_at(nodes / 2);
                for &x in deaf {
                    grudge[x].extend_from_slice(loud);
                }
            }
            Shape::Ring => {
                let majority = nodes / 2 + 1;
                // Each node sees itself and `reach` neighbours on each side
                // of a shuffled ring: at least a majority, never everybody.
                let reach = (majority - 1).div_ceil(2);
                for (p, &x) in order.iter().enumerate() {
                    for (q, &y) in order.iter().enumerate() {
                        let d = p.abs_diff(q).min(nodes - p.abs_diff(q));
                        if d > reach {
                            grudge[x].push(y);
                        }
                    }
                }
            }
        }
    }
    for g in &mut grudge {
        g.sort_unstable();
    }
    Fault::Partition { shape, grudge }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    fn hears(grudge: &[Vec<usize>], x: usize, y: usize) -> bool {
        !grudge[x].contains(&y)
    }

    fn grudge_of(f: &Fault) -> Vec<Vec<usize>> {
        match f {
            Fault::Partition { grudge, .. } => grudge.clone(),
            _ => panic!("not a partition"),
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let spec = Spec::parse("mixed").unwrap();
        let a = schedule(
            &spec,
            5,
            120_000,
            Timing::default(),
            &mut StdRng::seed_from_u64(7),
        );
        let b = schedule(
            &spec,
            5,
            120_000,
            Timing::default(),
            &mut StdRng::seed_from_u64(7),
        );
        let c = schedule(
            &spec,
            5,
            120_000,
            Timing::default(),
            &mut StdRng::seed_from_u64(8),
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_mixed_schedule_covers_every_category_and_ends_in_time() {
        let spec = Spec::parse("mixed").unwrap();
        for seed in 0..20 {
            let steps = schedule(
                &spec,
                5,
                120_000,
                Timing::default(),
                &mut StdRng::seed_from_u64(seed),
            );
            let mut kinds = BTreeSet::new();
            let mut t = 0;
            for s in &steps {
                assert!(s.start_ms >= t, "faults overlap: {steps:?}");
                t = s.start_ms + s.duration_ms;
                kinds.insert(match s.fault {
                    Fault::Partition { .. } => "partition",
                    Fault::Loss { .. } => "loss",
                    Fault::Kill { .. } => "kill",
                    Fault::Pause { .. } => "pause",
                });
            }
            assert!(t <= 120_000);
            assert_eq!(kinds.len(), 4, "seed {seed}: {steps:?}");
        }
    }

    #[test]
    fn kills_and_pauses_hit_a_minority() {
        let mut rng = StdRng::seed_from_u64(1);
        for nodes in [3, 5, 7] {
            for _ in 0..50 {
                let m = minority(nodes, &mut rng);
                assert!(
                    !m.is_empty() && m.len() < nodes.div_ceil(2),
                    "{nodes}: {m:?}"
                );
            }
        }
    }

    #[test]
    fn partition_shapes_cut_what_they_say() {
        let mut rng = StdRng::seed_from_u64(3);
        // Halves: symmetric, every node hears exactly its own side.
        let g = grudge_of(&partition(Shape::Halves, 5, &mut rng));
        let sides: BTreeSet<usize> = g.iter().map(Vec::len).collect();
        assert_eq!(sides, BTreeSet::from([2, 3]));
        for x in 0..5 {
            for y in 0..5 {
                assert_eq!(hears(&g, x, y), hears(&g, y, x));
            }
        }
        // Isolate: one node hears nobody, the others hear all but it.
        let g = grudge_of(&partition(Shape::Isolate, 5, &mut rng));
        assert_eq!(g.iter().filter(|d| d.len() == 4).count(), 1);
        assert_eq!(g.iter().filter(|d| d.len() == 1).count(), 4);
        // Bridge: one node hears everybody, and everybody hears it.
        let g = grudge_of(&partition(Shape::Bridge, 5, &mut rng));
        let bridge = (0..5).find(|&x| g[x].is_empty()).unwrap();
        assert!((0..5).all(|y| hears(&g, y, bridge)));
        assert_eq!(g.iter().filter(|d| d.len() == 2).count(), 4);
        // One-way: the deaf side drops the loud one, not the reverse.
        let g = grudge_of(&partition(Shape::OneWay, 5, &mut rng));
        let deaf: Vec<usize> = (0..5).filter(|&x| !g[x].is_empty()).collect();
        assert_eq!(deaf.len(), 2);
        for &x in &deaf {
            for &y in &g[x] {
                assert!(hears(&g, y, x), "one-way must stay one-way");
            }
        }
    }

    #[test]
    fn a_majorities_ring_gives_every_node_a_different_majority() {
        let mut rng = StdRng::seed_from_u64(4);
        for nodes in [4, 5, 7] {
            let g = grudge_of(&partition(Shape::Ring, nodes, &mut rng));
            let mut seen = BTreeSet::new();
            for x in 0..nodes {
                let visible: Vec<usize> = (0..nodes).filter(|&y| hears(&g, x, y)).collect();
                assert!(visible.len() > nodes / 2, "{nodes}: n{x} sees {visible:?}");
                assert!(visible.len() < nodes, "{nodes}: n{x} sees everybody");
                assert!(
                    seen.insert(visible),
                    "{nodes}: two nodes see the same majority"
                );
            }
        }
        // Three nodes cannot make a ring: isolate one instead.
        assert!(matches!(
            partition(Shape::Ring, 3, &mut rng),
            Fault::Partition {
                shape: Shape::Isolate,
                ..
            }
        ));
    }

    #[test]
    fn specs_parse_and_refuse_unknown_words() {
        assert!(Spec::parse("none").unwrap().is_none());
        let s = Spec::parse("partition,kill").unwrap();
        assert_eq!(s.categories, vec![Category::Partition, Category::Kill]);
        assert_eq!(s.shapes.len(), 5);
        let s = Spec::parse("ring,one-way,pause").unwrap();
        assert_eq!(s.shapes, vec![Shape::Ring, Shape::OneWay]);
        assert!(Spec::parse("earthquake").is_err());
    }
}
