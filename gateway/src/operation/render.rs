//! The operation report as people read it: HTML with its charts as inline SVG (drawn by
//! plotters; nothing to run to read it), from a minijinja template; PDF from that HTML through
//! Chromium's headless print.

use std::path::{Path, PathBuf};
use std::process::Command;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::OperationReport;

const TEMPLATE: &str = include_str!("report.html");

const GREEN: RGBColor = RGBColor(0x1d, 0x6b, 0x36);
const AMBER: RGBColor = RGBColor(0xc2, 0x7c, 0x0e);
const RED: RGBColor = RGBColor(0xa3, 0x24, 0x24);
const BLUE: RGBColor = RGBColor(0x0b, 0x5c, 0xad);
const GREY: RGBColor = RGBColor(0x8a, 0x94, 0xa3);

/// A chart's SVG, or where drawing it failed, a note in its place (and the failure in the log).
fn finished(caption: &str, drawn: Result<String, Box<dyn std::error::Error + '_>>) -> String {
    drawn.unwrap_or_else(|e| {
        tracing::warn!(chart = caption, error = %e, "a chart of the operation report was not drawn");
        "<p>(chart not drawn)</p>".to_owned()
    })
}

/// One series of a bar chart: its name, colour and a value per category.
struct Series<'a> {
    name: &'a str,
    color: RGBColor,
    values: Vec<f64>,
}

/// A horizontal bar chart, one bar per category, the series stacked, as SVG; the axis runs to
/// `top` when given, else a little past the longest bar.
fn bars(caption: &str, categories: &[String], series: &[Series<'_>], unit: &str, top: Option<f64>) -> String {
    let mut svg = String::new();
    if categories.is_empty() {
        return svg;
    }
    let totals: Vec<f64> = (0..categories.len()).map(|i| series.iter().map(|s| s.values[i]).sum()).collect();
    let max = top.unwrap_or_else(|| totals.iter().copied().fold(0.0, f64::max).max(1.0) * 1.08);
    // Chinese names are about twice as wide as Latin ones.
    let label = categories.iter().map(|c| c.chars().map(|ch| if ch.is_ascii() { 7 } else { 14 }).sum::<u32>()).max();
    let height = 70 + 34 * categories.len() as u32 + if series.len() > 1 { 24 } else { 0 };
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (760, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(label.unwrap_or(40).clamp(40, 300) + 12)
            .build_cartesian_2d(0.0..max, (0..categories.len()).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(categories.len())
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => categories.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc(unit)
            .label_style(("sans-serif", 12))
            .draw()?;
        let mut base = vec![0.0; categories.len()];
        for s in series {
            let color = s.color;
            let rectangles: Vec<Rectangle<(f64, SegmentValue<usize>)>> = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| **v > 0.0)
                .map(|(i, v)| {
                    let from = base[i];
                    base[i] += v;
                    let mut bar = Rectangle::new(
                        [(from, SegmentValue::Exact(i)), (from + v, SegmentValue::Exact(i + 1))],
                        color.filled(),
                    );
                    bar.set_margin(5, 5, 0, 0);
                    bar
                })
                .collect();
            let drawn = chart.draw_series(rectangles)?;
            if series.len() > 1 {
                drawn.label(s.name).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
            }
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(GREY)
                .label_font(("sans-serif", 12))
                .draw()?;
        }
        root.present()?;
        Ok(())
    })();
    finished(caption, drawn.map(|()| svg))
}

/// A column chart of one series over `labels` (the hours of a day, say), as SVG.
fn columns(caption: &str, labels: &[String], values: &[f64], unit: &str) -> String {
    let mut svg = String::new();
    let max = values.iter().copied().fold(0.0, f64::max).max(1.0) * 1.1;
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d((0..labels.len()).into_segmented(), 0.0..max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) if i % 3 == 0 => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(unit)
            .label_style(("sans-serif", 12))
            .draw()?;
        chart.draw_series(values.iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(i, v)| {
            let mut bar =
                Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)], BLUE.filled());
            bar.set_margin(0, 0, 3, 3);
            bar
        }))?;
        root.present()?;
        Ok(())
    })();
    finished(caption, drawn.map(|()| svg))
}

/// The report's charts, by name.
fn charts(report: &OperationReport) -> Vec<(&'static str, String)> {
    let catalog = &report.catalog.by_owner;
    let catalog_chart = bars(
        "Datasets by owner and open type · 各部门数据集",
        &catalog.iter().map(|o| o.owner.clone()).collect::<Vec<_>>(),
        &[
            Series {
                name: "unconditional",
                color: GREEN,
                values: catalog.iter().map(|o| o.unconditional as f64).collect(),
            },
            Series {
                name: "conditional",
                color: AMBER,
                values: catalog.iter().map(|o| o.conditional as f64).collect(),
            },
            Series { name: "non-open", color: GREY, values: catalog.iter().map(|o| o.non_open as f64).collect() },
        ],
        "datasets",
        None,
    );
    let fresh = &report.quality.freshness;
    let freshness_chart = bars(
        "Updated within the declared frequency · 按时更新",
        &fresh.iter().map(|o| o.owner.clone()).collect::<Vec<_>>(),
        &[Series { name: "up to date", color: GREEN, values: fresh.iter().map(|o| o.percent).collect() }],
        "% of datasets",
        Some(100.0),
    );
    let apps = &report.applications.by_owner;
    let applications_chart = bars(
        "Applications by owner · 申请答复",
        &apps.iter().map(|o| o.owner.clone()).collect::<Vec<_>>(),
        &[
            Series {
                name: "answered in time",
                color: GREEN,
                values: apps.iter().map(|o| o.decided_in_time as f64).collect(),
            },
            Series {
                name: "answered late",
                color: AMBER,
                values: apps.iter().map(|o| o.decided_late as f64).collect(),
            },
            Series { name: "overdue", color: RED, values: apps.iter().map(|o| o.overdue as f64).collect() },
            Series {
                name: "pending, not yet due",
                color: GREY,
                values: apps.iter().map(|o| (o.pending - o.overdue) as f64).collect(),
            },
        ],
        "applications",
        None,
    );
    let hours: Vec<String> = (0..24).map(|h| format!("{h:02}:00")).collect();
    let by_hour: Vec<f64> = report.traffic.by_hour.iter().map(|n| *n as f64).collect();
    let hours_chart = columns("Data calls by hour of the day · 按时段", &hours, &by_hour, "calls");
    let busiest = &report.traffic.by_dataset;
    let top = |f: fn(&super::DatasetTraffic) -> u64| busiest.iter().take(12).map(|d| f(d) as f64).collect::<Vec<_>>();
    let traffic_chart = bars(
        "Data calls by dataset · 各数据集调用",
        &busiest.iter().take(12).map(|d| d.dataset.clone()).collect::<Vec<_>>(),
        &[
            Series { name: "answered", color: BLUE, values: top(|d| d.calls - d.refused - d.failed) },
            Series { name: "refused (4xx)", color: AMBER, values: top(|d| d.refused) },
            Series { name: "failed (5xx)", color: RED, values: top(|d| d.failed) },
        ],
        "calls",
        None,
    );
    let used = &report.conditional_use.by_dataset;
    let use_chart = bars(
        "Conditional calls by dataset · 有条件开放数据使用",
        &used.iter().take(12).map(|d| d.dataset.clone()).collect::<Vec<_>>(),
        &[
            Series { name: "served", color: BLUE, values: used.iter().take(12).map(|d| d.calls as f64).collect() },
            Series { name: "refused", color: RED, values: used.iter().take(12).map(|d| d.refused as f64).collect() },
        ],
        "calls",
        None,
    );
    vec![
        ("catalog", catalog_chart),
        ("freshness", freshness_chart),
        ("applications", applications_chart),
        ("hours", hours_chart),
        ("traffic", traffic_chart),
        ("use", use_chart),
    ]
}

/// The report as one HTML document, charts inline.
pub fn html(report: &OperationReport) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.add_template("report.html", TEMPLATE).map_err(|e| format!("the report's template: {e}"))?;
    let charts: std::collections::BTreeMap<&str, minijinja::Value> =
        charts(report).into_iter().map(|(name, svg)| (name, minijinja::Value::from_safe_string(svg))).collect();
    let template = env.get_template("report.html").map_err(|e| format!("the report's template: {e}"))?;
    template
        .render(minijinja::context! { report => report, charts => charts })
        .map_err(|e| format!("the report's template: {e}"))
}

/// Chromium, where it is installed.
fn chromium() -> Option<PathBuf> {
    let names = ["chromium", "chromium-browser", "google-chrome"];
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// The report's HTML printed to PDF by headless Chromium.
pub fn pdf(html: &str) -> Result<Vec<u8>, String> {
    let Some(chromium) = chromium() else {
        return Err("a PDF is printed by Chromium, which is not installed here (Debian: `apt install chromium`); \
                    ask for the HTML (`--format html`) and print it from a browser"
            .into());
    };
    let dir = std::env::temp_dir().join(format!("kaifang-report-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let printed = print(&chromium, &dir, html);
    let _ = std::fs::remove_dir_all(&dir);
    printed
}

fn print(chromium: &Path, dir: &Path, html: &str) -> Result<Vec<u8>, String> {
    let page = dir.join("report.html");
    let out = dir.join("report.pdf");
    std::fs::write(&page, html).map_err(|e| format!("{}: {e}", page.display()))?;
    let run = Command::new(chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer", "--no-first-run"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--print-to-pdf={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .map_err(|e| format!("{}: {e}", chromium.display()))?;
    match std::fs::read(&out) {
        Ok(pdf) if pdf.starts_with(b"%PDF") => Ok(pdf),
        _ => Err(format!(
            "Chromium did not print the report ({}): {}",
            run.status,
            String::from_utf8_lossy(&run.stderr).lines().last().unwrap_or("")
        )),
    }
}
