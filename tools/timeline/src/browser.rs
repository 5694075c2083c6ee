//! Headless Chromium: screenshots of a timeline page, and a check that they are not blank.
//!
//! Debian's `chromium` package is used. When it is missing and we run as root, [`ensure`]
//! installs it with apt-get (like xtask does QEMU); otherwise the error names the package.
//! Chromium runs with a fresh profile directory and every background service off
//! (no sync, no component updates, no QUIC, no first-run), in its own process group, which
//! is killed by id if it outlives [`TIMEOUT`].

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Debian package.
pub const PACKAGE: &str = "chromium";
/// Names the browser goes by on PATH.
const BINARIES: [&str; 2] = ["chromium", "chromium-browser"];
/// Longest a screenshot may take.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// The browser on PATH, if any.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| BINARIES.iter().map(move |b| dir.join(b)))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The browser, installing Debian's package first when missing and running as root.
pub fn ensure() -> Result<PathBuf, String> {
    if let Some(found) = find() {
        return Ok(found);
    }
    if !is_root() {
        return Err(format!(
            "no Chromium on PATH. Install Debian's '{PACKAGE}' package (as root: apt-get install -y {PACKAGE}) and run again."
        ));
    }
    eprintln!("==> chromium missing: installing {PACKAGE} with apt-get (one time)");
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", PACKAGE][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("running apt-get: {e}"))?;
        if !status.success() {
            return Err(format!("apt-get {} failed ({status})", args.join(" ")));
        }
    }
    find().ok_or_else(|| format!("installed {PACKAGE} but no chromium binary is on PATH"))
}

/// Renders `html` at `width`×`height` CSS pixels into `png`.
pub fn screenshot(html: &Path, png: &Path, width: u32, height: u32) -> Result<(), String> {
    let browser = ensure()?;
    let html = html
        .canonicalize()
        .map_err(|e| format!("{}: {e}", html.display()))?;
    let profile = std::env::temp_dir().join(format!(
        "xylem-chromium-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_file(png);
    let mut child = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", browser.display()))?;
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            // The group is the one this call created for the browser and its helpers.
            let group = -(child.id() as libc::pid_t);
            // SAFETY: kill(2) on our own child's process group; it has not been reaped, so
            // the id cannot belong to anyone else.
            unsafe { libc::kill(group, libc::SIGKILL) };
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&profile);
            return Err(format!("chromium did not finish within {TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&profile);
    let stderr = child
        .stderr
        .take()
        .map(|mut s| {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut text);
            text
        })
        .unwrap_or_default();
    if !status.success() || !png.is_file() {
        let tail: String = stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(format!(
            "chromium failed ({status}) without a screenshot: {tail}"
        ));
    }
    Ok(())
}

/// What a screenshot holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pixels {
    pub width: u32,
    pub height: u32,
    /// Share of pixels that differ from the most common colour (the background).
    pub ink_fraction: f64,
    /// Distinct colours seen (capped at 4096).
    pub colors: usize,
}

/// Smallest share of non-background pixels a real timeline shows.
pub const INK_FRACTION_MIN: f64 = 0.02;
/// Fewest distinct colours (the legend alone has more).
pub const COLORS_MIN: usize = 12;

/// Decodes a PNG and measures how much is drawn on it.
pub fn measure(png_path: &Path) -> Result<Pixels, String> {
    let file = std::fs::File::open(png_path).map_err(|e| format!("{}: {e}", png_path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| format!("not a PNG: {e}"))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("bad PNG data: {e}"))?;
    let channels = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| &p[..channels.min(3)])
        .collect();
    if pixels.is_empty() {
        return Err("empty image".into());
    }
    let mut counts: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for p in &pixels {
        if counts.len() < 4096 || counts.contains_key(p) {
            *counts.entry(p).or_default() += 1;
        }
    }
    let background = counts.values().copied().max().unwrap_or(0);
    Ok(Pixels {
        width: info.width,
        height: info.height,
        ink_fraction: 1.0 - background as f64 / pixels.len() as f64,
        colors: counts.len(),
    })
}

/// `measure`, failing unless the image is a real picture.
pub fn check_nonblank(png_path: &Path) -> Result<Pixels, String> {
    let px = measure(png_path)?;
    if px.ink_fraction < INK_FRACTION_MIN || px.colors < COLORS_MIN {
        return Err(format!(
            "{} looks blank: {:.1} % ink, {} colours (want ≥ {:.0} % and ≥ {COLORS_MIN})",
            png_path.display(),
            px.ink_fraction * 100.0,
            px.colors,
            INK_FRACTION_MIN * 100.0
        ));
    }
    Ok(px)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) {
        let file = std::fs::File::create(path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                data.extend(pixel(x, y));
            }
        }
        writer.write_image_data(&data).unwrap();
    }

    #[test]
    fn blank_and_drawn_images_are_told_apart() {
        let dir = std::env::temp_dir();
        let blank = dir.join(format!("xylem-blank-{}.png", std::process::id()));
        write_png(&blank, 64, 32, |_, _| [255, 255, 255]);
        let px = measure(&blank).unwrap();
        assert_eq!((px.width, px.height, px.colors), (64, 32, 1));
        assert!(check_nonblank(&blank).is_err());
        let drawn = dir.join(format!("xylem-drawn-{}.png", std::process::id()));
        write_png(&drawn, 64, 32, |x, y| {
            if y < 16 {
                [255, 255, 255]
            } else {
                [(x * 4) as u8, 0, 100]
            }
        });
        let px = check_nonblank(&drawn).unwrap();
        assert!((px.ink_fraction - 0.5).abs() < 0.01, "{px:?}");
        assert!(measure(&dir.join("no-such.png")).is_err());
        let _ = std::fs::remove_file(blank);
        let _ = std::fs::remove_file(drawn);
    }
}
