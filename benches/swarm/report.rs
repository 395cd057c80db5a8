//! What a run prints and writes: JSON, a markdown table and a PNG plot.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::runs::{Baseline, Loopback, Swarm};

/// One N: both ways of getting the image to every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Row {
    pub(crate) nodes: usize,
    /// `None` with `--skip-baseline` (profiling runs).
    pub(crate) baseline: Option<Baseline>,
    pub(crate) blobswarm: Swarm,
}

/// A pass/fail check of the run, printed and stored with the numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) date: String,
    pub(crate) machine: String,
    /// `git describe --always --dirty` of the tree the binary was built from.
    #[serde(default)]
    pub(crate) revision: String,
    pub(crate) smoke: bool,
    pub(crate) rate: String,
    pub(crate) rate_bytes_per_sec: f64,
    /// The registry link's rate (`None` in runs before `--registry-rate`: `rate`).
    #[serde(default)]
    pub(crate) registry_rate: Option<String>,
    #[serde(default)]
    pub(crate) registry_rate_bytes_per_sec: Option<f64>,
    pub(crate) latency_note: String,
    pub(crate) image_bytes: u64,
    pub(crate) sha256_single_core_bytes_per_sec: f64,
    pub(crate) rows: Vec<Row>,
    pub(crate) loopback: Option<Loopback>,
    /// Loopback throughput ÷ single-core SHA-256 rate (goal ≥ 0.7).
    pub(crate) loopback_vs_sha256: Option<f64>,
    pub(crate) checks: Vec<Check>,
    pub(crate) wall_secs: f64,
}

const MIB: f64 = 1048576.0;

fn ratio(bytes: u64, image: u64) -> f64 {
    bytes as f64 / image as f64
}

/// Chunk size of the agents (the default; the bench does not change it).
const CHUNK: f64 = 4.0 * MIB;
const GIB: f64 = 1024.0 * MIB;

/// The markdown table's header.
const TABLE_HEAD: &str = "| N | baseline: time to all | blobswarm: time to all p50 / p99 / max | of which seeder ingest | first peer byte | time to all ÷ max(registry read, swarm bound) | ÷ swarm bound: time to all / from first peer byte | speed-up | registry egress baseline | registry egress blobswarm | seeder upload ÷ image | agent CPU s mean / max | agent CPU s per GiB received | agent max RSS |\n\
     |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// Agent CPU seconds per GiB of chunk bytes received, all agents together (the image
/// for an agent whose fetched bytes are unknown: killed, or an older results.json).
fn cpu_per_gib(w: &Swarm, image: u64) -> f64 {
    let cpu: f64 = w.agents.iter().map(|u| u.cpu_secs).sum();
    let received: u64 = (0..w.agents.len())
        .map(|i| {
            w.agent_fetched_bytes
                .get(i)
                .copied()
                .flatten()
                .unwrap_or(image)
        })
        .sum();
    cpu / (received as f64 / GIB)
}

impl Results {
    /// Seconds the seeder's read of the image takes at least: the image over the slower
    /// of the registry's link and the seeder's.
    pub(crate) fn registry_read_secs(&self) -> f64 {
        let registry = self
            .registry_rate_bytes_per_sec
            .unwrap_or(self.rate_bytes_per_sec);
        self.image_bytes as f64 / registry.min(self.rate_bytes_per_sec)
    }

    /// The swarm's lower bound, as the simulator's (no latency here): the image over one
    /// link plus one chunk's pipeline delay. No agent can receive the image faster.
    pub(crate) fn swarm_bound_secs(&self) -> f64 {
        (self.image_bytes as f64 + CHUNK) / self.rate_bytes_per_sec
    }

    /// One row of the markdown table.
    fn markdown_row(&self, r: &Row) -> String {
        let img = self.image_bytes;
        let (b, w) = (&r.baseline, &r.blobswarm);
        let cpu: Vec<f64> = w.agents.iter().map(|u| u.cpu_secs).collect();
        let mean = cpu.iter().sum::<f64>() / cpu.len().max(1) as f64;
        let max_cpu = cpu.iter().copied().fold(0.0, f64::max);
        let rss = w.agents.iter().map(|u| u.max_rss_bytes).max().unwrap_or(0);
        let (base_time, speed_up, base_egress) = match b {
            Some(b) => (
                format!("{:.1} s", b.time_to_all_secs),
                format!("{:.1}×", b.time_to_all_secs / w.max_secs),
                format!(
                    "{:.2}× (body {:.2}×)",
                    ratio(b.registry.wire_bytes, img),
                    ratio(b.registry.http_bytes, img)
                ),
            ),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let first = w
            .first_peer_byte_secs
            .map_or_else(|| "—".into(), |t| format!("{t:.2} s"));
        let bound = self.swarm_bound_secs();
        let over_read = w.max_secs / self.registry_read_secs().max(bound);
        // The swarm's own part, as the comparison with other peer-to-peer tools needs it.
        let swarm_part = w.first_peer_byte_secs.map_or_else(
            || "—".into(),
            |t| format!("{:.2}", (w.max_secs - t) / bound),
        );
        format!(
            "| {} | {base_time} | {:.1} / {:.1} / {:.1} s | {:.1} s | {first} | {over_read:.2} | {:.2} / {swarm_part} | {speed_up} | {base_egress} | {:.2}× (body {:.2}×) | {:.2}× | {:.1} / {:.1} | {:.1} | {:.0} MiB |\n",
            r.nodes,
            w.p50_secs,
            w.p99_secs,
            w.max_secs,
            w.release_secs,
            w.max_secs / bound,
            ratio(w.registry.wire_bytes, img),
            ratio(w.registry.http_bytes, img),
            ratio(w.seeder_upload_bytes, img),
            mean,
            max_cpu,
            cpu_per_gib(w, img),
            rss as f64 / MIB,
        )
    }

    /// The markdown table and the lines under it.
    pub(crate) fn markdown(&self) -> String {
        let mut s = format!(
            "Image {:.0} MiB; every link {} each way, the registry's {} (tc tbf; {}); 4 MiB chunks; {}; {}; revision {}.\n\n",
            self.image_bytes as f64 / MIB,
            self.rate,
            self.registry_rate.as_deref().unwrap_or(&self.rate),
            self.latency_note,
            self.machine,
            self.date,
            self.revision
        );
        s.push_str(TABLE_HEAD);
        for r in &self.rows {
            s.push_str(&self.markdown_row(r));
        }
        s.push_str(&format!(
            "\nRegistry read (image ÷ the slower of the registry's and the seeder's link): {:.1} s. Swarm bound (image + one chunk, ÷ link): {:.1} s. First peer byte: chunk bytes flowing into any agent, from the links' counters.\n",
            self.registry_read_secs(),
            self.swarm_bound_secs()
        ));
        s.push_str(&format!(
            "\nSingle-core SHA-256 (sha2, this CPU): {:.0} MiB/s.\n",
            self.sha256_single_core_bytes_per_sec / MIB
        ));
        if let (Some(l), Some(q)) = (&self.loopback, self.loopback_vs_sha256) {
            s.push_str(&format!(
                "2-peer loopback (seeder → 1 agent, 127.0.0.1, unshaped), {:.1} GiB image: {:.0} MiB/s = {:.2}× single-core SHA-256 (goal ≥ 0.7); agent max RSS {:.0} MiB (goal ≤ 64 MiB), agent CPU {:.1} s; seeder ingest {:.1} s.\n",
                l.image_bytes as f64 / MIB / 1024.0,
                l.throughput_bytes_per_sec / MIB,
                q,
                l.agent.max_rss_bytes as f64 / MIB,
                l.agent.cpu_secs,
                l.seeder_ingest_secs,
            ));
        }
        s.push('\n');
        for c in &self.checks {
            let mark = if c.ok { "ok" } else { "FAILED" };
            s.push_str(&format!("- check {mark}: {} ({})\n", c.name, c.detail));
        }
        s
    }

    /// The smallest and largest log2(N) of the rows.
    fn log2_nodes_range(&self) -> (f64, f64) {
        let log2 = self.rows.iter().map(|r| (r.nodes as f64).log2());
        let lo = log2.clone().fold(f64::MAX, f64::min);
        let hi = log2.fold(f64::MIN, f64::max);
        (lo, hi)
    }

    /// The longest time to all of any row (at least 1 s).
    fn max_secs(&self) -> f64 {
        self.rows
            .iter()
            .map(|r| {
                r.baseline
                    .as_ref()
                    .map_or(0.0, |b| b.time_to_all_secs)
                    .max(r.blobswarm.max_secs)
            })
            .fold(1.0, f64::max)
    }

    /// Time to all vs N for both, as a PNG.
    pub(crate) fn plot(&self, path: &Path) -> anyhow::Result<()> {
        let root = BitMapBackend::new(path, (1000, 620)).into_drawing_area();
        root.fill(&WHITE)?;
        // x is log2(N), so 4, 8, 16, 32 are evenly spaced; only whole powers get labels.
        let log2 = |n: usize| (n as f64).log2();
        let (lo, hi) = self.log2_nodes_range();
        let max_y = self.max_secs() * 1.1;
        let caption = format!(
            "Time until every node has the image ({:.0} MiB, {} links, no added latency)",
            self.image_bytes as f64 / MIB,
            self.rate
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 22))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((lo - 0.4)..(hi + 0.4), 0f64..max_y)?;
        chart
            .configure_mesh()
            .x_desc("nodes (N), log scale")
            .y_desc("seconds")
            .x_labels(((hi - lo) * 4.0) as usize + 3)
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{:.0}", v.round().exp2())
                } else {
                    String::new()
                }
            })
            .light_line_style(WHITE)
            .label_style(("sans-serif", 16))
            .draw()?;
        for (label, color, width, values, value) in series() {
            let points: Vec<(f64, f64)> = self
                .rows
                .iter()
                .filter_map(|r| Some((log2(r.nodes), value(r)?)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(width)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
                });
            chart.draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, width.max(5), color.filled())),
            )?;
            if values {
                chart.draw_series(points.iter().map(|&(x, y)| {
                    Text::new(
                        format!("{y:.0} s"),
                        (x + 0.05, y + max_y * 0.02),
                        ("sans-serif", 15).into_font().color(&color),
                    )
                }))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        root.present()
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// How one series reads its value from a row.
type Value = Box<dyn Fn(&Row) -> Option<f64>>;

/// The plotted series: label, colour, line width, whether points are labelled with
/// their value, and the value. The median is drawn wide and light under the max, so
/// both show where they meet.
fn series() -> [(&'static str, RGBColor, u32, bool, Value); 3] {
    [
        (
            "blobswarm: median agent done",
            RGBColor(150, 190, 245),
            8,
            false,
            Box::new(|r: &Row| Some(r.blobswarm.p50_secs)),
        ),
        (
            "baseline: N direct pulls, last done",
            RGBColor(200, 40, 40),
            3,
            true,
            Box::new(|r: &Row| r.baseline.as_ref().map(|b| b.time_to_all_secs)),
        ),
        (
            "blobswarm: seeder + N agents, last done",
            RGBColor(20, 70, 180),
            3,
            true,
            Box::new(|r: &Row| Some(r.blobswarm.max_secs)),
        ),
    ]
}

/// Registers the TrueType font plotters draws its text with (no fontconfig involved).
pub(crate) fn load_font() -> anyhow::Result<()> {
    const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    let bytes = std::fs::read(FONT).with_context(|| {
        format!("reading {FONT} for the plot's text (apt-get install fonts-dejavu-core)")
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))
}
