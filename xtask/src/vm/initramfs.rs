//! The guest's initramfs: a newc cpio archive (the `cpio` crate writes the format) with
//! `/init` (vm-init), `/plan.json` and the modules the plan loads. Uncompressed: every
//! kernel reads it, and at ~5 MB compressing would cost more time than it saves.

use std::{
    fs::{self, File},
    io::{BufWriter, Cursor, Write},
    path::Path,
};

use anyhow::{Context, Result};
use cpio::NewcBuilder;
use vm_init::{MODULES_DIR, PLAN_PATH, Plan};

const DIR: u32 = 0o040_755;
const EXECUTABLE: u32 = 0o100_755;
const FILE: u32 = 0o100_644;
const CHAR_DEVICE: u32 = 0o020_600;

/// One archive member.
enum Entry {
    Dir(&'static str),
    File {
        name: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// (name, major, minor)
    CharDevice(&'static str, u32, u32),
}

/// Writes the initramfs for `plan` to `out`; `modules` pairs each plan module file name
/// with the file on the host.
pub fn write(out: &Path, init: &Path, plan: &Plan, modules: &[(String, &Path)]) -> Result<()> {
    let mut entries = vec![
        Entry::Dir("dev"),
        // init's stdio before devtmpfs is mounted (the kernel opens it for PID 1).
        Entry::CharDevice("dev/console", 5, 1),
        Entry::Dir("proc"),
        Entry::Dir("sys"),
        Entry::Dir("host"),
        Entry::Dir("modules"),
    ];
    let read = |path: &Path| fs::read(path).with_context(|| format!("reading {}", path.display()));
    entries.push(Entry::File { name: "init".into(), mode: EXECUTABLE, data: read(init)? });
    let plan_json = serde_json::to_vec_pretty(plan).context("serializing the plan")?;
    entries.push(Entry::File { name: PLAN_PATH.trim_start_matches('/').into(), mode: FILE, data: plan_json });
    for (name, host_path) in modules {
        let name = format!("{}/{name}", MODULES_DIR.trim_start_matches('/'));
        entries.push(Entry::File { name, mode: FILE, data: read(host_path)? });
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut writer = BufWriter::new(file);
    archive(&entries, &mut writer).with_context(|| format!("writing {}", out.display()))?;
    writer.flush().with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn archive(entries: &[Entry], out: &mut impl Write) -> std::io::Result<()> {
    for (index, entry) in entries.iter().enumerate() {
        let ino = index as u32 + 1;
        let (builder, data): (NewcBuilder, &[u8]) = match entry {
            Entry::Dir(name) => (NewcBuilder::new(name).mode(DIR).nlink(2), &[]),
            Entry::File { name, mode, data } => (NewcBuilder::new(name).mode(*mode), data),
            Entry::CharDevice(name, major, minor) => {
                (NewcBuilder::new(name).mode(CHAR_DEVICE).rdev_major(*major).rdev_minor(*minor), &[])
            }
        };
        let mut writer = builder.ino(ino).write(&mut *out, data.len() as u32);
        std::io::copy(&mut Cursor::new(data), &mut writer)?;
        writer.finish()?;
    }
    cpio::newc::trailer(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_lists_what_was_put_in() {
        let entries = [
            Entry::Dir("dev"),
            Entry::CharDevice("dev/console", 5, 1),
            Entry::File { name: "init".into(), mode: EXECUTABLE, data: b"\x7fELF".to_vec() },
        ];
        let mut bytes = Vec::new();
        archive(&entries, &mut bytes).unwrap();
        let mut reader = Cursor::new(bytes);
        let mut seen = Vec::new();
        loop {
            let entry = cpio::NewcReader::new(reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            let e = entry.entry();
            seen.push((e.name().to_string(), e.mode(), e.file_size(), e.rdev_major()));
            reader = entry.finish().unwrap();
        }
        assert_eq!(
            seen,
            [
                ("dev".to_string(), DIR, 0, 0),
                ("dev/console".to_string(), CHAR_DEVICE, 0, 5),
                ("init".to_string(), EXECUTABLE, 4, 0),
            ]
        );
    }
}
