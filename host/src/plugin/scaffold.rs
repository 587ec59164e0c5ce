//! `sluice plugin check` and `list`: what a plugin file is, asks for and takes (`plugin new`
//! and `build` are in [`super::project`]).

use std::path::Path;

use crate::error::{Error, Result};

use super::search::PluginPath;
use super::{Plugin, PluginRuntime};

/// What `sluice plugin check` prints for a plugin that loads: what it is (description,
/// version, world), what it takes (parameters with their defaults), its limits and what it
/// asks for.
pub fn describe(plugin: &Plugin) -> String {
    let i = plugin.info();
    let m = &i.manifest;
    let asks = if m.capabilities.dirs.is_empty() {
        "nothing".to_owned()
    } else {
        format!("directories {}", m.capabilities.dirs.join(", "))
    };
    format!(
        "plugin    {} {}\nabout     {}\nfile      {} ({} bytes)\nsha256    {}\nworld     {} (exports {})\nimports   {}\nparams    {}\nlimits    {}\nasks for  {asks}\ncompiled  in {:.1} ms ({})\n{}",
        i.name,
        m.plugin_version,
        if m.description.is_empty() {
            "(no description in its manifest)"
        } else {
            &m.description
        },
        i.path.display(),
        i.size,
        i.digest,
        if plugin.has_self_test() {
            "tested-transformer"
        } else {
            i.kind.world()
        },
        i.exports.join(", "),
        i.imports.join(", "),
        params_line(m),
        limits_line(&i.limits),
        i.compile_time.as_secs_f64() * 1e3,
        if i.cached {
            "from the cache"
        } else {
            "compiled now, cached"
        },
        if i.lends_output {
            "output    read in place (it keeps its output valid after the call)\n"
        } else {
            ""
        },
    )
}

/// The manifest's `[params]` (the defaults a pipeline's `params` override), as `k = "v", …`.
fn params_line(m: &super::Manifest) -> String {
    if m.params.is_empty() {
        return "no defaults in its manifest".to_owned();
    }
    m.params
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn limits_line(l: &super::limits::Limits) -> String {
    format!(
        "memory {} MiB, time {}, fuel {}",
        l.memory >> 20,
        humantime::format_duration(l.time),
        l.fuel.map_or("off".to_owned(), |f| f.to_string())
    )
}

/// `sluice plugin check FILE`: the description, or the reason it is refused.
pub fn check(runtime: &PluginRuntime, file: &Path) -> Result<String> {
    let plugin = runtime.inspect_file(file)?;
    Ok(describe(&plugin))
}

/// `sluice plugin list DIR…`: the directories as a search path, first match wins. One block
/// per plugin file: name, kind, version, size, digest and status (`ok`, `shadowed by` the
/// earlier file of the same name, or `refused:` and why), then its description, parameter
/// defaults, limits and capabilities.
pub fn list(runtime: &PluginRuntime, path: &PluginPath) -> Result<String> {
    if path.is_empty() {
        return Err(Error::Usage(format!(
            "no plugin directory to list{}",
            if path.unset.is_empty() {
                String::new()
            } else {
                format!(" (left out, variable not set: {})", path.unset.join(", "))
            }
        )));
    }
    for dir in &path.dirs {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
    }
    let mut out = format!("search path: {}\n", path.describe());
    out.push_str(&format!(
        "{:<16} {:<12} {:<10} {:>9}  {:<12}  status\n",
        "name", "kind", "version", "bytes", "sha256"
    ));
    let files = path.files();
    for (file, wins) in &files {
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
        let status = match wins {
            true => "ok".to_owned(),
            false => {
                let winner = files
                    .iter()
                    .find(|(f, w)| *w && f.file_stem() == file.file_stem())
                    .map_or_else(String::new, |(f, _)| f.display().to_string());
                format!("shadowed by {winner} (first match wins)")
            }
        };
        match runtime.inspect_file(file) {
            Ok(p) => {
                let i = p.info();
                let m = &i.manifest;
                out.push_str(&format!(
                    "{:<16} {:<12} {:<10} {:>9}  {:<12}  {status}\n",
                    i.name,
                    i.kind.to_string(),
                    m.plugin_version,
                    i.size,
                    &i.digest[..12]
                ));
                out.push_str(&format!("    file      {}\n", file.display()));
                if !m.description.is_empty() {
                    out.push_str(&format!("    about     {}\n", m.description));
                }
                out.push_str(&format!("    params    {}\n", params_line(m)));
                out.push_str(&format!("    limits    {}\n", limits_line(&i.limits)));
                if !m.capabilities.dirs.is_empty() {
                    out.push_str(&format!(
                        "    asks for  directories {}\n",
                        m.capabilities.dirs.join(", ")
                    ));
                }
            }
            Err(e) => {
                out.push_str(&format!(
                    "{stem:<16} {:<12} {:<10} {:>9}  {:<12}  refused: {e}\n",
                    "-", "-", "-", "-"
                ));
                out.push_str(&format!("    file      {}\n", file.display()));
                if !wins {
                    out.push_str(&format!("    ({status})\n"));
                }
            }
        }
    }
    Ok(out)
}
