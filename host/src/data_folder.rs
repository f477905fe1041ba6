//! Files an evaluation folder's description (`eval.json`, `captions.json`) names: paths
//! relative to the folder, which may not leave it — a description is data from
//! elsewhere, and `../` or an absolute path would read any file on the machine.

use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// `dir/rel`, or an error naming `description` (the file that gave `rel`) when `rel` is
/// absolute or climbs out with `..`.
pub fn resolve(dir: &Path, description: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::EvalData {
            path: description.to_owned(),
            msg: format!("image path {rel:?} leaves the data folder"),
        });
    }
    Ok(dir.join(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_data_folder() {
        let f = Path::new("d/eval.json");
        assert!(resolve(Path::new("d"), f, "../secret.png").is_err());
        assert!(resolve(Path::new("d"), f, "/etc/passwd").is_err());
        assert_eq!(
            resolve(Path::new("d"), f, "images/a.png").unwrap(),
            Path::new("d/images/a.png")
        );
    }
}
