//! Change counting against a brute-force implementation on random
//! predictions, summaries against hand-computed values, the report files
//! byte for byte.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sae_steer_metrics::quantify::{
    CHANGE_COLUMNS, CLASS_COLUMNS, SUMMARY_COLUMNS, write_change_csv, write_class_csv,
    write_summary_csv, write_summary_md,
};
use sae_steer_metrics::selection::SELECTION_COLUMNS;
use sae_steer_metrics::{
    ChangeCounts, ChangeMatrix, ClassPass, FeatureChoice, MethodSummary, write_selection_csv,
};

const CLASSES: usize = 12;

/// Random predictions where edits change some patches, often to one class.
fn random_predictions(rng: &mut StdRng, n: usize) -> (Vec<u8>, Vec<u8>) {
    let original: Vec<u8> = (0..n).map(|_| rng.random_range(1..CLASSES as u8)).collect();
    let edited = original
        .iter()
        .map(|&o| match rng.random_range(0..10) {
            0..=5 => o,
            6 => 3,
            _ => rng.random_range(1..CLASSES as u8),
        })
        .collect();
    (original, edited)
}

#[test]
fn counts_and_matrix_match_brute_force() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..20 {
        let (original, edited) = random_predictions(&mut rng, 500);
        for class in 0..CLASSES {
            let mut pass = ClassPass::new("m", class, CLASSES).unwrap();
            // Two batches, to check accumulation.
            pass.add(&original[..123], &edited[..123]).unwrap();
            pass.add(&original[123..], &edited[123..]).unwrap();
            let c = class as u8;
            let pairs = || original.iter().zip(&edited);
            let n = |f: &dyn Fn(u8, u8) -> bool| pairs().filter(|&(&o, &e)| f(o, e)).count() as u64;
            let counts = pass.counts;
            assert_eq!(counts.target_to_other, n(&|o, e| o == c && e != c));
            assert_eq!(counts.target_to_target, n(&|o, e| o == c && e == c));
            assert_eq!(counts.other_to_target, n(&|o, e| o != c && e == c));
            assert_eq!(counts.other_to_other, n(&|o, e| o != c && e != c));
            assert_eq!(counts.other_changed, n(&|o, e| o != c && e != o));
            let orig_c = n(&|o, _| o == c);
            let orig_other = n(&|o, _| o != c);
            let target_rate =
                (orig_c > 0).then(|| n(&|o, e| o == c && e != o) as f64 / orig_c as f64 * 100.0);
            let other_rate = (orig_other > 0)
                .then(|| n(&|o, e| o != c && e != o) as f64 / orig_other as f64 * 100.0);
            assert_eq!(counts.target_change_rate(), target_rate);
            assert_eq!(counts.other_change_rate(), other_rate);
            for from in 0..CLASSES {
                for to in 0..CLASSES {
                    let expected = n(&|o, e| o != e && o as usize == from && e as usize == to);
                    assert_eq!(pass.changes.count(from, to), expected, "{from} -> {to}");
                }
            }
            assert_eq!(pass.changes.total(), n(&|o, e| o != e));
        }
    }
}

#[test]
fn other_change_counts_changes_between_other_classes() {
    // Target 1: the other patches change 2 -> 3 (not to the target): that is
    // still an "other change".
    let mut counts = ChangeCounts::new(1);
    counts.add(&[2, 2, 1], &[3, 2, 1]).unwrap();
    assert_eq!(counts.other_to_target, 0);
    assert_eq!(counts.other_to_other, 2);
    assert_eq!(counts.other_changed, 1);
    assert_eq!(counts.other_change_rate(), Some(50.0));
    assert_eq!(counts.target_change_rate(), Some(0.0));
}

fn counts(
    class: usize,
    t_other: u64,
    t_t: u64,
    o_t: u64,
    o_o: u64,
    o_changed: u64,
) -> ChangeCounts {
    ChangeCounts {
        class,
        target_to_other: t_other,
        target_to_target: t_t,
        other_to_target: o_t,
        other_to_other: o_o,
        other_changed: o_changed,
    }
}

#[test]
fn summary_uses_classes_with_original_patches_and_population_std() {
    let all = [
        counts(1, 1, 3, 0, 100, 10), // target 25 %, other 10 %
        counts(2, 3, 1, 0, 200, 40), // target 75 %, other 20 %
        counts(3, 0, 0, 5, 295, 30), // no original patch: left out
    ];
    let s = MethodSummary::from_counts("auto", &all);
    assert_eq!(s.n_classes, 2);
    assert_eq!(s.target_change, Some(50.0));
    assert_eq!(s.target_std, Some(25.0)); // population std of {25, 75}
    assert_eq!(s.other_change, Some(15.0));
    assert_eq!(s.other_std, Some(5.0));
    assert_eq!(s.target_pooled, Some(50.0)); // (1 + 3) / (4 + 4)
    assert_eq!(s.other_pooled, Some(50.0 / 300.0 * 100.0));

    let none = MethodSummary::from_counts("empty", &all[2..]);
    assert_eq!(none.n_classes, 0);
    assert_eq!(none.target_change, None);
    assert_eq!(none.other_pooled, None);
}

#[test]
fn summaries_group_passes_by_method_in_order() {
    let mut passes = Vec::new();
    for (method, class, original, edited) in [
        ("random-vector", 1, vec![1u8, 2], vec![1u8, 2]),
        ("auto", 1, vec![1, 2], vec![2, 2]),
        ("random-vector", 2, vec![1, 2], vec![1, 1]),
    ] {
        let mut p = ClassPass::new(method, class, 3).unwrap();
        p.add(&original, &edited).unwrap();
        passes.push(p);
    }
    let s = MethodSummary::from_passes(&passes);
    assert_eq!(
        s.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["random-vector", "auto"]
    );
    assert_eq!(s[0].n_classes, 2);
    assert_eq!(s[0].target_change, Some(50.0)); // class 1: 0 %, class 2: 100 %
    assert_eq!(s[1].target_change, Some(100.0));
}

#[test]
fn csv_files_have_the_documented_columns() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["wall", "building"].iter().map(|s| s.to_string()).collect();
    let mut pass = ClassPass::new("auto", 2, 3)
        .unwrap()
        .with_latent(7235, Some(0.5));
    pass.add(&[2, 2, 1, 0], &[1, 2, 1, 2]).unwrap();
    let manual = ClassPass::new("random-vector", 1, 3).unwrap();
    let passes = vec![pass, manual];

    let summary = dir.path().join("results.csv");
    write_summary_csv(&summary, &MethodSummary::from_passes(&passes)).unwrap();
    let text = std::fs::read_to_string(&summary).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "method,target_change,target_std,other_change,other_std,target_pooled,other_pooled,n_classes"
    );
    assert_eq!(lines[0], SUMMARY_COLUMNS.join(","));
    assert_eq!(lines[1], "auto,50,0,50,0,50,50,1");
    assert_eq!(lines[2], "random-vector,nan,nan,nan,nan,nan,nan,0");

    let per_class = dir.path().join("per-class.csv");
    write_class_csv(&per_class, &passes, &names).unwrap();
    let text = std::fs::read_to_string(&per_class).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], CLASS_COLUMNS.join(","));
    assert!(lines[0].starts_with("class,name,method,latent,f1,"));
    assert_eq!(lines[1], "2,building,auto,7235,0.5,1,1,1,1,1,50,50");
    assert_eq!(lines[2], "1,wall,random-vector,,,0,0,0,0,0,nan,nan");

    let changes = dir.path().join("changes.csv");
    write_change_csv(&changes, &passes, &names).unwrap();
    let text = std::fs::read_to_string(&changes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], CHANGE_COLUMNS.join(","));
    assert_eq!(
        lines[0],
        "method,class,name,from,from_name,to,to_name,count"
    );
    assert_eq!(
        &lines[1..],
        [
            "auto,2,building,0,other,2,building,1",
            "auto,2,building,2,building,1,wall,1"
        ]
    );
    // Nothing but the final files is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn change_matrix_serialises_sparsely_and_round_trips() {
    let mut m = ChangeMatrix::new(151).unwrap();
    m.add(&[21, 21, 5, 150], &[1, 1, 6, 150]).unwrap();
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(json, r#"{"classes":151,"entries":[[5,6,1],[21,1,2]]}"#);
    let back: ChangeMatrix = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert!(serde_json::from_str::<ChangeMatrix>(r#"{"classes":3,"entries":[[5,6,1]]}"#).is_err());

    let mut pass = ClassPass::new("auto", 21, 151).unwrap();
    pass.add(&[21, 3], &[4, 3]).unwrap();
    let back: ClassPass = serde_json::from_str(&serde_json::to_string(&pass).unwrap()).unwrap();
    assert_eq!(back, pass);
}

#[test]
fn invalid_input_is_an_error_and_changes_nothing() {
    let mut pass = ClassPass::new("auto", 1, 3).unwrap();
    pass.add(&[1, 2], &[2, 2]).unwrap();
    let before = pass.clone();
    assert!(pass.add(&[1, 2], &[2]).is_err());
    assert!(pass.add(&[1, 3], &[2, 2]).is_err());
    assert_eq!(pass, before);
    assert!(ClassPass::new("auto", 3, 3).is_err());
    assert!(ChangeMatrix::new(300).is_err());
    let mut a = ChangeCounts::new(1);
    assert!(a.merge(&ChangeCounts::new(2)).is_err());
}

fn choice(class: usize, latent: usize, threshold: f32, f1: f64) -> FeatureChoice {
    FeatureChoice {
        class,
        latent,
        threshold,
        f1,
        true_positives: 3,
        fires: 5,
        positives: 7,
    }
}

#[test]
fn selection_csv_quotes_names_and_ranks_choices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("selection.csv");
    let names: Vec<String> = ["wall", "building, edifice", "say \"hi\""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let two = [choice(2, 17, 0.1, 2.0 / 3.0), choice(2, 4, 0.0, 0.25)];
    let three = [choice(3, 9, 1.0, 1.0)];
    // Class 7 has no name: "class 7", as in the other quantify files.
    let seven = [choice(7, 0, 0.3, 0.0)];
    let ranked = [
        (2, &two[..]),
        (3, &three[..]),
        (7, &seven[..]),
        (1, &[][..]),
    ];
    write_selection_csv(&path, ranked, &names).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "class,name,rank,latent,threshold,f1,true_positives,fires,positives\n\
         2,\"building, edifice\",1,17,0.1,0.666667,3,5,7\n\
         2,\"building, edifice\",2,4,0,0.250000,3,5,7\n\
         3,\"say \"\"hi\"\"\",1,9,1,1.000000,3,5,7\n\
         7,class 7,1,0,0.3,0.000000,3,5,7\n"
    );
    assert_eq!(
        SELECTION_COLUMNS.join(","),
        "class,name,rank,latent,threshold,f1,true_positives,fires,positives"
    );
    // Nothing but the final file is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn summary_md_is_written_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("summary.md");
    let mut pass = ClassPass::new("auto", 2, 3).unwrap();
    pass.add(&[2, 2, 1, 0], &[1, 2, 1, 2]).unwrap();
    let passes = vec![pass, ClassPass::new("random-vector", 1, 3).unwrap()];
    let summaries = MethodSummary::from_passes(&passes);
    let skipped = [
        ("manual".to_string(), 3, "no entry".to_string()),
        ("auto".to_string(), 5, "no latent fires".to_string()),
        ("manual".to_string(), 1, "no entry".to_string()),
    ];
    let notes = ["probe: best validated".to_string()];
    write_summary_md(&path, 2, 8, &summaries, &skipped, &notes).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "# Quantify: pseudo-orthogonality of steering directions\n\
         \n\
         2 validation images, 8 patches; rates in percent, macro mean and population std over \
         classes with at least one originally predicted patch; pooled = sum changed / sum \
         original.\n\
         \n\
         - probe: best validated\n\
         \n\
         | method | target change | ± std | other change | ± std | target pooled | other pooled | classes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n\
         | auto | 50.00 | 0.00 | 50.00 | 0.00 | 50.00 | 50.00 | 1 |\n\
         | random-vector | – | – | – | – | – | – | 0 |\n\
         \n\
         Skipped classes:\n\
         - auto: 1 classes ([5])\n\
         - manual: 2 classes ([3, 1])\n"
    );
    // Without notes or skipped classes, neither section appears.
    write_summary_md(&path, 2, 8, &summaries[..1], &[], &[]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("sum original.\n\n| method |"), "{text}");
    assert!(text.ends_with("| 1 |\n"), "{text}");
}
