//! The scale curve as a PNG: the operator's VmRSS (left axis) and its restart time to idle
//! (right axis) against the number of finished signals (log scale).
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context as _};
use plotters::prelude::*;

use crate::report::ScalePoint;

/// Where TrueType fonts usually are; the first one found is used for every label.
const FONT_DIRS: [&str; 3] = [
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "/usr/lib/fonts",
];
/// Preferred, when present: a plain sans-serif that Debian and Ubuntu ship by default.
const PREFERRED: &str = "DejaVuSans.ttf";

fn find_font() -> Option<PathBuf> {
    let mut found = Vec::new();
    let mut dirs: Vec<PathBuf> = FONT_DIRS.iter().map(PathBuf::from).collect();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("ttf")) {
                found.push(p);
            }
        }
    }
    found.sort();
    found
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == PREFERRED))
        .or_else(|| found.first())
        .cloned()
}

/// Registers a system font as plotters' "sans-serif" (once per process): the ab_glyph backend
/// has no font of its own.
fn register_font() -> anyhow::Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path = find_font().ok_or_else(|| {
            format!(
                "no TrueType font under {} (install fonts-dejavu-core)",
                FONT_DIRS.join(", ")
            )
        })?;
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // plotters keeps the font for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{} is not a usable font", path.display()))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Writes the plot of `curve` to `path` (PNG).
pub fn scale_curve(curve: &[ScalePoint], path: &Path) -> anyhow::Result<()> {
    if curve.is_empty() {
        bail!("the scale curve has no points");
    }
    register_font()?;
    draw(curve, path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

fn draw(curve: &[ScalePoint], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let xs: Vec<f64> = curve.iter().map(|p| p.finished as f64).collect();
    let (x_min, x_max) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
    let x_range = (x_min * 0.7)..(x_max * 1.4);
    let rss_max = curve.iter().map(|p| p.rss_mib).fold(64.0, f64::max) * 1.15;
    let idle_max = curve
        .iter()
        .map(|p| p.restart.idle_seconds)
        .fold(10.0, f64::max)
        * 1.15;

    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "signalman: memory and restart time against finished signals",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(x_range.clone().log_scale(), 0f64..rss_max)?
        .set_secondary_coord(x_range.log_scale(), 0f64..idle_max);
    chart
        .configure_mesh()
        .x_desc("finished signals (log scale)")
        .y_desc("VmRSS, MiB")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("restart: spawn → idle, s")
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;

    let rss: Vec<(f64, f64)> = curve
        .iter()
        .map(|p| (p.finished as f64, p.rss_mib))
        .collect();
    let idle: Vec<(f64, f64)> = curve
        .iter()
        .map(|p| (p.finished as f64, p.restart.idle_seconds))
        .collect();
    let blue = BLUE.stroke_width(3);
    let red = RED.stroke_width(3);
    chart
        .draw_series(LineSeries::new(rss.clone(), blue))?
        .label("VmRSS after restart (MiB, left)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], blue));
    chart.draw_series(
        rss.iter()
            .map(|&(x, y)| Circle::new((x, y), 5, BLUE.filled())),
    )?;
    chart
        .draw_secondary_series(LineSeries::new(idle.clone(), red))?
        .label("restart to idle (s, right)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], red));
    chart.draw_secondary_series(
        idle.iter()
            .map(|&(x, y)| TriangleMarker::new((x, y), 6, RED.filled())),
    )?;
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
