//! docs/flags.md is the binary's own `--help`, one section per subcommand, written by
//! scripts/gen-flags-doc.sh; this test fails when a help text, flag or subcommand changed and the
//! file was not regenerated.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_convrnn-serve");
const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/flags.md");
const REGENERATE: &str = "regenerate it with `scripts/gen-flags-doc.sh` and commit docs/flags.md";

/// `convrnn-serve ARGS --help` without CONVRNN_* variables, whose values clap would print, and
/// without trailing blanks on its lines (as scripts/gen-flags-doc.sh writes it).
fn help(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .env_clear()
        .args(args)
        .arg("--help")
        .output()
        .expect("run the binary");
    assert!(
        out.status.success(),
        "`convrnn-serve {} --help` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("help is UTF-8");
    text.lines()
        .map(|l| l.trim_end().to_owned() + "\n")
        .collect()
}

/// The subcommands listed under "Commands:" in the top-level help, `help` aside.
fn subcommands(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The text block under the heading `## \`TITLE\``, if the document has that section.
fn section<'a>(doc: &'a str, title: &str) -> Option<&'a str> {
    let start = doc.find(&format!("## `{title}`\n"))?;
    let block = &doc[start..];
    let body = &block[block.find("```text\n")? + "```text\n".len()..];
    Some(&body[..body.find("\n```\n")? + 1])
}

fn first_difference(documented: &str, actual: &str) -> String {
    let (d, a): (Vec<_>, Vec<_>) = (documented.lines().collect(), actual.lines().collect());
    for i in 0..d.len().max(a.len()) {
        if d.get(i) != a.get(i) {
            return format!(
                "line {}:\n  docs/flags.md: {:?}\n  --help:        {:?}",
                i + 1,
                d.get(i).unwrap_or(&"<end>"),
                a.get(i).unwrap_or(&"<end>")
            );
        }
    }
    "trailing whitespace".to_owned()
}

#[test]
fn flags_doc_matches_every_help() {
    let doc = std::fs::read_to_string(DOC).unwrap_or_else(|e| panic!("{DOC}: {e}; {REGENERATE}"));
    let top = help(&[]);
    let subs = subcommands(&top);
    assert!(
        subs.iter().any(|s| s == "serve"),
        "no `serve` among the subcommands of:\n{top}"
    );

    let mut sections = vec![("convrnn-serve".to_owned(), top.clone())];
    for sub in &subs {
        sections.push((format!("convrnn-serve {sub}"), help(&[sub.as_str()])));
    }
    for (title, actual) in &sections {
        let documented = section(&doc, title)
            .unwrap_or_else(|| panic!("docs/flags.md has no section for `{title}`; {REGENERATE}"));
        assert!(
            documented == actual,
            "docs/flags.md is out of date for `{title} --help`, {}\n{REGENERATE}",
            first_difference(documented, actual)
        );
    }
    // A section for a subcommand that no longer exists is stale too.
    let documented_sections = doc.lines().filter(|l| l.starts_with("## `")).count();
    assert_eq!(
        documented_sections,
        sections.len(),
        "docs/flags.md has {documented_sections} sections, the binary {} commands; {REGENERATE}",
        sections.len()
    );
}

#[test]
fn subcommands_are_read_from_the_commands_list() {
    let top = "About\n\nUsage: x <COMMAND>\n\nCommands:\n  serve    Serve\n  inspect  Look\n  help     Help\n\nOptions:\n  -h, --help  Print help\n";
    assert_eq!(subcommands(top), ["serve", "inspect"]);
    let doc = "# T\n\n## `x serve`\n\n```text\nline 1\nline 2\n```\n\n## `x inspect`\n\n```text\nother\n```\n";
    assert_eq!(section(doc, "x serve"), Some("line 1\nline 2\n"));
    assert_eq!(section(doc, "x inspect"), Some("other\n"));
    assert_eq!(section(doc, "x healthcheck"), None);
}
