//! What the Cortex-M examples share, kept free of any one board so the host suite tests
//! it: an SPI camera driver written against embedded-hal 1.0 ([`camera`]), the camera
//! QEMU stands in with ([`sim`]), the classifier over an artifact in flash
//! ([`classify`]) and the moderation policy ([`policy`]). The binaries under `src/bin`
//! add the board: reset handler, defmt logger, semihosting exit.
#![no_std]

#[cfg(all(feature = "firmware", target_os = "none"))]
pub mod board;
pub mod camera;
pub mod classify;
pub mod policy;
pub mod sim;

/// The shipped test frames (binary PPM, 64×64, the demo model's input size), in the
/// order the simulated camera streams them; each name ends in the label it shows.
pub const FRAMES: [(&str, &[u8]); 8] = [
    (
        "red circle",
        include_bytes!("../../frames/0-red-circle.ppm"),
    ),
    (
        "orange square",
        include_bytes!("../../frames/1-orange-square.ppm"),
    ),
    (
        "yellow triangle",
        include_bytes!("../../frames/2-yellow-triangle.ppm"),
    ),
    (
        "green heart",
        include_bytes!("../../frames/3-green-heart.ppm"),
    ),
    ("blue star", include_bytes!("../../frames/4-blue-star.ppm")),
    (
        "purple cross",
        include_bytes!("../../frames/5-purple-cross.ppm"),
    ),
    ("blue star", include_bytes!("../../frames/6-blue-star.ppm")),
    ("blue star", include_bytes!("../../frames/7-blue-star.ppm")),
];

/// The labels the example artifact stores, in its order (`vlm quantize --target ...
/// --labels` with the template `a {}`).
pub const LABELS: [&str; 6] = [
    "red circle",
    "blue star",
    "yellow triangle",
    "green heart",
    "purple cross",
    "orange square",
];

/// The pixels of a binary PPM (`P6`, maxval 255) and its width and height; `None` for
/// anything else. The frames ship as PPM so the Linux device binary reads the same files.
pub fn ppm_pixels(ppm: &[u8]) -> Option<(&[u8], usize, usize)> {
    let mut fields = [0usize; 3];
    let rest = ppm.strip_prefix(b"P6")?;
    let mut at = 0;
    for f in &mut fields {
        while rest.get(at)?.is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while rest.get(at)?.is_ascii_digit() {
            *f = f
                .checked_mul(10)?
                .checked_add(usize::from(rest[at] - b'0'))?;
            at += 1;
        }
        if at == start {
            return None;
        }
    }
    // One whitespace byte ends the header.
    let pixels = rest.get(at + 1..)?;
    let [w, h, max] = fields;
    (max == 255 && pixels.len() == w.checked_mul(h)?.checked_mul(3)?).then_some((pixels, w, h))
}

/// The shipped frames' pixels (RGB888), in [`FRAMES`] order.
pub fn shipped_frames() -> Option<[&'static [u8]; FRAMES.len()]> {
    let mut frames: [&[u8]; FRAMES.len()] = [&[]; FRAMES.len()];
    for (f, (_, ppm)) in frames.iter_mut().zip(FRAMES) {
        *f = ppm_pixels(ppm)?.0;
    }
    Some(frames)
}

/// FNV-1a over the bits of `values`: equal hashes on two machines mean they computed the
/// same bits, which the examples print so runs on different CPUs can be compared.
pub fn fnv1a_bits(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_frame_is_a_64_pixel_square() {
        for (name, ppm) in FRAMES {
            let (px, w, h) = ppm_pixels(ppm).unwrap_or_else(|| panic!("{name}: not a P6 PPM"));
            assert_eq!((w, h, px.len()), (64, 64, 64 * 64 * 3), "{name}");
            assert!(LABELS.contains(&name));
        }
    }

    #[test]
    fn malformed_ppms_are_refused() {
        let good = b"P6\n2 1\n255\n\x01\x02\x03\x04\x05\x06";
        assert_eq!(ppm_pixels(good), Some((&good[11..], 2, 1)));
        assert_eq!(ppm_pixels(&good[..good.len() - 1]), None);
        assert_eq!(ppm_pixels(b"P5\n2 1\n255\n\x01\x02"), None);
        assert_eq!(ppm_pixels(b"P6\n2 1\n65535\n"), None);
        assert_eq!(ppm_pixels(b"P6\n99999999999999999999999 1\n255\n"), None);
        assert_eq!(ppm_pixels(b"P6\n"), None);
    }
}
