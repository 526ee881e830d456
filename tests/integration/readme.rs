//! The README's adopter snippets are the code of `examples/adopter.rs`, which compiles and whose
//! tests run: each ```rust block after a `<!-- adopter: name -->` line must be the example's
//! region between `// README: name` and `// README: end`, so that the README cannot rot.

const README: &str = include_str!("../../README.md");
const EXAMPLE: &str = include_str!("../../examples/adopter.rs");

/// The example's region `name`, without its marker lines, dedented.
fn region(name: &str) -> String {
    let start = EXAMPLE
        .find(&format!("// README: {name}\n"))
        .unwrap_or_else(|| panic!("no region {name} in examples/adopter.rs"));
    let body = &EXAMPLE[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let end = body.find("// README: end").unwrap();
    let lines: Vec<&str> = body[..end].lines().collect();
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_owned()
}

#[test]
fn the_readme_snippets_are_the_example_code() {
    let mut checked = Vec::new();
    for (at, _) in README.match_indices("<!-- adopter: ") {
        let rest = &README[at + "<!-- adopter: ".len()..];
        let name = &rest[..rest.find(" -->").unwrap()];
        let block = &rest[rest.find("```rust\n").unwrap() + "```rust\n".len()..];
        let block = block[..block.find("```").unwrap()].trim_end();
        assert_eq!(
            block,
            region(name),
            "README block `{name}` differs from the example"
        );
        checked.push(name);
    }
    // Every region of the example is quoted: a README block that lost its marker is checked
    // by nothing and could drift.
    let mut regions: Vec<&str> = (EXAMPLE.lines())
        .filter_map(|line| line.trim_start().strip_prefix("// README: "))
        .filter(|name| *name != "end")
        .collect();
    // And the app's own migration, which the handlers' SQL needs.
    let migration = include_str!("../../examples/adopter_migrations/20261201000000_projects.sql");
    assert!(
        README.contains(&format!("```sql\n{migration}```")),
        "the README's adopter migration differs from the example's"
    );
    checked.sort_unstable();
    regions.sort_unstable();
    assert_eq!(checked, regions, "the README quotes each region once");
}
