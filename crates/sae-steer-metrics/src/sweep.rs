//! Reports of a probe hyper-parameter sweep (reference facts section 7): `results.csv`,
//! `best.json` and `hparam-sweeps.png`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::files::{fmt_opt, write_atomic, write_csv};
use crate::python::python_float_repr;
use crate::segmentation::SegmentationScores;

/// Validation scores of one probe of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Where the probe was saved (reported in `best.json`).
    pub checkpoint: PathBuf,
    /// Pixel accuracy in percent (all pixels, label 0 included).
    pub acc: Option<f64>,
    /// Mean IoU as a fraction over classes with a non-empty union.
    pub mean_iou: Option<f64>,
    /// IoU as a fraction of classes `1..=N` in order (index 0 = class 1);
    /// `None` for an empty union.
    pub class_iou: Vec<Option<f64>>,
}

impl SweepRow {
    /// The row of one probe from its accumulated validation scores.
    pub fn from_scores(
        learning_rate: f64,
        weight_decay: f64,
        checkpoint: impl Into<PathBuf>,
        scores: &SegmentationScores,
    ) -> Self {
        Self {
            learning_rate,
            weight_decay,
            checkpoint: checkpoint.into(),
            acc: scores.pixel_accuracy(),
            mean_iou: scores.mean_iou(),
            class_iou: scores.ious(),
        }
    }
}

/// Column headers of `results.csv` before the per-class IoU columns.
pub const RESULTS_COLUMNS: [&str; 4] = ["learning_rate", "weight_decay", "acc", "mean_iou"];

/// Writes `results.csv`: `learning_rate, weight_decay, acc, mean_iou`, then
/// one IoU column per class named by `class_names` (classes `1..=N`, index 0
/// = class 1). Undefined values are written as `nan`. Every row must have
/// `class_names.len()` IoUs.
///
/// ```
/// use sae_steer_metrics::{write_results_csv, SegmentationScores, SweepRow};
/// let mut scores = SegmentationScores::new(3);
/// scores.add(&[1, 2, 0], &[1, 1, 0]).unwrap();
/// let row = SweepRow::from_scores(1e-3, 0.1, "probes/lr_0_001__wd_0_1", &scores);
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("results.csv");
/// write_results_csv(&path, &[row], &["wall".to_string(), "building".to_string()]).unwrap();
/// let text = std::fs::read_to_string(&path).unwrap();
/// assert!(text.starts_with("learning_rate,weight_decay,acc,mean_iou,wall,building\n0.001,0.1,"));
/// ```
pub fn write_results_csv(
    path: impl AsRef<Path>,
    rows: &[SweepRow],
    class_names: &[String],
) -> Result<()> {
    let path = path.as_ref();
    for row in rows {
        if row.class_iou.len() != class_names.len() {
            return Err(MetricsError::Length {
                what: format!(
                    "{}: class IoUs of the probe lr {} wd {} (one per class name)",
                    path.display(),
                    row.learning_rate,
                    row.weight_decay
                ),
                expected: class_names.len(),
                got: row.class_iou.len(),
            });
        }
    }
    write_csv(path, |w| {
        let header = RESULTS_COLUMNS
            .iter()
            .map(|s| s.to_string())
            .chain(class_names.iter().cloned());
        w.write_record(header)?;
        for row in rows {
            let fields = [
                // As Python's csv writes them (`3e-05`), so the files diff clean.
                python_float_repr(row.learning_rate),
                python_float_repr(row.weight_decay),
                fmt_opt(row.acc),
                fmt_opt(row.mean_iou),
            ]
            .into_iter()
            .chain(row.class_iou.iter().map(|&v| fmt_opt(v)));
            w.write_record(fields)?;
        }
        Ok(())
    })
}

/// The sweep's best probe by mean IoU, as written to `best.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestProbe {
    /// The probe's checkpoint.
    pub checkpoint: PathBuf,
    /// Its learning rate.
    pub learning_rate: f64,
    /// Its weight decay.
    pub weight_decay: f64,
    /// Its pixel accuracy in percent.
    pub acc: Option<f64>,
    /// Its mean IoU (fraction).
    pub mean_iou: f64,
}

impl BestProbe {
    /// Reads a `best.json` written by [`write_best_json`].
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| MetricsError::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| MetricsError::json(path, e))
    }
}

/// The row with the highest mean IoU (the first on ties); rows without a mean
/// IoU are never chosen. `None` if no row has one.
pub fn best_by_mean_iou(rows: &[SweepRow]) -> Option<BestProbe> {
    let mut best: Option<(&SweepRow, f64)> = None;
    for row in rows {
        if let Some(m) = row.mean_iou.filter(|m| !m.is_nan())
            && best.is_none_or(|(_, b)| m > b)
        {
            best = Some((row, m));
        }
    }
    best.map(|(row, mean_iou)| BestProbe {
        checkpoint: row.checkpoint.clone(),
        learning_rate: row.learning_rate,
        weight_decay: row.weight_decay,
        acc: row.acc,
        mean_iou,
    })
}

/// Writes `best` as pretty JSON (`best.json`):
/// `{"checkpoint", "learning_rate", "weight_decay", "acc", "mean_iou"}`.
pub fn write_best_json(path: impl AsRef<Path>, best: &BestProbe) -> Result<()> {
    let path = path.as_ref();
    let mut bytes = serde_json::to_vec_pretty(best).map_err(|e| MetricsError::json(path, e))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Pixel size `(width, height)` of `hparam-sweeps.png`.
pub const SWEEP_PLOT_SIZE: (u32, u32) = (1400, 1000);

const FONT_FAMILY: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans-Latin1.ttf");

/// plotters' ab_glyph text backend draws only registered fonts; ours is
/// embedded so no system font library is ever needed.
fn register_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font did not load".into())
    }
}

/// Colours of the groups in one panel (tableau10: distinct, print-friendly).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Distinct values, sorted ascending (NaN, an unknown hyper-parameter,
/// counts as one value and sorts last).
fn distinct_sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut out: Vec<f64> = values
        .map(|v| if v.is_nan() { f64::NAN } else { v })
        .collect();
    out.sort_by(f64::total_cmp);
    out.dedup_by(|a, b| a.total_cmp(b).is_eq());
    out
}

/// One panel's data: points `(x, y, group)` and the x axis's ticks.
struct Panel<'a> {
    x_name: &'a str,
    ticks: Vec<AxisTick>,
    y_name: &'a str,
    y_decimals: usize,
    group_name: &'a str,
    groups: Vec<f64>,
    points: Vec<(f64, f64, usize)>,
    hidden: usize,
}

/// Draws `hparam-sweeps.png`: a 2x2 grid of scatter plots, rows = pixel
/// accuracy (%) and mean IoU, columns = learning rate and weight decay on log
/// x axes ticked and labelled at exactly the values swept
/// ([`log_axis_ticks`]; labels that would overlap go a row lower,
/// [`label_rows`]); points of one panel are coloured by the other
/// hyper-parameter.
/// Image size [`SWEEP_PLOT_SIZE`]. Rows with a missing score, or a
/// hyper-parameter `<= 0` (no place on a log axis), are left out of that panel,
/// which says how many it left out.
pub fn plot_hparam_sweeps(path: impl AsRef<Path>, rows: &[SweepRow]) -> Result<()> {
    let path = path.as_ref();
    register_font().map_err(|e| MetricsError::plot(path, e))?;
    let (width, height) = SWEEP_PLOT_SIZE;
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    draw_sweeps(&mut buffer, rows).map_err(|e| MetricsError::plot(path, e))?;

    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let encoded = encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(&buffer).and_then(|_| w.finish()));
    encoded.map_err(|e| MetricsError::plot(path, e))?;
    write_atomic(path, &png_bytes)
}

type Metric = fn(&SweepRow) -> Option<f64>;
type Param = fn(&SweepRow) -> f64;

fn draw_sweeps(buffer: &mut [u8], rows: &[SweepRow]) -> std::result::Result<(), String> {
    let root = BitMapBackend::with_buffer(buffer, SWEEP_PLOT_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let metrics: [(&str, usize, Metric); 2] = [
        ("pixel accuracy (%)", 1, |r| r.acc),
        ("mean IoU", 3, |r| r.mean_iou),
    ];
    let params: [(&str, Param, &str, Param); 2] = [
        (
            "learning rate",
            |r| r.learning_rate,
            "weight decay",
            |r| r.weight_decay,
        ),
        (
            "weight decay",
            |r| r.weight_decay,
            "learning rate",
            |r| r.learning_rate,
        ),
    ];
    let areas = root.split_evenly((2, 2));
    for (i, area) in areas.iter().enumerate() {
        let (y_name, y_decimals, metric) = metrics[i / 2];
        let (x_name, param, group_name, group) = params[i % 2];
        let groups = distinct_sorted(rows.iter().map(group));
        // Every value swept gets its tick, shown points or not.
        let ticks = log_axis_ticks(rows.iter().map(param));
        let mut points = Vec::new();
        let mut hidden = 0;
        for row in rows {
            match metric(row) {
                Some(y) if y.is_finite() && param(row) > 0.0 && param(row).is_finite() => {
                    let key = group(row);
                    let g = groups
                        .iter()
                        .position(|v| v.total_cmp(&key).is_eq() || (v.is_nan() && key.is_nan()))
                        .unwrap_or(0);
                    points.push((param(row), y, g));
                }
                _ => hidden += 1,
            }
        }
        let panel = Panel {
            x_name,
            ticks,
            y_name,
            y_decimals,
            group_name,
            groups,
            points,
            hidden,
        };
        draw_panel(area, &panel).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel<'_>,
) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // The legend gets its own strip on the right so it never hides a point.
    let legend_width = 120;
    let (chart_area, legend_area) =
        area.split_horizontally(area.dim_in_pixel().0.saturating_sub(legend_width));
    let (x_lo, x_hi) = log_range(panel.ticks.iter().map(|t| t.value));
    let (y_lo, y_hi) = linear_range(panel.points.iter().map(|p| p.1));
    let mut caption = format!("{} vs {}", panel.y_name, panel.x_name);
    if panel.hidden > 0 {
        caption.push_str(&format!(" ({} not shown)", panel.hidden));
    }

    // The x labels are the values swept, drawn here rather than by the mesh
    // (which draws one row): where two would overlap, the later one goes a
    // row lower. The plotting area spans `MARGIN + Y_LABEL_AREA` to
    // `width - MARGIN` of the chart area whatever the label area's height,
    // so the ticks' pixels are known before the chart is built: plotters'
    // own mapping of the log axis over that span.
    const MARGIN: i32 = 12;
    const Y_LABEL_AREA: i32 = 70;
    const LABEL_GAP: i32 = 8;
    const ROW_HEIGHT: i32 = 18;
    let label_style: TextStyle = (FONT_FAMILY, 15).into();
    let x_axis: LogCoord<f64> = (x_lo..x_hi).log_scale().into();
    let span = (
        MARGIN + Y_LABEL_AREA,
        chart_area.dim_in_pixel().0 as i32 - MARGIN,
    );
    let mut labels = Vec::with_capacity(panel.ticks.len());
    for tick in &panel.ticks {
        let (width, _) = chart_area.estimate_text_size(&tick.label, &label_style)?;
        labels.push((x_axis.map(&tick.value, span), width));
    }
    let rows = label_rows(&labels, LABEL_GAP);
    let n_rows = rows.iter().max().map_or(1, |r| r + 1) as i32;

    let x_spec = (x_lo..x_hi)
        .log_scale()
        .with_key_points(panel.ticks.iter().map(|t| t.value).collect());
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(caption, (FONT_FAMILY, 22))
        .margin(MARGIN)
        .x_label_area_size(27 + ROW_HEIGHT * n_rows)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x_spec, y_lo..y_hi)?;
    let y_decimals = panel.y_decimals;
    chart
        .configure_mesh()
        .x_desc(panel.x_name)
        .y_desc(panel.y_name)
        // Tick marks and grid lines at the values swept; their labels below.
        .x_label_formatter(&|_| String::new())
        .y_label_formatter(&|v| format!("{v:.y_decimals$}"))
        .label_style((FONT_FAMILY, 15))
        .axis_desc_style((FONT_FAMILY, 17))
        .light_line_style(BLACK.mix(0.04))
        .draw()?;
    let base = chart_area.get_base_pixel();
    let axis_y = chart.plotting_area().get_pixel_range().1.end - base.1;
    let centered = label_style.pos(Pos::new(HPos::Center, VPos::Top));
    for ((tick, (x, _)), row) in panel.ticks.iter().zip(&labels).zip(&rows) {
        let y = axis_y + 10 + ROW_HEIGHT * *row as i32;
        chart_area.draw_text(&tick.label, &centered, (*x, y))?;
    }
    for (g, _) in panel.groups.iter().enumerate() {
        let color = PALETTE[g % PALETTE.len()];
        let series = panel
            .points
            .iter()
            .filter(|p| p.2 == g)
            .map(|&(x, y, _)| Circle::new((x, y), 6, color.filled()));
        chart.draw_series(series)?;
    }

    let text = |s: String, x: i32, y: i32| Text::new(s, (x, y), (FONT_FAMILY, 15));
    let top = 60;
    legend_area.draw(&text(panel.group_name.to_string(), 4, top))?;
    for (g, value) in panel.groups.iter().enumerate() {
        let color = PALETTE[g % PALETTE.len()];
        let y = top + 26 + 22 * g as i32;
        legend_area.draw(&Circle::new((12, y + 8), 6, color.filled()))?;
        legend_area.draw(&text(format_param(*value), 26, y))?;
    }
    Ok(())
}

/// A labelled tick of a hyper-parameter axis of `hparam-sweeps.png`.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisTick {
    /// A value swept.
    pub value: f64,
    /// Its label, compact: `1e-4`, `3e-3`, `2.5e-4`.
    pub label: String,
}

/// The ticks of a log hyper-parameter axis: exactly the distinct values
/// swept that a log axis can place (finite and > 0), ascending, one tick
/// each, labelled compactly in the shortest digits that read back as the
/// value (`3e-5`, `1e-3`, `2.5e-4`), so two values never share a label. No
/// other ticks: plotters' own for a log axis (`4e-2`, `5e-2`, ... in one
/// run of text) overlapped and could miss a value swept.
///
/// ```
/// use sae_steer_metrics::sweep::log_axis_ticks;
/// let labels: Vec<String> = log_axis_ticks([1e-3, 3e-4, 1e-3, 0.0, f64::NAN])
///     .into_iter()
///     .map(|t| t.label)
///     .collect();
/// assert_eq!(labels, ["3e-4", "1e-3"]);
/// ```
pub fn log_axis_ticks(values: impl IntoIterator<Item = f64>) -> Vec<AxisTick> {
    distinct_sorted(values.into_iter().filter(|v| v.is_finite() && *v > 0.0))
        .into_iter()
        .map(|value| AxisTick {
            value,
            label: format_param(value),
        })
        .collect()
}

/// Rows for axis labels so that none overlaps another: label `i` is centred
/// at pixel `spans[i].0` and `spans[i].1` pixels wide, the labels in
/// ascending order of centre. Each goes to the first row (0 = next to the
/// axis) where it starts at least `gap` pixels after the last label there
/// ends; labels that fit side by side all get row 0.
///
/// ```
/// use sae_steer_metrics::sweep::label_rows;
/// // Two labels 30 px wide, 20 px apart, then one far away.
/// assert_eq!(label_rows(&[(100, 30), (120, 30), (300, 30)], 8), [0, 1, 0]);
/// ```
pub fn label_rows(spans: &[(i32, u32)], gap: i32) -> Vec<usize> {
    // The right edge of the last label in each row.
    let mut ends: Vec<i32> = Vec::new();
    spans
        .iter()
        .map(|&(centre, width)| {
            let left = centre - width as i32 / 2;
            let right = left + width as i32;
            let row = ends
                .iter()
                .position(|&end| left >= end + gap)
                .unwrap_or(ends.len());
            match ends.get_mut(row) {
                Some(end) => *end = right,
                None => ends.push(right),
            }
            row
        })
        .collect()
}

/// Hyper-parameters as the sweep writes them: `3e-5`, `1e-1`, `0`.
fn format_param(value: f64) -> String {
    if value == 0.0 {
        "0".to_string()
    } else {
        format!("{value:e}")
    }
}

/// A log-axis range around the values with some room on both sides.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (1e-6, 1.0);
    }
    (lo / 2.0, hi * 2.0)
}

/// A linear-axis range around the values with 8% room on both sides.
fn linear_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.08
    } else {
        lo.abs().max(1e-3) * 0.05
    };
    (lo - pad, hi + pad)
}
