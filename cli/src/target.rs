//! The microcontroller parts `vlm quantize --target` checks an artifact against. Their
//! budgets come from the board profiles in `targets/boards/`, compiled in: the same
//! files `cargo xtask` links the firmware with, so the check and the link cannot
//! disagree about a part's flash and RAM.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

const PROFILES: &[(&str, &str)] = &[
    (
        "cortex-m7",
        include_str!("../../targets/boards/cortex-m7.toml"),
    ),
    (
        "cortex-m55",
        include_str!("../../targets/boards/cortex-m55.toml"),
    ),
];

/// One part's budget, as its board profile gives it.
#[derive(Debug, Deserialize)]
pub struct Part {
    pub name: String,
    pub part: String,
    pub flash_kib: u64,
    pub ram_kib: u64,
    /// Flash the firmware's own code and data take beside the artifact.
    pub firmware_flash_kib: u64,
    /// RAM the firmware's stack and buffers take beside the runtime's arena.
    pub firmware_ram_kib: u64,
}

/// The names `--target` accepts.
pub fn names() -> impl Iterator<Item = &'static str> {
    PROFILES.iter().map(|(n, _)| *n)
}

/// The part named `name`.
pub fn part(name: &str) -> Result<Part> {
    let Some((_, text)) = PROFILES.iter().find(|(n, _)| *n == name) else {
        bail!(
            "--target {name:?} is not a microcontroller this build knows: one of {}",
            names().collect::<Vec<_>>().join(", ")
        );
    };
    toml::from_str(text).with_context(|| format!("the {name} board profile"))
}

/// What an artifact needs on a part.
#[derive(Debug, PartialEq)]
pub struct Fit {
    pub flash_bytes: u64,
    pub ram_bytes: u64,
}

impl Part {
    /// The flash and RAM an artifact of `artifact_bytes` whose session needs
    /// `arena_bytes` takes with the firmware around it; an error naming what is over
    /// when it does not fit.
    pub fn check(&self, artifact_bytes: u64, arena_bytes: u64) -> Result<Fit> {
        const KIB: u64 = 1024;
        let fit = Fit {
            flash_bytes: artifact_bytes + self.firmware_flash_kib * KIB,
            ram_bytes: arena_bytes + self.firmware_ram_kib * KIB,
        };
        let budgets = [
            (
                "flash",
                "the artifact",
                artifact_bytes,
                fit.flash_bytes,
                self.firmware_flash_kib,
                self.flash_kib,
            ),
            (
                "RAM",
                "the runtime's arena",
                arena_bytes,
                fit.ram_bytes,
                self.firmware_ram_kib,
                self.ram_kib,
            ),
        ];
        let over: Vec<String> = budgets
            .iter()
            .filter(|b| b.3 > b.5 * KIB)
            .map(|&(what, model, model_bytes, need, firmware_kib, have_kib)| {
                format!(
                    "{what}: {model} ({} KiB) and the firmware ({firmware_kib} KiB) need {} KiB of {have_kib} KiB",
                    model_bytes.div_ceil(KIB),
                    need.div_ceil(KIB),
                )
            })
            .collect();
        if !over.is_empty() {
            bail!(
                "the model does not fit {} ({}): {}",
                self.name,
                self.part,
                over.join("; ")
            );
        }
        Ok(fit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_parses_and_leaves_room_for_a_model() {
        for name in names() {
            let p = part(name).unwrap();
            assert_eq!(p.name, name);
            assert!(p.firmware_flash_kib < p.flash_kib && p.firmware_ram_kib < p.ram_kib);
        }
    }

    #[test]
    fn a_model_over_either_budget_is_refused_naming_it() {
        let p = part("cortex-m7").unwrap();
        let kib = 1024;
        let room_flash = (p.flash_kib - p.firmware_flash_kib) * kib;
        let room_ram = (p.ram_kib - p.firmware_ram_kib) * kib;
        assert!(p.check(room_flash, room_ram).is_ok());
        let e = p.check(room_flash + 1, room_ram).unwrap_err().to_string();
        assert!(
            e.contains("flash") && !e.contains("RAM") && e.contains("STM32H743ZI"),
            "{e}"
        );
        let e = p.check(room_flash, room_ram + 1).unwrap_err().to_string();
        assert!(e.contains("RAM") && !e.contains("flash:"), "{e}");
        assert!(part("cortex-m0").is_err());
    }
}
