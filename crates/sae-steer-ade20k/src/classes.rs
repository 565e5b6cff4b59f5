//! Class names from ADE20K's `objectInfo150.txt`.

use std::path::Path;

use crate::error::{Ade20kError, Result};

/// Number of ADE20K classes; labels are 0 (other) ..= 150, and the probe has
/// `NUM_CLASSES + 1` outputs. ADE20K's labels fill the range label maps and
/// activation caches hold ([`sae_steer_data::MAX_LABEL`]).
pub const NUM_CLASSES: usize = sae_steer_data::MAX_LABEL;

/// The real `objectInfo150.txt` of the SceneParsing benchmark
/// (CSAILVision/sceneparsing), byte for byte, trailing spaces included.
pub const OBJECT_INFO_150: &str = include_str!("../data/objectInfo150.txt");

/// One row of `objectInfo150.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassInfo {
    /// Label value in the annotation PNGs (1..=150).
    pub index: usize,
    /// Share of all training pixels with this label.
    pub ratio: f64,
    /// Number of training images containing the class.
    pub train_images: u32,
    /// Number of validation images containing the class.
    pub val_images: u32,
    /// All synonyms as in the file, e.g. `"car, auto, automobile, machine, motorcar"`.
    pub full_name: String,
    /// The first synonym, e.g. `"car"`.
    pub name: String,
}

/// The class table: label `i` (1-based) is row `i` of `objectInfo150.txt`;
/// label 0 is "other" (unlabelled pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassNames {
    classes: Vec<ClassInfo>,
}

impl ClassNames {
    /// Name of label 0.
    pub const OTHER: &'static str = "other";

    /// Reads a tab-separated `Idx Ratio Train Val Name` table (header line
    /// optional). Rows must be numbered 1, 2, 3, ... in order.
    pub fn read(path: &Path) -> Result<Self> {
        // The real table is 8 KB; a file far larger is not one, and is
        // refused before it is read whole into memory.
        const MAX_BYTES: u64 = 1 << 20;
        let len = std::fs::metadata(path)
            .map_err(|e| Ade20kError::io(path, e))?
            .len();
        if len > MAX_BYTES {
            return Err(Ade20kError::ClassFile {
                path: path.to_path_buf(),
                line: 0,
                message: format!("{len} bytes; a class table has at most {MAX_BYTES}"),
            });
        }
        // Bounded again while reading: the file may grow after the check.
        let text = sae_steer_files::read_to_string_bounded(path, MAX_BYTES)
            .map_err(|e| Ade20kError::io(path, e))?;
        Self::parse(&text, path)
    }

    /// The 150 classes of ADE20K SceneParsing, from the embedded real file.
    pub fn ade20k_default() -> Self {
        Self::parse(OBJECT_INFO_150, Path::new("<embedded objectInfo150.txt>"))
            .unwrap_or_else(|e| unreachable!("the embedded objectInfo150.txt parses: {e}"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut classes = Vec::new();
        let mut seen_header = false;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| Ade20kError::ClassFile {
                path: path.to_path_buf(),
                line,
                message,
            };
            if raw.trim().is_empty() {
                continue;
            }
            // The real file pads some indices with a space ("22 \t0.0074..."),
            // and some names end with one ("bed ").
            let fields: Vec<&str> = raw.split('\t').map(str::trim).collect();
            let starts_with_digit = fields[0].starts_with(|c: char| c.is_ascii_digit());
            if !seen_header && classes.is_empty() && !starts_with_digit {
                seen_header = true;
                continue; // `Idx Ratio Train Val Name`
            }
            let [idx, ratio, train, val, name] = fields[..] else {
                return Err(err(format!(
                    "expected 5 tab-separated fields (Idx Ratio Train Val Name), found {}",
                    fields.len()
                )));
            };
            let index: usize = idx
                .parse()
                .map_err(|_| err(format!("index `{idx}` is not a number")))?;
            if index != classes.len() + 1 {
                return Err(err(format!(
                    "expected class {}, found {index}: rows must be numbered 1, 2, 3, ...",
                    classes.len() + 1
                )));
            }
            let ratio: f64 = ratio
                .parse()
                .map_err(|_| err(format!("ratio `{ratio}` is not a number")))?;
            let train_images: u32 = train
                .parse()
                .map_err(|_| err(format!("train count `{train}` is not a number")))?;
            let val_images: u32 = val
                .parse()
                .map_err(|_| err(format!("val count `{val}` is not a number")))?;
            let short = name.split(',').next().unwrap_or_default().trim();
            if short.is_empty() {
                return Err(err("empty class name".into()));
            }
            classes.push(ClassInfo {
                index,
                ratio,
                train_images,
                val_images,
                full_name: name.to_string(),
                name: short.to_string(),
            });
        }
        if classes.is_empty() {
            return Err(Ade20kError::ClassFile {
                path: path.to_path_buf(),
                line: 0,
                message: "no classes found".into(),
            });
        }
        Ok(Self { classes })
    }

    /// Number of classes, not counting label 0 (150 for ADE20K).
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Always false for a table that was read successfully.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Short name of a label: the first synonym (`"wall"` for 1), `"other"`
    /// for 0, `"unknown"` past the table.
    pub fn name(&self, class: usize) -> &str {
        match class {
            0 => Self::OTHER,
            c => self.info(c).map_or("unknown", |i| i.name.as_str()),
        }
    }

    /// All synonyms of a label as in the file; `"other"` for 0, `"unknown"`
    /// past the table.
    pub fn full_name(&self, class: usize) -> &str {
        match class {
            0 => Self::OTHER,
            c => self.info(c).map_or("unknown", |i| i.full_name.as_str()),
        }
    }

    /// The row of label `class` (1-based); `None` for 0 or past the table.
    pub fn info(&self, class: usize) -> Option<&ClassInfo> {
        class.checked_sub(1).and_then(|i| self.classes.get(i))
    }

    /// All rows, label 1 first.
    pub fn classes(&self) -> &[ClassInfo] {
        &self.classes
    }

    /// The label named `name` (case-insensitive; a short name wins over a
    /// synonym of another class), or whose number it is: `"car"`,
    /// `"automobile"` and `"21"` all give 21, `"other"` and `"0"` give 0.
    pub fn find(&self, name: &str) -> Option<usize> {
        let name = name.trim();
        if let Ok(i) = name.parse::<usize>() {
            return (i <= self.len()).then_some(i);
        }
        if name.eq_ignore_ascii_case(Self::OTHER) {
            return Some(0);
        }
        // Short names first: "screen" is a synonym of three classes but the
        // short name of one (131).
        let by_short = self
            .classes
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name));
        by_short
            .or_else(|| {
                self.classes.iter().find(|c| {
                    c.full_name
                        .split(',')
                        .any(|s| s.trim().eq_ignore_ascii_case(name))
                })
            })
            .map(|c| c.index)
    }
}
