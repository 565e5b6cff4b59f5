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

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn summary_uses_classes_with_original_patches_and_population_std() {
    let all = [
        counts(1, 1, 3, 0, 100, 10), // target 25 %, other 10 %
        counts(2, 3, 1, 0, 200, 40), // target 75 %, other 20 %
        counts(3, 0, 0, 5, 295, 30), // no original patch: left out of ours
    ];
    let s = MethodSummary::from_counts("auto", &all, 4).unwrap();
    assert_eq!(s.n_classes_macro, 2);
    assert_eq!(s.target_change_macro_pct, Some(50.0));
    assert_eq!(s.target_std_macro_pct, Some(25.0)); // population std of {25, 75}
    assert_eq!(s.other_change_macro_pct, Some(15.0));
    assert_eq!(s.other_std_macro_pct, Some(5.0));
    assert_eq!(s.target_pooled_pct, Some(50.0)); // (1 + 3) / (4 + 4)
    assert_eq!(s.other_pooled_pct, Some(50.0 / 300.0 * 100.0)); // classes 1, 2 only

    let none = MethodSummary::from_counts("empty", &all[2..], 150).unwrap();
    assert_eq!(none.n_classes_macro, 0);
    assert_eq!(none.target_change_macro_pct, None);
    assert_eq!(none.target_std_macro_pct, None);
    assert_eq!(none.other_pooled_pct, None);
    // The reference writes 0 where nothing was originally the class.
    assert_eq!(none.reference_target_pooled_fraction, 0.0);
    assert_eq!(none.reference_target_std_fraction, 0.0);
    assert_eq!(none.reference_other_pooled_fraction, 0.1); // 30 / 300
}

/// The reference's summary as saev's `contrib/semseg` quantify computes it:
/// `ClassResults` for every class `1..=n` (0 patches where we have no
/// pass), `sum(changed) / sum(orig)` and `np.std` of the per-class
/// fractions with 0 for an empty class.
fn reference_summary(all: &[ChangeCounts], n: usize) -> [f64; 4] {
    // (n_orig_patches, n_changed_patches, n_other_patches, n_other_changed)
    type ClassResults = (u64, u64, u64, u64);
    type Pick = fn(&ClassResults) -> (u64, u64);
    let per_class: Vec<ClassResults> = (1..=n)
        .map(|class| match all.iter().find(|c| c.class == class) {
            Some(c) => (
                c.original_target(),
                c.target_to_other,
                c.original_other(),
                c.other_changed,
            ),
            None => (0, 0, 0, 0),
        })
        .collect();
    let pooled = |orig: Pick| {
        let (o, ch) = per_class
            .iter()
            .map(orig)
            .fold((0, 0), |(a, b), (o, ch)| (a + o, b + ch));
        if o > 0 { ch as f64 / o as f64 } else { 0.0 }
    };
    let np_std = |orig: Pick| {
        let v: Vec<f64> = per_class
            .iter()
            .map(orig)
            .map(|(o, ch)| if o > 0 { ch as f64 / o as f64 } else { 0.0 })
            .collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    let target: Pick = |c| (c.0, c.1);
    let other: Pick = |c| (c.2, c.3);
    [pooled(target), np_std(target), pooled(other), np_std(other)]
}

#[test]
fn reference_columns_are_pooled_fractions_and_std_over_all_classes() {
    let all = [
        counts(1, 1, 3, 0, 100, 10), // target 0.25, other 0.1
        counts(2, 3, 1, 0, 200, 40), // target 0.75, other 0.2
        counts(3, 0, 0, 5, 295, 30), // no original patch: target 0, other 0.1
    ];
    // Classes 1..=4, class 4 without a pass: it counts 0 in the stds.
    let s = MethodSummary::from_counts("auto", &all, 4).unwrap();
    assert_eq!(s.n_classes_all, 4);
    assert_eq!(s.reference_target_pooled_fraction, 0.5); // (1 + 3) / (4 + 4)
    // Pooled over every class with a pass, class 3 included: 80 / 600.
    assert!(close(s.reference_other_pooled_fraction, 80.0 / 600.0));
    // np.std([0.25, 0.75, 0, 0]) and np.std([0.1, 0.2, 0.1, 0]).
    assert!(close(s.reference_target_std_fraction, 0.09375f64.sqrt()));
    assert!(close(s.reference_other_std_fraction, 0.005f64.sqrt()));

    // Random counts over ADE20K's 150 classes, some without a pass or patches.
    let mut rng = StdRng::seed_from_u64(3);
    let mut random = Vec::new();
    for class in 1..=150 {
        if rng.random_bool(0.2) {
            continue;
        }
        let t = if rng.random_bool(0.3) {
            0
        } else {
            rng.random_range(1..500)
        };
        let t_other = rng.random_range(0..=t);
        let (o_t, o_o) = (rng.random_range(0..50), rng.random_range(0..5000));
        let o_changed = o_t + rng.random_range(0..=o_o);
        random.push(counts(class, t_other, t - t_other, o_t, o_o, o_changed));
    }
    let s = MethodSummary::from_counts("auto", &random, 150).unwrap();
    let want = reference_summary(&random, 150);
    let have = [
        s.reference_target_pooled_fraction,
        s.reference_target_std_fraction,
        s.reference_other_pooled_fraction,
        s.reference_other_std_fraction,
    ];
    for (h, w) in have.iter().zip(want) {
        assert!(close(*h, w), "{have:?} vs the reference's {want:?}");
    }
    // Ours differ: percent, over the classes with patches only.
    let used = random.iter().filter(|c| c.original_target() > 0).count();
    assert!(used < random.len() && random.len() < 150);
    assert_eq!(s.n_classes_macro, used);
    let rates: Vec<f64> = random
        .iter()
        .filter_map(ChangeCounts::target_change_rate)
        .collect();
    let mean = rates.iter().sum::<f64>() / used as f64;
    assert!(close(s.target_change_macro_pct.unwrap(), mean));
    assert!(close(
        s.target_pooled_pct.unwrap(),
        100.0 * s.reference_target_pooled_fraction
    ));
}

#[test]
fn summary_rejects_classes_it_cannot_place() {
    let one = counts(1, 1, 1, 0, 2, 0);
    let three = counts(3, 1, 1, 0, 2, 0);
    let zero = counts(0, 1, 1, 0, 2, 0);
    assert!(MethodSummary::from_counts("m", [&one, &three], 3).is_ok());
    for (set, n) in [
        (vec![&one, &three], 2), // class 3 of 2
        (vec![&zero], 3),        // class 0 is no target
        (vec![&one, &one], 3),   // counted twice
        (vec![], 0),             // no classes
    ] {
        let err = MethodSummary::from_counts("m", set, n).unwrap_err();
        assert!(err.to_string().contains("summary of m"), "{err}");
    }
    let passes = [ClassPass::new("auto", 2, 3).unwrap()];
    assert!(MethodSummary::from_passes(&passes, 1).is_err());
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
    let s = MethodSummary::from_passes(&passes, 2).unwrap();
    assert_eq!(
        s.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["random-vector", "auto"]
    );
    assert_eq!(s[0].n_classes_macro, 2);
    assert_eq!(s[0].target_change_macro_pct, Some(50.0)); // class 1: 0 %, class 2: 100 %
    assert_eq!(s[1].target_change_macro_pct, Some(100.0));
    assert_eq!(s[1].reference_target_std_fraction, 0.5); // np.std([1, 0])
}

/// An automatic pass for class 2 (2 of its patches, 1 changed; 1 of the 2
/// other patches changed) and an empty random-vector pass for class 1.
fn two_passes() -> Vec<ClassPass> {
    let mut pass = ClassPass::new("auto", 2, 3)
        .unwrap()
        .with_latent(7235, Some(0.5));
    pass.add(&[2, 2, 1, 0], &[1, 2, 1, 2]).unwrap();
    vec![pass, ClassPass::new("random-vector", 1, 3).unwrap()]
}

#[test]
fn csv_files_have_the_documented_columns() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["wall", "building"].iter().map(|s| s.to_string()).collect();
    let passes = two_passes();

    let summary = dir.path().join("results.csv");
    write_summary_csv(&summary, &MethodSummary::from_passes(&passes, 2).unwrap()).unwrap();
    let text = std::fs::read_to_string(&summary).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The reference's columns, meaning what its do, then ours.
    assert_eq!(
        lines[0],
        "method,target_change,target_std,other_change,other_std,\
         target_change_macro_pct,target_std_macro_pct,other_change_macro_pct,\
         other_std_macro_pct,target_pooled_pct,other_pooled_pct,n_classes_macro,n_classes_all"
    );
    assert_eq!(lines[0], SUMMARY_COLUMNS.join(","));
    // Reference: fractions 1/2, np.std([0, 0.5]) over classes 1..=2, spelled
    // as Python writes floats. Ours: percent over the one class with patches.
    assert_eq!(lines[1], "auto,0.5,0.25,0.5,0.25,50,0,50,0,50,50,1,2");
    assert_eq!(
        lines[2],
        "random-vector,0.0,0.0,0.0,0.0,nan,nan,nan,nan,nan,nan,0,2"
    );

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
    let summaries = MethodSummary::from_passes(&two_passes(), 2).unwrap();
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
         2 validation images, 8 patches.\n\
         \n\
         - probe: best validated\n\
         \n\
         Ours (`results.csv` columns `*_macro_pct`, `*_pooled_pct`, `n_classes_macro`): rates \
         in percent, macro mean and population std over the classes with at least one \
         originally predicted patch (the classes column); pooled = sum changed / sum original \
         over those classes.\n\
         \n\
         | method | target change | ± std | other change | ± std | target pooled | other pooled | classes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n\
         | auto | 50.00 | 0.00 | 50.00 | 0.00 | 50.00 | 50.00 | 1 |\n\
         | random-vector | – | – | – | – | – | – | 0 |\n\
         \n\
         The reference's (`results.csv` columns `target_change`, `target_std`, `other_change`, \
         `other_std`, meaning what saev's contrib/semseg quantify writes under those names): \
         fractions, not percent; change = sum changed / sum original over every class with a \
         pass; std = population std over all classes (the classes column, `n_classes_all`) of \
         the per-class fractions, 0 for a class without patches or without a pass.\n\
         \n\
         | method | target_change | target_std | other_change | other_std | classes |\n\
         |---|---:|---:|---:|---:|---:|\n\
         | auto | 0.5000 | 0.2500 | 0.5000 | 0.2500 | 2 |\n\
         | random-vector | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 2 |\n\
         \n\
         Skipped classes:\n\
         - auto: 1 classes ([5])\n\
         - manual: 2 classes ([3, 1])\n"
    );
    // Without notes or skipped classes, neither section appears.
    write_summary_md(&path, 2, 8, &summaries[..1], &[], &[]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("8 patches.\n\nOurs ("), "{text}");
    assert!(text.ends_with("| 2 |\n"), "{text}");
}
