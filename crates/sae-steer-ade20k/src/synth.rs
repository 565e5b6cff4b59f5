//! A synthetic dataset in the real ADE20K layout, for tests and offline demos.
//!
//! Every scene is a background class plus a few shapes (rectangles, ellipses,
//! bands, a "ground" region) of classes drawn from 1..=150, some pixels left
//! unlabelled (0). Each class has its own colours and texture (stripes of a
//! given period and angle, checkers, dots, grids, grain), defined in the
//! 256x256 frame the ViT sees after resizing, so a linear probe on ViT features
//! can tell classes apart. Class appearances do not depend on the seed, so
//! datasets written with different seeds share them.
//!
//! Output is deterministic for given options (also across thread counts): each
//! image draws from its own random stream seeded by (seed, split, index).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use sae_steer_files::{Phase, Progress};
use serde::{Deserialize, Serialize};

use crate::classes::{NUM_CLASSES, OBJECT_INFO_150};
use crate::dataset::{OBJECT_INFO_FILE, Split};
use crate::error::{Ade20kError, Result};

/// File in the output root that marks a folder as ours; holds the options
/// and, once every file is written, `"complete": true`.
pub const SYNTH_MARKER: &str = "sae-steer-synth.json";

const MARKER_FORMAT: &str = "sae-steer-synth/1";
/// Side of the frame textures are defined in: the reference's resize.
const MODEL_SIDE: f32 = 256.0;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthOptions {
    /// Number of training images.
    pub train: usize,
    /// Number of validation images.
    pub val: usize,
    /// Seed of the scenes (layouts, sizes, noise); class looks do not depend on it.
    pub seed: u64,
    /// Smallest long side of an image, in pixels (at least 16).
    pub min_side: u32,
    /// Largest long side of an image, in pixels.
    pub max_side: u32,
    /// Labels the scenes draw from (each in 1..=150).
    pub classes: Vec<u8>,
    /// Fewest shapes per scene, besides the background.
    pub min_shapes: usize,
    /// Most shapes per scene.
    pub max_shapes: usize,
    /// JPEG quality, 1..=100.
    pub jpeg_quality: u8,
    /// How image sizes are drawn.
    #[serde(default)]
    pub sizes: Sizes,
}

/// How [`synthesize`] draws image sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sizes {
    /// Long side uniform in `min_side..=max_side`, a common aspect ratio
    /// (1:1 to 3:1), landscape 70% of the time.
    #[default]
    Uniform,
    /// ADE20K's own mix, for cost measurements at the real geometry: most
    /// images about 683 x 512 (either way round), about one in ten small
    /// (long side 120-400 px), about one in twenty large (long side
    /// 1,000-2,600 px). `min_side` and `max_side` are ignored.
    Ade,
}

impl std::str::FromStr for Sizes {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "uniform" => Ok(Self::Uniform),
            "ade" => Ok(Self::Ade),
            other => Err(format!("`{other}`: expected `uniform` or `ade`")),
        }
    }
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            train: 200,
            val: 50,
            seed: 0,
            min_side: 96,
            max_side: 512,
            classes: (1..=NUM_CLASSES as u8).collect(),
            min_shapes: 2,
            max_shapes: 6,
            jpeg_quality: 90,
            sizes: Sizes::Uniform,
        }
    }
}

/// What [`synthesize`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthReport {
    /// The dataset root (open it with [`crate::Ade20k::open`]).
    pub root: PathBuf,
    /// Training images in the dataset.
    pub train: usize,
    /// Validation images in the dataset.
    pub val: usize,
    /// Files written by this call (0 when the dataset was already complete).
    pub files_written: usize,
    /// Stale files of an earlier, larger dataset that were removed.
    pub files_removed: usize,
    /// True when a complete dataset with the same options was already there.
    pub up_to_date: bool,
    /// Pixels per label (0..=150) over all images of both splits.
    pub class_pixels: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
    options: SynthOptions,
    complete: bool,
    class_pixels: Vec<u64>,
}

/// Writes `opts.train` + `opts.val` images with their annotations, the real
/// `objectInfo150.txt` and a `sceneCategories.txt` under `out`
/// (`out/images/training/ADE_train_00000001.jpg`, ...).
///
/// `out` must be empty, absent, or a dataset this function wrote before (it
/// carries [`SYNTH_MARKER`]): a real dataset is never overwritten. If the
/// marker says the same options and every file is there, nothing is written;
/// otherwise everything is rewritten (each file atomically) and files of an
/// earlier, larger dataset are removed.
///
/// The images written are reported to `progress` as one phase, "synth",
/// of `opts.train + opts.val` images (none when the dataset is up to date).
pub fn synthesize(out: &Path, opts: &SynthOptions, progress: &dyn Progress) -> Result<SynthReport> {
    validate(out, opts)?;
    let synth_err = |message: String| Ade20kError::Synth {
        path: out.to_path_buf(),
        message,
    };
    let marker_path = out.join(SYNTH_MARKER);
    if out.exists() {
        if !out.is_dir() {
            return Err(synth_err("it exists and is not a folder".into()));
        }
        let previous = read_marker(&marker_path)?;
        let empty = std::fs::read_dir(out)
            .map_err(|e| Ade20kError::io(out, e))?
            .next()
            .is_none();
        match previous {
            None if !empty => {
                return Err(synth_err(format!(
                    "the folder is not empty and has no {SYNTH_MARKER}, so it is not a synthetic \
                     dataset written earlier; refusing to overwrite it (choose an empty folder)"
                )));
            }
            Some(m) if m.complete && m.options == *opts && all_files_present(out, opts) => {
                return Ok(SynthReport {
                    root: out.to_path_buf(),
                    train: opts.train,
                    val: opts.val,
                    files_written: 0,
                    files_removed: 0,
                    up_to_date: true,
                    class_pixels: m.class_pixels,
                });
            }
            _ => {}
        }
    }
    // Claim the folder first, so an interrupted run can be resumed/rewritten.
    write_marker(&marker_path, opts, false, &[])?;

    let jobs: Vec<(Split, usize)> = [(Split::Training, opts.train), (Split::Validation, opts.val)]
        .into_iter()
        .flat_map(|(split, n)| (0..n).map(move |i| (split, i)))
        .collect();
    let class_pixels = render_all(out, opts, &jobs, progress)?;

    let mut files_removed = 0;
    for (split, n) in [(Split::Training, opts.train), (Split::Validation, opts.val)] {
        files_removed += remove_stale(&out.join("images").join(split.dir_name()), split, n)?;
        files_removed += remove_stale(&out.join("annotations").join(split.dir_name()), split, n)?;
    }
    write_file(&out.join(OBJECT_INFO_FILE), OBJECT_INFO_150.as_bytes())?;
    write_file(
        &out.join("sceneCategories.txt"),
        scene_categories(opts).as_bytes(),
    )?;
    write_marker(&marker_path, opts, true, &class_pixels)?;
    Ok(SynthReport {
        root: out.to_path_buf(),
        train: opts.train,
        val: opts.val,
        files_written: 2 * jobs.len() + 3,
        files_removed,
        up_to_date: false,
        class_pixels,
    })
}

fn validate(out: &Path, opts: &SynthOptions) -> Result<()> {
    let problem = if opts.min_side < 16 {
        Some(format!("min_side {} is below 16 pixels", opts.min_side))
    } else if opts.max_side < opts.min_side {
        Some(format!(
            "max_side {} is below min_side {}",
            opts.max_side, opts.min_side
        ))
    } else if opts.max_side > 8192 {
        Some(format!("max_side {} is above 8192 pixels", opts.max_side))
    } else if opts.classes.is_empty() {
        Some("no classes to draw from".to_string())
    } else if let Some(c) = opts
        .classes
        .iter()
        .find(|&&c| c == 0 || c as usize > NUM_CLASSES)
    {
        Some(format!("class {c} is not in 1..={NUM_CLASSES}"))
    } else if opts.min_shapes > opts.max_shapes || opts.max_shapes > 32 {
        Some(format!(
            "shapes per scene {}..={} must be increasing and at most 32",
            opts.min_shapes, opts.max_shapes
        ))
    } else if !(1..=100).contains(&opts.jpeg_quality) {
        Some(format!(
            "JPEG quality {} is not in 1..=100",
            opts.jpeg_quality
        ))
    } else if opts.train > 99_999_999 || opts.val > 99_999_999 {
        Some("at most 99,999,999 images per split (8-digit file names)".to_string())
    } else {
        None
    };
    match problem {
        Some(message) => Err(Ade20kError::Synth {
            path: out.to_path_buf(),
            message,
        }),
        None => Ok(()),
    }
}

fn read_marker(path: &Path) -> Result<Option<Marker>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Ade20kError::io(path, e))?;
    // A marker we cannot parse is still ours (e.g. from an older version):
    // treat it as incomplete so the dataset is rewritten.
    let parsed = serde_json::from_str::<Marker>(&text)
        .ok()
        .filter(|m| m.format == MARKER_FORMAT);
    Ok(Some(parsed.unwrap_or(Marker {
        format: String::new(),
        options: SynthOptions::default(),
        complete: false,
        class_pixels: Vec::new(),
    })))
}

fn write_marker(path: &Path, opts: &SynthOptions, complete: bool, pixels: &[u64]) -> Result<()> {
    let marker = Marker {
        format: MARKER_FORMAT.into(),
        options: opts.clone(),
        complete,
        class_pixels: pixels.to_vec(),
    };
    let json = serde_json::to_string_pretty(&marker).map_err(|e| Ade20kError::Synth {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    write_file(path, json.as_bytes())
}

/// Every file through the toolkit's one atomic write (exclusive temporary,
/// fsync, rename, folder fsync).
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    sae_steer_files::write_atomic(path, bytes).map_err(|e| Ade20kError::io(path, e))
}

fn file_stem(split: Split, index: usize) -> String {
    format!("{}{:08}", split.file_prefix(), index + 1)
}

fn image_path(out: &Path, split: Split, index: usize) -> PathBuf {
    out.join("images")
        .join(split.dir_name())
        .join(format!("{}.jpg", file_stem(split, index)))
}

fn label_path(out: &Path, split: Split, index: usize) -> PathBuf {
    out.join("annotations")
        .join(split.dir_name())
        .join(format!("{}.png", file_stem(split, index)))
}

fn all_files_present(out: &Path, opts: &SynthOptions) -> bool {
    let splits = [(Split::Training, opts.train), (Split::Validation, opts.val)];
    out.join(OBJECT_INFO_FILE).is_file()
        && out.join("sceneCategories.txt").is_file()
        && splits.iter().all(|&(split, n)| {
            (0..n)
                .all(|i| image_path(out, split, i).is_file() && label_path(out, split, i).is_file())
        })
}

/// Removes our files numbered past `n` and leftovers of interrupted writes.
fn remove_stale(dir: &Path, split: Split, n: usize) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| Ade20kError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let number = name
            .strip_prefix(split.file_prefix())
            .and_then(|rest| rest.split('.').next())
            .and_then(|digits| digits.parse::<usize>().ok());
        let stale_tmp = name.starts_with(&format!(".{}", split.file_prefix()))
            && sae_steer_files::is_temp_name(&name);
        if stale_tmp || number.is_some_and(|k| k == 0 || k > n) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Ade20kError::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

const SCENES: &[&str] = &[
    "airport_terminal",
    "bathroom",
    "bedroom",
    "building_facade",
    "conference_room",
    "corridor",
    "dining_room",
    "game_room",
    "highway",
    "hotel_room",
    "kitchen",
    "living_room",
    "mountain_snowy",
    "office",
    "park",
    "skyscraper",
    "street",
];

fn scene_categories(opts: &SynthOptions) -> String {
    let mut text = String::new();
    for (split, n) in [(Split::Training, opts.train), (Split::Validation, opts.val)] {
        for i in 0..n {
            let mut rng = image_rng(opts.seed ^ 0x5CE4E, split, i);
            let scene = SCENES[rng.below(SCENES.len() as u64) as usize];
            text.push_str(&format!("{} {scene}\n", file_stem(split, i)));
        }
    }
    text
}

/// Renders and writes every job on all cores; returns pixels per label.
fn render_all(
    out: &Path,
    opts: &SynthOptions,
    jobs: &[(Split, usize)],
    progress: &dyn Progress,
) -> Result<Vec<u64>> {
    let progress = Phase::start(progress, "synth", "images", jobs.len() as u64, 0);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<Ade20kError>> = Mutex::new(None);
    let totals = Mutex::new(vec![0u64; NUM_CLASSES + 1]);
    let appearances: Vec<Appearance> = (0..=NUM_CLASSES).map(Appearance::of_class).collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut counts = vec![0u64; NUM_CLASSES + 1];
                while !failed.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(split, index)) = jobs.get(k) else {
                        break;
                    };
                    match write_scene(out, opts, &appearances, split, index, &mut counts) {
                        Ok(()) => progress.advance(1),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(e);
                            }
                        }
                    }
                }
                if let Ok(mut t) = totals.lock() {
                    t.iter_mut().zip(&counts).for_each(|(t, c)| *t += c);
                }
            });
        }
    });
    drop(progress);
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(totals.into_inner().unwrap_or_default())
}

fn write_scene(
    out: &Path,
    opts: &SynthOptions,
    appearances: &[Appearance],
    split: Split,
    index: usize,
    counts: &mut [u64],
) -> Result<()> {
    let scene = Scene::generate(opts, split, index);
    let rgb = scene.render(appearances, opts.seed, split, index);
    for &l in &scene.labels {
        counts[l as usize] += 1;
    }
    let (w, h) = (scene.width, scene.height);
    let img_path = image_path(out, split, index);
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, opts.jpeg_quality)
        .encode(&rgb, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| Ade20kError::Synth {
            path: img_path.clone(),
            message: format!("JPEG encoding failed: {e}"),
        })?;
    write_file(&img_path, &jpeg)?;
    let lbl_path = label_path(out, split, index);
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&scene.labels, w, h, ExtendedColorType::L8)
        .map_err(|e| Ade20kError::Synth {
            path: lbl_path.clone(),
            message: format!("PNG encoding failed: {e}"),
        })?;
    write_file(&lbl_path, &png)
}

/// SplitMix64: tiny, seedable, and its output never changes between
/// releases of a dependency, so datasets stay byte-identical.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }
}

fn image_rng(seed: u64, split: Split, index: usize) -> Rng {
    let salt = match split {
        Split::Training => 0x7EA1_0000_0000_0000u64,
        Split::Validation => 0x0A1D_0000_0000_0000u64,
    };
    let mut r = Rng(seed ^ salt ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    r.next_u64();
    r
}

#[derive(Clone, Copy)]
enum Texture {
    /// Square-wave stripes: period and direction in model pixels.
    Stripes {
        period: f32,
        cos: f32,
        sin: f32,
    },
    Checker {
        cell: f32,
    },
    Dots {
        period: f32,
        radius2: f32,
    },
    Grid {
        period: f32,
        width: f32,
    },
    /// Per-pixel random mix of the two colours.
    Grain {
        density: f32,
    },
}

/// How one class looks: two colours and a texture mixing them.
#[derive(Clone, Copy)]
struct Appearance {
    base: [f32; 3],
    accent: [f32; 3],
    texture: Texture,
}

impl Appearance {
    /// Depends on the class only (not on the seed).
    fn of_class(class: usize) -> Self {
        let mut r = Rng(0xADE2_0C1A_55E5 ^ (class as u64).wrapping_mul(0x9E37_79B9));
        r.next_u64();
        // Golden-ratio hues spread neighbouring class numbers apart.
        let hue = (class as f32 * 0.618_034).fract();
        let base = hsv(hue, r.range(0.45, 0.95), r.range(0.35, 0.95));
        let accent_hue = (hue + r.range(0.15, 0.5)).fract();
        let accent = hsv(accent_hue, r.range(0.2, 0.9), r.range(0.2, 1.0));
        let texture = match class % 5 {
            0 => Texture::Grain {
                density: r.range(0.15, 0.5),
            },
            1 => {
                let angle = r.range(0.0, std::f32::consts::PI);
                Texture::Stripes {
                    period: r.range(6.0, 28.0),
                    cos: angle.cos(),
                    sin: angle.sin(),
                }
            }
            2 => Texture::Checker {
                cell: r.range(4.0, 20.0),
            },
            3 => {
                let period = r.range(7.0, 24.0);
                Texture::Dots {
                    period,
                    radius2: r.range(0.04, 0.16),
                }
            }
            _ => Texture::Grid {
                period: r.range(8.0, 28.0),
                width: r.range(0.12, 0.3),
            },
        };
        Self {
            base,
            accent,
            texture,
        }
    }

    /// Share of the accent colour at model coordinates (u, v).
    fn accent_share(&self, u: f32, v: f32, noise: f32) -> f32 {
        let on = match self.texture {
            Texture::Stripes { period, cos, sin } => {
                ((u * cos + v * sin) / period).rem_euclid(1.0) < 0.5
            }
            Texture::Checker { cell } => {
                ((u / cell).floor() as i64 + (v / cell).floor() as i64) & 1 == 1
            }
            Texture::Dots { period, radius2 } => {
                let du = (u / period).rem_euclid(1.0) - 0.5;
                let dv = (v / period).rem_euclid(1.0) - 0.5;
                du * du + dv * dv < radius2
            }
            Texture::Grid { period, width } => {
                (u / period).rem_euclid(1.0) < width || (v / period).rem_euclid(1.0) < width
            }
            Texture::Grain { density } => noise < density,
        };
        if on { 1.0 } else { 0.0 }
    }
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
    let [r, g, b] = match i as i64 % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    };
    [r * 255.0, g * 255.0, b * 255.0]
}

/// One painted region; later regions cover earlier ones.
struct Instance {
    class: u8,
    /// Lighting of this instance (multiplies the colours).
    brightness: f32,
    /// Texture offset in model pixels, so instances of a class differ.
    shift: (f32, f32),
}

/// (long, short) side of an image with ADE20K's size mix (see [`Sizes::Ade`]).
fn ade_size(r: &mut Rng) -> (u32, u32) {
    let roll = r.unit();
    if roll < 0.10 {
        let long = 120 + r.below(281) as u32;
        (long, (long as f32 / r.range(1.0, 1.6)).round() as u32)
    } else if roll < 0.15 {
        let long = 1000 + r.below(1601) as u32;
        (long, (long as f32 / r.range(1.25, 2.2)).round() as u32)
    } else {
        // The SceneParsing release: short side 512 for most images, long
        // side near 683 (4:3), with some spread.
        (640 + r.below(101) as u32, 512)
    }
}

struct Scene {
    width: u32,
    height: u32,
    labels: Vec<u8>,
    /// Instance of each pixel (index into `instances`).
    owner: Vec<u8>,
    instances: Vec<Instance>,
}

impl Scene {
    fn generate(opts: &SynthOptions, split: Split, index: usize) -> Self {
        let mut r = image_rng(opts.seed, split, index);
        let (long, short) = match opts.sizes {
            Sizes::Uniform => {
                let long =
                    opts.min_side + r.below(u64::from(opts.max_side - opts.min_side) + 1) as u32;
                const ASPECTS: [f32; 7] =
                    [1.0, 4.0 / 3.0, 4.0 / 3.0, 3.0 / 2.0, 16.0 / 9.0, 2.0, 3.0];
                let aspect = ASPECTS[r.below(ASPECTS.len() as u64) as usize];
                (
                    long,
                    ((long as f32 / aspect).round() as u32).max(16.min(long)),
                )
            }
            Sizes::Ade => ade_size(&mut r),
        };
        let (width, height) = if r.chance(0.7) {
            (long, short)
        } else {
            (short, long)
        };
        let (w, h) = (width as usize, height as usize);
        let pick = |r: &mut Rng| opts.classes[r.below(opts.classes.len() as u64) as usize];

        let mut scene = Scene {
            width,
            height,
            labels: vec![0; w * h],
            owner: vec![0; w * h],
            instances: Vec::new(),
        };
        let background = pick(&mut r);
        scene.add_instance(&mut r, background, |_, _| true);

        // A ground region with a wavy top edge, in most scenes.
        if r.chance(0.6) {
            let class = pick(&mut r);
            let top = r.range(0.55, 0.8);
            let amp = r.range(0.0, 0.06);
            let freq = r.range(1.0, 4.0);
            scene.add_instance(&mut r, class, |x, y| {
                y > top + amp * (x * freq * std::f32::consts::TAU).sin()
            });
        }
        let shapes =
            opts.min_shapes + r.below((opts.max_shapes - opts.min_shapes) as u64 + 1) as usize;
        for _ in 0..shapes {
            // Unlabelled regions are rare, as in ADE20K, but must occur.
            let class = if r.chance(0.12) { 0 } else { pick(&mut r) };
            match r.below(3) {
                0 => {
                    let (cx, cy) = (r.unit(), r.unit());
                    let (hw, hh) = (r.range(0.08, 0.3), r.range(0.08, 0.3));
                    scene.add_instance(&mut r, class, |x, y| {
                        (x - cx).abs() <= hw && (y - cy).abs() <= hh
                    });
                }
                1 => {
                    let (cx, cy) = (r.unit(), r.unit());
                    let (rx, ry) = (r.range(0.06, 0.3), r.range(0.06, 0.3));
                    scene.add_instance(&mut r, class, |x, y| {
                        let (dx, dy) = ((x - cx) / rx, (y - cy) / ry);
                        dx * dx + dy * dy <= 1.0
                    });
                }
                _ => {
                    let vertical = r.chance(0.5);
                    let start = r.unit();
                    let thickness = r.range(0.06, 0.22);
                    scene.add_instance(&mut r, class, |x, y| {
                        let t = if vertical { x } else { y };
                        t >= start && t < start + thickness
                    });
                }
            }
        }
        // Thin unlabelled outlines around some regions, like ADE20K's
        // annotation boundaries.
        if r.chance(0.5) {
            scene.outline_unlabelled();
        }
        scene
    }

    /// Paints a region given by `inside(x, y)` over relative coordinates in
    /// [0, 1) (so shapes keep their layout across image sizes).
    fn add_instance(&mut self, r: &mut Rng, class: u8, inside: impl Fn(f32, f32) -> bool) {
        let id = self.instances.len() as u8;
        self.instances.push(Instance {
            class,
            brightness: r.range(0.8, 1.15),
            shift: (r.range(0.0, 64.0), r.range(0.0, 64.0)),
        });
        let (w, h) = (self.width as usize, self.height as usize);
        for y in 0..h {
            let fy = (y as f32 + 0.5) / h as f32;
            for x in 0..w {
                if inside((x as f32 + 0.5) / w as f32, fy) {
                    self.labels[y * w + x] = class;
                    self.owner[y * w + x] = id;
                }
            }
        }
    }

    /// Sets to 0 the pixels whose right or lower neighbour is another region.
    fn outline_unlabelled(&mut self) {
        let (w, h) = (self.width as usize, self.height as usize);
        let owner = self.owner.clone();
        for y in 0..h {
            for x in 0..w {
                let o = owner[y * w + x];
                let edge = (x + 1 < w && owner[y * w + x + 1] != o)
                    || (y + 1 < h && owner[(y + 1) * w + x] != o);
                if edge {
                    self.labels[y * w + x] = 0;
                }
            }
        }
    }

    fn render(&self, appearances: &[Appearance], seed: u64, split: Split, index: usize) -> Vec<u8> {
        let mut r = image_rng(seed ^ 0x9A1E_77E5, split, index);
        let (w, h) = (self.width as usize, self.height as usize);
        let (sx, sy) = (MODEL_SIDE / w as f32, MODEL_SIDE / h as f32);
        // "Other" regions: a smooth random gradient, different in every image.
        let other_a = [
            r.range(0.0, 255.0),
            r.range(0.0, 255.0),
            r.range(0.0, 255.0),
        ];
        let other_b = [
            r.range(0.0, 255.0),
            r.range(0.0, 255.0),
            r.range(0.0, 255.0),
        ];
        let mut rgb = vec![0u8; w * h * 3];
        for y in 0..h {
            let v = (y as f32 + 0.5) * sy;
            for x in 0..w {
                let u = (x as f32 + 0.5) * sx;
                let i = y * w + x;
                let inst = &self.instances[self.owner[i] as usize];
                let noise = r.unit();
                let colour: [f32; 3] = if self.labels[i] == 0 {
                    let t = (u + v) / (2.0 * MODEL_SIDE);
                    std::array::from_fn(|c| other_a[c] * (1.0 - t) + other_b[c] * t)
                } else {
                    let look = &appearances[inst.class as usize];
                    let a = look.accent_share(u + inst.shift.0, v + inst.shift.1, noise);
                    std::array::from_fn(|c| {
                        (look.base[c] * (1.0 - a) + look.accent[c] * a) * inst.brightness
                    })
                };
                let jitter = (noise - 0.5) * 16.0;
                for c in 0..3 {
                    rgb[3 * i + c] = (colour[c] + jitter).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        rgb
    }
}
