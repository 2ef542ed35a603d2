//! `--help` that teaches: the real binary's help prints every example on a
//! line of its own, as written, for every subcommand that has examples.

use std::process::Command;

/// The subcommands whose `--help` ends with examples.
const WITH_EXAMPLES: [&str; 11] = [
    "serve",
    "sync",
    "token",
    "clients",
    "approvals",
    "run",
    "setup",
    "mirrors",
    "verify",
    "keys",
    "check",
];

/// What `wharf ARGS` prints, at the width clap uses when stdout is not a
/// terminal (set, so that a CI runner's COLUMNS changes nothing).
fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .expect("run wharf");
    assert!(output.status.success(), "wharf {args:?}: {output:?}");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The lines of the `Examples:` block of `text`.
fn examples(text: &str) -> Vec<&str> {
    let (_, after) = text
        .split_once("\nExamples:\n")
        .unwrap_or_else(|| panic!("no `Examples:` block in:\n{text}"));
    after.lines().take_while(|l| !l.trim().is_empty()).collect()
}

/// Regression: clap re-wrapped the doc comment's examples into one paragraph,
/// so `wharf sync --help` printed them run together across lines.
#[test]
fn sync_help_prints_each_example_on_its_own_line() {
    let text = help(&["sync", "--help"]);
    let lines: Vec<&str> = text.lines().collect();
    for example in [
        "  wharf sync --config wharf.toml                  # a full pass of every mirror",
        "  wharf sync --config wharf.toml --registry m --feed",
        "  wharf sync --config wharf.toml --reconcile      # revalidate everything",
    ] {
        assert!(
            lines.contains(&example),
            "{example:?} is not a line of:\n{text}"
        );
    }
}

#[test]
fn every_subcommand_prints_one_example_per_line() {
    for sub in WITH_EXAMPLES {
        for flag in ["--help", "-h"] {
            let text = help(&[sub, flag]);
            let examples = examples(&text);
            assert!(!examples.is_empty(), "wharf {sub} {flag}:\n{text}");
            for line in examples {
                let prefix = format!("  wharf {sub}");
                assert!(
                    line.starts_with(&prefix) && line.matches("wharf ").count() == 1,
                    "wharf {sub} {flag}: {line:?} is not one example on its own line:\n{text}"
                );
            }
        }
    }
}

#[test]
fn top_level_help_keeps_the_quick_start_command_on_its_own_line() {
    let text = help(&["--help"]);
    assert!(
        text.lines().any(|l| l
            == "  wharf serve                      # cache crates.io on http://127.0.0.1:8080"),
        "{text}"
    );
}
