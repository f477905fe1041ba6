//! FORMAT.md's code tables say exactly what `names` defines: every "### Codes: X" table
//! lists the same (code, name) pairs as the list in `runtime/src/names.rs`, no more, no
//! fewer. A code added to one and not the other fails here.

use vlm_runtime::format::VERSION;
use vlm_runtime::names::{self, Codes};

const FORMAT_MD: &str = include_str!("../FORMAT.md");

/// The rows of the table under `### Codes: {title}`: (code, name in backticks).
fn table(title: &str) -> Vec<(u32, String)> {
    let heading = format!("### Codes: {title}");
    let start = FORMAT_MD
        .find(&heading)
        .unwrap_or_else(|| panic!("FORMAT.md has no {heading:?}"));
    FORMAT_MD[start + heading.len()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let code = cells[1]
                .parse()
                .unwrap_or_else(|_| panic!("{title}: bad code in {row:?}"));
            let name = cells[2].trim_matches('`').to_string();
            (code, name)
        })
        .collect()
}

fn same(title: &str, codes: Codes) {
    let doc = table(title);
    let code: Vec<(u32, String)> = codes.iter().map(|(c, n)| (*c, n.to_string())).collect();
    assert_eq!(
        doc, code,
        "FORMAT.md's {title:?} table and names.rs disagree"
    );
}

#[test]
fn every_code_table_matches_names() {
    same("sections", names::SECTIONS);
    same("families", names::FAMILIES);
    same("element types", names::DTYPES);
    same("roles", names::ROLES);
    same("ports", names::PORTS);
    same("ops", names::OPCODES);
    same("activations", names::ACTIVATIONS);
    same("weights", names::WEIGHTS);
    same("precisions", names::PRECISIONS);
    same("masks", names::MASKS);
    same("queries", names::QUERIES);
}

#[test]
fn the_documented_version_is_the_reader_s() {
    assert!(FORMAT_MD.starts_with(&format!("# The `.vlmq` artifact, version {VERSION}\n")));
    assert!(FORMAT_MD.contains(&format!("| 8 | u32 | format version, `{VERSION}` |")));
}
