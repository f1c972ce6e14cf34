//! Layer unpack: hostile layers are refused and nothing lands outside the store; whiteouts,
//! opaque dirs, hardlinks, compression and metadata. No registry needed.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use kapsel_image::testing::{gzip, make_layer, require_root, zstd, TarEntry, TarEntry::*};
use kapsel_image::{unpack_layer, ImageError, UnpackOptions};

const ESCAPE: &str = "/etc/kapsel-image-escape-test";

struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = common::tempdir();
        let s = Sandbox { tmp };
        std::fs::create_dir_all(s.outside()).unwrap();
        std::fs::write(s.outside().join("secret"), "host").unwrap();
        std::fs::create_dir_all(s.store()).unwrap();
        s
    }
    fn store(&self) -> PathBuf {
        self.tmp.path().join("a/b/c/store")
    }
    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
    fn layer(&self, n: &str) -> PathBuf {
        let p = self.store().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
    /// Everything in the sandbox that is not inside the store.
    fn outside_store(&self) -> Vec<PathBuf> {
        common::tree(self.tmp.path())
            .into_iter()
            .filter(|p| !p.starts_with("a/b/c/store/"))
            .collect()
    }
}

fn unpack(
    entries: &[TarEntry],
    dest: &Path,
    lowers: &[PathBuf],
) -> Result<kapsel_image::UnpackStats, ImageError> {
    unpack_layer(
        &make_layer(entries)[..],
        dest,
        lowers,
        UnpackOptions::default(),
    )
}

fn assert_refused(r: Result<kapsel_image::UnpackStats, ImageError>, what: &str) {
    match r {
        Err(ImageError::UnsafeLayer { path, reason }) => {
            eprintln!("{what}: refused {path:?}: {reason}")
        }
        other => panic!("{what}: expected UnsafeLayer, got {other:?}"),
    }
}

#[test]
fn hostile_layers_are_refused_and_nothing_is_written_outside() {
    let sb = Sandbox::new();
    let before = sb.outside_store();
    let cases: Vec<(&str, Vec<TarEntry>)> = vec![
        ("dot-dot", vec![File("../../etc/x", b"pwned")]),
        (
            "deep dot-dot",
            vec![File(
                "../../../../../../../../../../etc/kapsel-image-escape-test",
                b"pwned",
            )],
        ),
        (
            "dot-dot in the middle",
            vec![Dir("d"), File("d/../../x", b"pwned")],
        ),
        ("absolute", vec![File(ESCAPE, b"pwned")]),
        ("absolute dir", vec![Dir("/etc/kapsel-image-escape-dir")]),
        (
            "symlink to / then a file through it",
            vec![
                Symlink("root", "/"),
                File("root/etc/kapsel-image-escape-test", b"pwned"),
            ],
        ),
        (
            "relative symlink climbing out then a file through it",
            vec![
                Symlink("up", "../../../../.."),
                File("up/outside/secret", b"pwned"),
            ],
        ),
        (
            "symlinked directory then a directory through it",
            vec![Symlink("etc", "/etc"), Dir("etc/kapsel-image-escape-dir")],
        ),
        (
            "hardlink to a host path",
            vec![Hardlink("passwd", "/etc/passwd")],
        ),
        (
            "hardlink climbing out",
            vec![Hardlink("passwd", "../../../../../../../../etc/passwd")],
        ),
        (
            "hardlink through a symlink",
            vec![Symlink("e", "/etc"), Hardlink("passwd", "e/passwd")],
        ),
        ("whiteout climbing out", vec![File("../.wh.secret", b"")]),
    ];
    for (i, (what, entries)) in cases.into_iter().enumerate() {
        let dest = sb.layer(&format!("l{i}"));
        assert_refused(unpack(&entries, &dest, &[]), what);
        // a hardlink that was made would share /etc/passwd's inode
        let passwd = std::fs::metadata("/etc/passwd").unwrap().ino();
        for p in common::tree(&dest) {
            let md = std::fs::symlink_metadata(dest.join(&p)).unwrap();
            assert!(
                md.file_type().is_symlink() || md.ino() != passwd,
                "{what}: hardlink to a host file"
            );
        }
    }
    assert_eq!(
        sb.outside_store(),
        before,
        "something was written outside the store"
    );
    assert_eq!(
        std::fs::read_to_string(sb.outside().join("secret")).unwrap(),
        "host"
    );
    assert!(!Path::new(ESCAPE).exists(), "{ESCAPE} was created");
    assert!(!Path::new("/etc/kapsel-image-escape-dir").exists());
    assert!(
        !Path::new("/etc/x").exists()
            || std::fs::read("/etc/x")
                .map(|b| b != b"pwned")
                .unwrap_or(true)
    );
}

#[test]
fn symlink_placed_by_a_lower_layer_is_not_followed() {
    let sb = Sandbox::new();
    let before = sb.outside_store();
    let l1 = sb.layer("l1");
    unpack(
        &[Symlink("root", "/"), Symlink("rel", "../../../..")],
        &l1,
        &[],
    )
    .unwrap();
    let l2 = sb.layer("l2");
    assert_refused(
        unpack(
            &[File("root/etc/kapsel-image-escape-test", b"pwned")],
            &l2,
            std::slice::from_ref(&l1),
        ),
        "file through a lower layer's symlink to /",
    );
    let l3 = sb.layer("l3");
    assert_refused(
        unpack(&[Dir("rel/outside")], &l3, std::slice::from_ref(&l1)),
        "dir through a lower layer's relative symlink",
    );
    // a layer that replaces the symlink by a directory first is fine (overlayfs shows the dir)
    let l4 = sb.layer("l4");
    unpack(
        &[Dir("root"), File("root/f", b"ok")],
        &l4,
        std::slice::from_ref(&l1),
    )
    .unwrap();
    assert_eq!(std::fs::read(l4.join("root/f")).unwrap(), b"ok");
    assert!(!Path::new(ESCAPE).exists());
    assert_eq!(sb.outside_store(), before);
}

#[test]
fn hardlinks_inside_the_layer_share_the_inode() {
    let sb = Sandbox::new();
    let l = sb.layer("l");
    unpack(
        &[
            Dir("bin"),
            File("bin/busybox", b"\x7fELF"),
            Hardlink("bin/sh", "bin/busybox"),
            Hardlink("./bin/ls", "./bin/busybox"),
        ],
        &l,
        &[],
    )
    .unwrap();
    let ino = |p: &str| std::fs::metadata(l.join(p)).unwrap().ino();
    assert_eq!(ino("bin/sh"), ino("bin/busybox"));
    assert_eq!(ino("bin/ls"), ino("bin/busybox"));
    // a hardlink to a file that is not in this layer is refused, not resolved elsewhere
    let l2 = sb.layer("l2");
    assert_refused(
        unpack(
            &[Hardlink("x", "bin/busybox")],
            &l2,
            std::slice::from_ref(&l),
        ),
        "cross-layer hardlink",
    );
}

#[test]
fn gzip_zstd_and_plain_layers_give_the_same_tree_and_diff_id() {
    let sb = Sandbox::new();
    let tar = make_layer(&[
        Dir("etc"),
        File("etc/hello", b"hello"),
        Symlink("etc/link", "hello"),
    ]);
    let mut ids = Vec::new();
    for (name, bytes) in [
        ("plain", tar.clone()),
        ("gzip", gzip(&tar)),
        ("zstd", zstd(&tar)),
    ] {
        let l = sb.layer(name);
        let st = unpack_layer(&bytes[..], &l, &[], UnpackOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(l.join("etc/hello")).unwrap(),
            b"hello",
            "{name}"
        );
        assert_eq!(
            std::fs::read_link(l.join("etc/link")).unwrap(),
            Path::new("hello")
        );
        assert_eq!(st.size, 5);
        ids.push(st.diff_id);
    }
    assert!(ids.iter().all(|d| *d == ids[0]));
    assert_eq!(ids[0], format!("sha256:{}", hex_sha(&tar)));
    // truncated data is an error, not a silently short layer
    let gz = gzip(&tar);
    assert!(unpack_layer(
        &gz[..gz.len() / 2],
        &sb.layer("trunc"),
        &[],
        UnpackOptions::default()
    )
    .is_err());
}

fn hex_sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[test]
fn whiteouts_and_opaque_dirs_across_two_layers_give_the_merged_view() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let l1 = sb.layer("l1");
    unpack(
        &[
            Dir("a"),
            File("a/keep", b"1"),
            File("a/gone", b"1"),
            Dir("a/gonedir"),
            File("a/gonedir/f", b"1"),
            Dir("o"),
            File("o/old", b"1"),
            Dir("o/olddir"),
            File("top", b"1"),
        ],
        &l1,
        &[],
    )
    .unwrap();
    let l2 = sb.layer("l2");
    unpack(
        &[
            File("a/.wh.gone", b""),
            File("a/.wh.gonedir", b""),
            File("a/new", b"2"),
            Dir("o"),
            File("o/.wh..wh..opq", b""),
            File("o/new", b"2"),
            File(".wh.top", b""),
            File(".wh..wh.plnk", b""),
        ],
        &l2,
        std::slice::from_ref(&l1),
    )
    .unwrap();
    // overlayfs format on disk
    let md = std::fs::symlink_metadata(l2.join("a/gone")).unwrap();
    assert!(md.file_type().is_char_device() && md.rdev() == 0);
    assert!(!l2.join(".wh..wh.plnk").exists() && !l2.join("a/.wh.gone").exists());
    // and the merged view, through the kernel's overlayfs
    let m = common::Overlay::mount(&[l1.clone(), l2.clone()], &sb.tmp.path().join("merged"));
    let t = &m.target;
    let mut seen: Vec<String> = common::tree(t)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    seen.sort();
    assert_eq!(seen, vec!["a", "a/keep", "a/new", "o", "o/new"]);
    assert_eq!(std::fs::read(t.join("a/keep")).unwrap(), b"1");
    assert_eq!(std::fs::read(t.join("o/new")).unwrap(), b"2");
}

#[test]
fn ownership_modes_xattrs_and_mtimes_are_kept() {
    if !require_root() {
        return;
    }
    let sb = Sandbox::new();
    let l = sb.layer("l");
    unpack(
        &[
            Dir("bin"),
            FileMode("bin/suid", b"x", 0o4755, 1000, 2000),
            FileMode("bin/ro", b"x", 0o400, 0, 0),
            FileXattr("bin/cap", b"x", "user.kapsel", b"yes"),
            FileXattr("bin/overlay", b"x", "trusted.overlay.opaque", b"y"),
            Symlink("bin/link", "suid"),
            Fifo("bin/fifo"),
            CharDev("bin/null", 1, 3),
        ],
        &l,
        &[],
    )
    .unwrap();
    let md = std::fs::metadata(l.join("bin/suid")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!((md.uid(), md.gid()), (1000, 2000));
    assert_eq!(md.mtime(), 1_700_000_000);
    assert_eq!(
        std::fs::metadata(l.join("bin/ro")).unwrap().mode() & 0o7777,
        0o400
    );
    assert_eq!(
        std::fs::metadata(l.join("bin")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::metadata(l.join("bin")).unwrap().mtime(),
        1_700_000_000
    );
    assert_eq!(
        std::fs::symlink_metadata(l.join("bin/link"))
            .unwrap()
            .mtime(),
        1_700_000_000
    );
    assert!(std::fs::symlink_metadata(l.join("bin/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        xattr(&l.join("bin/cap"), "user.kapsel").as_deref(),
        Some(&b"yes"[..])
    );
    // a layer may not set overlayfs' own attributes
    assert_eq!(
        xattr(&l.join("bin/overlay"), "trusted.overlay.opaque"),
        None
    );
    // device nodes: skipped unless allowed
    assert!(!l.join("bin/null").exists());
    let l2 = sb.layer("l2");
    unpack_layer(
        &make_layer(&[CharDev("null", 1, 3)])[..],
        &l2,
        &[],
        UnpackOptions {
            allow_device_nodes: true,
        },
    )
    .unwrap();
    let md = std::fs::symlink_metadata(l2.join("null")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), nix::sys::stat::makedev(1, 3));
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated strings and a buffer valid for its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}
