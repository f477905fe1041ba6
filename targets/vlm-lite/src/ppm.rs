//! Binary PPM (P6) reading, by hand: this binary links the runtime and nothing else, and
//! an image crate would bring decoders (PNG, JPEG, ...) a board has no use for and
//! several times this binary's size. A camera driver, or `convert`/Pillow on a host,
//! produces P6 trivially.

/// Interleaved 8-bit RGB, `height × width × 3`.
#[derive(Debug, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Parses a P6 image with a maximum value of at most 255 (16-bit samples are refused).
/// Bytes after the first image are ignored: the format allows several images per file.
pub fn parse(bytes: &[u8]) -> Result<Rgb8, String> {
    let rest = bytes
        .strip_prefix(b"P6")
        .ok_or("not a binary PPM (it does not start with P6)")?;
    let mut pos = 0;
    let mut fields = [0usize; 3];
    for (field, what) in fields.iter_mut().zip(["width", "height", "maximum value"]) {
        let before = pos;
        loop {
            match rest.get(pos) {
                Some(b) if b.is_ascii_whitespace() => pos += 1,
                Some(b'#') => {
                    while rest.get(pos).is_some_and(|&b| b != b'\n' && b != b'\r') {
                        pos += 1;
                    }
                }
                _ => break,
            }
        }
        let start = pos;
        while rest.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        // "P61 1 255" must not read as a width of 1: tokens are whitespace-separated.
        if start == pos || before == start {
            return Err(format!("bad PPM header: expected the {what}"));
        }
        *field = rest[start..pos]
            .iter()
            .try_fold(0usize, |n, d| {
                n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
            })
            .ok_or_else(|| format!("bad PPM header: the {what} is too large"))?;
    }
    // Exactly one whitespace byte separates the header from the raster, which may itself
    // start with a byte that looks like whitespace.
    if !rest.get(pos).is_some_and(u8::is_ascii_whitespace) {
        return Err("bad PPM header: no whitespace after the maximum value".into());
    }
    pos += 1;
    let [width, height, maxval] = fields;
    if width == 0 || height == 0 {
        return Err(format!("the image is {width}x{height}: a side is zero"));
    }
    if maxval == 0 || maxval > 255 {
        return Err(format!(
            "maximum value {maxval}: only 8-bit PPM (maximum value 1 to 255) is supported"
        ));
    }
    let len = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| format!("the image is {width}x{height}: too large"))?;
    let raster = &rest[pos..];
    let raster = raster.get(..len).ok_or_else(|| {
        format!(
            "truncated: a {width}x{height} image needs {len} bytes of pixels, the file has {}",
            raster.len()
        )
    })?;
    let pixels = if maxval == 255 {
        raster.to_vec()
    } else {
        let m = maxval as u32;
        raster
            .iter()
            .map(|&v| ((u32::from(v).min(m) * 255 + m / 2) / m) as u8)
            .collect()
    };
    Ok(Rgb8 {
        width,
        height,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_with_comments_and_a_raster_starting_with_whitespace() {
        let mut file = b"P6\n# made by hand\n2 # width\n1\n255\n".to_vec();
        file.extend_from_slice(&[b'\n', 1, 2, 3, 4, 5, 0xff]);
        let img = parse(&file).unwrap();
        assert_eq!((img.width, img.height), (2, 1));
        assert_eq!(img.pixels, [b'\n', 1, 2, 3, 4, 5]);
    }

    #[test]
    fn small_maximum_values_are_rescaled() {
        let img = parse(b"P6 1 1 15 \x00\x0f\x07").unwrap();
        assert_eq!(img.pixels, [0, 255, 119]);
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"P3 1 1 255 0 0 0",
            b"P6",
            b"P61 1 255 abc",
            b"P6 1 1",
            b"P6 1 1 255",
            b"P6 1 1 255 ab",
            b"P6 0 1 255 ",
            b"P6 1 1 65535 abcdef",
            b"P6 1 1 0 abc",
            b"P6 99999999999999999999999 1 255 abc",
            b"P6 4294967296 4294967296 255 abc",
            b"P6 x 1 255 abc",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
