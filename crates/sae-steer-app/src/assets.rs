//! The page, embedded in the binary: plain HTML, CSS and JavaScript, no
//! build step. Nothing else is ever served from disk.

/// `/`
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// `/app.js`
pub const APP_JS: &str = include_str!("../assets/app.js");
/// `/style.css`
pub const STYLE_CSS: &str = include_str!("../assets/style.css");
