//! The `sae-steer` program itself: its subcommands, their help, and a clear
//! refusal of what it does not know. (Also makes `cargo test` build the
//! binary, which `cargo xtask reproduce`'s tests then run.)

use std::process::Command;

fn sae_steer(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sae-steer"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn every_step_is_a_subcommand_with_its_own_help() {
    let (ok, help) = sae_steer(&["--help"]);
    assert!(ok, "{help}");
    for sub in [
        "activations",
        "cache",
        "train-probe",
        "validate",
        "train-sae",
        "stats",
        "quantify",
        "serve",
        "figures",
        "fetch",
        "reproduce",
        "scale-fit",
        "synth-ade20k",
        "random-vit",
    ] {
        assert!(help.contains(sub), "`{sub}` is not listed:\n{help}");
        let (ok, text) = sae_steer(&[sub, "--help"]);
        assert!(ok, "sae-steer {sub} --help failed:\n{text}");
        assert!(text.contains("Usage: sae-steer"), "{sub}:\n{text}");
    }
    // The reference's own flags are there, under the reference's names.
    let (_, quantify) = sae_steer(&["quantify", "--help"]);
    assert!(
        quantify.contains("--sae-ckpt") && quantify.contains("--seg-ckpt"),
        "{quantify}"
    );
}

#[test]
fn unknown_subcommands_and_flags_are_refused_by_name() {
    let (ok, text) = sae_steer(&["quantfy"]);
    assert!(!ok);
    assert!(text.contains("quantfy"), "{text}");
    let (ok, text) = sae_steer(&["cache", "--no-such-flag"]);
    assert!(!ok);
    assert!(text.contains("--no-such-flag"), "{text}");
}
