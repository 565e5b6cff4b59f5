//! Probe-sweep reports: results.csv, best.json, hparam-sweeps.png.

use std::path::PathBuf;

use sae_steer_metrics::sweep::{SWEEP_PLOT_SIZE, label_rows, log_axis_ticks};
use sae_steer_metrics::{
    BestProbe, SegmentationScores, SweepRow, best_by_mean_iou, plot_hparam_sweeps, write_best_json,
    write_results_csv,
};

/// The reference's 6 x 3 grid with made-up scores.
fn sweep_rows() -> Vec<SweepRow> {
    let mut rows = Vec::new();
    for (i, lr) in [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2].into_iter().enumerate() {
        for (k, wd) in [1e-1, 1e-3, 1e-5].into_iter().enumerate() {
            let q = 1.0 - ((i as f64 - 3.2).powi(2) / 12.0) - k as f64 * 0.01;
            rows.push(SweepRow {
                learning_rate: lr,
                weight_decay: wd,
                checkpoint: PathBuf::from(format!("probes/lr{i}_wd{k}")),
                acc: Some(60.0 + 15.0 * q),
                mean_iou: Some(0.2 + 0.15 * q),
                class_iou: vec![Some(0.5), None, Some(0.1 * q)],
            });
        }
    }
    rows
}

fn names() -> Vec<String> {
    ["wall", "building, edifice", "sky"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn results_csv_has_reference_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("results.csv");
    let rows = sweep_rows();
    write_results_csv(&path, &rows, &names()).unwrap();
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "learning_rate",
            "weight_decay",
            "acc",
            "mean_iou",
            "wall",
            "building, edifice",
            "sky"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 18);
    let first = &records[0];
    // Spelled as Python's csv module writes floats (repr).
    assert_eq!((&first[0], &first[1]), ("3e-05", "0.1"));
    assert_eq!((&records[2][0], &records[2][1]), ("3e-05", "1e-05"));
    assert_eq!(&records[3][0], "0.0001");
    assert_eq!(first[2].parse::<f64>().unwrap(), rows[0].acc.unwrap());
    assert_eq!(first[3].parse::<f64>().unwrap(), rows[0].mean_iou.unwrap());
    assert_eq!(&first[5], "nan");
    // Wrong number of class IoUs for the names: an error naming the file.
    let err = write_results_csv(&path, &rows, &names()[..2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("results.csv"), "{err}");
}

#[test]
fn row_from_scores() {
    let mut scores = SegmentationScores::new(4);
    scores.add(&[1, 1, 2, 0], &[1, 2, 2, 0]).unwrap();
    let row = SweepRow::from_scores(1e-3, 1e-5, "x", &scores);
    assert_eq!(row.acc, Some(75.0));
    assert_eq!(row.class_iou, vec![Some(0.5), Some(0.5), None]);
    assert_eq!(row.mean_iou, Some(0.5));
}

#[test]
fn best_is_highest_mean_iou_first_on_ties() {
    let mut rows = sweep_rows();
    let best = best_by_mean_iou(&rows).unwrap();
    let max = rows
        .iter()
        .map(|r| r.mean_iou.unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(best.mean_iou, max);
    // lr index 3 (1e-3) is the peak of the made-up curve, wd 1e-1 the best decay.
    assert_eq!((best.learning_rate, best.weight_decay), (1e-3, 1e-1));
    assert_eq!(best.checkpoint, PathBuf::from("probes/lr3_wd0"));

    rows[0].mean_iou = Some(max);
    assert_eq!(
        best_by_mean_iou(&rows).unwrap().checkpoint,
        PathBuf::from("probes/lr0_wd0")
    );
    rows[0].mean_iou = Some(f64::NAN);
    rows[1].mean_iou = None;
    assert_eq!(
        best_by_mean_iou(&rows).unwrap().checkpoint,
        PathBuf::from("probes/lr3_wd0")
    );
    assert_eq!(best_by_mean_iou(&rows[..2]), None);
}

#[test]
fn best_json_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/best.json");
    let best = best_by_mean_iou(&sweep_rows()).unwrap();
    write_best_json(&path, &best).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for key in [
        "checkpoint",
        "learning_rate",
        "weight_decay",
        "acc",
        "mean_iou",
    ] {
        assert!(json.get(key).is_some(), "best.json lacks {key}");
    }
    assert_eq!(BestProbe::read(&path).unwrap(), best);
    assert!(BestProbe::read(dir.path().join("missing.json")).is_err());
}

#[test]
fn plot_is_a_png_of_the_documented_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hparam-sweeps.png");
    let mut rows = sweep_rows();
    // A decay of 0 has no place on a log axis, a missing score none at all:
    // both are left out of their panels, not an error.
    rows[1].weight_decay = 0.0;
    rows[2].mean_iou = None;
    // A probe whose learning rate is unknown (a checkpoint without cfg.json).
    rows[4].learning_rate = f64::NAN;
    rows[5].learning_rate = f64::NAN;
    plot_hparam_sweeps(&path, &rows).unwrap();
    if let Ok(keep) = std::env::var("SAE_STEER_KEEP_PLOT") {
        std::fs::copy(&path, keep).unwrap();
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), SWEEP_PLOT_SIZE);
    let mut pixels = vec![0u8; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut pixels).unwrap();
    // Not blank: white background plus axes, text and coloured points.
    let distinct: std::collections::HashSet<&[u8]> = pixels.chunks_exact(3).collect();
    assert!(distinct.len() > 20, "only {} colours", distinct.len());
    assert!(
        pixels.chunks_exact(3).any(|p| p == [31, 119, 180]),
        "no point of the first colour"
    );

    // An empty sweep still draws four empty panels.
    plot_hparam_sweeps(&path, &[]).unwrap();

    // Learning rates too close for one row of labels: drawn on two.
    let mut dense = sweep_rows();
    for (row, lr) in dense
        .iter_mut()
        .zip([1e-4, 1.1e-4, 1.2e-4, 1.3e-4].iter().cycle())
    {
        row.learning_rate = *lr;
    }
    plot_hparam_sweeps(&path, &dense).unwrap();
    if let Ok(keep) = std::env::var("SAE_STEER_KEEP_DENSE_PLOT") {
        std::fs::copy(&path, keep).unwrap();
    }
}

#[test]
fn axis_ticks_are_exactly_the_values_swept() {
    let rows = sweep_rows();
    let labels = |values: Vec<f64>| -> Vec<String> {
        log_axis_ticks(values)
            .into_iter()
            .map(|t| t.label)
            .collect()
    };
    // The reference's grid: each value once, ascending, nothing else (the
    // log axis's own ticks were 4e-2, 5e-2, ... and could skip 3e-5).
    let lr = log_axis_ticks(rows.iter().map(|r| r.learning_rate));
    assert_eq!(
        lr.iter().map(|t| t.value).collect::<Vec<_>>(),
        [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    );
    assert_eq!(
        labels(rows.iter().map(|r| r.learning_rate).collect()),
        ["3e-5", "1e-4", "3e-4", "1e-3", "3e-3", "1e-2"]
    );
    assert_eq!(
        labels(rows.iter().map(|r| r.weight_decay).collect()),
        ["1e-5", "1e-3", "1e-1"]
    );
    // Values a log axis cannot place get no tick; close values keep their
    // own labels, which read back as the values.
    let ticks = log_axis_ticks([
        2.5e-4,
        0.0,
        -1e-3,
        f64::NAN,
        f64::INFINITY,
        1e-4,
        1.0000001e-4,
        2.5e-4,
        1.0,
    ]);
    assert_eq!(
        ticks.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
        ["1e-4", "1.0000001e-4", "2.5e-4", "1e0"]
    );
    for t in &ticks {
        assert_eq!(t.label.parse::<f64>().unwrap(), t.value);
    }
    assert!(log_axis_ticks([]).is_empty());
}

#[test]
fn label_rows_never_overlap() {
    // Labels that fit side by side stay in one row.
    assert_eq!(label_rows(&[(50, 30), (100, 30), (150, 30)], 8), [0, 0, 0]);
    // 8 px apart exactly fits; 7 does not.
    assert_eq!(label_rows(&[(50, 30), (88, 30)], 8), [0, 0]);
    assert_eq!(label_rows(&[(50, 30), (87, 30)], 8), [0, 1]);
    // A third label goes back to row 0 once it clears the first.
    assert_eq!(
        label_rows(&[(50, 30), (60, 30), (70, 30), (90, 30)], 8),
        [0, 1, 2, 0]
    );
    assert!(label_rows(&[], 8).is_empty());

    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    for _ in 0..200 {
        let n = rand::Rng::random_range(&mut rng, 1..12);
        let mut spans: Vec<(i32, u32)> = (0..n)
            .map(|_| {
                (
                    rand::Rng::random_range(&mut rng, 0..400),
                    rand::Rng::random_range(&mut rng, 10..60),
                )
            })
            .collect();
        spans.sort();
        let rows = label_rows(&spans, 8);
        assert_eq!(rows.len(), spans.len());
        let edges = |(c, w): (i32, u32)| (c - w as i32 / 2, c - w as i32 / 2 + w as i32);
        for i in 0..n {
            for k in i + 1..n {
                if rows[i] == rows[k] {
                    let (a, b) = (edges(spans[i]), edges(spans[k]));
                    assert!(b.0 >= a.1 + 8, "{spans:?} -> {rows:?}: {i} and {k} overlap");
                }
            }
            // Row r > 0 only when every lower row is blocked.
            for r in 0..rows[i] {
                let last = (0..i).rev().find(|&j| rows[j] == r).unwrap();
                assert!(edges(spans[i]).0 < edges(spans[last]).1 + 8);
            }
        }
    }
}
