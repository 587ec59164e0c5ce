//! The UI's files, embedded in the binary at build time (no build step, nothing fetched):
//! one page, its scripts (ES modules: `app.js` the page and its polling, `dom.js` elements and
//! formats, `chart.js` the SVG charts, `controls.js` swap/shadow/promote, `batch.js` a
//! batch's page), its style and its icon. The page reads `/api/v1/` and draws everything
//! itself, text only through text nodes.

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
    Asset {
        path: "/ui/dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/dom.js"),
    },
    Asset {
        path: "/ui/chart.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/chart.js"),
    },
    Asset {
        path: "/ui/controls.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/controls.js"),
    },
    Asset {
        path: "/ui/batch.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("ui/batch.js"),
    },
    Asset {
        path: "/ui/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("ui/favicon.svg"),
    },
];

/// The file served at `path` (`/index.html` and `/ui/` are the page too).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = match path {
        "/index.html" | "/ui" | "/ui/" => "/",
        "/favicon.ico" => "/ui/favicon.svg",
        p => p,
    };
    ASSETS.iter().find(|a| a.path == path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_of_the_ui_directory_is_embedded_and_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/monitor/ui");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let path = match name.as_str() {
                "index.html" => "/".to_owned(),
                _ => format!("/ui/{name}"),
            };
            let asset = super::find(&path)
                .unwrap_or_else(|| panic!("{name} is in {} but not embedded", dir.display()));
            assert_eq!(
                asset.body,
                std::fs::read(dir.join(&name)).unwrap(),
                "{name}"
            );
        }
    }
}
