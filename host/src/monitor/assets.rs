//! The UI's files, embedded in the binary at build time (no build step, nothing fetched):
//! one page, its script and its style. The page reads `/api/v1/` and draws everything itself.

/// An embedded file: its path under `/`, content type and bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The path it is served at.
    pub path: &'static str,
    /// Its content type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

/// Every embedded file.
pub const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("ui/style.css"),
    },
];

/// The file served at `path` (`/index.html` and `/ui/` are the page too).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = match path {
        "/index.html" | "/ui" | "/ui/" => "/",
        p => p,
    };
    ASSETS.iter().find(|a| a.path == path)
}
